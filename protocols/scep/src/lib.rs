//! rampart-scep: RFC 8894 Simple Certificate Enrolment Protocol as a library.
//!
//! The crate owns the wire format: the `/scep[/<profile>]?operation=…` routes
//! (`GetCACaps`, `GetCACert`, `PKIOperation` by GET and POST), the pkiMessage CMS layers
//! ([`pkimessage`]), reading requests ([`request`]) and signing CertReps ([`reply`]) with
//! the RA key, and a client side ([`client`]) for tests and benchmarks. Who may enroll,
//! what gets issued and where transactions are remembered come from the embedder through
//! [`ScepBackend`].
//!
//! Imports only its own modules and the `cms`/`der`/`x509-cert`/`aws-lc-rs` crates; never
//! the daemon.

pub mod ber;
pub mod client;
pub mod crypto;
pub mod loose;
pub mod pkimessage;
pub mod reply;
pub mod request;
pub mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use base64::Engine;
use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::crypto::{CryptoError, Digest, RsaKey, RsaPrivateKey};
use crate::pkimessage::BuildError;
use crate::reply::Reply;
use crate::request::{Content, ReadError};
pub use crate::wire::{FailInfo, MessageType};

/// Largest accepted pkiMessage.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The capabilities advertised by `GetCACaps` (§3.5.2).
pub const CAPABILITIES: &str =
    "POSTPKIOperation\nRenewal\nSHA-256\nSHA-512\nAES\nDES3\nSCEPStandard\n";

/// The registration authority: the RSA certificate and key that decrypt requests and sign
/// replies (distinct from the CA key, which may be ECDSA). The key is in memory
/// ([`RsaKey`], from a key file) or held by the embedder ([`RsaPrivateKey`], e.g. in a
/// PKCS#11 token); the protocol code uses both alike.
pub struct Ra {
    /// The RA certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The RA certificate.
    pub certificate: Certificate,
    /// Its private key.
    pub key: Arc<dyn RsaPrivateKey>,
}

impl std::fmt::Debug for Ra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ra").field("key", &self.key).finish()
    }
}

impl Ra {
    /// From the certificate (DER) and its PKCS#8 key; refuses a key that is not the
    /// certificate's.
    pub fn new(certificate_der: Vec<u8>, key_pkcs8: &[u8]) -> Result<Self, CryptoError> {
        Self::with_key(certificate_der, Arc::new(RsaKey::from_pkcs8(key_pkcs8)?))
    }

    /// From the certificate (DER) and a key held anywhere. The key is tried once each way
    /// before it is accepted: its signature must verify with the certificate's public key,
    /// and it must decrypt what is encrypted to the certificate (a token key without
    /// CKA_DECRYPT fails here, not at the first enrollment). Blocks when the key does.
    pub fn with_key(
        certificate_der: Vec<u8>,
        key: Arc<dyn RsaPrivateKey>,
    ) -> Result<Self, CryptoError> {
        let certificate = Certificate::from_der(&certificate_der)
            .map_err(|e| CryptoError::BadKey(format!("RA certificate: {e}")))?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        let probe = b"rampart SCEP RA key check";
        let signature = key.sign(Digest::Sha256, probe)?;
        Digest::Sha256
            .verify_rsa(&spki, probe, &signature)
            .map_err(|_| CryptoError::BadKey("the RA key is not the RA certificate's".into()))?;
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| CryptoError::Operation("randomness"))?;
        let sealed = crypto::rsa_encrypt(&spki, &secret)?;
        match key.decrypt(&sealed) {
            Ok(opened) if opened == secret => {}
            Ok(_) | Err(CryptoError::Decrypt) => {
                return Err(CryptoError::BadKey(
                    "the RA key does not decrypt what is encrypted to the RA certificate".into(),
                ))
            }
            Err(other) => return Err(other),
        }
        Ok(Ra {
            certificate_der,
            certificate,
            key,
        })
    }
}

