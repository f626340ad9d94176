//! Dropping duplicate inputs downstream.
//!
//! Outputs carry deterministic ids, so after a crash an upstream consumer
//! may send an event again with the same id. A downstream consumer that must
//! not apply it twice checks [`is_duplicate`] in `decide` and records the id
//! with [`remember`] in the same decision, so the record commits with the
//! state it guards.
//!
//! An id is kept for a window after it was remembered, then forgotten by
//! [`forget_older`] on the clock's ticks; without ticks nothing is
//! forgotten. The window is counted on the consumer's dedup clock: the
//! latest tick it has seen, or the event's own time if that is later. So a
//! consumer working through a backlog of old events still keeps their ids
//! for the whole window after it read them. Each id is also filed under the
//! hour it was remembered in (table [`SeenIn`]), so forgetting reads only
//! the hours that fall out of the window.

use mailfleet_events::Envelope;

use crate::{
    consumer::Decision,
    error::StateError,
    state::{StateKey, StateView},
};

const HOUR_MS: i64 = 3_600_000;

/// At most this many ids are forgotten on one tick, so one decision stays
/// small; the rest go on the next ticks.
pub const MAX_FORGET_PER_TICK: usize = 50_000;

/// A seen event id; the value is the hour (since the epoch, on the dedup
/// clock) it was remembered in. Ids remembered before the window existed
/// hold their event time in ms instead and are never forgotten.
pub struct SeenEvent<'a>(pub &'a str);

impl StateKey for SeenEvent<'_> {
    type Value = i64;
    const PREFIX: u8 = 0xF0;
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// The ids remembered in one hour: the key is the hour (big-endian, so the
/// table is ordered by time) then the id.
pub struct SeenIn<'a> {
    pub hour: i64,
    pub id: &'a str,
}

impl StateKey for SeenIn<'_> {
    type Value = ();
    const PREFIX: u8 = 0xF1;
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hour.to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
    }
}

/// The dedup clock and the oldest hour that may still hold ids:
/// (latest tick in ms, floor hour).
struct DedupClock;

impl StateKey for DedupClock {
    type Value = (i64, i64);
    const PREFIX: u8 = 0xF2;
    fn encode_key(&self, _: &mut Vec<u8>) {}
}

fn hour_of(ms: i64) -> i64 {
    ms.max(0).div_euclid(HOUR_MS)
}

/// Whether this event id was already applied.
pub fn is_duplicate(state: &StateView<'_>, envelope: &Envelope) -> Result<bool, StateError> {
    Ok(state.get(&SeenEvent(&envelope.event_id))?.is_some())
}

/// Record the event id as applied, in the same commit as the decision.
pub fn remember(
    state: &StateView<'_>,
    decision: &mut Decision,
    envelope: &Envelope,
) -> Result<(), StateError> {
    let clock = state.get(&DedupClock)?;
    let now = clock.map_or(envelope.event_time, |(tick, _)| {
        tick.max(envelope.event_time)
    });
    let hour = hour_of(now);
    let id = envelope.event_id.as_str();
    decision.put(&SeenEvent(id), &hour);
    decision.put(&SeenIn { hour, id }, &());
    match clock {
        Some((_, floor)) if floor <= hour => {}
        Some((tick, _)) => {
            decision.put(&DedupClock, &(tick, hour));
        }
        None => {
            decision.put(&DedupClock, &(i64::MIN, hour));
        }
    }
    Ok(())
}

