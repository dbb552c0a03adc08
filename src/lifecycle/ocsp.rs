//! The OCSP responder (RFC 6960) for certificates of the built-in CA: good, revoked (with
//! time and reason) or unknown, signed by the issuing CA itself (no delegated responder
//! certificate), the request's nonce echoed. Served by the publish listener at `/ocsp`
//! (POST, and GET with the base64 request in the path, §A.1).
//!
//! Imports `pipeline` (store, CA, clock), `ca` and `model`.

use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::Extension;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::model::{RevocationReason, StoredStatus};
use crate::pipeline::Pipeline;

/// Most certificates one request may ask about.
const MAX_REQUESTS: usize = 20;
/// How long an answer may be relied on (nextUpdate).
const VALIDITY: Duration = Duration::hours(1);

const SHA1: &str = "1.3.14.3.2.26";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";

/// The responder for the built-in CA's issuing certificate.
#[derive(Debug)]
pub struct Responder {
    pipeline: Pipeline,
    /// (hash algorithm, issuerNameHash, issuerKeyHash) a CertID of ours carries.
    ours: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// SHA-1 of the issuing CA's public key (the ResponderID).
    key_hash: Vec<u8>,
}

impl Responder {
    /// For `pipeline`'s CA (the first certificate of its chain is the signer).
    pub fn new(pipeline: Pipeline) -> Result<Self, String> {
        let chain = pipeline.ca().chain();
        let issuing = chain.first().ok_or("the CA has no issuing certificate")?;
        let cert = x509_cert::Certificate::from_der(issuing).map_err(|e| e.to_string())?;
        let name = cert
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| e.to_string())?;
        let key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let hash = |alg: &'static aws_lc_rs::digest::Algorithm, data: &[u8]| {
            aws_lc_rs::digest::digest(alg, data).as_ref().to_vec()
        };
        let sha1 = &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY;
        let sha256 = &aws_lc_rs::digest::SHA256;
        Ok(Responder {
            key_hash: hash(sha1, &key),
            ours: vec![
                (SHA1.into(), hash(sha1, &name), hash(sha1, &key)),
                (SHA256.into(), hash(sha256, &name), hash(sha256, &key)),
            ],
            pipeline,
        })
    }

    /// The DER OCSPResponse for a DER OCSPRequest; never fails (malformedRequest,
    /// internalError are OCSP answers too).
    pub async fn respond(&self, request: &[u8]) -> Vec<u8> {
        let answer = match OcspRequest::from_der(request) {
            Ok(request) if (1..=MAX_REQUESTS).contains(&request.tbs_request.request_list.len()) => {
                self.answer(&request).await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot answer an OCSP request");
                    OcspResponse::internal_error()
                })
            }
            _ => OcspResponse::malformed_request(),
        };
        answer.to_der().unwrap_or_default()
    }

    async fn answer(&self, request: &OcspRequest) -> Result<OcspResponse, String> {
        let now = self.pipeline.clock().now();
        let mut responses = Vec::new();
        for single in &request.tbs_request.request_list {
            let status = self.status(&single.req_cert)?;
            responses.push(SingleResponse {
                cert_id: single.req_cert.clone(),
                cert_status: status,
                this_update: time(now)?,
                next_update: Some(time(now + VALIDITY)?),
                single_extensions: None,
            });
        }
        // §4.4.1: the nonce comes back as it was sent.
        let nonce: Vec<Extension> = request
            .tbs_request
            .request_extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE)
            .cloned()
            .collect();
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(
                OctetString::new(self.key_hash.clone()).map_err(|e| e.to_string())?,
            ),
            produced_at: time(now)?,
            responses,
            response_extensions: (!nonce.is_empty()).then_some(nonce),
        };
        let tbs = data.to_der().map_err(|e| e.to_string())?;
        let signed = self
            .pipeline
            .ca()
            .sign_ocsp(&tbs)
            .await
            .map_err(|e| e.to_string())?;
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: signed.algorithm,
            signature: BitString::from_bytes(&signed.signature).map_err(|e| e.to_string())?,
            certs: None,
        };
        OcspResponse::successful(basic).map_err(|e| e.to_string())
    }

    /// good / revoked / unknown for one CertID.
    fn status(&self, id: &CertId) -> Result<CertStatus, String> {
        let ours = self.ours.iter().any(|(alg, name, key)| {
            id.hash_algorithm.oid.to_string() == *alg
                && id.issuer_name_hash.as_bytes() == name.as_slice()
                && id.issuer_key_hash.as_bytes() == key.as_slice()
        });
        if !ours {
            return Ok(CertStatus::unknown());
        }
        let serial = rampart_acme::ari::serial_hex(id.serial_number.as_bytes());
        // A read of the inventory: in memory, on this task.
        let record = self
            .pipeline
            .store()
            .certificate(&serial)
            .map_err(|e| e.to_string())?;
        Ok(match record {
            None => CertStatus::unknown(),
            Some(record) => match (&record.status, &record.revocation) {
                (StoredStatus::Revoked, Some(revocation)) => CertStatus::revoked(RevokedInfo {
                    revocation_time: time(revocation.revoked_at)?,
                    revocation_reason: crl_reason(revocation.reason),
                }),
                _ => CertStatus::good(),
            },
        })
    }
}

fn time(at: OffsetDateTime) -> Result<OcspGeneralizedTime, String> {
    let seconds = u64::try_from(at.unix_timestamp()).map_err(|e| e.to_string())?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(seconds))
        .map(OcspGeneralizedTime)
        .map_err(|e| e.to_string())
}

/// The CRLReason, left out for `unspecified` (RFC 5280 §5.3.1).
fn crl_reason(reason: RevocationReason) -> Option<CrlReason> {
    Some(match reason {
        RevocationReason::Unspecified => return None,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::RemoveFromCrl => CrlReason::RemoveFromCRL,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
    })
}
