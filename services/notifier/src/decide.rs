//! The notifier's pure decision: which mail an input means, fully
//! composed, handed to the effect as a [`Mail`] intent. A notice that can
//! never be sent (unknown template, missing parameter, bad address) is
//! rejected here, so it is dead-lettered with its reason before anything
//! is sent.

use std::collections::BTreeMap;

use lettre::{message::Mailbox, Message};
use mailfleet_events::{
    admin::{AdminAlert, AlertSeverity},
    notify::NotificationRequested,
    Envelope,
};
use mailfleet_runtime::Decision;

use super::{
    compose::{recipient, Composer, Letter},
    config::Severity,
    error::NotifierError,
};

/// The template admin alerts are rendered with.
pub const ALERT_TEMPLATE: &str = "admin-alert";

mailfleet_runtime::inputs! {
    /// What the notifier reads; another event on a shared topic is
    /// `Other`: not for this consumer.
    #[derive(Debug)]
    pub enum NotifierInput {
        Request(NotificationRequested),
        Alert(AdminAlert),
        _ => Other,
    }
}

/// The effect's plan: one composed message.
#[derive(Clone)]
pub struct Mail {
    /// The input's event id: the sent-log key and the Message-ID seed.
    pub event_id: String,
    /// The template, for metrics and logs.
    pub template: String,
    /// The recipients, for logs and errors.
    pub to: Vec<String>,
    pub message: Message,
}

/// Without the message: its body may hold a secret.
impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("event_id", &self.event_id)
            .field("template", &self.template)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// Who gets alerts, and from which severity on.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    pub admins: Vec<Mailbox>,
    pub min_severity: Severity,
}

/// Decide one input: a [`Mail`] intent, an ignore, or a rejection naming
/// why the notice can never be sent.
pub fn decide(composer: &Composer, alerts: &AlertPolicy, input: &NotifierInput) -> Decision {
    let outcome = match input {
        NotifierInput::Request(n) => request(composer, n),
        NotifierInput::Alert(a) => match alert_wanted(alerts, a) {
            true => alert(composer, alerts, a),
            false => return Decision::ignore(),
        },
        NotifierInput::Other(_) => return Decision::ignore(),
    };
    match outcome {
        Ok(mail) => {
            let mut d = Decision::apply();
            d.intend(mail);
            d
        }
        Err(e) => Decision::reject(e.to_string()),
    }
}

/// The template a rejected input was for, as a metrics label: only known
/// names, so a flood of bad names cannot grow the label set.
pub fn template_label<'a>(composer: &Composer, input: &'a NotifierInput) -> &'a str {
    let name = match input {
        NotifierInput::Request(n) => n.template.as_str(),
        NotifierInput::Alert(_) => ALERT_TEMPLATE,
        NotifierInput::Other(_) => "other",
    };
    if composer.templates().contains(name) {
        name
    } else {
        "unknown"
    }
}

fn request(composer: &Composer, n: &NotificationRequested) -> Result<Mail, NotifierError> {
    let id = event_id(&n.envelope)?;
    let to = [recipient(&n.to)?];
    let mut params = n.params.clone();
    // Every notice may name its recipient and account; the event's own
    // parameters win.
    let account = n.account.clone().unwrap_or_else(|| n.to.clone());
    params.entry("account".into()).or_insert(account);
    params.entry("to".into()).or_insert_with(|| n.to.clone());
    let letter = Letter {
        to: &to,
        template: &n.template,
        seed: id,
        date_ms: n.envelope.event_time,
    };
    mail(composer, &letter, &params, vec![n.to.clone()]).map_err(|e| NotifierError::Notice {
        id: id.to_string(),
        to: n.to.clone(),
        source: Box::new(e),
    })
}

fn alert(composer: &Composer, alerts: &AlertPolicy, a: &AdminAlert) -> Result<Mail, NotifierError> {
    let id = event_id(&a.envelope)?;
    let params = BTreeMap::from([
        (
            "severity".to_string(),
            severity_name(a.severity).to_string(),
        ),
        ("kind".to_string(), a.kind.clone()),
        (
            "account".to_string(),
            a.account.clone().unwrap_or_else(|| "-".into()),
        ),
        ("summary".to_string(), a.summary.clone()),
        ("detail".to_string(), a.detail.clone().unwrap_or_default()),
        ("event_id".to_string(), id.to_string()),
    ]);
    let letter = Letter {
        to: &alerts.admins,
        template: ALERT_TEMPLATE,
        seed: id,
        date_ms: a.envelope.event_time,
    };
    let to = alerts.admins.iter().map(|m| m.email.to_string()).collect();
    mail(composer, &letter, &params, to).map_err(|e| NotifierError::Alert {
        id: id.to_string(),
        kind: a.kind.clone(),
        source: Box::new(e),
    })
}

fn mail(
    composer: &Composer,
    letter: &Letter<'_>,
    params: &BTreeMap<String, String>,
    to: Vec<String>,
) -> Result<Mail, NotifierError> {
    Ok(Mail {
        event_id: letter.seed.to_string(),
        template: letter.template.to_string(),
        to,
        message: composer.compose(letter, params)?,
    })
}

/// Whether an alert is mailed: someone to mail, and severe enough. An
/// alert of a severity this reader does not know is mailed: a newer
/// writer's level is more likely urgent than not.
fn alert_wanted(alerts: &AlertPolicy, a: &AdminAlert) -> bool {
    let severity = match a.severity {
        AlertSeverity::Info => Severity::Info,
        AlertSeverity::Warning => Severity::Warning,
        AlertSeverity::Critical | AlertSeverity::Unknown => Severity::Critical,
    };
    !alerts.admins.is_empty() && severity >= alerts.min_severity
}

fn severity_name(s: AlertSeverity) -> &'static str {
    match s {
        AlertSeverity::Info => "INFO",
        AlertSeverity::Warning => "WARNING",
        AlertSeverity::Critical => "CRITICAL",
        AlertSeverity::Unknown => "UNKNOWN",
    }
}

/// The id the sent-log and the Message-ID hang on; an event without one
/// cannot be sent at most once.
fn event_id(envelope: &Envelope) -> Result<&str, NotifierError> {
    match envelope.event_id.as_str() {
        "" => Err(NotifierError::NoEventId),
        id => Ok(id),
    }
}
