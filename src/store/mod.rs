//! The inventory: certificates, requests, API keys, the audit chain and the event outbox,
//! behind the [`Store`] trait with typed methods. [`sled_store::SledStore`] is the embedded
//! default. Nothing outside this module may assume sled, a single process, or key layouts.
//!
//! Every method that changes state is atomic (all or nothing, also across a crash) and,
//! where it records a revocation, durable (flushed) before it returns; an issuance is
//! durable once the [`Flush`] it returns completes (module `group_commit`: flushes shared
//! by concurrent changes, run by the store's own thread).
//!
//! Imports `model` and `pkix` (for hashing) only, and tokio's `Notify` (awaiting a flush).

pub mod audit;
pub mod group_commit;
pub mod sled_store;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{CertificateRecord, CertificateStatus, Identifier, Protocol, Revocation};

pub use audit::{AuditAction, AuditEntry, AuditQuery, AuditRecord, AuditVerification};
pub use group_commit::Flush;

/// Schema version this build reads and writes. 2: the SAN text moved into `idx_expiry`
/// (sled backend); a store of version 1 is upgraded at its first open. 3: certificate
/// records keep their DER as bytes and refer to their issuer chain, stored once (sled
/// backend); records of before are read as they are, and the version is raised at the
/// first open so that an older rampart refuses the store rather than misread it.
pub const SCHEMA_VERSION: u32 = 3;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is held by another process (sled is single-process).
    #[error("the store at {path} is in use by another process (is `rampart serve` running?)")]
    Locked {
        /// Store directory.
        path: String,
    },
    /// The store was written by a newer rampart.
    #[error("store schema version {found} is newer than this rampart supports ({supported})")]
    SchemaTooNew {
        /// Version on disk.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// A record could not be decoded.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// Tree or table.
        tree: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// I/O or engine failure.
    #[error("storage error: {0}")]
    Backend(String),
}

/// State of an enrollment request as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RequestState {
    /// Approved; the serial is reserved and signing is under way.
    Issuing {
        /// Reserved serial.
        serial: String,
    },
    /// Issued.
    Issued {
        /// The certificate's serial.
        serial: String,
    },
    /// Approved by policy, waiting for a person.
    Pending {
        /// Why approval is needed.
        reason: String,
    },
    /// Refused by policy or input checks.
    Denied {
        /// Why.
        reason: String,
    },
    /// The CA failed after approval, or the process died while signing.
    Failed {
        /// Why.
        reason: String,
    },
}

/// An enrollment request as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    pub request_id: Uuid,
    /// Front door.
    pub protocol: Protocol,
    /// Requesting identity name.
    pub identity: String,
    /// Template asked for.
    pub template: String,
    /// Identifiers asked for.
    pub identifiers: Vec<Identifier>,
    /// Current state.
    pub state: RequestState,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// What issuance needs once approved (pending requests only).
    #[serde(default)]
    pub pending: Option<PendingEnrollment>,
    /// The client's address (the TCP peer, or the client a trusted proxy names), when the
    /// request came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<std::net::IpAddr>,
}

/// A request kept until a person decides on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEnrollment {
    /// The CSR, DER.
    #[serde(with = "crate::model::base64_bytes")]
    pub csr_der: Vec<u8>,
    /// SHA-256 of the CSR, hex (protocols that re-send the same request find it by this).
    pub csr_sha256: String,
    /// The requester.
    pub identity: crate::model::Identity,
    /// Subject CN decided on.
    pub common_name: Option<String>,
    /// Lifetime decided on.
    pub validity_days: u32,
    /// Resource named.
    pub resource: Option<String>,
    /// Labels.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Serial of the certificate the request renews.
    #[serde(default)]
    pub renews: Option<String>,
}

/// An API key as stored: the secret only as a SHA-256 hash (keys are 256-bit random, so
/// a fast hash is enough; passwords would need a slow one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id, the part before the secret.
    pub key_id: String,
    /// Identity the key authenticates.
    pub identity: String,
    /// Roles of that identity.
    pub roles: Vec<String>,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Kinds of events put in the outbox for webhooks and other consumers. The snake_case
/// names are the webhook `type`s subscribers filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A certificate was issued.
    CertificateIssued,
    /// A certificate was issued to replace an older one (server-side renewal).
    CertificateRenewed,
    /// A certificate was revoked.
    CertificateRevoked,
    /// A certificate entered its template's renew-before window (once per window).
    CertificateExpiring,
    /// A request waits for approval.
    #[serde(alias = "approval_requested")]
    RequestPending,
    /// A person approved a pending request.
    RequestApproved,
    /// A request was denied (by policy or by a person).
    RequestDenied,
    /// A server-side renewal failed; it is retried with backoff.
    RenewalFailed,
    /// Writing a certificate to a delivery target failed (its previous files restored).
    DeliveryFailed,
}

