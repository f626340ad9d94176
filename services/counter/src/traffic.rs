//! Synthetic `TestEvent` traffic for the demo, the benchmark and the tests.

use mailfleet_events::{runtime::TestEvent, Envelope};

/// The `i`-th event of a run: key `key-(i mod keys)`, `payload_len` filler bytes.
pub fn test_event(run: &str, i: u64, keys: u64, payload_len: usize) -> TestEvent {
    TestEvent {
        envelope: Envelope::new(format!("{run}:{i}"), 1_700_000_000_000 + i as i64, run),
        key: format!("key-{}", i % keys.max(1)),
        payload: vec![(i % 251) as u8; payload_len],
        weight: 1,
    }
}

/// The filler length that makes an encoded event `total` bytes long (or as
/// close as the envelope allows).
pub fn payload_len_for(run: &str, total: usize) -> usize {
    let bare = mailfleet_events::encode(&test_event(run, 0, 1, 0)).map_or(0, |b| b.len());
    // Avro writes the length as a zig-zag varint: 1 byte below 64, 2 below 8192.
    let header = if total.saturating_sub(bare) > 64 {
        2
    } else {
        1
    };
    total.saturating_sub(bare + header - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_asked_size_and_spread_keys() {
        let len = payload_len_for("bench-x", 200);
        let bytes = mailfleet_events::encode(&test_event("bench-x", 7, 1000, len)).unwrap();
        assert_eq!(bytes.len(), 200);
        assert_eq!(test_event("r", 1003, 1000, 0).key, "key-3");
    }
}
