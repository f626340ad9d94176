//! The learn route, `POST /accounts/{account}/spam?class=spam|ham&folder=<folder>`:
//! a user's judgement on one message (the raw message is the body,
//! `Content-Type: message/rfc822`), taught to rspamd's controller and
//! recorded as a `SpamLearned` on `[api.spam] topic`, keyed by the
//! account, with `requested_by = "api"`.
//!
//! The teaching itself is `mailfleet_scan::rspamd::learn`, the same step
//! `mailfleet spam learn` takes: the bytes go to the blob store first,
//! then to rspamd; the answer waits for Kafka's acknowledgement of the
//! event. rspamd or Kafka not answering is a 503 and nothing is recorded
//! (rspamd may have learned it; asking again gets `already-learned`).
//! Without `[api.spam]` the route answers 404 and no blob store is opened.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use mailfleet_blob::BlobStore;
use mailfleet_events::mail::{LearnOutcome, SpamClass};
use mailfleet_runtime::{producer::EventProducer, time::now_ms};
use mailfleet_scan::rspamd::learn::{
    class_name, default_folder, folder_problem, parse_class, LearnConfig, LearnError, Lesson,
    Teacher,
};
use serde::Deserialize;

use super::{
    address::normalise,
    decide,
    errors::ApiError,
    state::{AppState, Writer, PRODUCER},
    wire::LearnAnswer,
};

/// What the learn route needs: the teacher (rspamd and the blob store)
/// and the producer of `SpamLearned`.
pub struct Learning {
    teacher: Teacher,
    writer: Writer,
    controller: String,
    /// The route's body limit, bytes.
    pub max_message_bytes: usize,
}

impl Learning {
    /// The learned topic's writer and a blob store: the folder
    /// `cfg.blobs_dir` names, else the host's store `host`.
    pub fn open(
        cfg: &LearnConfig,
        host: Option<Arc<BlobStore>>,
        producer: EventProducer,
        ack_timeout: Duration,
    ) -> Result<Self, ApiError> {
        let blobs = match (&cfg.blobs_dir, host) {
            (Some(dir), _) => Arc::new(BlobStore::open(dir).map_err(|source| ApiError::Blobs {
                dir: dir.clone(),
                source,
            })?),
            (None, Some(host)) => host,
            (None, None) => return Err(ApiError::BlobsUnset),
        };
        Ok(Self {
            teacher: Teacher::new(cfg, blobs, PRODUCER),
            writer: Writer::new(producer, &cfg.topic, ack_timeout),
            controller: cfg.controller.clone(),
            max_message_bytes: cfg.max_message_bytes,
        })
    }
}

/// The query of the learn route.
#[derive(Debug, Deserialize)]
pub struct LearnQuery {
    /// `spam` or `ham`.
    class: Option<String>,
    /// The folder the user moved the message to; default `Spam` for
    /// spam, `INBOX` for ham.
    folder: Option<String>,
}

/// `POST /accounts/{account}/spam`: 200 with what rspamd said, 400 for a
/// bad class, folder, address or an empty body, 404 (no account, or no
/// `[api.spam]`), 409 (being deleted), 503 (rspamd or Kafka).
pub async fn learn(
    State(s): State<Arc<AppState>>,
    Path(raw): Path<String>,
    query: Result<Query<LearnQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<LearnAnswer>, ApiError> {
    let learning = s.learning.as_ref().ok_or(ApiError::LearningOff)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let class = class_of(query.class.as_deref())?;
    let account = normalise(&raw)?;
    let folder = query
        .folder
        .unwrap_or_else(|| default_folder(class).to_string());
    if let Some(problem) = folder_problem(&folder) {
        return Err(ApiError::BadRequest(problem));
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the body (the message) is empty".into(),
        ));
    }
    s.ready()?;
    decide::may_change(&decide::existing(&account, s.projection.get(&account))?)?;
    let lesson = Lesson {
        account: &account,
        folder: &folder,
        file: "",
        class,
        requested_by: PRODUCER,
    };
    let event = learning
        .teacher
        .teach(&lesson, body.to_vec(), now_ms())
        .await
        .map_err(|e| failed(e, &learning.controller))?;
    learning.writer.send(&account, &event).await?;
    tracing::info!(%account, class = class_name(class), outcome = ?event.outcome,
        blob_id = %event.blob_id, "spam learned");
    Ok(Json(LearnAnswer {
        account,
        class: class_name(class).into(),
        folder,
        outcome: outcome_name(event.outcome).into(),
        blob_id: event.blob_id,
        event_id: event.envelope.event_id,
        detail: event.detail,
    }))
}

/// The class of the query: 400 naming it unless `spam` or `ham`.
fn class_of(given: Option<&str>) -> Result<SpamClass, ApiError> {
    let given = given.ok_or_else(|| {
        ApiError::BadRequest("class is missing: add ?class=spam or ?class=ham".into())
    })?;
    parse_class(given)
        .ok_or_else(|| ApiError::BadRequest(format!("class {given:?}: must be spam or ham")))
}

/// rspamd not answering is a 503; a blob store failure is this host's.
fn failed(e: LearnError, controller: &str) -> ApiError {
    match e {
        LearnError::Teach(source) => ApiError::Rspamd {
            controller: controller.to_string(),
            reason: source.to_string(),
        },
        LearnError::Class(_) => ApiError::BadRequest(e.to_string()),
        other => ApiError::Internal(super::client::chain(&other)),
    }
}

/// The API's word for an outcome.
pub fn outcome_name(outcome: LearnOutcome) -> &'static str {
    match outcome {
        LearnOutcome::Learned => "learned",
        LearnOutcome::AlreadyLearned => "already-learned",
        LearnOutcome::Refused => "refused",
        LearnOutcome::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn api_learn_class_is_required_and_named_when_bad() {
        assert_eq!(class_of(Some("spam")).unwrap(), SpamClass::Spam);
        assert_eq!(class_of(Some("Ham")).unwrap(), SpamClass::Ham);
        let e = class_of(Some("eggs")).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "class \"eggs\": must be spam or ham");
        assert!(class_of(None)
            .unwrap_err()
            .to_string()
            .contains("?class=spam"));
    }

    #[test]
    fn api_learn_rspamd_down_is_503_and_names_the_controller() {
        let e = failed(
            LearnError::Teach(mailfleet_scan::rspamd::RspamdError::Timeout {
                address: "127.0.0.1:11334".into(),
                after_ms: 100,
                tries: 2,
            }),
            "127.0.0.1:11334",
        );
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("127.0.0.1:11334"), "{e}");
        assert_eq!(
            outcome_name(LearnOutcome::AlreadyLearned),
            "already-learned"
        );
    }
}