impl EventKind {
    /// Every kind, for validating subscriptions.
    pub const ALL: [EventKind; 9] = [
        EventKind::CertificateIssued,
        EventKind::CertificateRenewed,
        EventKind::CertificateRevoked,
        EventKind::CertificateExpiring,
        EventKind::RequestPending,
        EventKind::RequestApproved,
        EventKind::RequestDenied,
        EventKind::RenewalFailed,
        EventKind::DeliveryFailed,
    ];

    /// The snake_case name (the webhook `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CertificateIssued => "certificate_issued",
            EventKind::CertificateRenewed => "certificate_renewed",
            EventKind::CertificateRevoked => "certificate_revoked",
            EventKind::CertificateExpiring => "certificate_expiring",
            EventKind::RequestPending => "request_pending",
            EventKind::RequestApproved => "request_approved",
            EventKind::RequestDenied => "request_denied",
            EventKind::RenewalFailed => "renewal_failed",
            EventKind::DeliveryFailed => "delivery_failed",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event type `{text}` ({})", names.join(", "))
            })
    }
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the outbox (assigned by the store).
    pub seq: u64,
    /// Unique id (idempotency key for receivers).
    pub id: Uuid,
    /// Kind.
    pub kind: EventKind,
    /// Time of the change.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Payload.
    pub data: serde_json::Value,
}

/// What one [`Store::prune_events`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Events removed.
    pub removed: usize,
    /// Where to go on, when the call stopped at its limit.
    pub resume: Option<u64>,
}

/// A new event (the store assigns its sequence number).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Kind.
    pub kind: EventKind,
    /// Time.
    pub time: OffsetDateTime,
    /// Payload.
    pub data: serde_json::Value,
}

