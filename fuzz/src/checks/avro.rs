//! Target `avro_decode`: one Kafka record value through the schema
//! registry (`mailfleet_events::Registry`): the single-object framing, the
//! writer schema found by fingerprint, the Avro body resolved into the
//! newest version of the schema and deserialised into its event type.
//!
//! Properties: no panic and no runaway allocation; an error names the bad
//! value (the length, the marker, the fingerprint, the expected and actual
//! type); an event that decodes encodes again, decodes to the same event,
//! and reads as the same JSON as the original bytes; asked for as another
//! type it is refused as `WrongType` naming both.

use std::fmt::Debug;

use mailfleet_events::{
    accounts::*, admin::*, clock::*, config::*, framing, greylist::*, mail::*, notify::*,
    runtime::*, scheduler::*, submission::*, Event, EventError, Registry,
};

/// Every event type with its full name and its round trip.
macro_rules! round_trips {
    ($($ty:ty),* $(,)?) => {
        [$((<$ty as Event>::NAME, round_trip::<$ty> as fn(&Registry, &[u8]))),*]
    };
}

/// The round trip of the event type with this full name.
fn round_trip_of(name: &str) -> Option<fn(&Registry, &[u8])> {
    let all = round_trips!(
        AccountBlocked,
        QuotaChanged,
        PlanChanged,
        UsageChanged,
        AccountRegistered,
        LoginRecorded,
        LoginFailed,
        AccountStatusChanged,
        AccountUnblocked,
        AccountReactivated,
        AccountDeleted,
        AccountPasswordChanged,
        DeletionStepRequested,
        DeletionStepCompleted,
        MigrationStarted,
        MigrationCompleted,
        AdminAlert,
        ClockTicked,
        ConfigChanged,
        DeliveryAttempted,
        GreylistDecided,
        MessageReceived,
        MessageScanned,
        MessageStored,
        MessageQuarantined,
        MessageRejected,
        SpamLearned,
        PurgeRequested,
        MessagesPurged,
        MailboxDeleted,
        NotificationRequested,
        TestEvent,
        Counted,
        DeadLetter,
        JobDue,
        SubmissionAttempted,
        SubmissionDecided,
        MessageSubmitted,
    );
    all.into_iter().find(|(n, _)| *n == name).map(|(_, f)| f)
}

/// Whether this check has the event type of every schema in the registry
/// (the regression test asserts it, so a new event type is fuzzed too).
pub fn covers(name: &str) -> bool {
    round_trip_of(name).is_some()
}

/// Input: a record value.
pub fn check(data: &[u8]) {
    let registry = Registry::builtin();
    let writer = match registry.writer_of(data) {
        Ok(writer) => writer,
        Err(e) => return check_header_error(&e, data),
    };
    let name = writer.name.clone();
    let round_trip = round_trip_of(&name).unwrap_or_else(|| panic!("no event type for {name}"));
    round_trip(registry, data);
    // Asked for as another type: refused, naming both.
    let other = if name == ClockTicked::NAME {
        registry.decode::<Counted>(data).map(drop)
    } else {
        registry.decode::<ClockTicked>(data).map(drop)
    };
    match other {
        Err(EventError::WrongType { actual, .. }) => assert_eq!(actual, name),
        other => panic!("a {name} read as another type gave {other:?}"),
    }
}

fn check_header_error(error: &EventError, data: &[u8]) {
    let text = error.to_string();
    match error {
        EventError::Framing(_) if data.len() < framing::HEADER_LEN => {
            assert!(text.contains(&format!("{} bytes", data.len())), "{text}");
        }
        EventError::Framing(_) => {
            let marker = format!("marker {:02X} {:02X}", data[0], data[1]);
            assert!(text.contains(&marker), "{text}");
        }
        EventError::UnknownFingerprint(_) => {
            let fp: [u8; 8] = data[2..10].try_into().expect("8 bytes");
            assert!(text.contains(&framing::fingerprint_hex(&fp)), "{text}");
        }
        other => panic!("reading the header gave {other:?}"),
    }
}

fn round_trip<E: Event + PartialEq + Debug>(registry: &Registry, data: &[u8]) {
    let event = match registry.decode::<E>(data) {
        Ok(event) => event,
        Err(EventError::Decode { name, .. } | EventError::Framing(name)) => {
            assert!(
                name.contains(E::NAME),
                "the error names {name}, not {}",
                E::NAME
            );
            return;
        }
        Err(other) => panic!("decoding a {} gave {other:?}", E::NAME),
    };
    let bytes = registry
        .encode(&event)
        .unwrap_or_else(|e| panic!("{event:?} decoded but does not encode: {e}"));
    let again: E = registry
        .decode(&bytes)
        .unwrap_or_else(|e| panic!("{event:?} encoded but does not decode: {e}"));
    assert_eq!(again, event, "encode then decode changed the event");
    let json = registry
        .to_json(data)
        .unwrap_or_else(|e| panic!("{event:?} decoded, but not as JSON: {e}"));
    assert_eq!(
        registry.to_json(&bytes).ok().as_ref(),
        Some(&json),
        "the original and the re-encoded bytes read as different JSON"
    );
}
