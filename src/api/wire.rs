//! JSON shapes of the admin API, apart from the handlers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{CertificateRecord, CertificateStatus, Identifier, Protocol};
use crate::pkix::pem;

/// `POST /api/v1/enrollments` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentBody {
    /// PKCS#10 request, PEM (or `generate_key` with `names`).
    #[serde(default)]
    pub csr: Option<String>,
    /// Have rampart generate the key (`ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`,
    /// `rsa-3072`, `rsa-4096`); it is kept in escrow and returned once.
    #[serde(default)]
    pub generate_key: Option<String>,
    /// With `generate_key`: the names (DNS names or IP addresses).
    #[serde(default)]
    pub names: Vec<String>,
    /// With `generate_key`: the subject CN (default: the first name).
    #[serde(default)]
    pub common_name: Option<String>,
    /// Template name.
    pub template: String,
    /// rampart renews the certificate itself inside its renew-before window.
    #[serde(default)]
    pub auto_renew: bool,
    /// `[delivery.targets.<name>]` the certificate (and a generated key) is written to,
    /// now and after every renewal.
    #[serde(default)]
    pub delivery_targets: Vec<String>,
    /// Requested lifetime in days (default: the template's).
    pub validity_days: Option<u32>,
    /// Resource the certificate is for.
    pub resource: Option<String>,
    /// Labels kept with the record.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST …/revoke` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// RFC 5280 reason name (`keyCompromise`) or code; default `unspecified`.
    pub reason: Option<String>,
}

/// Revocation details.
#[derive(Debug, Serialize)]
pub struct RevocationView {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 reason name.
    pub reason: &'static str,
    /// RFC 5280 reason code.
    pub reason_code: u8,
    /// Who.
    pub revoked_by: String,
}

/// A certificate as listed.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// Serial, hex.
    pub serial: String,
    /// Status now.
    pub status: CertificateStatus,
    /// Subject DN.
    pub subject: String,
    /// SANs.
    pub sans: Vec<Identifier>,
    /// Issuing CA adapter.
    pub issuer: String,
    /// Template.
    pub template: String,
    /// Requesting identity.
    pub owner: String,
    /// Front door.
    pub protocol: Protocol,
    /// Key type.
    pub key_type: String,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, hex.
    pub sha256_fingerprint: String,
    /// Request id.
    pub request_id: Uuid,
    /// Resource.
    pub resource: Option<String>,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// Revocation, when revoked.
    pub revocation: Option<RevocationView>,
}

impl CertificateView {
    /// View of a record at `now`.
    pub fn new(record: &CertificateRecord, now: OffsetDateTime) -> Self {
        CertificateView {
            serial: record.serial.clone(),
            status: record.status_at(now),
            subject: record.subject.clone(),
            sans: record.sans.clone(),
            issuer: record.issuer.clone(),
            template: record.template.clone(),
            owner: record.owner.clone(),
            protocol: record.protocol,
            key_type: record.key_type.to_string(),
            not_before: record.not_before,
            not_after: record.not_after,
            sha256_fingerprint: record.sha256_fingerprint.clone(),
            request_id: record.request_id,
            resource: record.resource.clone(),
            metadata: record.metadata.clone(),
            revocation: record.revocation.as_ref().map(|r| RevocationView {
                revoked_at: r.revoked_at,
                reason: r.reason.name(),
                reason_code: r.reason.code(),
                revoked_by: r.revoked_by.clone(),
            }),
        }
    }
}

/// A certificate with its PEM (show, enroll, revoke answers).
#[derive(Debug, Serialize)]
pub struct CertificateDetail {
    /// Metadata.
    #[serde(flatten)]
    pub view: CertificateView,
    /// The certificate, PEM.
    pub certificate: String,
    /// The issuer chain (issuing CA first, root excluded), PEM.
    pub chain: String,
    /// Certificate followed by the chain, PEM: what a TLS server is configured with.
    pub full_chain: String,
}

impl CertificateDetail {
    /// Detail of a record at `now`.
    pub fn new(record: &CertificateRecord, now: OffsetDateTime) -> Self {
        let chain = pem::encode_certificates(record.chain.iter().map(Vec::as_slice));
        let certificate = pem::encode(pem::CERTIFICATE, &record.der);
        CertificateDetail {
            view: CertificateView::new(record, now),
            full_chain: format!("{certificate}{chain}"),
            certificate,
            chain,
        }
    }
}

/// `POST /api/v1/enrollments` answer.
#[derive(Debug, Serialize)]
pub struct EnrollmentResponse {
    /// Request id (audit trail).
    pub request_id: Uuid,
    /// Always `issued` for now.
    pub state: &'static str,
    /// The certificate.
    #[serde(flatten)]
    pub certificate: CertificateDetail,
    /// The generated private key, PKCS#8 PEM (only with `generate_key`, only in this answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Deliveries to the requested targets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<crate::lifecycle::renewal::DeliveryOutcome>,
}

/// A page of certificates.
#[derive(Debug, Serialize)]
pub struct CertificatePage {
    /// Items, in serial order.
    pub items: Vec<CertificateView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// `POST /api/v1/acme/eab-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EabKeyBody {
    /// Identity the ACME accounts bound with the key act as.
    pub identity: String,
    /// Its roles (names under `[roles]`).
    pub roles: Vec<String>,
}

/// `POST /api/v1/scep/challenges` body: a one-time SCEP challenge for one device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScepChallengeBody {
    /// SCEP profile (default `default`).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Identity the device enrolls as (owner of its certificate).
    pub identity: String,
    /// The only names (DNS names, IP addresses) the device may request.
    pub names: Vec<String>,
    /// Lifetime in seconds (default one day).
    #[serde(default = "one_day")]
    pub valid_for_seconds: u32,
}

fn default_profile() -> String {
    "default".into()
}

fn one_day() -> u32 {
    86_400
}

/// `POST /api/v1/policy/check` body: an enrollment, decided but not carried out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCheckBody {
    /// PKCS#10 request, PEM.
    pub csr: String,
    /// Template name.
    pub template: String,
    /// Requested lifetime in days.
    pub validity_days: Option<u32>,
    /// Decide for this identity instead of the caller (managers only).
    pub identity: Option<String>,
    /// That identity's roles (with `identity`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The resource the certificate would be for.
    #[serde(default)]
    pub resource: Option<String>,
}
