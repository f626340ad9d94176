//! The notifier effector: notices (`NotificationRequested` on
//! `notify.requests`) and admin alerts (`AdminAlert` on `admin.alerts`) as
//! mail, over SMTP to the configured relay (Postfix).
//!
//! `decide` ([`decide::decide`]) is pure: it renders the template
//! ([`templates`]) and composes the whole message ([`compose`]: plain
//! text, UTF-8, `Date:` = the event time, `Message-ID:` derived from the
//! event id, `Auto-Submitted: auto-generated`) and hands it to the effect
//! as a [`decide::Mail`] intent. A notice that can never be sent (unknown
//! template, missing parameter, bad address) is dead-lettered with the
//! reason, before anything is sent. Alerts below `min_alert_severity` are
//! ignored. The effect ([`effects`]) sends the message ([`mailer`]).
//! Every failure is a [`NotifierError`]; the built-in templates are the
//! files in this crate's `templates/` folder.
//!
//! # Guarantee: at most once
//!
//! The runtime runs an effect again when a crash falls between the effect
//! and the commit of its offset, and a replay from scratch (state reset,
//! partition taken over) decides every input again. A mail cannot be
//! taken back, so the notifier chooses *at most once* and keeps a durable
//! [`sent_log`] keyed by the input's event id, outside the consumer's
//! state:
//! - before the SMTP transaction it writes `sending` (fsynced), after the
//!   relay's 250 to the message it writes `sent`;
//! - an input whose marker says `sent` is skipped (`Outcome::Ignored`,
//!   metric `mailfleet_notifier_duplicates_total`);
//! - an input whose marker says `sending` is **not** sent again: the
//!   transaction may have ended with the mail accepted. It is counted
//!   (`mailfleet_notifier_unknown_outcome_total`) and logged as a warning
//!   naming the event id; the Message-ID in the relay's log settles it.
//!   The same holds when the connection drops after the message was
//!   handed over, before the relay's reply;
//! - a failure known to have sent nothing clears the marker: relay down,
//!   a 4xx, or a dropped connection before the end of DATA is
//!   `Outcome::Temporary` (the partition waits and retries); a 5xx to the
//!   transaction is `Outcome::Permanent`, dead-lettered naming the
//!   recipient and the reply.
//!
//! Precondition: the sent-log survives what the state does not (it lives
//! beside the state folder, `<runtime.data_dir>/notifier-sent` by
//! default) and every process of a notifier fleet sees the same one, as
//! a partition may move between them. A lost sent-log turns a replay into
//! resends; the Message-ID (the same for the same event) lets a reader or
//! a filter recognise them.

mod compose;
mod config;
pub mod decide;
mod effects;
mod error;
mod mailer;
pub mod metrics;
mod sent_log;
mod templates;
#[cfg(test)]
mod tests;

use std::path::Path;

use mailfleet_runtime::{Consumer, Decision, Input, Outcome, StateError, StateView, Verdict};

pub use compose::{message_id, Composer, Letter};
pub use config::{Addresses, NotifierConfig, RelaySecurity, Severity};
pub use decide::{Mail, NotifierInput};
pub use error::NotifierError;
pub use mailer::{Mailer, Stage};
pub use sent_log::{Mark, SentLog};
pub use templates::{Rendered, Templates};

/// The consumer's name: its metrics label, output ids and store folder.
pub const NAME: &str = "notifier";

/// The notifier consumer.
pub struct Notifier {
    mailer: Mailer,
    alerts: decide::AlertPolicy,
    sent: SentLog,
}

impl Notifier {
    /// Check the config, load the templates and open the sent-log.
    pub fn new(cfg: &NotifierConfig, sent_log_dir: &Path) -> Result<Notifier, NotifierError> {
        let mailer = Mailer::new(cfg)?;
        let addresses = cfg.addresses().map_err(NotifierError::Config)?;
        let sent = SentLog::open(sent_log_dir)?;
        // Exported from the start, so that alerts on failures have a series.
        for name in mailer.composer().templates().names() {
            let template = name.to_string();
            ::metrics::counter!(metrics::SENT, "template" => template.clone()).increment(0);
            ::metrics::counter!(metrics::DUPLICATES, "template" => template.clone()).increment(0);
            for kind in ["rejected", "refused", "deferred"] {
                ::metrics::counter!(metrics::FAILED, "template" => template.clone(), "kind" => kind)
                    .increment(0);
            }
            ::metrics::counter!(metrics::UNKNOWN, "template" => template).increment(0);
        }
        if addresses.admins.is_empty() {
            tracing::warn!("consumers.notifier.admins is empty: admin alerts are not mailed");
        }
        Ok(Notifier {
            mailer,
            alerts: decide::AlertPolicy {
                admins: addresses.admins,
                min_severity: cfg.min_alert_severity,
            },
            sent,
        })
    }
}

impl Consumer for Notifier {
    type Event = NotifierInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        _state: &StateView<'_>,
        input: &Input<NotifierInput>,
    ) -> Result<Decision, StateError> {
        let d = decide::decide(self.mailer.composer(), &self.alerts, &input.event);
        // The runtime logs the dead letter with its reason; count it here.
        if let Verdict::Reject(_) = &d.verdict {
            let template = decide::template_label(self.mailer.composer(), &input.event);
            ::metrics::counter!(metrics::FAILED, "template" => template.to_string(),
                "kind" => "rejected")
            .increment(1);
        }
        Ok(d)
    }

    fn has_effects(&self) -> bool {
        true
    }

    async fn effect(&self, _input: &Input<NotifierInput>, decision: &Decision) -> Outcome {
        match decision.intent_as::<Mail>() {
            Some(mail) => self.carry_out(mail).await,
            None => Outcome::Done,
        }
    }
}

/// The notifier as `mailfleet run notifier` runs it; its sent log lives
/// in the runtime's data folder unless the config says where.
pub async fn build(
    cfg: &NotifierConfig,
    wiring: &mailfleet_runtime::Wiring,
) -> Result<Notifier, mailfleet_runtime::RuntimeError> {
    Notifier::new(cfg, &cfg.sent_log_dir(&wiring.runtime.data_dir))
        .map_err(|e| mailfleet_runtime::RuntimeError::InvalidConfig(vec![e.to_string()]))
}
