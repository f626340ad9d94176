//! The routes and their handlers. Each write: check the projection under
//! the account's lock, produce the event and wait for Kafka's
//! acknowledgement, apply it to the projection, answer. Nothing is
//! answered from the projection before it has caught up (503).

use std::{net::IpAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request, State},
    http::{header::AUTHORIZATION, Method, StatusCode, Uri},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, put},
    Json, Router,
};
use mailfleet_events::accounts::{
    AccountBlocked, AccountReactivated, AccountRegistered, AccountUnblocked, LoginChannel,
    LoginFailed, LoginRecorded, PlanChanged, QuotaChanged,
};
use mailfleet_password as password;
use serde::de::DeserializeOwned;

use super::{
    address::normalise,
    decide,
    errors::ApiError,
    projection::{Account, AccountEvent},
    state::AppState,
    wire::{
        AccountView, BlockRequest, LoginRequest, PlanRequest, QuotaRequest, ReactivateRequest,
        Readiness, RegisterRequest, UnblockRequest,
    },
};

type Shared = Arc<AppState>;
type Answer = Result<Json<AccountView>, ApiError>;
/// Who an unblock or reactivation is recorded as when the body names no one.
const DEFAULT_BY: &str = "admin";
/// Longest display name, characters.
const MAX_DISPLAY_NAME: usize = 256;