/// A profile's protocol settings.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Accept SHA-1 signatures and single-DES envelopes from legacy clients.
    pub legacy_algorithms: bool,
    /// A request whose signingTime is further than this from the server's clock gets
    /// FAILURE badTime; `None` = not checked (devices without a real-time clock).
    pub max_clock_skew: Option<std::time::Duration>,
}

/// An enrollment (PKCSReq) or renewal (RenewalReq).
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// PKCSReq or RenewalReq.
    pub message_type: MessageType,
    /// The client's transactionID.
    pub transaction_id: String,
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
    /// The certificate that signed the pkiMessage, DER: self-signed for a first enrollment,
    /// the certificate being renewed for RenewalReq (verified as the message's signer).
    pub signer_der: Vec<u8>,
    /// The client's address, when the embedder's listener set it
    /// ([`axum::extract::ConnectInfo`]).
    pub client: Option<IpAddr>,
}

/// A certificate named by issuer and serial (GetCert, GetCRL).
#[derive(Debug, Clone)]
pub struct CertificateId {
    /// The issuer's Name, DER.
    pub issuer_der: Vec<u8>,
    /// The serial number's magnitude, big-endian.
    pub serial: Vec<u8>,
}

/// The backend's answer to a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A certificate (DER), issued or found.
    Certificate(Vec<u8>),
    /// A CRL (DER).
    Crl(Vec<u8>),
    /// Waiting for approval (the reason is logged).
    Pending(String),
    /// Refused.
    Failure(FailInfo, String),
}

/// What the embedder provides.
#[async_trait::async_trait]
pub trait ScepBackend: Send + Sync + 'static {
    /// The profile called `name` (`default` for `/scep`), if configured.
    fn profile(&self, name: &str) -> Option<Profile>;

    /// The current RA identity.
    fn ra(&self) -> Arc<Ra>;

    /// The server's clock.
    fn now(&self) -> std::time::SystemTime;

    /// The CA chain clients must trust (issuing CA first, root last), DER.
    fn ca_certificates(&self) -> Vec<Vec<u8>>;

    /// PKCSReq / RenewalReq. The same transactionID from the same signer key after
    /// success must answer the same certificate, never a second one.
    async fn enroll(&self, profile: &str, enrollment: Enrollment) -> Answer;

    /// CertPoll: the state of the transaction `transaction_id` that `signer_der` started.
    async fn poll(&self, profile: &str, transaction_id: &str, signer_der: &[u8]) -> Answer;

    /// GetCert.
    async fn certificate(&self, profile: &str, id: CertificateId) -> Answer;

    /// GetCRL: the CRL covering the certificate.
    async fn crl(&self, profile: &str, id: CertificateId) -> Answer;
}

/// The router: `/scep` (profile `default`) and `/scep/<profile>`.
pub fn router(backend: Arc<dyn ScepBackend>) -> Router {
    Router::new()
        .route("/scep", any(default_profile))
        .route("/scep/{profile}", any(named_profile))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(backend)
}

async fn default_profile(
    state: State<Arc<dyn ScepBackend>>,
    address: Option<Extension<ConnectInfo<SocketAddr>>>,
    query: Query<HashMap<String, String>>,
    method: Method,
    body: Bytes,
) -> Response {
    let client = client_of(address);
    dispatch(state, "default".to_string(), client, query, method, body).await
}

async fn named_profile(
    state: State<Arc<dyn ScepBackend>>,
    Path(profile): Path<String>,
    address: Option<Extension<ConnectInfo<SocketAddr>>>,
    query: Query<HashMap<String, String>>,
    method: Method,
    body: Bytes,
) -> Response {
    dispatch(state, profile, client_of(address), query, method, body).await
}

/// The client's address, from the peer address the embedder's listener set.
fn client_of(address: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    address.map(|Extension(ConnectInfo(address))| address.ip())
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into() + "\n",
    )
        .into_response()
}

