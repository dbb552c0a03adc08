//! rampart-est: RFC 7030 Enrollment over Secure Transport as a library.
//!
//! The crate owns the wire format: the `/.well-known/est/[<label>/]<operation>` routes,
//! base64 transfer encoding, content types, HTTP Basic parsing and the RFC's status codes.
//! Authentication decisions, enrollment and PKCS#7 encoding come from the embedder through
//! [`EstBackend`]; the TLS client certificate (if any) arrives as a request extension
//! ([`PeerCertificates`]) set by the embedder's listener.
//!
//! Built: `cacerts` (§4.1), `simpleenroll` (§4.2), `simplereenroll` (§4.2.2),
//! `serverkeygen` (§4.4), `csrattrs` (§4.5), `fullcmc` answered 501. Not built yet:
//! channel-binding proof-of-possession (§3.5).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The connection's `tls-exporter` channel binding (RFC 9266: 32 bytes exported with label
/// `EXPORTER-Channel-Binding` and an empty context), set by the embedder's listener.
#[derive(Debug, Clone, Default)]
pub struct ChannelBinding(pub Vec<u8>);

/// The TLS client certificate chain of the connection (leaf first), empty without one.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Vec<Vec<u8>>);

/// What the connection tells of an enrolling client beside its credentials.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The client's address, when the embedder's listener set it
    /// ([`axum::extract::ConnectInfo`]).
    pub client: Option<IpAddr>,
    /// The `tls-exporter` channel binding, when the listener set one ([`ChannelBinding`]).
    pub channel_binding: Option<Vec<u8>>,
}

impl<S: Sync> FromRequestParts<S> for Connection {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Connection {
            client: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
            channel_binding: parts
                .extensions
                .get::<ChannelBinding>()
                .map(|ChannelBinding(binding)| binding.clone()),
        })
    }
}

/// How the client authenticated.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// HTTP Basic user and password.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A TLS client certificate chain (leaf first).
    Certificate(Vec<Vec<u8>>),
    /// Both: HTTP Basic on a connection with a client certificate.
    Both {
        /// User name.
        user: String,
        /// Password.
        password: String,
        /// The client certificate chain.
        chain: Vec<Vec<u8>>,
    },
}

/// An enrollment operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// First enrollment.
    Enroll,
    /// Renewal with the current certificate as TLS client certificate.
    Reenroll,
    /// Enrollment with a key pair the server generates.
    ServerKeygen,
}

/// Why the backend refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EstError {
    /// No or wrong credentials: 401 with `WWW-Authenticate`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request is malformed (bad CSR…): 400.
    #[error("{0}")]
    BadRequest(String),
    /// Policy refused: 403 with the reason.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown profile label: 404.
    #[error("{0}")]
    NotFound(String),
    /// Server-side failure: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Waiting for an approval: 202 with Retry-After; the client re-sends the same request.
    #[error("{0}")]
    Pending(String),
    /// The CA behind the server (an upstream CA) failed: 502.
    #[error("{0}")]
    BadGateway(String),
}

impl IntoResponse for EstError {
    fn into_response(self) -> Response {
        let status = match &self {
            EstError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            EstError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EstError::Forbidden(_) => StatusCode::FORBIDDEN,
            EstError::NotFound(_) => StatusCode::NOT_FOUND,
            EstError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EstError::Pending(_) => StatusCode::ACCEPTED,
            EstError::BadGateway(_) => StatusCode::BAD_GATEWAY,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::ACCEPTED {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"est\""),
            );
        }
        response
    }
}

