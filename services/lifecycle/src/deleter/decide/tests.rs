use mailfleet_events::{admin::AdminAlert, clock::ClockTicked, Event, Registry};
use mailfleet_runtime::{Emit, Overlay, Verdict};

use super::*;

const BOB: &str = "bob@example.test";

fn env(id: &str) -> Envelope {
    Envelope::new(id, 1_000, "test")
}

fn deleting(account: &str) -> DeleterInput {
    DeleterInput::Status(AccountStatusChanged {
        envelope: env("sc"),
        account: account.into(),
        from: AccountStatus::Inactive,
        to: AccountStatus::Deleting,
        reason: "grace-expired".into(),
        settings_hash: None,
    })
}

fn done(step: DeletionStep) -> DeleterInput {
    DeleterInput::Completed(DeletionStepCompleted {
        envelope: env("dc"),
        account: BOB.into(),
        step,
        detail: String::new(),
    })
}

fn describe(o: &Emit) -> String {
    let bytes = o.event.encode().expect("outputs fit their schema");
    let registry = Registry::builtin();
    match o.event.name() {
        DeletionStepRequested::NAME => {
            let e: DeletionStepRequested = registry.decode(&bytes).unwrap();
            format!("request {:?}", e.step)
        }
        AccountDeleted::NAME => {
            let e: AccountDeleted = registry.decode(&bytes).unwrap();
            format!("deleted {} {}", e.account, e.reason)
        }
        other => panic!("unexpected output {other}"),
    }
}

struct World {
    state: Overlay,
}

impl World {
    fn feed(&mut self, input: DeleterInput) -> (Vec<String>, bool) {
        let cfg = DeleterConfig::default();
        let d = decide(&cfg, &StateView::in_memory(&self.state), &input).unwrap();
        match &d.verdict {
            Verdict::Ignore => (vec!["ignored".into()], false),
            Verdict::Reject(r) => (vec![format!("rejected: {r}")], false),
            Verdict::Apply => {
                for o in &d.outputs {
                    assert_eq!(o.topic, "accounts.events");
                    assert_eq!(o.key, BOB.as_bytes());
                }
                let release = d.intent_as::<ReleaseBlobs>().is_some();
                self.state.extend(d.changes.clone());
                (d.outputs.iter().map(describe).collect(), release)
            }
        }
    }
}

#[test]
fn the_steps_run_in_order_and_end_with_the_tombstone() {
    let mut w = World {
        state: Overlay::default(),
    };
    assert_eq!(
        w.feed(deleting(BOB)),
        (
            vec!["request Maildir".into(), "request Index".into()],
            false
        )
    );
    assert_eq!(
        w.feed(deleting(BOB)).0,
        ["ignored"],
        "a second DELETING is the same deletion"
    );
    // The index may report before the writer's completion arrives.
    assert_eq!(w.feed(done(DeletionStep::Index)).0, Vec::<String>::new());
    assert_eq!(
        w.feed(done(DeletionStep::Maildir)),
        (vec!["request Directory".into()], false)
    );
    assert_eq!(
        w.feed(done(DeletionStep::Maildir)).0,
        ["ignored"],
        "reported twice"
    );
    assert_eq!(
        w.feed(done(DeletionStep::Directory)),
        (vec!["request Blobs".into()], true),
        "the blob step is this consumer's own effect"
    );
    assert_eq!(
        w.feed(done(DeletionStep::Blobs)).0,
        [format!("deleted {BOB} grace-expired")]
    );
    assert!(
        StateView::in_memory(&w.state)
            .get(&SagaKey(BOB))
            .unwrap()
            .is_none(),
        "the saga is over"
    );
    assert_eq!(
        w.feed(done(DeletionStep::Blobs)).0,
        ["ignored"],
        "a late duplicate after the end"
    );
}

#[test]
fn the_directory_waits_for_both_mail_steps_and_strays_are_handled() {
    let mut w = World {
        state: Overlay::default(),
    };
    assert_eq!(
        w.feed(done(DeletionStep::Maildir)).0,
        ["ignored"],
        "no saga"
    );
    w.feed(deleting(BOB));
    assert_eq!(w.feed(done(DeletionStep::Maildir)).0, Vec::<String>::new());
    assert_eq!(
        w.feed(done(DeletionStep::Directory)).0,
        Vec::<String>::new(),
        "recorded, but the blobs wait for the directory request's turn"
    );
    let (out, release) = w.feed(done(DeletionStep::Index));
    assert_eq!(out, ["request Blobs"], "a step done early is not asked for");
    assert!(release);
    let unknown = w.feed(done(DeletionStep::Unknown)).0;
    assert!(
        unknown[0].starts_with("rejected: ") && unknown[0].contains(BOB),
        "{unknown:?}"
    );
    let other_status = DeleterInput::Status(AccountStatusChanged {
        to: AccountStatus::Active,
        ..match deleting(BOB) {
            DeleterInput::Status(s) => s,
            _ => unreachable!(),
        }
    });
    assert_eq!(w.feed(other_status).0, ["ignored"]);
}

#[test]
fn a_saga_running_too_long_is_reported_once() {
    let mut w = World {
        state: Overlay::default(),
    };
    w.feed(deleting(BOB)); // started at 1_000
    let tick = |at: i64| {
        DeleterInput::Tick(ClockTicked {
            envelope: Envelope::new(format!("t{at}"), at, "clock"),
            clock: "hourly".into(),
            period_ms: 3_600_000,
        })
    };
    let cfg = DeleterConfig::default();
    let decide_tick =
        |state: &Overlay, at: i64| decide(&cfg, &StateView::in_memory(state), &tick(at)).unwrap();
    let hour = 3_600_000;
    assert!(matches!(
        decide_tick(&w.state, 1_000 + 5 * hour).verdict,
        Verdict::Ignore
    ));
    let mut d = decide_tick(&w.state, 1_000 + 7 * hour);
    assert_eq!(d.outputs.len(), 1);
    assert_eq!(d.outputs[0].topic, "admin.alerts");
    let alert: AdminAlert = Registry::builtin()
        .decode(&d.outputs[0].event.encode().unwrap())
        .unwrap();
    assert_eq!(alert.kind, "deletion-stuck");
    assert_eq!(alert.account.as_deref(), Some(BOB));
    assert!(alert.summary.contains("7 h"), "{}", alert.summary);
    let detail = alert.detail.unwrap_or_default();
    assert!(
        detail.contains(r#"requested: ["maildir", "index"]; done: []"#),
        "{detail}"
    );
    w.state.extend(std::mem::take(&mut d.changes));
    assert!(
        matches!(
            decide_tick(&w.state, 1_000 + 8 * hour).verdict,
            Verdict::Ignore
        ),
        "once"
    );
}
