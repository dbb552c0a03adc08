//! Fixtures for the ACME protocol tests: a fake [`AcmeBackend`], an in-process server
//! driven through `tower::ServiceExt::oneshot`, a loopback http-01 responder, ES256 keys
//! and a small JWS-signing client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwk::alg::ec::EcKeyPair;
use josekit::jwk::KeyPair as _;
use josekit::jws::{JwsSigner, ES256};
use rampart_acme::backend::{AcmeBackend, ExternalAccountKey, KnownCertificate, Profile, Revoker};
use rampart_acme::records::{AccountRecord, MemoryKv, OrderRecord, Records};
use rampart_acme::validation::{ValidationSettings, Validator};
use rampart_acme::wire::Identifier;
use rampart_acme::{AcmeServer, Problem};
use rcgen::PublicKeyData as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// The host every request is addressed to (the server builds its URLs from it).
pub const HOST: &str = "localhost";

/// base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------
// The fake backend
// ---------------------------------------------------------------------------------------

/// A certificate the fake backend issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Serial (hex).
    pub serial: String,
    /// The requesting identity.
    pub owner: String,
    /// The order's identifiers.
    pub identifiers: Vec<Identifier>,
    /// The CSR handed to `issue`.
    pub csr_der: Vec<u8>,
    /// The certificate.
    pub cert_der: Vec<u8>,
    /// Its PEM.
    pub cert_pem: String,
    /// Its SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Profiles `default` and `other` (anonymous accounts with role `r`); names ending in
/// `.forbidden` are refused; `issue` makes a self-signed certificate and remembers the CSR.
#[derive(Debug, Default)]
pub struct FakeBackend {
    /// Everything issued.
    pub issued: Mutex<Vec<Issued>>,
    /// `(serial, reason)` of every revocation.
    pub revoked: Mutex<Vec<(String, u8)>>,
}

