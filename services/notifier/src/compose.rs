//! Composing a notice: the rendered template into an RFC 5322 message,
//! with lettre's builder (which encodes and folds every header, so no
//! parameter can add one). Pure: the same inputs give the same bytes.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lettre::{
    address::Envelope,
    message::{
        header::{HeaderName, HeaderValue},
        Mailbox, SinglePart,
    },
    Address, Message,
};
use sha2::{Digest, Sha256};

use super::{config::Addresses, error::NotifierError, templates::Templates};

/// What a notice is made from, besides the template's parameters.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    pub to: &'a [Mailbox],
    pub template: &'a str,
    /// What the Message-ID is derived from (the input event id), so that a
    /// resend of the same notice is recognisable.
    pub seed: &'a str,
    /// The `Date:`: the input's event time, ms since the epoch.
    pub date_ms: i64,
}

/// Renders templates into messages from the configured sender.
#[derive(Debug, Clone)]
pub struct Composer {
    templates: Templates,
    from: Mailbox,
    return_path: Option<Address>,
}

impl Composer {
    pub fn new(templates: Templates, addresses: &Addresses) -> Self {
        Self {
            templates,
            from: addresses.from.clone(),
            return_path: addresses.return_path.clone(),
        }
    }

    /// The templates this composer renders.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The whole message, or what makes it impossible (none of these
    /// errors gets better on retry).
    pub fn compose(
        &self,
        letter: &Letter<'_>,
        params: &BTreeMap<String, String>,
    ) -> Result<Message, NotifierError> {
        let rendered = self.templates.render(letter.template, params)?;
        if letter.to.is_empty() {
            return Err(NotifierError::NoRecipient);
        }
        let date = event_time(letter.date_ms)?;
        let envelope = Envelope::new(
            self.return_path.clone(),
            letter.to.iter().map(|m| m.email.clone()).collect(),
        )
        .map_err(|e| NotifierError::Build(e.to_string()))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(rendered.subject)
            .message_id(Some(message_id(letter.seed, &self.from)))
            .date(date)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .envelope(envelope);
        for to in letter.to {
            builder = builder.to(to.clone());
        }
        builder
            .singlepart(SinglePart::plain(rendered.body))
            .map_err(|e| NotifierError::Build(e.to_string()))
    }
}

/// `<hash.notice@from-domain>`: the first 128 bits of the seed's SHA-256,
/// so that the same event always gives the same Message-ID (the seed may
/// hold characters a Message-ID cannot).
pub fn message_id(seed: &str, from: &Mailbox) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}.notice@{}>", from.email.domain())
}

/// Parse a recipient, naming it when it is not an address.
pub fn recipient(value: &str) -> Result<Mailbox, NotifierError> {
    value
        .parse::<Mailbox>()
        .map_err(|e| NotifierError::Recipient {
            value: value.to_string(),
            reason: e.to_string(),
        })
}

fn event_time(ms: i64) -> Result<SystemTime, NotifierError> {
    let ms = u64::try_from(ms).map_err(|_| NotifierError::Time(ms))?;
    Ok(UNIX_EPOCH + Duration::from_millis(ms))
}