/// Filters for listing certificates. All set filters must match.
#[derive(Debug, Clone, Default)]
pub struct CertificateQuery {
    /// Some SAN contains this text (case-insensitive).
    pub san_contains: Option<String>,
    /// Status at `now`.
    pub status: Option<CertificateStatus>,
    /// Expires between `now` and `now + expiring_within` (and is not expired).
    pub expiring_within: Option<time::Duration>,
    /// Issuing CA adapter id.
    pub issuer: Option<String>,
    /// Template.
    pub template: Option<String>,
    /// Owner identity.
    pub owner: Option<String>,
    /// Resume after this serial (exclusive).
    pub after: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// One page of a listing, in serial order.
#[derive(Debug, Clone)]
pub struct Page {
    /// The records.
    pub items: Vec<CertificateRecord>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// Result of a revocation attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RevokeOutcome {
    /// Revoked now.
    Revoked(Box<CertificateRecord>),
    /// Already revoked earlier (unchanged).
    AlreadyRevoked(Box<CertificateRecord>),
    /// No such certificate.
    NotFound,
}

/// The inventory.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Record a new request in state `Issuing` with its serial and the audit entry of the
    /// decision, atomically. Returns `false` (and writes nothing) if the serial is already
    /// taken, by a certificate or by another issuance under way. Not necessarily durable on
    /// return: the following `complete_issuance` or `fail_issuance` makes it so. A backend
    /// may defer recording the serial and appending the decision's audit entry to that call
    /// (the sled store does: see its module docs), so the decision's entry comes right
    /// before the issuance's or the failure's in the audit chain.
    fn begin_issuance(
        &self,
        request: &RequestRecord,
        decision: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Record the issued certificate, mark its request `Issued`, append the audit entry (as
    /// an `issued` record whose subject is the certificate's serial, whatever `audit` says
    /// there) and queue the event, atomically; durable once the returned [`Flush`]
    /// completes (shared with concurrent changes: async callers await it without holding
    /// a thread of the runtime). It does not wait for the flush, but may wait for the
    /// backend's indexes (sled: the SAN catalog, which a query, a merge or a periodic save
    /// can hold for milliseconds): call it off the async runtime.
    fn record_issuance(
        &self,
        certificate: &CertificateRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<Flush, StoreError>;

    /// [`Store::record_issuance`], durable on return.
    fn complete_issuance(
        &self,
        certificate: &CertificateRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        self.record_issuance(certificate, audit, event)?.wait()
    }

    /// Mark a request `Failed` after the CA failed, releasing nothing (the serial stays
    /// burnt), with its audit entry.
    fn fail_issuance(
        &self,
        request_id: Uuid,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Record a refused request with its audit entry and event.
    fn record_denial(
        &self,
        request: &RequestRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), StoreError>;

    /// Record a request waiting for approval with its audit entry and event. Durable.
    fn record_pending(
        &self,
        request: &RequestRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), StoreError>;

    /// Requests waiting for approval.
    fn pending_requests(&self) -> Result<Vec<RequestRecord>, StoreError>;

    /// Requests left in `Issuing` (by a crash); used at start-up to mark them failed.
    fn interrupted_requests(&self) -> Result<Vec<RequestRecord>, StoreError>;

    /// One request.
    fn request(&self, request_id: Uuid) -> Result<Option<RequestRecord>, StoreError>;

    /// One certificate by serial.
    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError>;

    /// Certificates matching `query`, a page at a time.
    fn list_certificates(
        &self,
        query: &CertificateQuery,
        now: OffsetDateTime,
    ) -> Result<Page, StoreError>;

    /// Revoke, with audit entry and event, atomically and durably.
    fn revoke(
        &self,
        serial: &str,
        revocation: &Revocation,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Every revoked certificate's serial and revocation, in serial order.
    fn revoked(&self) -> Result<Vec<(String, Revocation)>, StoreError>;

    /// Revocations recorded since the store was opened: it moves exactly when
    /// [`Store::revoked`] changes, so a list read after it was `n` is current while it is.
    fn revocations_since_open(&self) -> u64;

    /// Store a new API key with its audit entry. Durable on return.
    fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError>;

    /// An API key by id.
    fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Number of API keys.
    fn api_key_count(&self) -> Result<usize, StoreError>;

    /// Protocol front ends' own state (ACME accounts, orders…), as opaque values under a
    /// namespace. Durable on return when `durable`; otherwise written within the backend's
    /// flush interval (sled: 500 ms).
    fn protocol_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        durable: bool,
    ) -> Result<(), StoreError>;

    /// Remove one protocol state value (nothing if absent). Durable on return when
    /// `durable`.
    fn protocol_delete(&self, namespace: &str, key: &str, durable: bool) -> Result<(), StoreError>;

    /// Remove one protocol state value and return it: whoever gets `Some` owns it (one-time
    /// secrets are consumed this way). Durable on return.
    fn protocol_take(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Ask for a flush covering every change written before the call: those changes are
    /// durable once the returned [`Flush`] completes (how async callers make a change
    /// durable without blocking a thread: write it unflushed, then await this).
    fn flush(&self) -> Flush;

    /// One protocol state value.
    fn protocol_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Protocol state values whose key starts with `prefix`, in key order.
    fn protocol_scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.protocol_scan_after(namespace, prefix, None, usize::MAX)
    }

    /// At most `limit` of the values [`Store::protocol_scan`] lists, from the first key
    /// after `after` on (a page; `None`: from the start).
    fn protocol_scan_after(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Append an audit entry on its own (decisions without other state change).
    fn append_audit(&self, audit: &AuditEntry) -> Result<(), StoreError>;

    /// Audit records with `seq >= from`, at most `limit`.
    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Queue an event on its own (with its audit entry, when it has one), atomically and
    /// durably: for lifecycle events whose cause is not another store change.
    fn record_event(&self, audit: Option<&AuditEntry>, event: &NewEvent) -> Result<(), StoreError>;

    /// The sequence number the next event will get (= events ever queued).
    fn outbox_next(&self) -> Result<u64, StoreError>;

    /// Events in the outbox with `seq >= from`, at most `limit`.
    fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// Remove outbox events from `from` on while their `seq` is below `below` and they were
    /// queued before `queued_before`, stopping at the first that is not (events are queued
    /// in time order); the events in `keep` stay where they are. At most `limit` are
    /// removed per call: [`Pruned::resume`] says where the next call goes on. Not flushed:
    /// after a crash they are simply removed again. [`Store::outbox_next`] is unchanged.
    fn prune_events(
        &self,
        from: u64,
        below: u64,
        queued_before: OffsetDateTime,
        keep: &std::collections::BTreeSet<u64>,
        limit: usize,
    ) -> Result<Pruned, StoreError>;

    /// The head of the audit chain as last written.
    fn audit_head(&self) -> Result<audit::ChainHead, StoreError>;

    /// Walk the whole audit chain, check every link and that it reaches the stored head.
    fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut verifier = audit::ChainVerifier::default();
        let mut from = 0;
        loop {
            let batch = self.audit_records(from, 1024)?;
            let Some(last) = batch.last() else { break };
            from = last.seq + 1;
            for record in &batch {
                if let Err(broken) = verifier.check(record) {
                    return Ok(broken);
                }
            }
        }
        let checked = verifier.finish();
        // The stored head says how far the chain must reach: records removed from the end
        // leave a chain that links but stops short.
        let expected = self.audit_head()?;
        if let AuditVerification::Intact { records, head } = &checked {
            if *records != expected.next_seq || *head != expected.last_hash {
                return Ok(AuditVerification::Broken {
                    seq: *records,
                    reason: format!(
                        "the chain ends after {records} record(s) but {} were written",
                        expected.next_seq
                    ),
                });
            }
        }
        Ok(checked)
    }
}