impl FakeBackend {
    /// How many certificates were issued.
    pub fn issued_count(&self) -> usize {
        self.issued.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl AcmeBackend for FakeBackend {
    fn profile(&self, name: &str) -> Option<&Profile> {
        static PROFILE: std::sync::LazyLock<Profile> = std::sync::LazyLock::new(|| Profile {
            anonymous_roles: Some(vec!["r".into()]),
            default_certificate_profile: "tls".into(),
            ..Profile::default()
        });
        matches!(name, "default" | "other").then(|| &*PROFILE)
    }

    async fn external_account_key(
        &self,
        _key_id: &str,
    ) -> Result<Option<ExternalAccountKey>, Problem> {
        Ok(None)
    }

    /// The fake has no external account keys to refuse and keeps no audit.
    async fn external_account_refused(
        &self,
        _profile: &str,
        _key_id: &str,
        _reason: &str,
        _client: Option<std::net::IpAddr>,
    ) {
    }

    /// The fake keeps no audit.
    async fn caa_refused(&self, _refusal: rampart_acme::CaaRefusal<'_>) {}

    async fn bind_external_account_key(
        &self,
        _key_id: &str,
        _account_id: &str,
    ) -> Result<(), Problem> {
        Err(Problem::internal(
            "the fake backend hands out no external account keys",
        ))
    }

    async fn check_identifiers(
        &self,
        _account: &AccountRecord,
        _certificate_profile: &str,
        identifiers: &[Identifier],
        _client: Option<std::net::IpAddr>,
    ) -> Result<(), Vec<(Identifier, String)>> {
        let refused: Vec<_> = identifiers
            .iter()
            .filter(|i| i.value.ends_with(".forbidden"))
            .map(|i| (i.clone(), format!("policy refuses `{}`", i.value)))
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refused)
        }
    }

    async fn issue(
        &self,
        account: &AccountRecord,
        order: &OrderRecord,
        csr_der: Vec<u8>,
        _client: Option<std::net::IpAddr>,
    ) -> Result<rampart_acme::Issuance, Problem> {
        let mut issued = self.issued.lock().unwrap();
        let serial_byte = u8::try_from(issued.len() + 1).expect("under 128 certificates");
        let names: Vec<String> = order.identifiers.iter().map(|i| i.value.clone()).collect();
        let key = rcgen::KeyPair::generate().map_err(Problem::internal)?;
        let mut params = rcgen::CertificateParams::new(names).map_err(Problem::internal)?;
        params.serial_number = Some(rcgen::SerialNumber::from(vec![serial_byte]));
        let cert = params.self_signed(&key).map_err(Problem::internal)?;
        let serial = format!("{serial_byte:02x}");
        issued.push(Issued {
            serial: serial.clone(),
            owner: account.identity.clone(),
            identifiers: order.identifiers.clone(),
            csr_der,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            spki_der: key.subject_public_key_info(),
        });
        Ok(rampart_acme::Issuance::Issued { serial })
    }

    async fn pending_status(
        &self,
        _request_id: &str,
    ) -> Result<rampart_acme::PendingStatus, Problem> {
        // This backend issues at once; nothing is ever held.
        Err(Problem::internal("the fake backend holds no requests"))
    }

    async fn certificate_chain(&self, serial: &str) -> Result<Option<String>, Problem> {
        let issued = self.issued.lock().unwrap();
        Ok(issued
            .iter()
            .find(|i| i.serial == serial)
            .map(|i| i.cert_pem.clone()))
    }

    async fn certificate(&self, serial: &str) -> Result<Option<KnownCertificate>, Problem> {
        let revoked = self.revoked.lock().unwrap().clone();
        let issued = self.issued.lock().unwrap();
        let now = time::OffsetDateTime::now_utc();
        Ok(issued
            .iter()
            .find(|i| i.serial == serial)
            .map(|i| KnownCertificate {
                serial: i.serial.clone(),
                owner: i.owner.clone(),
                identifiers: i.identifiers.clone(),
                spki_der: i.spki_der.clone(),
                der: i.cert_der.clone(),
                not_before: now - time::Duration::hours(1),
                not_after: now + time::Duration::days(90),
                revoked: revoked.iter().any(|(s, _)| *s == i.serial),
                renewal_window: None,
            }))
    }

    async fn revoke(&self, serial: &str, reason: u8, _revoker: Revoker) -> Result<(), Problem> {
        self.revoked
            .lock()
            .unwrap()
            .push((serial.to_string(), reason));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The http-01 responder
// ---------------------------------------------------------------------------------------

/// Answers `GET /.well-known/acme-challenge/<token>` on 127.0.0.1 with the key
/// authorization registered for the token, 404 otherwise. Stops when dropped.
pub struct Http01Responder {
    /// Its port.
    pub port: u16,
    tokens: Arc<Mutex<HashMap<String, String>>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Http01Responder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counter) = (tokens.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (served, counter) = (served.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/");
                    let body = path
                        .strip_prefix("/.well-known/acme-challenge/")
                        .and_then(|token| served.lock().unwrap().get(token).cloned());
                    let (status, body) = match body {
                        Some(body) => ("200 OK", body),
                        None => ("404 Not Found", String::new()),
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Http01Responder {
            port,
            tokens,
            hits,
            task,
        }
    }

    /// Serve `key_authorization` for `token`.
    pub fn serve(&self, token: &str, key_authorization: &str) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), key_authorization.to_string());
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Http01Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Keys and signing
// ---------------------------------------------------------------------------------------

/// An ES256 account key.
pub struct Key(EcKeyPair);

impl Key {
    /// A fresh P-256 key.
    pub fn generate() -> Self {
        Key(ES256.generate_key_pair().unwrap())
    }

    /// The same key as an rcgen P-256 key pair (so a CSR can carry the account key).
    pub fn from_rcgen(key: &rcgen::KeyPair) -> Self {
        Key(ES256.key_pair_from_der(key.serialize_der()).unwrap())
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let map: serde_json::Map<String, Value> = self.0.to_jwk_public_key().into();
        Value::Object(map)
    }

    /// RFC 7638 thumbprint, computed here independently of the crate.
    pub fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        b64(Sha256::digest(canonical.as_bytes()))
    }

    /// Public key, DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.0.to_der_public_key()
    }

    /// A flattened JWS over `protected` and an already encoded `payload`.
    pub fn sign(&self, protected: &Value, payload: &str) -> Value {
        let protected = b64(protected.to_string());
        let signer = ES256.signer_from_jwk(&self.0.to_jwk_key_pair()).unwrap();
        let signature = signer
            .sign(format!("{protected}.{payload}").as_bytes())
            .unwrap();
        json!({"protected": protected, "payload": payload, "signature": b64(signature)})
    }
}

/// An account: its key and URL (the `kid`).
pub struct Account {
    /// Its key.
    pub key: Key,
    /// Its URL.
    pub url: String,
}

/// How a request names its key.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    /// `jwk`: the public key itself.
    Jwk(&'a Key),
    /// `kid`: the account URL; signed with the account key.
    Kid(&'a Account),
}

impl Signer<'_> {
    fn key(&self) -> &Key {
        match self {
            Signer::Jwk(key) => key,
            Signer::Kid(account) => &account.key,
        }
    }
}

/// The encoded payload: empty for POST-as-GET.
pub fn payload_text(payload: Option<&Value>) -> String {
    payload.map(|p| b64(p.to_string())).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// A response, read in full.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Assert a success status and return the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }

    /// The `Location` header (asserted present).
    #[track_caller]
    pub fn location(&self) -> String {
        self.header("location").expect("a Location header")
    }

    /// Assert an `application/problem+json` document of type
    /// `urn:ietf:params:acme:error:<kind>` sent with `status`; returns it.
    #[track_caller]
    pub fn problem(&self, status: u16, kind: &str) -> Value {
        let body = self.problem_of_type(kind);
        assert_eq!(self.status.as_u16(), status, "status; problem: {body}");
        assert_eq!(body["status"], json!(status), "`status` member: {body}");
        body
    }

    /// As [`Reply::problem`] without the status check (where RFC 8555 sets none).
    #[track_caller]
    pub fn problem_of_type(&self, kind: &str) -> Value {
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "status {}; body: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert_eq!(
            body["type"],
            json!(format!("urn:ietf:params:acme:error:{kind}")),
            "status {}; problem: {body}",
            self.status
        );
        body
    }