/// What the embedder provides.
#[async_trait::async_trait]
pub trait EstBackend: Send + Sync + 'static {
    /// Whether `label` names a profile (`None` = the default profile).
    fn has_profile(&self, label: Option<&str>) -> bool;

    /// The CA certificates a client must trust, as a DER PKCS#7 certs-only structure.
    async fn ca_certs(&self, label: Option<&str>) -> Result<Vec<u8>, EstError>;

    /// The CSR attributes (DER `CsrAttrs`) clients should use, if the profile has any.
    async fn csr_attributes(&self, label: Option<&str>) -> Result<Option<Vec<u8>>, EstError>;

    /// Generate a key pair for the client and enroll it, taking names from the client's
    /// CSR; returns the PKCS#8 private key (DER) and the certs-only PKCS#7 (DER).
    async fn server_keygen(
        &self,
        label: Option<&str>,
        credentials: Credentials,
        csr_der: Vec<u8>,
        connection: &Connection,
    ) -> Result<(Vec<u8>, Vec<u8>), EstError>;

    /// Enroll (or re-enroll) a DER PKCS#10; returns a DER PKCS#7 certs-only structure
    /// holding the issued certificate.
    async fn enroll(
        &self,
        label: Option<&str>,
        operation: Operation,
        credentials: Credentials,
        csr_der: Vec<u8>,
        connection: &Connection,
    ) -> Result<Vec<u8>, EstError>;
}

/// The router: `/.well-known/est/…`.
pub fn router(backend: Arc<dyn EstBackend>) -> Router {
    Router::new()
        .route("/.well-known/est/{*path}", any(dispatch))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(backend)
}

/// `[<label>/]<operation>` → the operation's handler.
async fn dispatch(
    State(backend): State<Arc<dyn EstBackend>>,
    Path(path): Path<String>,
    method: Method,
    peer: Option<Extension<PeerCertificates>>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (label, operation) = match path.split_once('/') {
        None => (None, path.as_str()),
        Some((label, operation)) if !label.is_empty() && !operation.contains('/') => {
            (Some(label.to_string()), operation)
        }
        _ => return EstError::NotFound("no such EST resource".into()).into_response(),
    };
    // Every operation needs an existing profile label.
    if !backend.has_profile(label.as_deref()) {
        return EstError::NotFound("no such EST label".into()).into_response();
    }
    let state = State(backend);
    let enrollment = |operation| {
        enroll(
            state.clone(),
            label.clone(),
            operation,
            peer.clone(),
            connection.clone(),
            headers.clone(),
            body.clone(),
        )
    };
    let result = match (operation, method) {
        // HEAD as GET: hyper sends the head of the GET answer without its body.
        ("cacerts", Method::GET | Method::HEAD) => cacerts(state.clone(), label.clone())
            .await
            .map_err(IntoResponse::into_response),
        ("csrattrs", Method::GET | Method::HEAD) => csrattrs(state.clone(), label.clone())
            .await
            .map_err(IntoResponse::into_response),
        ("simpleenroll", Method::POST) => enrollment(Operation::Enroll).await,
        ("simplereenroll", Method::POST) => enrollment(Operation::Reenroll).await,
        ("serverkeygen", Method::POST) => enrollment(Operation::ServerKeygen).await,
        ("fullcmc", Method::POST) => Ok(full_cmc()),
        ("cacerts" | "csrattrs", _) => Ok(method_not_allowed("GET, HEAD")),
        ("simpleenroll" | "simplereenroll" | "serverkeygen" | "fullcmc", _) => {
            Ok(method_not_allowed("POST"))
        }
        _ => Err(EstError::NotFound("no such EST operation".into()).into_response()),
    };
    result.unwrap_or_else(|response| response)
}

/// 405 with the `Allow` header HTTP requires of it (RFC 9110 §15.5.6).
fn method_not_allowed(allow: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allow)],
        "method not allowed\n",
    )
        .into_response()
}

fn full_cmc() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "fullcmc is not supported by this server; use simpleenroll\n",
    )
        .into_response()
}

/// base64 with a line break every 64 characters (`Content-Transfer-Encoding: base64`).
/// Lines end in LF: every EST client decodes either, and plain `base64 -d` rejects CR.
fn base64_body(der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 2);
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

fn pkcs7_response(der: &[u8]) -> Response {
    let mut response = (StatusCode::OK, base64_body(der)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pkcs7-mime; smime-type=certs-only"),
    );
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    response
}

async fn csrattrs(
    State(backend): State<Arc<dyn EstBackend>>,
    label: Option<String>,
) -> Result<Response, EstError> {
    Ok(match backend.csr_attributes(label.as_deref()).await? {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(der) => {
            let mut response = (StatusCode::OK, base64_body(&der)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/csrattrs"),
            );
            headers.insert(
                "content-transfer-encoding",
                HeaderValue::from_static("base64"),
            );
            response
        }
    })
}