/// The API's routes; every `/accounts` route checks the bearer token.
pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    let learn_limit = state
        .learning
        .as_ref()
        .map_or(max_body_bytes, |l| l.max_message_bytes);
    let accounts = Router::new()
        .route("/accounts", post(register))
        .route("/accounts/{account}", get(show))
        .route("/accounts/{account}/logins", post(login))
        .route("/accounts/{account}/quota", put(quota))
        .route("/accounts/{account}/plan", put(plan))
        .route("/accounts/{account}/block", post(block))
        .route("/accounts/{account}/unblock", post(unblock))
        .route("/accounts/{account}/reactivate", post(reactivate))
        .route(
            "/accounts/{account}/spam",
            // A message, not a JSON body: its own, larger limit.
            post(super::learn::learn).layer(DefaultBodyLimit::max(learn_limit)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/ready", get(ready))
        .merge(accounts)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Outermost, so that refusals (401, 413, 404) are counted too.
        .layer(middleware::from_fn(super::telemetry::record))
        .with_state(state)
}

/// 401 unless the request carries the configured bearer token. The
/// comparison takes the same time wherever the tokens differ.
async fn authorize(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim();
        if !password::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// `GET /ready`: 200 once the projection has caught up, else 503.
async fn ready(State(s): State<Shared>) -> (StatusCode, Json<Readiness>) {
    let ready = s.projection.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let accounts = s.projection.len();
    (status, Json(Readiness { ready, accounts }))
}

/// `POST /accounts`: 201, 400 (address), 409 (exists), 422 (password, plan).
async fn register(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    s.ready()?;
    let req: RegisterRequest = parse(&body)?;
    let account = address(&req.account)?;
    password::check(req.password.expose()).map_err(ApiError::WeakPassword)?;
    let plan = req
        .plan
        .unwrap_or_else(|| s.plans.default_plan().to_string());
    known_plan(&s, &plan)?;
    let display_name = display_name(req.display_name)?;
    // Refuse a duplicate before the costly hash, and again under the lock.
    decide::may_register(&account, s.projection.get(&account).as_ref())?;
    let password_hash = s.hash(req.password).await?;
    let _lock = s.locks.lock(&account).await;
    decide::may_register(&account, s.projection.get(&account).as_ref())?;
    let event = AccountRegistered {
        envelope: s.envelope(),
        account: account.clone(),
        password_hash,
        plan,
        display_name,
    };
    s.writer.send(&account, &event).await?;
    s.projection.apply_own(&AccountEvent::Registered(event));
    tracing::info!(%account, "account registered");
    let view = decide::existing(&account, s.projection.get(&account))?.view();
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /accounts/{account}`: 200 or 404.
async fn show(State(s): State<Shared>, Path(raw): Path<String>) -> Answer {
    s.ready()?;
    let account = address(&raw)?;
    Ok(Json(
        decide::existing(&account, s.projection.get(&account))?.view(),
    ))
}

/// `POST /accounts/{account}/logins`: 200 (`LoginRecorded`), 401 for a
/// wrong password and 403 for an account that may not log in (each with
/// `LoginFailed`), 404. The password is checked before the status, so a
/// guesser learns nothing about the account's status.
async fn login(State(s): State<Shared>, Path(raw): Path<String>, body: Bytes) -> Answer {
    s.ready()?;
    let req: LoginRequest = parse(&body)?;
    let account = address(&raw)?;
    let ip = req.ip.map(|ip| valid_ip(&ip)).transpose()?;
    let channel = LoginChannel::from(req.channel);
    let found = decide::existing(&account, s.projection.get(&account))?;
    let failed = |reason: &str| LoginFailed {
        envelope: s.envelope(),
        account: account.clone(),
        channel,
        ip: ip.clone(),
        reason: reason.to_string(),
    };
    if let Some(secret) = req.password {
        if !s.verify(secret, &found).await? {
            let _lock = s.locks.lock(&account).await;
            s.writer.send(&account, &failed("bad-password")).await?;
            tracing::info!(%account, ?channel, "login failed: bad password");
            return Err(ApiError::BadPassword { account });
        }
    }
    let _lock = s.locks.lock(&account).await;
    let current = decide::existing(&account, s.projection.get(&account))?;
    if let Err(status) = decide::may_log_in(&current) {
        s.writer.send(&account, &failed(status)).await?;
        tracing::info!(%account, ?channel, status, "login refused");
        return Err(ApiError::LoginRefused { account, status });
    }
    let event = LoginRecorded {
        envelope: s.envelope(),
        account: account.clone(),
        channel,
        ip,
    };
    s.writer.send(&account, &event).await?;
    s.projection.apply_own(&AccountEvent::Login(event));
    Ok(Json(s.view_of(&current)))
}

/// `PUT /accounts/{account}/quota`: `QuotaChanged` (none if unchanged).
async fn quota(State(s): State<Shared>, Path(raw): Path<String>, body: Bytes) -> Answer {
    s.ready()?;
    let req: QuotaRequest = parse(&body)?;
    let account = address(&raw)?;
    if let Some(q) = req.quota_bytes.filter(|q| *q < 0) {
        return Err(ApiError::BadRequest(format!(
            "quota_bytes = {q}: must be >= 0, or null for the plan's quota"
        )));
    }
    let (_lock, current) = lock_changeable(&s, &account).await?;
    if current.quota_bytes != req.quota_bytes {
        let event = QuotaChanged {
            envelope: s.envelope(),
            account: account.clone(),
            quota_bytes: req.quota_bytes,
        };
        s.writer.send(&account, &event).await?;
        s.projection.apply_own(&AccountEvent::Quota(event));
        tracing::info!(%account, quota_bytes = ?req.quota_bytes, "quota changed");
    }
    Ok(Json(s.view_of(&current)))
}

/// `PUT /accounts/{account}/plan`: `PlanChanged` (none if unchanged);
/// 422 for a plan the storage writer does not know.
async fn plan(State(s): State<Shared>, Path(raw): Path<String>, body: Bytes) -> Answer {
    s.ready()?;
    let req: PlanRequest = parse(&body)?;
    let account = address(&raw)?;
    known_plan(&s, &req.plan)?;
    let (_lock, current) = lock_changeable(&s, &account).await?;
    if current.plan != req.plan {
        let event = PlanChanged {
            envelope: s.envelope(),
            account: account.clone(),
            plan: req.plan.clone(),
        };
        s.writer.send(&account, &event).await?;
        s.projection.apply_own(&AccountEvent::Plan(event));
        tracing::info!(%account, plan = %req.plan, "plan changed");
    }
    Ok(Json(s.view_of(&current)))
}

/// `POST /accounts/{account}/block`: 202 with `AccountBlocked`; the
/// lifecycle moves the status.
async fn block(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    s.ready()?;
    let req: BlockRequest = parse(&body)?;
    let account = address(&raw)?;
    let _lock = s.locks.lock(&account).await;
    let current = decide::existing(&account, s.projection.get(&account))?;
    decide::may_block(&current)?;
    let event = AccountBlocked {
        envelope: s.envelope(),
        account: account.clone(),
        reason: req.reason.into(),
        message_id: None,
        blob_id: None,
        detail: req.detail,
    };
    s.writer.send(&account, &event).await?;
    tracing::info!(%account, reason = ?req.reason, "block requested");
    Ok((StatusCode::ACCEPTED, Json(current.view())))
}

/// `POST /accounts/{account}/unblock`: 202 with `AccountUnblocked`.
async fn unblock(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    s.ready()?;
    let req: UnblockRequest = parse_or_default(&body)?;
    let account = address(&raw)?;
    let _lock = s.locks.lock(&account).await;
    let current = decide::existing(&account, s.projection.get(&account))?;
    decide::may_unblock(&current)?;
    let event = AccountUnblocked {
        envelope: s.envelope(),
        account: account.clone(),
        by: req.by.unwrap_or_else(|| DEFAULT_BY.into()),
        note: req.note,
    };
    s.writer.send(&account, &event).await?;
    tracing::info!(%account, by = %event.by, "unblock requested");
    Ok((StatusCode::ACCEPTED, Json(current.view())))
}

/// `POST /accounts/{account}/reactivate`: 202 with `AccountReactivated`,
/// only for an inactive account (409 naming the status otherwise).
async fn reactivate(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    s.ready()?;
    let req: ReactivateRequest = parse_or_default(&body)?;
    let account = address(&raw)?;
    let _lock = s.locks.lock(&account).await;
    let current = decide::existing(&account, s.projection.get(&account))?;
    decide::may_reactivate(&current)?;
    let event = AccountReactivated {
        envelope: s.envelope(),
        account: account.clone(),
        by: req.by.unwrap_or_else(|| DEFAULT_BY.into()),
    };
    s.writer.send(&account, &event).await?;
    tracing::info!(%account, by = %event.by, "reactivation requested");
    Ok((StatusCode::ACCEPTED, Json(current.view())))
}

/// Take `account`'s lock and check it exists and may change.
async fn lock_changeable<'s>(
    s: &'s AppState,
    account: &str,
) -> Result<(tokio::sync::MutexGuard<'s, ()>, Account), ApiError> {
    let lock = s.locks.lock(account).await;
    let current = decide::existing(account, s.projection.get(account))?;
    decide::may_change(&current)?;
    Ok((lock, current))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

/// An empty body is the request's defaults.
fn parse_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(body)
    }
}

fn address(raw: &str) -> Result<String, ApiError> {
    normalise(raw)
}

fn known_plan(s: &AppState, plan: &str) -> Result<(), ApiError> {
    if s.plans.allows(plan) {
        Ok(())
    } else {
        Err(ApiError::UnknownPlan {
            plan: plan.to_string(),
            known: s.plans.listed(),
        })
    }
}

fn valid_ip(ip: &str) -> Result<String, ApiError> {
    ip.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| ApiError::BadRequest(format!("ip {ip:?} is not an IPv4 or IPv6 address")))
}

/// Trimmed; empty is none; no control characters, at most 256 characters.
fn display_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(name) = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().any(char::is_control) || name.chars().count() > MAX_DISPLAY_NAME {
        return Err(ApiError::BadRequest(format!(
            "display_name {name:?}: at most {MAX_DISPLAY_NAME} characters, no control characters"
        )));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_request_values_are_checked_and_named() {
        assert_eq!(valid_ip(" 192.0.2.1 ").unwrap(), "192.0.2.1");
        assert_eq!(valid_ip("2001:db8::1").unwrap(), "2001:db8::1");
        let err = valid_ip("192.0.2.300").unwrap_err().to_string();
        assert!(err.contains("\"192.0.2.300\""), "{err}");
        assert_eq!(display_name(Some("  ".into())).unwrap(), None);
        assert_eq!(
            display_name(Some(" Bob ".into())).unwrap().as_deref(),
            Some("Bob")
        );
        assert!(display_name(Some("a\nb".into())).is_err());
        let err = parse::<QuotaRequest>(b"{\"quota_bytes\": \"lots\"}").unwrap_err();
        assert!(
            err.to_string().contains("request body: invalid type"),
            "{err}"
        );
        let unblock: UnblockRequest = parse_or_default(b" ").unwrap();
        assert_eq!(unblock.by, None);
        let err = address("nobody").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
