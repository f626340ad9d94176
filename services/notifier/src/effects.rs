//! The notifier's I/O: the sent-log around one SMTP transaction, and the
//! outcome the runtime acts on. Runs on the runtime's loop thread (not a
//! tokio worker), so the small blocking sent-log writes are fine here.

use std::time::Instant;

use mailfleet_runtime::Outcome;

use super::{decide::Mail, error::NotifierError, metrics as m, sent_log::Mark, Notifier};

impl Notifier {
    /// Send `mail` at most once.
    pub(super) async fn carry_out(&self, mail: &Mail) -> Outcome {
        match self.sent.mark(&mail.event_id) {
            Err(e) => return Outcome::Temporary(e.to_string()),
            Ok(Mark::Sent) => {
                metrics::counter!(m::DUPLICATES, "template" => mail.template.clone()).increment(1);
                tracing::debug!(event_id = %mail.event_id, template = %mail.template,
                    "notice already sent; skipped");
                return Outcome::Ignored;
            }
            Ok(Mark::Sending) => {
                return unknown(
                    mail,
                    "an earlier attempt began and its end was never recorded",
                )
            }
            Ok(Mark::New) => {}
        }
        if let Err(e) = self.sent.sending(&mail.event_id) {
            return Outcome::Temporary(e.to_string());
        }
        let started = Instant::now();
        let result = self.mailer.deliver(&mail.message).await;
        metrics::histogram!(m::SEND_DURATION).record(started.elapsed().as_secs_f64());
        match result {
            Ok(reply) => self.sent_ok(mail, &reply),
            Err(e) if !e.outcome_known() => unknown(mail, &e.to_string()),
            Err(e) => {
                // Nothing was sent: forget the attempt, so a retry sends.
                let cleared = self.sent.clear(&mail.event_id);
                let to = mail.to.join(", ");
                let (kind, outcome) = if e.is_permanent() {
                    (
                        "refused",
                        Outcome::Permanent(format!("mail to {to} refused: {e}")),
                    )
                } else {
                    (
                        "deferred",
                        Outcome::Temporary(format!("mail to {to} not sent: {e}")),
                    )
                };
                metrics::counter!(m::FAILED, "template" => mail.template.clone(), "kind" => kind)
                    .increment(1);
                not_cleared(mail, cleared);
                outcome
            }
        }
    }

    fn sent_ok(&self, mail: &Mail, reply: &str) -> Outcome {
        metrics::counter!(m::SENT, "template" => mail.template.clone()).increment(1);
        tracing::info!(event_id = %mail.event_id, template = %mail.template,
            to = %mail.to.join(", "), %reply, "notice sent");
        if let Err(e) = self.sent.sent(&mail.event_id) {
            // The marker stays `sending`, which a re-run also never resends.
            tracing::error!(event_id = %mail.event_id, error = %e,
                "notice sent, but the sent-log could not record it");
        }
        Outcome::Done
    }
}

/// The mail may or may not have gone out: never send it again (at most
/// once), and say so loudly.
fn unknown(mail: &Mail, why: &str) -> Outcome {
    metrics::counter!(m::UNKNOWN, "template" => mail.template.clone()).increment(1);
    tracing::warn!(event_id = %mail.event_id, template = %mail.template,
        to = %mail.to.join(", "), reason = %why,
        "notice outcome unknown: not sent again; check the relay's log for this Message-ID");
    Outcome::Ignored
}

/// A marker left `sending` after a failure that sent nothing would stop
/// the retry from sending: say so.
fn not_cleared(mail: &Mail, cleared: Result<(), NotifierError>) {
    if let Err(e) = cleared {
        tracing::error!(event_id = %mail.event_id, error = %e,
            "could not clear the sent-log marker: the retry will not send this notice");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mailfleet_events::{notify::NotificationRequested, Envelope};

    use super::*;
    use crate::{
        decide::{decide, AlertPolicy, NotifierInput},
        NotifierConfig, Severity,
    };

    /// A notifier whose relay port has nothing listening: any attempt to
    /// send fails to connect.
    fn notifier(sent_log: &Path) -> Notifier {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let cfg = NotifierConfig {
            relay_port: port,
            timeout_s: 5,
            ..NotifierConfig::default()
        };
        Notifier::new(&cfg, sent_log).unwrap()
    }

    fn mail(n: &Notifier, id: &str) -> Mail {
        let request = NotificationRequested {
            envelope: Envelope::new(id, 0, "test"),
            to: "bob@example.test".into(),
            template: "migration-token".into(),
            account: None,
            params: [("token", "t"), ("target", "paid")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        };
        let alerts = AlertPolicy {
            admins: vec![],
            min_severity: Severity::Warning,
        };
        let d = decide(
            n.mailer.composer(),
            &alerts,
            &NotifierInput::Request(request),
        );
        d.intent_as::<Mail>().unwrap().clone()
    }

    #[tokio::test]
    async fn notifier_a_rerun_never_sends_again() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path());
        let (sent, sending) = (mail(&n, "e-sent"), mail(&n, "e-sending"));
        n.sent.sending("e-sent").unwrap();
        n.sent.sent("e-sent").unwrap();
        n.sent.sending("e-sending").unwrap();
        // Either would fail to connect (Temporary) if it were tried.
        assert!(matches!(n.carry_out(&sent).await, Outcome::Ignored));
        assert!(matches!(n.carry_out(&sending).await, Outcome::Ignored));
        assert_eq!(n.sent.mark("e-sent").unwrap(), Mark::Sent);
        assert_eq!(n.sent.mark("e-sending").unwrap(), Mark::Sending);
    }

    #[tokio::test]
    async fn notifier_relay_down_is_temporary_and_leaves_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path());
        let m = mail(&n, "e-down");
        match n.carry_out(&m).await {
            Outcome::Temporary(reason) => {
                assert!(reason.contains("bob@example.test"), "{reason}");
                assert!(reason.contains("connect"), "{reason}");
                assert!(!reason.contains("paid"), "no parameter in it: {reason}");
            }
            other => panic!("expected Temporary, got {other:?}"),
        }
        assert_eq!(n.sent.mark("e-down").unwrap(), Mark::New);
    }
}
