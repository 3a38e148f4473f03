//! The debug endpoint's content, independent of any HTTP server: a request goes in, a response
//! comes out. The built-in server (feature `http`) uses it, and a service can mount it in its
//! own router instead (see the axum example).

/// An HTTP request as the endpoint sees it.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query string, e.g. `/metrics`.
    pub path: String,
    /// The raw query string without `?`, possibly empty.
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl EndpointRequest {
    /// A request for `method` and `path_and_query` (e.g. `"/debug/leakguard?x=1"`).
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            authorization: None,
        }
    }
}

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointResponse {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Extra headers (name, value), e.g. `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

/// `Content-Type` of JSON answers.
pub const JSON: &str = "application/json";
/// `Content-Type` of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of plain text.
pub const TEXT: &str = "text/plain; charset=utf-8";

impl EndpointResponse {
    /// A response with `status`, `content_type` and `body`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A JSON error `{"error": message, "status": status}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message, "status": status });
        Self::new(status, JSON, body.to_string())
    }
}

/// Something that answers endpoint requests: the guard, or a test double in transport tests.
pub trait Routes: Send + Sync + 'static {
    /// Answers one request. Must not block for long: it runs on the endpoint's thread.
    fn handle(&self, request: &EndpointRequest) -> EndpointResponse;
}