    /// The `Replay-Nonce` header (asserted present).
    #[track_caller]
    pub fn nonce(&self) -> String {
        self.header("replay-nonce").expect("a Replay-Nonce header")
    }
}

// ---------------------------------------------------------------------------------------
// The server under test and the client
// ---------------------------------------------------------------------------------------

/// A server with the fake backend, in-memory records and an http-01 responder; requests
/// go through the router in-process with `Host: localhost`.
pub struct Lab {
    router: Router,
    /// The server behind the router (for its settings).
    pub server: Arc<AcmeServer>,
    /// The backend.
    pub backend: Arc<FakeBackend>,
    /// The http-01 responder the validator is pointed at.
    pub http01: Http01Responder,
    /// Seconds the server's clock runs ahead of the system's ([`Lab::advance`]).
    ahead: Arc<std::sync::atomic::AtomicI64>,
}

impl Lab {
    /// Start one.
    pub async fn start() -> Self {
        let backend = Arc::new(FakeBackend::default());
        let http01 = Http01Responder::start().await;
        let validator = Validator::new(ValidationSettings {
            allow_private_targets: true,
            http01_port: http01.port,
            // Nothing listens there: these tests validate IP identifiers, no lookups.
            dns_resolver: Some("127.0.0.1:9".parse().unwrap()),
            timeout: Duration::from_secs(5),
            ..ValidationSettings::default()
        })
        .unwrap();
        let ahead = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let clock = ahead.clone();
        let server = AcmeServer::new(
            backend.clone(),
            Records::new(Box::new(MemoryKv::default())),
            validator,
            Arc::new(move || {
                time::OffsetDateTime::now_utc()
                    + time::Duration::seconds(clock.load(std::sync::atomic::Ordering::Relaxed))
            }),
        );
        Lab {
            router: rampart_acme::router(server.clone()),
            server,
            backend,
            http01,
            ahead,
        }
    }

