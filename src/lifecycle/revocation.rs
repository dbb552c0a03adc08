//! Revoking a certificate: who may, with which RFC 5280 reason, recorded with its audit
//! entry and event in one durable transaction.

use serde_json::json;

use crate::model::{CertificateRecord, Identity, Revocation, RevocationReason};
use crate::pipeline::events;
use crate::pipeline::Pipeline;
use crate::policy::identity::may_manage;
use crate::store::{AuditAction, AuditEntry, RevokeOutcome, StoreError};

/// Why a revocation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No such certificate visible to the caller.
    #[error("no certificate with serial {0}")]
    NotFound(String),
    /// Revoked before.
    #[error("certificate {serial} was already revoked ({reason})")]
    AlreadyRevoked {
        /// Serial.
        serial: String,
        /// The earlier reason.
        reason: &'static str,
    },
    /// A reason that is not a revocation.
    #[error("{0}")]
    ReasonNotAllowed(String),
    /// The CA that issued the certificate (an upstream CA) refused or failed; nothing was
    /// recorded.
    #[error("the issuing CA did not revoke {serial}: {reason}")]
    Ca {
        /// Serial.
        serial: String,
        /// What the CA said.
        reason: String,
    },
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `identity` may see and act on `certificate`: its owner, or a manager.
pub fn may_access(
    pipeline: &Pipeline,
    identity: &Identity,
    certificate: &CertificateRecord,
) -> bool {
    certificate.owner == identity.name || may_manage(&pipeline.config(), identity)
}

/// Reasons a requester may give. `removeFromCRL` only exists in delta CRLs and
/// `certificateHold` would need an un-hold, which rampart does not offer: revocation here is
/// permanent.
pub fn check_reason(reason: RevocationReason) -> Result<(), RevokeError> {
    match reason {
        RevocationReason::RemoveFromCrl | RevocationReason::CertificateHold => {
            Err(RevokeError::ReasonNotAllowed(format!(
                "`{}` is not accepted: revocation in rampart is permanent",
                reason.name()
            )))
        }
        _ => Ok(()),
    }
}

/// Revoke `serial` on behalf of `identity`.
pub async fn revoke(
    pipeline: &Pipeline,
    identity: &Identity,
    serial: &str,
    reason: RevocationReason,
) -> Result<CertificateRecord, RevokeError> {
    check_reason(reason)?;
    let owned = serial.to_string();
    let existing = pipeline
        .with_store(move |store| store.certificate(&owned))
        .await?;
    match existing {
        Some(cert) if may_access(pipeline, identity, &cert) => {}
        _ => return Err(RevokeError::NotFound(serial.to_string())),
    }
    revoke_authorized(pipeline, &identity.name, serial, reason).await
}

/// Revoke `serial` for `actor`, whose authority the caller has already established (a
/// protocol's own proof: ACME account authorizations or the certificate key).
pub async fn revoke_authorized(
    pipeline: &Pipeline,
    actor: &str,
    serial: &str,
    reason: RevocationReason,
) -> Result<CertificateRecord, RevokeError> {
    check_reason(reason)?;
    let now = pipeline.clock().now();
    let revocation = Revocation {
        revoked_at: now,
        reason,
        revoked_by: actor.to_string(),
    };
    let audit = AuditEntry {
        time: now,
        request_id: None,
        actor: actor.to_string(),
        action: AuditAction::Revoked,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: reason.name().into(),
        subject: Some(serial.to_string()),
        details: json!({ "reason_code": reason.code() }),
    };
    let owned = serial.to_string();
    let Some(mut record) = pipeline
        .with_store(move |store| store.certificate(&owned))
        .await?
    else {
        return Err(RevokeError::NotFound(serial.to_string()));
    };
    // A CA other than the built-in one learns of the revocation first: rampart records only
    // what the issuing CA accepted. (A certificate revoked before is refused by the store.)
    if record.revocation.is_none() {
        if let Some(ca) = pipeline.ca_by_id(&record.issuer) {
            ca.revoke(&record.der, reason.code())
                .await
                .map_err(|e| RevokeError::Ca {
                    serial: serial.to_string(),
                    reason: e.to_string(),
                })?;
        }
    }
    record.revocation = Some(revocation.clone());
    let event = events::revoked(&record, now);
    let owned = serial.to_string();
    let outcome = pipeline
        .with_store(move |store| store.revoke(&owned, &revocation, &audit, &event))
        .await?;
    match outcome {
        RevokeOutcome::Revoked(cert) => {
            tracing::info!(%serial, reason = reason.name(), by = %actor, "certificate revoked");
            Ok(*cert)
        }
        RevokeOutcome::AlreadyRevoked(cert) => Err(RevokeError::AlreadyRevoked {
            serial: serial.to_string(),
            reason: cert.revocation.map_or("unknown", |r| r.reason.name()),
        }),
        RevokeOutcome::NotFound => Err(RevokeError::NotFound(serial.to_string())),
    }
}
