//! `rampart bench scep`: full SCEP PKCSReq enrollments (RFC 8894) against any SCEP server.
//!
//! GetCACert once, to find the certificate requests are encrypted for. Then for each
//! enrollment a fresh RSA key, a self-signed requester certificate and a CSR — all made
//! before the clock starts, so latency and throughput measure the protocol exchange only —
//! and, timed: a pkiMessage sealed for that certificate, POSTed as PKIOperation, and the
//! CertRep verified and decrypted. An enrollment succeeds when the CertRep says SUCCESS and
//! delivers exactly one certificate with the CSR's key. Serial numbers of the issued
//! certificates are compared, and the `RESULT` line says how many were issued twice.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use der::{Decode, Encode};
use rampart_scep::client::{self, Requester};
use rampart_scep::crypto::{ContentCipher, Digest};
use rampart_scep::pkimessage::{certificates_of, printable_attribute};
use rampart_scep::wire::{oid, MessageType, PkiStatus};
use reqwest::header::CONTENT_TYPE;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use super::{enroll_all, issued_serial, prepare, report, Stats};

pub use super::DUPLICATE_SERIALS;

/// PKCS#9 challengePassword, as rcgen takes attribute types.
const CHALLENGE_PASSWORD_ARCS: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

/// What to run.
#[derive(Debug, Clone)]
pub struct ScepBench {
    /// SCEP URL, e.g. `http://127.0.0.1:8080/scep`.
    pub target: String,
    /// Parallel workers.
    pub concurrency: usize,
    /// Enrollments in all (and keys generated beforehand).
    pub count: usize,
    /// Stop starting enrollments after this long.
    pub duration: Option<Duration>,
    /// PKCS#9 challengePassword put in each CSR.
    pub challenge: Option<String>,
    /// Content-encryption algorithm of the request envelope.
    pub cipher: ContentCipher,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
    /// RSA key size of each enrollment's fresh key: 2048, 3072 or 4096.
    pub key_bits: u32,
}

/// One enrollment's client-side material, made before the clock starts.
struct Enrollment {
    requester: Requester,
    csr_der: Vec<u8>,
}

struct Shared {
    config: ScepBench,
    http: reqwest::Client,
    recipient: Certificate,
}

impl ScepBench {
    /// Run and print the report.
    pub async fn run(self) -> anyhow::Result<Stats> {
        let key_size = match self.key_bits {
            2048 => rcgen::RsaKeySize::_2048,
            3072 => rcgen::RsaKeySize::_3072,
            4096 => rcgen::RsaKeySize::_4096,
            other => bail!("--key-bits {other}: use 2048, 3072 or 4096"),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        let recipient = recipient(&http, &self.target).await?;
        eprintln!(
            "encrypting for {}; generating {} RSA-{} keys and CSRs (not timed)",
            recipient.tbs_certificate.subject, self.count, self.key_bits
        );
        let challenge = self.challenge.clone();
        let enrollments = prepare(self.count, move |i| {
            enrollment(i + 1, key_size, challenge.as_deref())
        })
        .await?;
        let shared = Arc::new(Shared {
            http,
            recipient,
            config: self.clone(),
        });
        let run = enroll_all(
            enrollments,
            self.concurrency,
            self.duration,
            self.server_pid,
            move |_, enrollment| {
                let shared = shared.clone();
                async move { enroll(&shared, &enrollment).await }
            },
        )
        .await?;
        report("scep", &run.stats, run.elapsed, run.server_cpu);
        Ok(run.stats)
    }
}

/// GetCACert, and the certificate to encrypt requests for: the first RSA certificate that
/// is not a CA (an RA), else the only RSA CA certificate.
async fn recipient(http: &reqwest::Client, target: &str) -> anyhow::Result<Certificate> {
    let response = http
        .get(target)
        .query(&[("operation", "GetCACert")])
        .send()
        .await
        .context("GetCACert")?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = response.bytes().await.context("GetCACert")?;
    if !status.is_success() {
        bail!("GetCACert: HTTP {status}");
    }
    // A single CA certificate comes as raw DER (x-x509-ca-cert), CA and RA certificates as a
    // certificates-only PKCS#7 (x-x509-ca-ra-cert).
    let ders = if content_type.starts_with("application/x-x509-ca-cert") {
        vec![body.to_vec()]
    } else {
        certificates_of(&body)
            .with_context(|| format!("GetCACert ({content_type}): not a certificates-only PKCS#7"))?
            .certificates
    };
    let certificates = ders
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .context("GetCACert: a certificate does not parse")?;
    pick_recipient(certificates)
}

fn pick_recipient(certificates: Vec<Certificate>) -> anyhow::Result<Certificate> {
    let rsa: Vec<Certificate> = certificates
        .into_iter()
        .filter(|c| c.tbs_certificate.subject_public_key_info.algorithm.oid == oid::RSA_ENCRYPTION)
        .collect();
    if let Some(ra) = rsa.iter().find(|c| !is_ca(c)) {
        return Ok(ra.clone());
    }
    match rsa.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("GetCACert: no RSA certificate to encrypt requests for"),
        _ => bail!("GetCACert: several RSA CA certificates and no RA certificate"),
    }
}