fn binary(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn dispatch(
    State(backend): State<Arc<dyn ScepBackend>>,
    profile_name: String,
    client: Option<IpAddr>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    body: Bytes,
) -> Response {
    let Some(profile) = backend.profile(&profile_name) else {
        return plain(StatusCode::NOT_FOUND, "no such SCEP profile");
    };
    let operation = query.get("operation").map(String::as_str).unwrap_or("");
    match (operation, &method) {
        ("GetCACaps", &Method::GET) => plain(StatusCode::OK, CAPABILITIES.trim_end()),
        ("GetCACert", &Method::GET) => {
            let mut certificates = vec![backend.ra().certificate_der.clone()];
            certificates.extend(backend.ca_certificates());
            match pkimessage::certs_only(&certificates, &[]) {
                Ok(der) => binary("application/x-x509-ca-ra-cert", der),
                Err(e) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot encode the CA certificates: {e}"),
                ),
            }
        }
        ("PKIOperation", &Method::POST) => {
            pki_operation(&*backend, &profile_name, profile, body, client).await
        }
        ("PKIOperation", &Method::GET) => {
            // §4.1: base64 in `message`; '+' may arrive as a space when not percent-encoded.
            let text: String = query
                .get("message")
                .map(|m| {
                    m.replace(' ', "+")
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect()
                })
                .unwrap_or_default();
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(message) if !message.is_empty() => {
                    pki_operation(&*backend, &profile_name, profile, message.into(), client).await
                }
                _ => plain(
                    StatusCode::BAD_REQUEST,
                    "PKIOperation by GET needs a base64 `message` parameter",
                ),
            }
        }
        ("GetCACaps" | "GetCACert", _) => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{operation} is a GET operation"),
        ),
        ("", _) => plain(StatusCode::BAD_REQUEST, "missing `operation` parameter"),
        _ => plain(
            StatusCode::BAD_REQUEST,
            format!("unsupported SCEP operation `{operation}`"),
        ),
    }
}

/// One pkiMessage in, one CertRep out (or HTTP 400 when there is nothing to answer, 503
/// when the RA key cannot be used).
async fn pki_operation(
    backend: &dyn ScepBackend,
    profile_name: &str,
    profile: Profile,
    message: Bytes,
    client: Option<IpAddr>,
) -> Response {
    let ra = backend.ra();
    let now = backend.now();
    let read = with_key(&ra, move |ra| request::read(&message, ra, profile, now)).await;
    let request = match read {
        Ok(Ok(request)) => request,
        Ok(Err(ReadError::Unreadable(reason))) => {
            tracing::info!(profile = profile_name, %reason, "unreadable SCEP message");
            return plain(StatusCode::BAD_REQUEST, reason);
        }
        Ok(Err(ReadError::Refused {
            reply_to,
            fail_info,
            reason,
        })) => {
            tracing::info!(profile = profile_name, transaction = %reply_to.transaction_id, %fail_info, %reason, "SCEP request refused");
            return signed(&ra, reply_to, Outcome::Failure(fail_info), backend.now()).await;
        }
        Ok(Err(ReadError::KeyUnavailable(reason))) => return key_unavailable(&reason),
        Err(task) => return key_unavailable(&task),
    };
    let signer_der = match request.signer.to_der() {
        Ok(der) => der,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("signer certificate: {e}")),
    };
    let transaction_id = request.reply_to.transaction_id.clone();
    let answer = match request.content {
        Content::Csr(csr_der) => {
            let enrollment = Enrollment {
                message_type: request.message_type,
                transaction_id: transaction_id.clone(),
                csr_der,
                signer_der,
                client,
            };
            backend.enroll(profile_name, enrollment).await
        }
        Content::Poll(_) => {
            backend
                .poll(profile_name, &transaction_id, &signer_der)
                .await
        }
        Content::Certificate(id) => {
            let id = match id.issuer.to_der() {
                Ok(issuer_der) => CertificateId {
                    issuer_der,
                    serial: id.serial_number.as_bytes().to_vec(),
                },
                Err(e) => return plain(StatusCode::BAD_REQUEST, format!("issuer: {e}")),
            };
            if request.message_type == MessageType::GetCrl {
                backend.crl(profile_name, id).await
            } else {
                backend.certificate(profile_name, id).await
            }
        }
    };
    let content = match answer {
        Answer::Certificate(der) => pkimessage::certs_only(&[der], &[]),
        Answer::Crl(der) => pkimessage::certs_only(&[], &[der]),
        Answer::Pending(reason) => {
            tracing::info!(profile = profile_name, transaction = %transaction_id, %reason, "SCEP request pending");
            return signed(&ra, request.reply_to, Outcome::Pending, backend.now()).await;
        }
        Answer::Failure(fail_info, reason) => {
            tracing::info!(profile = profile_name, transaction = %transaction_id, %fail_info, %reason, "SCEP request refused");
            return signed(
                &ra,
                request.reply_to,
                Outcome::Failure(fail_info),
                backend.now(),
            )
            .await;
        }
    };
    match content {
        Ok(content) => {
            let outcome = Outcome::Success {
                content,
                recipient: Box::new(request.signer),
                cipher: request.cipher,
            };
            signed(&ra, request.reply_to, outcome, backend.now()).await
        }
        Err(e) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot encode the reply: {e}"),
        ),
    }
}

