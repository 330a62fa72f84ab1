//! What a user hands to proxy-fetch and gets back.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::fmt;

/// A request id: a random UUID chosen by the origin when it calls `proxy_fetch`.
pub type RequestId = String;

super::strict::strict_serde!(ProxyRequest);

/// How `fetch` treats redirects (as in the Fetch API).
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redirect {
    /// Follow redirects (the default). Under an allow-list (the executor's `PROXY_FETCH_ALLOW`
    /// or `allowed_hosts`) every hop must pass it, and at most 20 are followed.
    #[default]
    Follow,
    /// Do not follow: a 3xx comes back as the response, with its `location` header.
    Manual,
    /// A redirect fails the attempt as a network error ([`FetchErrorKind::Network`]).
    Error,
}

/// The request to make on the origin's behalf.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[proxy_fetch_macros::__serde_remote_self] // strict_serde!, unseen by ts-rs (strict.rs)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRequest {
    /// The HTTP method; `GET` when a serialized request leaves it out. [`ProxyRequest::new`]
    /// upper-cases it; [`check`](Self::check) upper-cases the six methods `fetch` normalizes.
    #[serde(default = "default_method")]
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<String>", optional)
    )]
    pub method: String,
    /// The http(s) URL to fetch; [`check`](Self::check) puts it in normal form.
    pub url: String,
    /// Request headers as `(name, value)` pairs, sent in this order; a name may repeat.
    #[serde(default)]
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<Vec<(String, String)>>", optional)
    )]
    pub headers: Vec<(String, String)>,
    /// The request body; `None` sends none.
    #[serde(default)]
    #[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), ts(optional = nullable, type = "Uint8Array"))]
    pub body: Option<ByteBuf>,
    /// How redirects are treated (default [`Redirect::Follow`]).
    #[serde(default)]
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<Redirect>", optional)
    )]
    pub redirect: Redirect,
}

fn default_method() -> String {
    "GET".into()
}

impl ProxyRequest {
    /// A request with this method (upper-cased) and URL: no headers, no body, redirects
    /// followed.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        ProxyRequest {
            method: method.into().to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            redirect: Redirect::Follow,
        }
    }

    /// A `GET` request for `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request for `url` with `body`. No `content-type` is set: add one with
    /// [`header`](Self::header), or set a JSON body with [`json`](Self::json).
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Adds a header after those already set (a name set twice is sent twice).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body, replacing any earlier one.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(ByteBuf::from(body.into()));
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize>(self, value: &T) -> serde_json::Result<Self> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sets how redirects are treated.
    pub fn redirect(mut self, redirect: Redirect) -> Self {
        self.redirect = redirect;
        self
    }

    /// Checks the request and puts it in the form it is fetched in: an http(s) URL in its one
    /// normal form (what both the origin's and the executor's checks see), and an HTTP method,
    /// the six that `fetch` normalizes (`get`, `Post`, ...) in upper case, others as written.
    /// Returns the parsed URL.
    pub fn check(&mut self) -> Result<worker::Url, String> {
        let url = worker::Url::parse(&self.url)
            .map_err(|e| format!("`{}` is not a URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`{}`: only http and https can be fetched",
                self.url
            ));
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.method.is_empty() || !self.method.chars().all(token) {
            return Err(format!("`{}` is not an HTTP method", self.method));
        }
        const NORMALIZED: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
        if let Some(m) = NORMALIZED
            .iter()
            .find(|m| m.eq_ignore_ascii_case(&self.method))
        {
            self.method = (*m).to_owned();
        }
        self.url = url.to_string();
        Ok(url)
    }

    /// Whether repeating the request is harmless (RFC 9110 idempotent methods).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }
}

impl From<&str> for ProxyRequest {
    fn from(url: &str) -> Self {
        ProxyRequest::get(url)
    }
}

impl From<String> for ProxyRequest {
    fn from(url: String) -> Self {
        ProxyRequest::get(url)
    }
}

/// The upstream's response, whatever its status: 404 and 500 are responses, not errors.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyResponse {
    /// The id of the request this answers.
    pub request_id: RequestId,
    /// The HTTP status code.
    pub status: u16,
    /// The status text (reason phrase) as the runtime reports it; may be empty.
    pub status_text: String,
    /// Response headers as `(name, value)` pairs, as the runtime's `Headers` lists them
    /// (lower-case names); [`header`](Self::header) finds one.
    pub headers: Vec<(String, String)>,
    /// The whole body, at most the request's
    /// [`max_body_bytes`](crate::system::ProxyFetchOptions::max_body_bytes);
    /// [`text`](Self::text) and [`json`](Self::json) decode it.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(type = "Uint8Array")
    )]
    pub body: ByteBuf,
    /// The final URL, after redirects.
    pub url: String,
    /// How many times the executor called the upstream (1 without retries).
    pub attempts: u32,
    /// Milliseconds from the executor's first attempt to the end of the body.
    pub duration_ms: f64,
}

