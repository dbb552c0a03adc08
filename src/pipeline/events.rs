//! The payloads of outbox events, in one place: what webhook subscribers and other
//! consumers receive for each [`EventKind`]. Certificate events carry what automation
//! pipelines key on (serial, subject, SANs, SHA-256 and SHA-1 thumbprints, not-after,
//! template, requester, metadata); request events carry the request and the reason.
//!
//! Imports `model`, `store` (event types) and `pkix` (hashing).

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{CertificateRecord, Identifier};
use crate::pkix::sha256_hex;
use crate::store::{EventKind, NewEvent};

/// SHA-1 of a DER certificate, hex: the "thumbprint" Windows tooling and many inventories
/// still key on (identification only, never trust).
pub fn sha1_thumbprint(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The common description of a certificate in events.
pub fn certificate_data(record: &CertificateRecord) -> Value {
    json!({
        "id": record.serial,
        "serial": record.serial,
        "request_id": record.request_id,
        "subject": record.subject,
        "sans": record.sans.iter().map(Identifier::to_string).collect::<Vec<_>>(),
        "thumbprint_sha256": sha256_hex(&record.der),
        "thumbprint_sha1": sha1_thumbprint(&record.der),
        "not_before": rfc3339(record.not_before),
        "not_after": rfc3339(record.not_after),
        "template": record.template,
        "requester": record.owner,
        "protocol": record.protocol,
        "issuer": record.issuer,
        "resource": record.resource,
        "metadata": record.metadata,
    })
}

/// `certificate_issued`.
pub fn issued(record: &CertificateRecord, time: OffsetDateTime) -> NewEvent {
    NewEvent {
        kind: EventKind::CertificateIssued,
        time,
        data: certificate_data(record),
    }
}

/// `certificate_renewed`: the new certificate, with the old one's serial and thumbprints.
pub fn renewed(new: &CertificateRecord, old: &CertificateRecord, time: OffsetDateTime) -> NewEvent {
    let mut data = certificate_data(new);
    data["old_serial"] = json!(old.serial);
    data["old_thumbprint_sha256"] = json!(sha256_hex(&old.der));
    data["old_thumbprint_sha1"] = json!(sha1_thumbprint(&old.der));
    NewEvent {
        kind: EventKind::CertificateRenewed,
        time,
        data,
    }
}

/// `certificate_revoked`.
pub fn revoked(record: &CertificateRecord, time: OffsetDateTime) -> NewEvent {
    let mut data = certificate_data(record);
    if let Some(revocation) = &record.revocation {
        data["reason"] = json!(revocation.reason.name());
        data["reason_code"] = json!(revocation.reason.code());
        data["revoked_at"] = json!(rfc3339(revocation.revoked_at));
        data["revoked_by"] = json!(revocation.revoked_by);
    }
    NewEvent {
        kind: EventKind::CertificateRevoked,
        time,
        data,
    }
}

/// `certificate_expiring`: inside the renew-before window that starts at `window_start`.
pub fn expiring(
    record: &CertificateRecord,
    window_start: OffsetDateTime,
    time: OffsetDateTime,
) -> NewEvent {
    let mut data = certificate_data(record);
    data["renew_after"] = json!(rfc3339(window_start));
    data["expires_in_seconds"] = json!((record.not_after - time).whole_seconds().max(0));
    NewEvent {
        kind: EventKind::CertificateExpiring,
        time,
        data,
    }
}

/// A request event: `request_pending`, `request_approved`, `request_denied`.
pub fn request(
    kind: EventKind,
    request_id: Uuid,
    requester: &str,
    template: &str,
    identifiers: &[Identifier],
    detail: Value,
    time: OffsetDateTime,
) -> NewEvent {
    let mut data = json!({
        "request_id": request_id,
        "requester": requester,
        "template": template,
        "identifiers": identifiers.iter().map(Identifier::to_string).collect::<Vec<_>>(),
    });
    if let (Some(data), Value::Object(detail)) = (data.as_object_mut(), detail) {
        data.extend(detail);
    }
    NewEvent { kind, time, data }
}

/// A lifecycle failure about a certificate: `renewal_failed`, `delivery_failed`.
pub fn failure(
    kind: EventKind,
    record: &CertificateRecord,
    reason: &str,
    detail: Value,
    time: OffsetDateTime,
) -> NewEvent {
    let mut data = certificate_data(record);
    data["reason"] = json!(reason);
    if let (Some(data), Value::Object(detail)) = (data.as_object_mut(), detail) {
        data.extend(detail);
    }
    NewEvent { kind, time, data }
}