/// Run `work` with the RA: in place when its key is in memory, on a blocking thread when
/// the key's operations wait on a device (an HSM round trip, a re-login), so that the
/// runtime goes on serving other requests meanwhile. Fails only if the task panicked.
async fn with_key<T: Send + 'static>(
    ra: &Arc<Ra>,
    work: impl FnOnce(&Ra) -> T + Send + 'static,
) -> Result<T, String> {
    if !ra.key.blocks() {
        return Ok(work(ra));
    }
    let ra = ra.clone();
    tokio::task::spawn_blocking(move || work(&ra))
        .await
        .map_err(|e| format!("the RA key task failed: {e}"))
}

/// HTTP 503: the RA key cannot be used, so nothing can be decrypted or signed. The cause
/// is logged, not sent.
fn key_unavailable(reason: &str) -> Response {
    tracing::error!(%reason, "SCEP RA key unavailable");
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the SCEP RA key is unavailable",
    )
}

/// What a CertRep says, owned (it may be signed on another thread).
enum Outcome {
    Success {
        content: Vec<u8>,
        recipient: Box<crate::loose::RequesterCertificate>,
        cipher: crypto::ContentCipher,
    },
    Pending,
    Failure(FailInfo),
}

async fn signed(
    ra: &Arc<Ra>,
    to: request::ReplyTo,
    outcome: Outcome,
    now: std::time::SystemTime,
) -> Response {
    let built = with_key(ra, move |ra| -> Result<Vec<u8>, BuildError> {
        match outcome {
            Outcome::Success {
                content,
                recipient,
                cipher,
            } => reply::cert_rep(
                ra,
                &to,
                Reply::Success {
                    content,
                    recipient: &recipient,
                    cipher,
                },
                now,
            ),
            Outcome::Pending => reply::cert_rep(ra, &to, Reply::Pending, now),
            Outcome::Failure(fail_info) => reply::cert_rep(ra, &to, Reply::Failure(fail_info), now),
        }
    })
    .await;
    match built {
        Ok(Ok(der)) => binary("application/x-pki-message", der),
        Ok(Err(BuildError::Crypto(CryptoError::KeyUnavailable(reason)))) | Err(reason) => {
            key_unavailable(&reason)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot sign a CertRep");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot sign the reply: {e}"),
            )
        }
    }
}
