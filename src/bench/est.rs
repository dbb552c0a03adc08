//! `rampart bench est`: RFC 7030 simpleenroll against any EST server.
//!
//! For each enrollment a fresh key and a PKCS#10 CSR for `est-<run>-<n>.<domain>` (CN and
//! DNS SAN) are made before the clock starts. Timed: the POST to
//! `<target>/simpleenroll` (`application/pkcs10`, base64 DER body) authenticated with HTTP
//! Basic and/or a TLS client certificate, and the answer read: HTTP 200, a base64
//! certs-only PKCS#7 holding exactly one certificate with the CSR's key. Serial numbers are
//! compared as in `bench scep`.
//!
//! Two connection modes: `keepalive` gives each worker one HTTP/1.1 connection it reuses
//! for all its requests (a gateway enrolling on behalf of many devices); `handshake` opens
//! a new TCP connection with a full TLS handshake (no session resumption) per request and
//! closes it afterwards (a fleet of devices enrolling once each). The `RESULT` line counts
//! the connections opened.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use der::Decode;
use reqwest::header::{CONNECTION, CONTENT_TYPE};
use x509_cert::request::CertReq;

use super::{enroll_all, issued_serial, prepare, report, root_store, Stats};

/// Name of the counter of TCP/TLS connections the bench opened.
pub const CONNECTIONS: &str = "connections";

/// How requests use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// One persistent connection per worker.
    KeepAlive,
    /// A new connection and full TLS handshake per request.
    Handshake,
}

/// Key type of the enrollments' fresh keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollKey {
    /// ECDSA P-256.
    EcdsaP256,
    /// RSA 2048.
    Rsa2048,
}

/// How the bench authenticates to the EST server (either or both).
#[derive(Debug, Clone, Default)]
pub struct EstCredentials {
    /// HTTP Basic user and password.
    pub basic: Option<(String, String)>,
    /// TLS client certificate chain and its private key, PEM files.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct EstBench {
    /// EST base URL (`https://host:port/.well-known/est[/<label>]`) or its simpleenroll URL.
    pub target: String,
    /// PEM bundle to trust (default: /etc/ssl/certs/ca-certificates.crt).
    pub ca_bundle: Option<PathBuf>,
    /// Parallel workers.
    pub concurrency: usize,
    /// Enrollments in all (and keys generated beforehand).
    pub count: usize,
    /// Stop starting enrollments after this long.
    pub duration: Option<Duration>,
    /// Connection reuse.
    pub mode: ConnectionMode,
    /// Credentials.
    pub credentials: EstCredentials,
    /// Key type of each enrollment's fresh key.
    pub key: EnrollKey,
    /// DNS zone the requested names are in.
    pub domain: String,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
}

/// One enrollment's client-side material, made before the clock starts.
struct Enrollment {
    /// Base64 of the CSR's DER: the request body.
    body: String,
    /// The CSR's public key, to find the issued certificate.
    key: spki::SubjectPublicKeyInfoOwned,
}

/// The simpleenroll URL of `target`.
fn simpleenroll_url(target: &str) -> String {
    let base = target.trim_end_matches('/');
    if base.ends_with("/simpleenroll") {
        base.to_string()
    } else {
        format!("{base}/simpleenroll")
    }
}

impl EstBench {
    /// Run and print the report.
    pub async fn run(self) -> anyhow::Result<Stats> {
        if self.credentials.basic.is_none() && self.credentials.client_certificate.is_none() {
            bail!("give --user with --password-env, or --client-cert with --client-key (or both)");
        }
        let url = simpleenroll_url(&self.target);
        let connections = Arc::new(AtomicUsize::new(0));
        let tls = self.tls_config()?;
        // Keep-alive: a client (one pooled connection) per worker. Handshake: one client
        // that keeps no idle connection, and asks the server to close each one.
        let clients = match self.mode {
            ConnectionMode::KeepAlive => (0..self.concurrency.max(1))
                .map(|_| http_client(tls.clone(), 1, connections.clone()))
                .collect::<anyhow::Result<Vec<_>>>()?,
            ConnectionMode::Handshake => vec![http_client(tls, 0, connections.clone())?],
        };
        let (key, domain) = (self.key, self.domain.clone());
        let run_id = format!("{:08x}", rand_u32());
        eprintln!(
            "generating {} {} keys and CSRs (not timed)",
            self.count,
            match key {
                EnrollKey::EcdsaP256 => "P-256",
                EnrollKey::Rsa2048 => "RSA-2048",
            }
        );
        let enrollments = prepare(self.count, move |i| {
            enrollment(&format!("est-{run_id}-{}.{domain}", i + 1), key)
        })
        .await?;
        let basic = self.credentials.basic.clone();
        let close = self.mode == ConnectionMode::Handshake;
        let shared = Arc::new((clients, url, basic));
        let run = enroll_all(
            enrollments,
            self.concurrency,
            self.duration,
            self.server_pid,
            move |worker, enrollment| {
                let shared = shared.clone();
                async move {
                    let (clients, url, basic) = &*shared;
                    let client = &clients[worker % clients.len()];
                    enroll(client, url, basic.as_ref(), close, &enrollment).await
                }
            },
        )
        .await?;
        let mut stats = run.stats;
        stats
            .counters
            .push((CONNECTIONS, connections.load(Ordering::SeqCst)));
        report("est", &stats, run.elapsed, run.server_cpu);
        Ok(stats)
    }