impl ProxyResponse {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The body decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a proxied fetch produced no response.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchErrorKind {
    /// The upstream could not be reached or dropped the connection (after any retries).
    Network,
    /// No complete response within the timeout (per attempt).
    Timeout,
    /// The origin cancelled the request.
    Cancelled,
    /// A policy refused it: the executor's `PROXY_FETCH_ALLOW`, `allowed_hosts` (redirects
    /// included), or the response body over the size limit.
    Rejected,
    /// No result arrived in time and the request was not sent again: the executor was lost
    /// with a request that is not idempotent (the upstream may have seen it), or its max age
    /// passed. Delivered by the backstop (the origin's alarm, or the orchestrator's).
    Backstop,
}

/// A proxied fetch that produced no response. Delivered to the handler once, like a
/// response would have been.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchError {
    /// The id of the request that failed.
    pub request_id: RequestId,
    /// Why, for a handler to match on.
    pub kind: FetchErrorKind,
    /// What happened, in words (for logs; not meant to be parsed).
    pub message: String,
    /// Attempts the executor made; 0 when none was made (refused before fetching, cancelled,
    /// or a backstop error).
    pub attempts: u32,
}

impl FetchError {
    /// An error of `kind` for `request_id`, with `attempts` 0.
    pub fn new(request_id: &str, kind: FetchErrorKind, message: impl Into<String>) -> Self {
        FetchError {
            request_id: request_id.to_owned(),
            kind,
            message: message.into(),
            attempts: 0,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proxy fetch {} failed ({:?}): {}",
            self.request_id, self.kind, self.message
        )
    }
}

impl std::error::Error for FetchError {}

/// What a continuation handler receives: the response, or why there is none.
pub type FetchResult = Result<ProxyResponse, FetchError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &[u8]) -> ProxyResponse {
        ProxyResponse {
            request_id: "r".into(),
            status,
            status_text: "".into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: ByteBuf::from(body.to_vec()),
            url: "https://api.example.com/".into(),
            attempts: 1,
            duration_ms: 1.0,
        }
    }

    #[test]
    fn response_helpers() {
        let r = response(200, br#"{"temp": 21}"#);
        assert!(r.ok());
        assert!(!response(404, b"").ok());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-missing"), None);
        assert_eq!(r.text(), Ok(r#"{"temp": 21}"#));
        #[derive(Deserialize, PartialEq, Debug)]
        struct Weather {
            temp: i32,
        }
        assert_eq!(r.json::<Weather>().ok(), Some(Weather { temp: 21 }));
        assert!(response(200, &[0xff]).text().is_err());
    }

    #[test]
    fn request_builders() {
        let r = ProxyRequest::new("post", "https://api.example.com/")
            .json(&serde_json::json!({"a": 1}))
            .map(|r| r.redirect(Redirect::Manual));
        let r = r.ok();
        let r = r.as_ref();
        assert_eq!(r.map(|r| r.method.as_str()), Some("POST"));
        assert_eq!(
            r.map(|r| r.headers.clone()),
            Some(vec![("content-type".into(), "application/json".into())])
        );
        assert_eq!(
            r.and_then(|r| r.body.as_ref()).map(|b| b.to_vec()),
            Some(br#"{"a":1}"#.to_vec())
        );
        assert!(!r.is_some_and(|r| r.is_idempotent()));
        assert!(ProxyRequest::from("https://x/").is_idempotent());
    }

    #[test]
    fn check_writes_the_methods_fetch_normalizes_in_upper_case_and_refuses_non_http() {
        let mut lower = ProxyRequest::get("http://127.0.0.1:1/a?b");
        lower.method = "get".into();
        assert!(lower.check().is_ok());
        assert_eq!(lower.method, "GET");
        assert!(lower.is_idempotent());
        let mut custom = ProxyRequest::get("http://x/");
        custom.method = "patch".into();
        assert!(custom.check().is_ok());
        assert_eq!(custom.method, "patch");
        assert!(ProxyRequest::get("ftp://x/").check().is_err());
        let mut bad = ProxyRequest::get("http://x/");
        bad.method = "G T".into();
        assert!(bad.check().is_err());
    }
}
