//! The API's request metrics: `mailfleet_api_requests_total{route,status}`
//! and `mailfleet_api_request_duration_seconds{route}`, recorded by one
//! middleware around every route (the bearer check and the fallback
//! included). The TLS handshake failures are counted by [`super::https`].
//!
//! `route` is the method and the route's pattern (`PUT /accounts/{account}/quota`),
//! never the raw path: an address in a label would make one series per
//! account. Anything that is not one of [`ROUTES`] (no such path, or an
//! unusual method) is `unmatched`, so a client cannot grow the label set.
//! The pattern is found here ([`route_label`]) rather than from axum's
//! `MatchedPath`, which needs an axum feature the workspace leaves off.

use std::time::Instant;

use axum::{extract::Request, middleware::Next, response::Response};
use mailfleet_runtime::metrics as m;

/// Every route the router serves, with the status of its success: the
/// series initialised at 0 at start.
pub const ROUTES: &[(&str, u16)] = &[
    ("GET /ready", 200),
    ("POST /accounts", 201),
    ("GET /accounts/{account}", 200),
    ("POST /accounts/{account}/logins", 200),
    ("PUT /accounts/{account}/quota", 200),
    ("PUT /accounts/{account}/plan", 200),
    ("POST /accounts/{account}/block", 200),
    ("POST /accounts/{account}/unblock", 200),
    ("POST /accounts/{account}/reactivate", 200),
    ("POST /accounts/{account}/spam", 200),
];

/// The `route` of a request that matched none of [`ROUTES`].
pub const UNMATCHED: &str = "unmatched";

/// Put each route's success series and each TLS handshake failure
/// reason at 0, so that `rate()` and alerts see them before the first
/// request (the handshake series stay 0 without `[api.tls]`).
pub fn init() {
    for (route, status) in ROUTES {
        metrics::counter!(m::API_REQUESTS, "route" => *route, "status" => status.to_string())
            .increment(0);
    }
    for failure in super::https::Failure::ALL {
        metrics::counter!(m::API_TLS_HANDSHAKE_FAILURES, "reason" => failure.label()).increment(0);
    }
}

/// The `route` label of a `method` request to `path`: the one of
/// [`ROUTES`] it matches, where a `{…}` segment matches any non-empty one.
pub fn route_label(method: &str, path: &str) -> &'static str {
    ROUTES
        .iter()
        .map(|(r, _)| *r)
        .find(|r| {
            r.split_once(' ')
                .is_some_and(|(m, p)| m == method && matches(p, path))
        })
        .unwrap_or(UNMATCHED)
}

fn matches(pattern: &str, path: &str) -> bool {
    let (mut want, mut got) = (pattern.split('/'), path.split('/'));
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// Count the request by route and status, and time it.
pub async fn record(req: Request, next: Next) -> Response {
    let route = route_label(req.method().as_str(), req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::API_REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(m::API_REQUEST_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_route_label_is_the_pattern_or_unmatched() {
        assert_eq!(
            route_label("PUT", "/accounts/bob@x.test/quota"),
            "PUT /accounts/{account}/quota"
        );
        assert_eq!(
            route_label("GET", "/accounts/bob@x.test"),
            "GET /accounts/{account}"
        );
        assert_eq!(route_label("POST", "/accounts"), "POST /accounts");
        assert_eq!(route_label("GET", "/ready"), "GET /ready");
        for (method, path) in [
            ("DELETE", "/accounts"),
            ("POST", "/accounts/"),
            ("GET", "/accounts//quota"),
            ("PUT", "/accounts/bob@x.test/quota/x"),
            ("GET", "/metrics"),
            ("BREW", "/ready"),
        ] {
            assert_eq!(route_label(method, path), UNMATCHED, "{method} {path}");
        }
    }
}
