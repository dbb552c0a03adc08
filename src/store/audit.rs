//! The tamper-evident audit chain: every record carries the hash of the one before it, so
//! changing, removing or reordering any record breaks every later link.
//!
//! `hash = SHA-256(prev_hash || "\n" || JSON({seq, entry}))`, hex; the first record's
//! `prev_hash` is 64 zeros.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::pkix::sha256_hex;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A policy decision on an enrollment request.
    Decision,
    /// A certificate was issued.
    Issued,
    /// Issuance failed after approval.
    IssuanceFailed,
    /// A certificate was revoked.
    Revoked,
    /// An API key was created.
    ApiKeyCreated,
    /// The built-in CA was created.
    CaCreated,
    /// An escrowed private key was handed out.
    KeyRecovered,
    /// A one-time SCEP challenge was minted.
    ChallengeCreated,
    /// A SCEP RA certificate was issued (first start or rotation).
    RaRotated,
    /// The policy (templates, roles, approvals, key policy) was reloaded.
    PolicyReloaded,
    /// Presented credentials were refused before any request was made of them: a wrong
    /// SCEP challenge or renewal signer, a wrong EST password or client certificate, an
    /// unknown or forged ACME external account binding, a wrong API key.
    CredentialsRefused,
}

/// One audit entry, before it is chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Request id, when the entry belongs to a request.
    pub request_id: Option<Uuid>,
    /// Who (identity name).
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// `approved`, `denied`, `ok`, `failed`.
    pub outcome: String,
    /// Which policy layer decided, for decisions.
    pub layer: Option<String>,
    /// Which rule decided, for decisions.
    pub rule: Option<String>,
    /// Human-readable reason.
    pub reason: String,
    /// Serial, key id or other subject of the action.
    pub subject: Option<String>,
    /// Structured details (the policy trace, names…).
    pub details: serde_json::Value,
}

/// Filters for listing audit records; every set filter must match.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// The actor (identity name), exactly.
    pub identity: Option<String>,
    /// A name (DNS name, IP, serial, key id) the record mentions, case-insensitive substring.
    pub name: Option<String>,
    /// The outcome (`approved`, `denied`, `pending`, `ok`, `failed`).
    pub outcome: Option<String>,
    /// The action (`decision`, `issued`, `revoked`, …).
    pub action: Option<String>,
    /// The client address (`details.client`) in this network (a single address: `/32`,
    /// `/128`).
    pub client: Option<ipnet::IpNet>,
}

impl AuditQuery {
    /// Whether `entry` passes every set filter.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let action = serde_json::to_value(entry.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.identity.as_ref().is_none_or(|i| *i == entry.actor)
            && self.outcome.as_ref().is_none_or(|o| *o == entry.outcome)
            && self.action.as_ref().is_none_or(|a| *a == action)
            && self.client.as_ref().is_none_or(|network| {
                entry.details["client"]
                    .as_str()
                    .and_then(|client| client.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|client| network.contains(&client))
            })
            && self.name.as_ref().is_none_or(|name| {
                let needle = name.to_ascii_lowercase();
                entry
                    .subject
                    .as_ref()
                    .is_some_and(|s| s.to_ascii_lowercase().contains(&needle))
                    || entry
                        .details
                        .to_string()
                        .to_ascii_lowercase()
                        .contains(&needle)
            })
    }
}

/// A chained audit record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position, from 0, without gaps.
    pub seq: u64,
    /// The entry.
    pub entry: AuditEntry,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    entry: &'a AuditEntry,
}

impl AuditRecord {
    /// Chain `entry` after a record whose hash is `prev_hash`, at position `seq`.
    pub fn chain(seq: u64, entry: AuditEntry, prev_hash: String) -> Self {
        let hash = Self::compute_hash(seq, &entry, &prev_hash);
        AuditRecord {
            seq,
            entry,
            prev_hash,
            hash,
        }
    }

    fn compute_hash(seq: u64, entry: &AuditEntry, prev_hash: &str) -> String {
        let body = serde_json::to_string(&Hashed { seq, entry }).expect("audit entries serialize");
        sha256_hex(format!("{prev_hash}\n{body}").as_bytes())
    }
}

/// The head of the chain, kept by the store to append the next record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Next sequence number.
    pub next_seq: u64,
    /// Hash of the last record.
    pub last_hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            next_seq: 0,
            last_hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Outcome of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AuditVerification {
    /// Every link holds.
    Intact {
        /// Number of records checked.
        records: u64,
        /// Hash of the last record (pin it elsewhere to detect truncation).
        head: String,
    },
    /// A link is broken at `seq`.
    Broken {
        /// First bad record.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Checks records one by one, in order.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    head: ChainHead,
}

impl ChainVerifier {
    /// Check the next record.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), AuditVerification> {
        let broken = |reason: String| AuditVerification::Broken {
            seq: record.seq,
            reason,
        };
        if record.seq != self.head.next_seq {
            return Err(broken(format!(
                "expected record {} here",
                self.head.next_seq
            )));
        }
        if record.prev_hash != self.head.last_hash {
            return Err(broken(
                "prev_hash does not match the previous record".into(),
            ));
        }
        if AuditRecord::compute_hash(record.seq, &record.entry, &record.prev_hash) != record.hash {
            return Err(broken("record content does not match its hash".into()));
        }
        self.head = ChainHead {
            next_seq: record.seq + 1,
            last_hash: record.hash.clone(),
        };
        Ok(())
    }

    /// The verdict after the last record.
    pub fn finish(self) -> AuditVerification {
        AuditVerification::Intact {
            records: self.head.next_seq,
            head: self.head.last_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: &str) -> AuditEntry {
        AuditEntry {
            time: OffsetDateTime::UNIX_EPOCH,
            request_id: None,
            actor: "tester".into(),
            action: AuditAction::Decision,
            outcome: "approved".into(),
            layer: None,
            rule: None,
            reason: reason.into(),
            subject: None,
            details: serde_json::json!({"b": 1, "a": [1, 2]}),
        }
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::default();
        (0..n)
            .map(|i| {
                let record = AuditRecord::chain(i, entry(&format!("r{i}")), head.last_hash.clone());
                head = ChainHead {
                    next_seq: i + 1,
                    last_hash: record.hash.clone(),
                };
                record
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> AuditVerification {
        let mut verifier = ChainVerifier::default();
        for record in records {
            if let Err(broken) = verifier.check(record) {
                return broken;
            }
        }
        verifier.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let records = chain(5);
        assert!(matches!(
            verify(&records),
            AuditVerification::Intact { records: 5, .. }
        ));
    }

    #[test]
    fn edited_removed_or_reordered_records_break_the_chain() {
        let mut edited = chain(5);
        edited[2].entry.reason = "something else".into();
        assert!(matches!(
            verify(&edited),
            AuditVerification::Broken { seq: 2, .. }
        ));

        let mut removed = chain(5);
        removed.remove(3);
        assert!(matches!(
            verify(&removed),
            AuditVerification::Broken { seq: 4, .. }
        ));

        let mut swapped = chain(5);
        swapped.swap(1, 2);
        assert!(matches!(verify(&swapped), AuditVerification::Broken { .. }));

        let mut rehashed = chain(5);
        rehashed[1].entry.actor = "mallory".into();
        rehashed[1].hash = AuditRecord::compute_hash(1, &rehashed[1].entry, &rehashed[1].prev_hash);
        assert!(matches!(
            verify(&rehashed),
            AuditVerification::Broken { seq: 2, .. }
        ));
    }
}