fn is_ca(certificate: &Certificate) -> bool {
    certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|constraints| constraints.ca)
}

/// Enrollment `n`: a fresh key, a CSR for `bench-<n>.scep.test` (CN and DNS SAN) with the
/// challengePassword if any, and a self-signed requester certificate for the same key.
fn enrollment(
    n: usize,
    key_size: rcgen::RsaKeySize,
    challenge: Option<&str>,
) -> anyhow::Result<Enrollment> {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, key_size)?;
    let name = format!("bench-{n}.scep.test");
    let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let attributes = match challenge {
        Some(text) => vec![rcgen::Attribute {
            oid: CHALLENGE_PASSWORD_ARCS,
            values: printable_attribute(oid::CHALLENGE_PASSWORD, text)
                .context("--challenge must be a PrintableString")?
                .values
                .to_der()?,
        }],
        None => Vec::new(),
    };
    let csr = params.serialize_request_with_attributes(&key, attributes)?;
    let certificate = params.self_signed(&key)?;
    Ok(Enrollment {
        requester: Requester::new(certificate.der(), &key.serialize_der())?,
        csr_der: csr.der().to_vec(),
    })
}

/// One PKCSReq exchange; the issued certificate's serial number.
async fn enroll(shared: &Shared, enrollment: &Enrollment) -> Result<Vec<u8>, String> {
    let requester = &enrollment.requester;
    let transaction_id = requester.transaction_id();
    let outgoing = client::request(
        requester,
        &shared.recipient,
        MessageType::PkcsReq,
        &transaction_id,
        &enrollment.csr_der,
        shared.config.cipher,
        Digest::Sha256,
        std::time::SystemTime::now(),
    )
    .map_err(|e| format!("building the pkiMessage: {e}"))?;
    let response = shared
        .http
        .post(&shared.config.target)
        .query(&[("operation", "PKIOperation")])
        .header(CONTENT_TYPE, "application/x-pki-message")
        .body(outgoing.message)
        .send()
        .await
        .map_err(|e| format!("PKIOperation: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("PKIOperation: {e}"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        return Err(format!("PKIOperation: HTTP {status}: {}", text.trim()));
    }
    let reply = client::read_reply(&body, requester).map_err(|e| e.to_string())?;
    if reply.transaction_id != transaction_id {
        return Err("CertRep: transactionID is not the request's".into());
    }
    if reply.recipient_nonce != outgoing.sender_nonce {
        return Err("CertRep: recipientNonce is not the request's senderNonce".into());
    }
    match reply.status {
        PkiStatus::Success => {}
        PkiStatus::Pending => return Err("CertRep: PENDING".into()),
        PkiStatus::Failure => {
            let fail_info = reply
                .fail_info
                .map_or_else(|| "none".to_string(), |f| f.to_string());
            return Err(format!("CertRep: FAILURE, failInfo {fail_info}"));
        }
    }
    // The requester certificate carries the CSR's key.
    let key = &requester
        .certificate
        .tbs_certificate
        .subject_public_key_info;
    issued_serial(&reply.certificates, key).map_err(|e| format!("CertRep: SUCCESS, but {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(key: &rcgen::KeyPair, ca: bool) -> Certificate {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        Certificate::from_der(params.self_signed(key).unwrap().der()).unwrap()
    }

    #[test]
    fn the_recipient_is_the_rsa_ra_else_the_only_rsa_ca() {
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (rsa_ca, rsa_ra) = (certificate(&rsa, true), certificate(&rsa, false));
        let (ec_ca, ec_leaf) = (certificate(&ec, true), certificate(&ec, false));
        let picked = pick_recipient(vec![ec_ca.clone(), rsa_ca.clone(), rsa_ra.clone()]).unwrap();
        assert_eq!(picked, rsa_ra);
        let picked = pick_recipient(vec![ec_leaf.clone(), rsa_ca.clone()]).unwrap();
        assert_eq!(picked, rsa_ca);
        assert!(pick_recipient(vec![ec_ca, ec_leaf]).is_err());
        assert!(pick_recipient(vec![rsa_ca.clone(), rsa_ca]).is_err());
    }

    #[test]
    fn an_enrollment_carries_the_challenge_and_one_key() {
        let made = enrollment(7, rcgen::RsaKeySize::_2048, Some("secret")).unwrap();
        let csr = x509_cert::request::CertReq::from_der(&made.csr_der).unwrap();
        assert_eq!(csr.info.subject.to_string(), "CN=bench-7.scep.test");
        assert_eq!(
            csr.info.public_key,
            made.requester
                .certificate
                .tbs_certificate
                .subject_public_key_info
        );
        let challenge = csr
            .info
            .attributes
            .iter()
            .find(|a| a.oid == oid::CHALLENGE_PASSWORD)
            .unwrap();
        assert_eq!(challenge.values.iter().next().unwrap().value(), b"secret");
    }
}