/// On a clock tick at `now_ms`: advance the dedup clock and forget the ids
/// remembered more than `window_ms` before it (at most
/// [`MAX_FORGET_PER_TICK`]). Returns how many were forgotten.
pub fn forget_older(
    state: &StateView<'_>,
    decision: &mut Decision,
    now_ms: i64,
    window_ms: i64,
) -> Result<usize, StateError> {
    // Hours before `end` are wholly outside the window.
    let Some((tick, floor)) = state.get(&DedupClock)? else {
        let end = hour_of(now_ms.saturating_sub(window_ms));
        decision.put(&DedupClock, &(now_ms, end));
        return Ok(0);
    };
    let tick = tick.max(now_ms);
    let end = hour_of(tick.saturating_sub(window_ms));
    let mut forgotten = 0;
    let mut hour = floor;
    while hour < end {
        let ids = state.scan_prefix::<SeenIn>(&hour.to_be_bytes())?;
        let more = ids.len() > MAX_FORGET_PER_TICK - forgotten;
        for (key, ()) in ids.into_iter().take(MAX_FORGET_PER_TICK - forgotten) {
            let id = String::from_utf8_lossy(&key[8..]).into_owned();
            decision.delete(&SeenEvent(&id));
            decision.delete(&SeenIn { hour, id: &id });
            forgotten += 1;
        }
        if more {
            break;
        }
        hour += 1;
    }
    decision.put(&DedupClock, &(tick, hour));
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Overlay;

    #[test]
    fn a_remembered_id_is_a_duplicate() {
        let envelope = Envelope::new("up:t:0:5:0", 10, "up");
        let mut overlay = Overlay::default();
        assert!(!is_duplicate(&StateView::in_memory(&overlay), &envelope).unwrap());
        let mut decision = Decision::apply();
        remember(&StateView::in_memory(&overlay), &mut decision, &envelope).unwrap();
        overlay.extend(decision.changes);
        assert!(is_duplicate(&StateView::in_memory(&overlay), &envelope).unwrap());
        let other = Envelope::new("up:t:0:6:0", 10, "up");
        assert!(!is_duplicate(&StateView::in_memory(&overlay), &other).unwrap());
    }
    const DAY: i64 = 24 * HOUR_MS;

    fn apply(overlay: &mut Overlay, decision: Decision) {
        overlay.extend(decision.changes);
    }

    fn see(overlay: &mut Overlay, id: &str, event_time: i64) -> bool {
        let envelope = Envelope::new(id, event_time, "up");
        let view = StateView::in_memory(overlay);
        if is_duplicate(&view, &envelope).unwrap() {
            return true;
        }
        let mut decision = Decision::apply();
        remember(&view, &mut decision, &envelope).unwrap();
        apply(overlay, decision);
        false
    }

    fn tick(overlay: &mut Overlay, now: i64) -> usize {
        let mut decision = Decision::apply();
        let n = forget_older(&StateView::in_memory(overlay), &mut decision, now, 7 * DAY).unwrap();
        apply(overlay, decision);
        n
    }

    fn live_keys(overlay: &Overlay) -> usize {
        overlay.values().filter(|v| v.is_some()).count()
    }

    #[test]
    fn ids_are_kept_for_the_window_after_they_were_seen_then_forgotten() {
        let t0 = 100 * DAY;
        let mut overlay = Overlay::default();
        tick(&mut overlay, t0);
        assert!(!see(&mut overlay, "a", t0));
        // A backlog: an event from long ago, read now, is kept for the
        // window from now, not from its event time.
        assert!(!see(&mut overlay, "old", t0 - 30 * DAY));
        assert_eq!(tick(&mut overlay, t0 + 6 * DAY), 0);
        assert!(see(&mut overlay, "a", t0), "inside the window");
        assert!(see(&mut overlay, "old", t0 - 30 * DAY), "inside the window");
        assert_eq!(tick(&mut overlay, t0 + 8 * DAY), 2);
        assert!(!see(&mut overlay, "a", t0), "forgotten after the window");
        // Only the clock and the id just seen again are left.
        assert_eq!(live_keys(&overlay), 3);
    }

    #[test]
    fn an_event_later_than_the_clock_moves_its_hour_and_nothing_is_lost() {
        let t0 = 100 * DAY;
        let mut overlay = Overlay::default();
        // Before any tick the event's own time is the clock.
        assert!(!see(&mut overlay, "early", t0));
        assert!(!see(&mut overlay, "ahead", t0 + 3 * DAY));
        assert_eq!(tick(&mut overlay, t0 + 8 * DAY), 1, "only `early` is out");
        assert!(see(&mut overlay, "ahead", t0 + 3 * DAY));
        assert_eq!(tick(&mut overlay, t0 + 11 * DAY), 1);
        assert!(!see(&mut overlay, "ahead", t0 + 3 * DAY));
    }

    #[test]
    fn a_big_hour_is_forgotten_over_several_ticks() {
        let t0 = 100 * DAY;
        let mut overlay = Overlay::default();
        tick(&mut overlay, t0);
        for i in 0..MAX_FORGET_PER_TICK + 10 {
            see(&mut overlay, &format!("id{i}"), t0);
        }
        let later = t0 + 8 * DAY;
        assert_eq!(tick(&mut overlay, later), MAX_FORGET_PER_TICK);
        assert_eq!(tick(&mut overlay, later), 10);
        assert_eq!(tick(&mut overlay, later), 0);
        assert_eq!(live_keys(&overlay), 1, "only the clock is left");
    }
}
