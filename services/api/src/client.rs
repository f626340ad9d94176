//! A small client of the account API (hyper's pooled HTTP/1 client, over
//! rustls for an `https://` base), for the `mailfleet account` CLI and
//! the tests. A 4xx answer is an [`ApiError::Refused`] carrying the API's
//! own message, so the CLI can print it as it is and exit 2. A server
//! certificate that does not verify is an [`ApiError::Tls`] naming the
//! URL and rustls's reason.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, body::Incoming, header, Method, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use mailfleet_tls::ClientTls;
use serde::{de::DeserializeOwned, Serialize};

use super::{
    errors::ApiError,
    https::rustls_error,
    wire::{
        AccountView, BlockRequest, ErrorBody, LearnAnswer, LoginRequest, PlanRequest, QuotaRequest,
        ReactivateRequest, Readiness, RegisterRequest, Secret, UnblockRequest,
    },
};

/// How long one request may take (a registration hashes for well under a
/// second; Kafka acknowledges within the server's own timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<Secret>,
    http: Transport,
}

/// Plain HTTP, or HTTPS with the server's certificate verified.
#[derive(Clone)]
enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Transport {
    async fn request(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Self::Plain(client) => client.request(req).await,
            Self::Tls(client) => client.request(req).await,
        }
    }
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:8080`, or
    /// `https://` trusting the system's roots), sending `token` as a
    /// bearer token if given.
    pub fn new(base: &str, token: Option<Secret>) -> Result<Self, ApiError> {
        Self::with_tls(base, token, &ClientTls::default())
    }

    /// [`Self::new`] with `tls` for an `https://` base: the CAs it
    /// trusts and the certificate it shows (ignored for `http://`).
    pub fn with_tls(base: &str, token: Option<Secret>, tls: &ClientTls) -> Result<Self, ApiError> {
        let base = base.trim_end_matches('/').to_string();
        let bad = |reason: &str| ApiError::BadUrl {
            url: base.clone(),
            reason: reason.to_string(),
        };
        let uri: Uri = base.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.host().is_none() {
            return Err(bad("must be http://host:port or https://host:port"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("must have no path"));
        }
        let builder = Client::builder(TokioExecutor::new());
        let http = match uri.scheme_str() {
            Some("http") => Transport::Plain(builder.build_http()),
            Some("https") => {
                let config = tls.config().map_err(ApiError::ClientTls)?;
                let mut tcp = HttpConnector::new();
                tcp.enforce_http(false);
                Transport::Tls(builder.build(HttpsConnector::from((tcp, config))))
            }
            _ => return Err(bad("must be http://host:port or https://host:port")),
        };
        Ok(Self { base, token, http })
    }

    /// `GET /ready`.
    pub async fn ready(&self) -> Result<Readiness, ApiError> {
        let (status, body) = self.send(Method::GET, "/ready", None).await?;
        self.decode(status, &body)
    }

    /// `POST /accounts`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<AccountView, ApiError> {
        self.call(Method::POST, "/accounts", Some(req)).await
    }

    /// `GET /accounts/{account}`.
    pub async fn show(&self, account: &str) -> Result<AccountView, ApiError> {
        let path = account_path(account, "");
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `POST /accounts/{account}/logins`.
    pub async fn login(&self, account: &str, req: &LoginRequest) -> Result<AccountView, ApiError> {
        let path = account_path(account, "/logins");
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `PUT /accounts/{account}/quota`.
    pub async fn set_quota(
        &self,
        account: &str,
        quota_bytes: Option<i64>,
    ) -> Result<AccountView, ApiError> {
        let path = account_path(account, "/quota");
        self.call(Method::PUT, &path, Some(&QuotaRequest { quota_bytes }))
            .await
    }

    /// `PUT /accounts/{account}/plan`.
    pub async fn set_plan(&self, account: &str, plan: &str) -> Result<AccountView, ApiError> {
        let path = account_path(account, "/plan");
        let req = PlanRequest {
            plan: plan.to_string(),
        };
        self.call(Method::PUT, &path, Some(&req)).await
    }

    /// `POST /accounts/{account}/block`.
    pub async fn block(&self, account: &str, req: &BlockRequest) -> Result<AccountView, ApiError> {
        let path = account_path(account, "/block");
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `POST /accounts/{account}/unblock`.
    pub async fn unblock(
        &self,
        account: &str,
        req: &UnblockRequest,
    ) -> Result<AccountView, ApiError> {
        let path = account_path(account, "/unblock");
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `POST /accounts/{account}/reactivate`.
    pub async fn reactivate(
        &self,
        account: &str,
        req: &ReactivateRequest,
    ) -> Result<AccountView, ApiError> {
        let path = account_path(account, "/reactivate");
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `POST /accounts/{account}/spam?class=<class>[&folder=<folder>]`
    /// with the raw `message` (`message/rfc822`).
    pub async fn learn(
        &self,
        account: &str,
        class: &str,
        folder: Option<&str>,
        message: Vec<u8>,
    ) -> Result<LearnAnswer, ApiError> {
        let mut path = account_path(account, "/spam?class=");
        encode(class, &mut path);
        if let Some(folder) = folder {
            path.push_str("&folder=");
            encode(folder, &mut path);
        }
        let body = Some((message, "message/rfc822"));
        let (status, answer) = self.exchange(Method::POST, &path, body).await?;
        if status.is_success() {
            self.decode(status, &answer)
        } else {
            Err(refusal(status, &answer))
        }
    }

    /// One request with a JSON body; the success body decoded, an error
    /// answer turned into an [`ApiError`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::Decode {
                url: self.base.clone(),
                status: 0,
                reason: format!("encoding the request: {e}"),
            })?;
        let (status, answer) = self.send(method, path, bytes).await?;
        if status.is_success() {
            self.decode(status, &answer)
        } else {
            Err(refusal(status, &answer))
        }
    }

    /// One raw request with a JSON body: the status and body, whatever
    /// the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let body = body.map(|b| (b, "application/json"));
        self.exchange(method, path, body).await
    }

    /// One raw request with a body of its content type.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| ApiError::Unreachable {
            url: url.clone(),
            reason,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::ACCEPT, "application/json");
        if let Some((_, content_type)) = &body {
            req = req.header(header::CONTENT_TYPE, *content_type);
        }
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|(b, _)| b).unwrap_or_default(),
            )))
            .map_err(|e| ApiError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| match rustls_error(&e) {
                    Some(tls) => ApiError::Tls {
                        url: url.clone(),
                        reason: tls.to_string(),
                    },
                    None => unreachable(chain(&e)),
                })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }

    fn decode<T: DeserializeOwned>(&self, status: StatusCode, body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::Decode {
            url: self.base.clone(),
            status: status.as_u16(),
            reason: e.to_string(),
        })
    }
}

