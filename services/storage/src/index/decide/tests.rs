use mailfleet_runtime::{Overlay, Verdict};

use super::*;

fn stored(file: &str, folder: &str, size: i64) -> IndexInput {
    IndexInput::Stored(MessageStored {
        envelope: Envelope::new(format!("st:{file}"), 1, "storage"),
        account: "bob@x".into(),
        delivery_id: format!("d:{file}"),
        folder: folder.into(),
        file: format!("{file},S={size},W={size}"),
        size,
        stored_bytes: size,
        blob_id: "ab".repeat(32),
        received_at: 1,
        message_id: None,
    })
}

fn purge(files: &[&str]) -> IndexInput {
    IndexInput::Purged(MessagesPurged {
        envelope: Envelope::new("p", 2, "storage"),
        account: "bob@x".into(),
        folder: "Trash".into(),
        count: files.len() as i64,
        bytes: 0,
        files: files.iter().map(|f| f.to_string()).collect(),
        job: "j".into(),
    })
}

fn run(state: &mut Overlay, input: IndexInput) -> Decision {
    let mut d = decide(&StateView::in_memory(state), &input, "accounts.events").unwrap();
    state.extend(std::mem::take(&mut d.changes));
    d
}

fn tally<K: StateKey<Value = Tally>>(state: &Overlay, key: K) -> Tally {
    StateView::in_memory(state)
        .get(&key)
        .unwrap()
        .unwrap_or_default()
}

fn folder(name: &str) -> FolderKey {
    FolderKey {
        account: "bob@x".into(),
        folder: name.into(),
    }
}

#[test]
fn stored_messages_are_indexed_once_per_file() {
    let mut state = Overlay::default();
    run(&mut state, stored("1.Ma.h", "INBOX", 10));
    run(&mut state, stored("2.Mb.h", "Trash", 5));
    run(&mut state, stored("3.Mc.h", "Trash", 7));
    assert!(matches!(
        run(&mut state, stored("3.Mc.h", "Trash", 7)).verdict,
        Verdict::Ignore
    ));
    assert_eq!(
        tally(&state, folder("Trash")),
        Tally {
            count: 2,
            bytes: 12
        }
    );
    assert_eq!(
        tally(&state, TotalKey("bob@x".into())),
        Tally {
            count: 3,
            bytes: 22
        }
    );
    assert_eq!(
        tally(&state, StatsKey),
        Tally {
            count: 3,
            bytes: 22
        }
    );
}

#[test]
fn purges_remove_exactly_the_named_files() {
    let mut state = Overlay::default();
    run(&mut state, stored("1.Ma.h", "INBOX", 10));
    run(&mut state, stored("2.Mb.h", "Trash", 5));
    run(&mut state, stored("3.Mc.h", "Trash", 7));
    let input = purge(&["2.Mb.h", "3.Mc.h", "never-indexed"]);
    let d = decide(&StateView::in_memory(&state), &input, "accounts.events").unwrap();
    assert_eq!(
        stats_change(&d),
        Some(Tally {
            count: 1,
            bytes: 10
        })
    );
    state.extend(d.changes);
    assert_eq!(tally(&state, folder("Trash")), Tally::default());
    assert_eq!(
        tally(&state, folder("INBOX")),
        Tally {
            count: 1,
            bytes: 10
        }
    );
    assert_eq!(
        tally(&state, TotalKey("bob@x".into())),
        Tally {
            count: 1,
            bytes: 10
        }
    );
    assert!(
        matches!(run(&mut state, purge(&["2.Mb.h"])).verdict, Verdict::Ignore),
        "already gone"
    );
}

#[test]
fn a_deleted_mailbox_forgets_only_that_account_and_tells_the_saga() {
    let mut state = Overlay::default();
    run(&mut state, stored("1.Ma.h", "INBOX", 10));
    run(&mut state, stored("2.Mb.h", "Trash", 5));
    let mut other = stored("9.Mz.h", "INBOX", 3);
    if let IndexInput::Stored(s) = &mut other {
        s.account = "bob@xy".into(); // shares the prefix "bob@x"
    }
    run(&mut state, other);
    let deleted = IndexInput::MailboxDeleted(MailboxDeleted {
        envelope: Envelope::new("md", 3, "storage"),
        account: "bob@x".into(),
        files: 2,
        bytes: 15,
        reason: "account-deleted".into(),
    });
    let d = run(&mut state, deleted);
    assert_eq!(d.outputs.len(), 1);
    assert_eq!(d.outputs[0].topic, "accounts.events");
    assert_eq!(
        d.outputs[0].event.name(),
        "mailfleet.accounts.DeletionStepCompleted"
    );
    assert_eq!(tally(&state, TotalKey("bob@x".into())), Tally::default());
    assert_eq!(tally(&state, folder("Trash")), Tally::default());
    let view = StateView::in_memory(&state);
    assert!(view
        .scan_prefix::<MessageKey>(b"bob@x\0")
        .unwrap()
        .is_empty());
    assert_eq!(
        tally(&state, TotalKey("bob@xy".into())),
        Tally { count: 1, bytes: 3 },
        "an account whose name extends the deleted one keeps its rows"
    );
    assert_eq!(tally(&state, StatsKey), Tally { count: 1, bytes: 3 });
}

#[test]
fn a_negative_size_is_rejected_with_the_value() {
    let mut state = Overlay::default();
    match run(&mut state, stored("neg", "INBOX", -7)).verdict {
        Verdict::Reject(reason) => assert!(reason.contains("size -7"), "{reason}"),
        _ => panic!("expected a rejection"),
    }
    assert!(state.is_empty(), "nothing indexed");
}