    /// TLS 1.2/1.3 with the bundle's roots, HTTP/1.1 by ALPN, the client certificate if any;
    /// without session resumption in handshake mode, so every connection pays a full
    /// handshake as a device enrolling for the first time does.
    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(
                root_store(self.ca_bundle.as_deref()).map_err(anyhow::Error::msg)?,
            );
        let mut config = match &self.credentials.client_certificate {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let text = std::fs::read_to_string(cert_file)
                    .with_context(|| format!("reading {}", cert_file.display()))?;
                let chain = crate::pkix::pem::decode_certificates(&text)
                    .with_context(|| format!("{}: no PEM certificates", cert_file.display()))?
                    .into_iter()
                    .map(rustls::pki_types::CertificateDer::from)
                    .collect::<Vec<_>>();
                if chain.is_empty() {
                    bail!("{}: no PEM certificate", cert_file.display());
                }
                let key_pem = std::fs::read(key_file)
                    .with_context(|| format!("reading {}", key_file.display()))?;
                let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                    .with_context(|| format!("{}: unreadable PEM", key_file.display()))?
                    .with_context(|| format!("{}: no private key", key_file.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("the client certificate and key do not match")?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if self.mode == ConnectionMode::Handshake {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(config)
    }
}

/// An HTTP/1.1 client over `tls` keeping at most `idle` idle connections, counting the
/// connections it opens in `connections`.
fn http_client(
    tls: rustls::ClientConfig,
    idle: usize,
    connections: Arc<AtomicUsize>,
) -> anyhow::Result<reqwest::Client> {
    let count = tower::util::MapRequestLayer::new(move |request| {
        connections.fetch_add(1, Ordering::SeqCst);
        request
    });
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(60))
        .connector_layer(count)
        .build()
        .context("building the HTTP client")
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    u32::from_le_bytes(bytes)
}

/// A fresh key and a CSR for `name` (subject CN and DNS SAN).
fn enrollment(name: &str, key: EnrollKey) -> anyhow::Result<Enrollment> {
    let key = match key {
        EnrollKey::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        EnrollKey::Rsa2048 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
    };
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key)?;
    let parsed = CertReq::from_der(csr.der()).context("the CSR made does not parse")?;
    Ok(Enrollment {
        body: STANDARD.encode(csr.der()),
        key: parsed.info.public_key,
    })
}

/// One simpleenroll exchange; the issued certificate's serial number.
async fn enroll(
    client: &reqwest::Client,
    url: &str,
    basic: Option<&(String, String)>,
    close: bool,
    enrollment: &Enrollment,
) -> Result<Vec<u8>, String> {
    let mut request = client
        .post(url)
        .header(CONTENT_TYPE, "application/pkcs10")
        .body(enrollment.body.clone());
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    if close {
        request = request.header(CONNECTION, "close");
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("simpleenroll: {}", error_chain(&e)))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("simpleenroll: {}", error_chain(&e)))?;
    if status != reqwest::StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        return Err(format!("simpleenroll: HTTP {status}: {}", text.trim()));
    }
    if !content_type.starts_with("application/pkcs7-mime") {
        return Err(format!(
            "simpleenroll: content type `{content_type}`, not application/pkcs7-mime"
        ));
    }
    let cleaned: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let pkcs7 = STANDARD
        .decode(cleaned)
        .map_err(|_| "simpleenroll: the answer is not base64".to_string())?;
    let certificates = rampart_scep::pkimessage::certificates_of(&pkcs7)
        .map_err(|e| format!("simpleenroll: not a certs-only PKCS#7: {e}"))?
        .certificates;
    issued_serial(&certificates, &enrollment.key).map_err(|e| format!("simpleenroll: {e}"))
}

/// An error with its sources (reqwest's own message rarely says why a connection failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_the_simpleenroll_resource() {
        assert_eq!(
            simpleenroll_url("https://h:9443/.well-known/est/"),
            "https://h:9443/.well-known/est/simpleenroll"
        );
        assert_eq!(
            simpleenroll_url("https://h/.well-known/est/lab/simpleenroll"),
            "https://h/.well-known/est/lab/simpleenroll"
        );
    }

    #[test]
    fn an_enrollment_is_a_base64_csr_for_its_name() {
        for kind in [EnrollKey::EcdsaP256, EnrollKey::Rsa2048] {
            let made = enrollment("est-1.bench.test", kind).unwrap();
            let der = STANDARD.decode(&made.body).unwrap();
            let csr = crate::pkix::csr::VerifiedCsr::parse(&der).unwrap();
            assert_eq!(csr.common_name.as_deref(), Some("est-1.bench.test"));
            assert_eq!(csr.identifiers.len(), 1);
            assert_eq!(CertReq::from_der(&der).unwrap().info.public_key, made.key);
        }
    }
}
