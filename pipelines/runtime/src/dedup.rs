//! Dropping duplicate inputs downstream.
//!
//! Outputs carry deterministic ids, so after a crash an upstream consumer
//! may send an event again with the same id. A downstream consumer that must
//! not apply it twice checks [`is_duplicate`] in `decide` and records the id
//! with [`remember`] in the same decision, so the record commits with the
//! state it guards.

use mailfleet_events::Envelope;

use crate::{
    consumer::Decision,
    error::StateError,
    state::{StateKey, StateView},
};

/// A seen event id; the value is the event time, for pruning by age.
pub struct SeenEvent<'a>(pub &'a str);

impl StateKey for SeenEvent<'_> {
    type Value = i64;
    const PREFIX: u8 = 0xF0;
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// Whether this event id was already applied.
pub fn is_duplicate(state: &StateView<'_>, envelope: &Envelope) -> Result<bool, StateError> {
    Ok(state.get(&SeenEvent(&envelope.event_id))?.is_some())
}

/// Record the event id as applied, in the same commit as the decision.
pub fn remember(decision: &mut Decision, envelope: &Envelope) {
    decision.put(&SeenEvent(&envelope.event_id), &envelope.event_time);
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
        remember(&mut decision, &envelope);
        overlay.extend(decision.changes);
        assert!(is_duplicate(&StateView::in_memory(&overlay), &envelope).unwrap());
        let other = Envelope::new("up:t:0:6:0", 10, "up");
        assert!(!is_duplicate(&StateView::in_memory(&overlay), &other).unwrap());
    }
}
