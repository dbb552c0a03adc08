//! Shared helpers: a daemon started in-process on 127.0.0.1:0 with a temporary data
//! directory, and CSR builders.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rampart::clock::{Clock, SystemClock};
use rampart::config::Config;
use rampart::server::{self, Daemon};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use serde_json::Value;

pub struct TestDaemon {
    pub daemon: Daemon,
    pub url: String,
    pub key: String,
    pub http: reqwest::Client,
}

pub fn config_for(dir: &Path) -> Config {
    let mut config = Config::load_default().unwrap();
    config.server.data_dir = dir.to_path_buf();
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.acme.listen = "127.0.0.1:0".parse().unwrap();
    config.est.listen = "127.0.0.1:0".parse().unwrap();
    config.scep.listen = "127.0.0.1:0".parse().unwrap();
    config.publish.listen = "127.0.0.1:0".parse().unwrap();
    config
}

pub async fn start_with(config: Config, clock: Arc<dyn Clock>, key: Option<String>) -> TestDaemon {
    // A store the test itself opened and dropped just before may still be locked for a
    // moment (sled's background flusher lets go asynchronously): wait for it.
    let mut attempts = 0;
    let daemon = loop {
        match server::start(config.clone(), clock.clone()).await {
            Ok(daemon) => break daemon,
            Err(server::ServerError::Store(rampart::store::StoreError::Locked { .. }))
                if attempts < 50 =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("daemon starts: {error:?}"),
        }
    };
    TestDaemon::attach(daemon, key)
}

impl TestDaemon {
    /// Wrap a started daemon: its first admin key (or `key`) and an HTTPS-capable client.
    pub fn attach(daemon: Daemon, key: Option<String>) -> TestDaemon {
        let key = daemon.new_admin_key.clone().or(key).expect("an admin key");
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        let pem = std::fs::read(&daemon.ca_bundle).unwrap();
        for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap() {
            builder = builder.add_root_certificate(cert);
        }
        let url = daemon
            .api_url
            .clone()
            .unwrap()
            .replace("127.0.0.1", "localhost");
        TestDaemon {
            daemon,
            url,
            key,
            http: builder.build().unwrap(),
        }
    }
}

pub async fn start(dir: &Path) -> TestDaemon {
    start_with(config_for(dir), Arc::new(SystemClock), None).await
}

impl TestDaemon {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// A new API key for `identity` with `roles`, made through the API: its token.
    pub async fn new_api_key(&self, identity: &str, roles: &[&str]) -> String {
        let (status, key) = self
            .post(
                "/api/v1/api-keys",
                serde_json::json!({"identity": identity, "roles": roles}),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        key["token"].as_str().unwrap().to_string()
    }

    pub async fn enroll(&self, csr: &str, template: &str) -> (u16, Value) {
        self.post(
            "/api/v1/enrollments",
            serde_json::json!({"csr": csr, "template": template}),
        )
        .await
    }

    /// The audit's `credentials_refused` entries, through the API's filter, oldest first.
    pub async fn refused_credentials(&self) -> Vec<Value> {
        self.audit_entries("action=credentials_refused").await
    }

    /// The audit's denied decisions, oldest first.
    pub async fn denied_decisions(&self) -> Vec<Value> {
        self.audit_entries("action=decision&decision=denied").await
    }

    /// Audit entries matching the API's `filter` (a query string), oldest first.
    pub async fn audit_entries(&self, filter: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/audit?{filter}&limit=1000"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["entry"].clone())
            .collect()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.daemon.data_dir.clone()
    }
}

/// A PEM CSR with subject CN `cn` (if any) and SANs (IP literals become IP SANs).
pub fn csr(key: &KeyPair, cn: Option<&str>, sans: &[&str]) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*s).try_into().unwrap()),
        })
        .collect();
    params.serialize_request(key).unwrap().pem().unwrap()
}

pub fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

/// `signed` (a TBSCertificate or TBSCertList, DER) names `issuer` and carries an ECDSA
/// P-256 / SHA-256 signature by its key (the default CA key algorithm).
pub fn assert_issued_by(
    issuer_name: &x509_cert::name::Name,
    signed: &[u8],
    algorithm: &spki::AlgorithmIdentifierOwned,
    signature: &der::asn1::BitString,
    issuer: &x509_cert::Certificate,
) {
    assert_eq!(issuer_name, &issuer.tbs_certificate.subject);
    assert_eq!(algorithm.oid.to_string(), "1.2.840.10045.4.3.2");
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        key,
    )
    .verify(signed, signature.raw_bytes())
    .expect("the issuer's signature verifies");
}

/// A certificate signed by `issuer`.
pub fn assert_certificate_signed_by(
    certificate: &x509_cert::Certificate,
    issuer: &x509_cert::Certificate,
) {
    use der::Encode;
    let tbs = &certificate.tbs_certificate;
    let (algorithm, signature) = (&certificate.signature_algorithm, &certificate.signature);
    assert_issued_by(
        &tbs.issuer,
        &tbs.to_der().unwrap(),
        algorithm,
        signature,
        issuer,
    );
}

/// A CRL signed by `issuer`.
pub fn assert_crl_signed_by(
    crl: &x509_cert::crl::CertificateList,
    issuer: &x509_cert::Certificate,
) {
    use der::Encode;
    let tbs = &crl.tbs_cert_list;
    let (algorithm, signature) = (&crl.signature_algorithm, &crl.signature);
    assert_issued_by(
        &tbs.issuer,
        &tbs.to_der().unwrap(),
        algorithm,
        signature,
        issuer,
    );
}

/// The certificates of a base64 certs-only PKCS#7 body (an EST answer).
pub fn est_certificates(body: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    use der::{Decode, Encode};
    let text: String = String::from_utf8(body.to_vec())
        .unwrap()
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    let info = cms::content_info::ContentInfo::from_der(&der).unwrap();
    let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    signed
        .certificates
        .unwrap()
        .0
        .iter()
        .map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => c.to_der().unwrap(),
            _ => panic!("unexpected certificate choice"),
        })
        .collect()
}

/// A PHC-format argon2 hash of `secret` with a fixed salt, as `rampart hash-password` writes
/// into `[est.users]` and `[scep.profiles]`.
pub fn argon2_hash(secret: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}
