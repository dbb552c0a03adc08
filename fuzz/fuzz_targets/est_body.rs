//! EST requests (RFC 7030) through the crate's public router, as the daemon mounts it: the
//! `/.well-known/est/[<label>/]<operation>` dispatch, the `Content-Type` check, HTTP Basic
//! parsing (`Authorization`), the base64 body with line breaks, and the PKCS#10 inside it,
//! which the fuzz backend hands to `VerifiedCsr::parse` as the daemon's backend does;
//! answers are built and read to the end (base64 PKCS#7, serverkeygen's multipart/mixed).
//!
//! EST has no multipart *request* parser to fuzz: serverkeygen requests are a base64
//! PKCS#10 like simpleenroll; multipart/mixed is only produced, in the response.
//!
//! Input: byte 0 picks the path (low 7 bits) and the method (high bit set: GET), byte 1
//! the request's extras (bits 0-1 the Content-Type, bit 2 an Authorization header, bit 3 a
//! TLS client certificate, bit 4 a tls-exporter channel binding); the rest is
//! `<Authorization value> NUL <body>`.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use rampart::pkix::csr::VerifiedCsr;
use rampart_est::{
    ChannelBinding, Connection, Credentials, EstBackend, EstError, Operation, PeerCertificates,
};
use tower::ServiceExt;

const PATHS: [&str; 12] = [
    "/.well-known/est/simpleenroll",
    "/.well-known/est/simplereenroll",
    "/.well-known/est/serverkeygen",
    "/.well-known/est/cacerts",
    "/.well-known/est/csrattrs",
    "/.well-known/est/fullcmc",
    "/.well-known/est/lab/simpleenroll",
    "/.well-known/est/lab/serverkeygen",
    "/.well-known/est/lab/csrattrs",
    "/.well-known/est/other/simpleenroll",
    "/.well-known/est//simpleenroll",
    "/.well-known/est/lab/simpleenroll/extra",
];

const CONTENT_TYPES: [&str; 4] = [
    "application/pkcs10",
    "application/PKCS10; charset=binary",
    "text/plain",
    "",
];

/// Accepts what parses; answers with fixed bytes (the codec, not the CA, is under test).
struct FuzzBackend;

#[async_trait::async_trait]
impl EstBackend for FuzzBackend {
    fn has_profile(&self, label: Option<&str>) -> bool {
        matches!(label, None | Some("lab"))
    }

    async fn ca_certs(&self, _label: Option<&str>) -> Result<Vec<u8>, EstError> {
        Ok(rampart_fuzz::RA_CERT.to_vec())
    }

    async fn csr_attributes(&self, label: Option<&str>) -> Result<Option<Vec<u8>>, EstError> {
        Ok(label.map(|_| vec![0x30, 0x00]))
    }

    async fn server_keygen(
        &self,
        _label: Option<&str>,
        _credentials: Credentials,
        csr_der: Vec<u8>,
        _connection: &Connection,
    ) -> Result<(Vec<u8>, Vec<u8>), EstError> {
        let csr = VerifiedCsr::parse(&csr_der).map_err(|e| EstError::BadRequest(e.to_string()))?;
        Ok((csr.spki_der, rampart_fuzz::RA_CERT.to_vec()))
    }

    async fn enroll(
        &self,
        _label: Option<&str>,
        _operation: Operation,
        _credentials: Credentials,
        csr_der: Vec<u8>,
        connection: &Connection,
    ) -> Result<Vec<u8>, EstError> {
        let csr = VerifiedCsr::parse(&csr_der).map_err(|e| EstError::BadRequest(e.to_string()))?;
        if connection.channel_binding.is_some() && csr.challenge_password.is_none() {
            return Err(EstError::BadRequest("no challengePassword".into()));
        }
        Ok(csr.der)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fn router() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(|| rampart_est::router(Arc::new(FuzzBackend)))
}

fuzz_target!(|data: &[u8]| {
    let [route, flags, rest @ ..] = data else {
        return;
    };
    let (authorization, body) = rampart_fuzz::split(rest, 0);
    let path = PATHS[usize::from(route & 0x7f) % PATHS.len()];
    let method = if route & 0x80 == 0 {
        Method::POST
    } else {
        Method::GET
    };
    let mut request = Request::builder().method(method).uri(path);
    let content_type = CONTENT_TYPES[usize::from(flags & 3)];
    if !content_type.is_empty() {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if flags & 4 != 0 {
        if let Ok(value) = HeaderValue::from_bytes(authorization) {
            request = request.header(header::AUTHORIZATION, value);
        }
    }
    let Ok(mut request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    if flags & 8 != 0 {
        request.extensions_mut().insert(PeerCertificates(vec![
            rampart_fuzz::REQUESTER_CERT.to_vec()
        ]));
    }
    if flags & 16 != 0 {
        request
            .extensions_mut()
            .insert(ChannelBinding(vec![0x42; 32]));
    }
    runtime().block_on(async {
        let response = router()
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let _ = response.into_body().collect().await;
    });
});
