//! Prints one JSON line per sample event: its full name, the Avro
//! single-object bytes the Rust encoder writes (hex), and the values they
//! hold. `tests/python/test_fastavro.py` decodes the bytes with fastavro
//! and only the `.avsc` files, and compares.

use mailfleet_events::{
    clock::ClockTicked,
    greylist::{DeliveryAttempted, GreylistDecided, GreylistReason, GreylistVerdict},
    runtime::{Counted, DeadLetter, DeadLetterKind, TestEvent},
    Envelope, Event,
};

fn line<E: Event>(event: &E) -> Result<String, Box<dyn std::error::Error>> {
    let bytes = mailfleet_events::encode(event)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let value = serde_json::json!({ "name": E::NAME, "hex": hex, "value": event });
    Ok(value.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |id: &str| Envelope {
        causation_id: Some("cause-1".into()),
        ..Envelope::new(id, 1_764_340_000_123, "samples")
    };
    let tick = ClockTicked {
        envelope: env("k1"),
        clock: "hourly".into(),
        period_ms: 3_600_000,
    };
    println!("{}", line(&tick)?);
    println!(
        "{}",
        line(&TestEvent {
            envelope: env("t1"),
            key: "käy-1".into(),
            payload: vec![0, 1, 254, 255],
            weight: 42
        })?
    );
    println!(
        "{}",
        line(&Counted {
            envelope: env("c1"),
            key: "key-1".into(),
            count: -7
        })?
    );
    println!(
        "{}",
        line(&DeadLetter {
            envelope: env("d1"),
            consumer: "counter".into(),
            topic: "runtime.test-events".into(),
            partition: 5,
            offset: 1 << 40,
            kind: DeadLetterKind::UnknownSchema,
            reason: "unknown schema fingerprint 0102030405060708".into(),
            original_key: Some(b"k".to_vec()),
            original_value: None,
            original_timestamp: Some(1_764_340_000_000),
        })?
    );
    println!(
        "{}",
        line(&DeliveryAttempted {
            envelope: env("a1"),
            client_address: Some("2001:db8::1".into()),
            client_name: Some("unknown".into()),
            reverse_client_name: None,
            helo_name: Some("mx.example.net".into()),
            sender: Some("prvs=1234abcd=alice@example.net".into()),
            recipient: Some("bob@example.org".into()),
            instance: Some("a1b2.c3d4".into()),
            size: Some(12_345),
            queue_id: None,
            policy_host: "mx1".into(),
        })?
    );
    println!(
        "{}",
        line(&GreylistDecided {
            envelope: env("g1"),
            triplet: Some("2001:db8::/alice@example.net/bob@example.org".into()),
            verdict: GreylistVerdict::Defer,
            reason: GreylistReason::TooEarly,
            action: "DEFER_IF_PERMIT Greylisted, try again in 120 seconds".into(),
            delay_seconds: 120,
            policy_host: "mx1".into(),
        })?
    );
    Ok(())
}