/// `multipart/mixed` with the private key and the certificate (§4.4.2).
fn keygen_response(pkcs8: &[u8], pkcs7: &[u8]) -> Response {
    const BOUNDARY: &str = "rampart-est-serverkeygen";
    let part = |content_type: &str, der: &[u8]| {
        format!(
            "--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64_body(der).trim_end()
        )
    };
    let body = format!(
        "{}{}--{BOUNDARY}--\r\n",
        part("application/pkcs8", pkcs8),
        part("application/pkcs7-mime; smime-type=certs-only", pkcs7)
    );
    let mut response = (StatusCode::OK, body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={BOUNDARY}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

async fn cacerts(
    State(backend): State<Arc<dyn EstBackend>>,
    label: Option<String>,
) -> Result<Response, EstError> {
    Ok(pkcs7_response(&backend.ca_certs(label.as_deref()).await?))
}

/// The credentials of a request: HTTP Basic when sent, else the TLS client certificate.
fn credentials(
    headers: &HeaderMap,
    peer: &PeerCertificates,
) -> Result<Option<Credentials>, EstError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| EstError::Unauthenticated("unreadable Authorization header".into()))?;
        let encoded = text.strip_prefix("Basic ").ok_or_else(|| {
            EstError::Unauthenticated("only HTTP Basic authorization is supported".into())
        })?;
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| EstError::Unauthenticated("malformed Basic credentials".into()))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| EstError::Unauthenticated("malformed Basic credentials".into()))?;
        let (user, password) = (user.to_string(), password.to_string());
        return Ok(Some(if peer.0.is_empty() {
            Credentials::Basic { user, password }
        } else {
            Credentials::Both {
                user,
                password,
                chain: peer.0.clone(),
            }
        }));
    }
    Ok((!peer.0.is_empty()).then(|| Credentials::Certificate(peer.0.clone())))
}

async fn enroll(
    State(backend): State<Arc<dyn EstBackend>>,
    label: Option<String>,
    operation: Operation,
    peer: Option<Extension<PeerCertificates>>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let fail = |e: EstError| e.into_response();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/pkcs10")
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/pkcs10\n",
        )
            .into_response());
    }
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    let credentials = credentials(&headers, &peer).map_err(fail)?;
    let credentials = match (operation, credentials) {
        (
            Operation::Reenroll,
            Some(Credentials::Certificate(chain) | Credentials::Both { chain, .. }),
        ) => Credentials::Certificate(chain),
        (Operation::Reenroll, _) => {
            return Err(fail(EstError::Unauthenticated(
                "simplereenroll needs the current certificate as TLS client certificate".into(),
            )))
        }
        (Operation::Enroll | Operation::ServerKeygen, Some(credentials)) => credentials,
        (Operation::Enroll | Operation::ServerKeygen, None) => {
            return Err(fail(EstError::Unauthenticated(
                "authenticate with HTTP Basic or a client certificate".into(),
            )))
        }
    };
    let cleaned: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let csr_der = STANDARD.decode(&cleaned).map_err(|_| {
        fail(EstError::BadRequest(
            "the body is not base64 PKCS#10".into(),
        ))
    })?;
    if operation == Operation::ServerKeygen {
        let (pkcs8, pkcs7) = backend
            .server_keygen(label.as_deref(), credentials, csr_der, &connection)
            .await
            .map_err(fail)?;
        return Ok(keygen_response(&pkcs8, &pkcs7));
    }
    let pkcs7 = backend
        .enroll(
            label.as_deref(),
            operation,
            credentials,
            csr_der,
            &connection,
        )
        .await
        .map_err(fail)?;
    Ok(pkcs7_response(&pkcs7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_and_base64_lines() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic ZGV2OnMzY3JldA=="),
        );
        match credentials(&headers, &PeerCertificates::default()).unwrap() {
            Some(Credentials::Basic { user, password }) => {
                assert_eq!((user.as_str(), password.as_str()), ("dev", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(credentials(&headers, &PeerCertificates::default()).is_err());
        let body = base64_body(&[0u8; 100]);
        assert!(body.lines().all(|l| l.len() <= 64));
        assert_eq!(
            STANDARD.decode(body.replace('\n', "")).unwrap(),
            vec![0u8; 100]
        );
    }
}