    /// Move the server's clock `by` ahead.
    pub fn advance(&self, by: time::Duration) {
        self.ahead
            .fetch_add(by.whole_seconds(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The URL of `path` under profile `default`.
    pub fn url(&self, path: &str) -> String {
        self.url_in("default", path)
    }

    /// The URL of `path` under `profile`.
    pub fn url_in(&self, profile: &str, path: &str) -> String {
        format!("https://{HOST}/acme/{profile}/{path}")
    }

    /// One request through the router.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let path = url
            .strip_prefix(&format!("https://{HOST}"))
            .unwrap_or_else(|| panic!("{url} is not a URL of this server"));
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", HOST);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: axum::body::to_bytes(body, usize::MAX).await.unwrap(),
        }
    }

    /// POST a JWS (any JSON value) as `application/jose+json`.
    pub async fn post_jws(&self, url: &str, jws: &Value) -> Reply {
        self.send(
            Method::POST,
            url,
            Some("application/jose+json"),
            jws.to_string(),
        )
        .await
    }

    /// A fresh nonce from HEAD newNonce.
    pub async fn nonce(&self) -> String {
        let reply = self
            .send(Method::HEAD, &self.url("new-nonce"), None, Body::empty())
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.nonce()
    }

    /// The protected header a well-behaved client sends: ES256, a fresh nonce, `url`,
    /// and `jwk` or `kid`.
    pub async fn protected(&self, url: &str, signer: Signer<'_>) -> Value {
        let mut header = json!({"alg": "ES256", "nonce": self.nonce().await, "url": url});
        match signer {
            Signer::Jwk(key) => header["jwk"] = key.jwk(),
            Signer::Kid(account) => header["kid"] = json!(account.url),
        }
        header
    }

    /// A correctly signed JWS for `url`, after `edit` changed its protected header.
    pub async fn jws_with(
        &self,
        url: &str,
        payload: Option<&Value>,
        signer: Signer<'_>,
        edit: impl FnOnce(&mut Value),
    ) -> Value {
        let mut header = self.protected(url, signer).await;
        edit(&mut header);
        signer.key().sign(&header, &payload_text(payload))
    }

    /// A correctly signed JWS for `url`.
    pub async fn jws(&self, url: &str, payload: Option<&Value>, signer: Signer<'_>) -> Value {
        self.jws_with(url, payload, signer, |_| {}).await
    }

    /// POST `payload` (None: POST-as-GET) to `url`, signed as a well-behaved client does.
    pub async fn post(&self, url: &str, payload: Option<&Value>, signer: Signer<'_>) -> Reply {
        let jws = self.jws(url, payload, signer).await;
        self.post_jws(url, &jws).await
    }

    /// newAccount for `key` in profile `default`, asserting 201.
    pub async fn account_with(&self, key: Key) -> Account {
        let reply = self
            .post(
                &self.url("new-account"),
                Some(&json!({"termsOfServiceAgreed": true})),
                Signer::Jwk(&key),
            )
            .await;
        let body = reply.expect(201);
        assert_eq!(body["status"], "valid");
        Account {
            url: reply.location(),
            key,
        }
    }

    /// A new account with a fresh key.
    pub async fn account(&self) -> Account {
        self.account_with(Key::generate()).await
    }

    /// newOrder for `identifiers` (`(type, value)` pairs).
    pub async fn new_order(&self, account: &Account, identifiers: &[(&str, &str)]) -> Reply {
        let identifiers: Vec<Value> = identifiers
            .iter()
            .map(|(kind, value)| json!({"type": kind, "value": value}))
            .collect();
        self.post(
            &self.url("new-order"),
            Some(&json!({ "identifiers": identifiers })),
            Signer::Kid(account),
        )
        .await
    }

    /// Deactivate the first authorization of `order` (its JSON), asserting 200: the order
    /// is invalid from then on.
    pub async fn deactivate_first_authz(&self, account: &Account, order: &Value) {
        let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
        self.post(
            &authz_url,
            Some(&json!({"status": "deactivated"})),
            Signer::Kid(account),
        )
        .await
        .expect(200);
    }

    /// The URLs in the account's orders list.
    pub async fn order_list(&self, account: &Account) -> Vec<Value> {
        let reply = self
            .post(
                &format!("{}/orders", account.url),
                None,
                Signer::Kid(account),
            )
            .await;
        reply.expect(200)["orders"].as_array().unwrap().clone()
    }

    /// Serve the http-01 key authorization of the authorization at `authz_url`, ask for
    /// validation and wait until the authorization is valid.
    pub async fn complete_http01(&self, account: &Account, authz_url: &str) {
        let authz = self
            .post(authz_url, None, Signer::Kid(account))
            .await
            .expect(200);
        let challenge = authz["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "http-01")
            .expect("an http-01 challenge")
            .clone();
        let token = challenge["token"].as_str().unwrap();
        self.http01
            .serve(token, &format!("{token}.{}", account.key.thumbprint()));
        let started = self
            .post(
                challenge["url"].as_str().unwrap(),
                Some(&json!({})),
                Signer::Kid(account),
            )
            .await
            .expect(200);
        assert!(
            matches!(started["status"].as_str(), Some("processing" | "valid")),
            "{started}"
        );
        for _ in 0..100 {
            let authz = self
                .post(authz_url, None, Signer::Kid(account))
                .await
                .expect(200);
            match authz["status"].as_str().unwrap() {
                "valid" => return,
                "pending" => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("authorization became {other}: {authz}"),
            }
        }
        panic!("the authorization did not become valid in time");
    }
}

/// A DER CSR for `names` (SANs, empty subject) signed by `key`.
pub fn csr(names: &[&str], key: &rcgen::KeyPair) -> Vec<u8> {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(key).unwrap().der().to_vec()
}