/// An error answer: the API's JSON message, or its text if not JSON.
fn refusal(status: StatusCode, body: &[u8]) -> ApiError {
    let (message, rules) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error, e.rules),
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            let shown = if text.is_empty() {
                status.to_string()
            } else {
                text
            };
            (shown, Vec::new())
        }
    };
    if status.is_client_error() {
        ApiError::Refused {
            status: status.as_u16(),
            message,
            rules,
        }
    } else {
        ApiError::Failed {
            status: status.as_u16(),
            message,
        }
    }
}

/// An error with its sources, for "connection refused" to show.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// `/accounts/<account><rest>` with the account percent-encoded (all but
/// letters, digits, `-._~@`), so `+`, `/`, `?`, `#` and `%` survive.
pub fn account_path(account: &str, rest: &str) -> String {
    let mut out = String::from("/accounts/");
    encode(account, &mut out);
    out.push_str(rest);
    out
}

/// `value` percent-encoded (all but letters, digits, `-._~@`), for a path
/// segment or a query value.
fn encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_client_encodes_accounts_in_paths() {
        assert_eq!(
            account_path("a+b/c?d@x.test", "/logins"),
            "/accounts/a%2Bb%2Fc%3Fd@x.test/logins"
        );
    }

    #[test]
    fn api_client_checks_the_base_url_and_its_tls_files() {
        assert!(ApiClient::new("http://127.0.0.1:8080/", None).is_ok());
        for bad in ["ftp://127.0.0.1:8080", "127.0.0.1:8080", "http://h:1/api"] {
            let err = ApiClient::new(bad, None).err().expect(bad).to_string();
            assert!(err.contains(bad.trim_end_matches('/')), "{err}");
        }
        let missing = ClientTls {
            ca_file: Some("/no/such/ca.pem".into()),
            ..ClientTls::default()
        };
        let err = ApiClient::with_tls("https://127.0.0.1:8443", None, &missing)
            .err()
            .expect("a missing CA file")
            .to_string();
        assert!(
            err.contains("api.client") && err.contains("/no/such/ca.pem"),
            "{err}"
        );
        // http:// uses no TLS, so its files are not read.
        assert!(ApiClient::with_tls("http://127.0.0.1:8080", None, &missing).is_ok());
    }

    #[test]
    fn api_client_turns_answers_into_errors_with_the_api_message() {
        let body = br#"{"error":"weak password: ...","rules":["digit"]}"#;
        match refusal(StatusCode::UNPROCESSABLE_ENTITY, body) {
            ApiError::Refused {
                status,
                message,
                rules,
            } => {
                assert_eq!((status, message.as_str()), (422, "weak password: ..."));
                assert_eq!(rules, ["digit"]);
            }
            other => panic!("{other:?}"),
        }
        let err = refusal(StatusCode::PAYLOAD_TOO_LARGE, b"length limit exceeded");
        assert_eq!(err.to_string(), "length limit exceeded");
        let err = refusal(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(err.answer_status(), Some(503));
        assert!(matches!(err, ApiError::Failed { .. }));
    }
}
