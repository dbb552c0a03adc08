//! The embedded sled backend (sled 0.34). One tree per record kind plus secondary indexes:
//!
//! | tree            | key                               | value               |
//! |-----------------|-----------------------------------|---------------------|
//! | `certificates`  | serial                            | CertificateRecord   |
//! | `requests`      | request id (16 bytes)             | RequestRecord       |
//! | `serials`       | serial                            | request id          |
//! | `idx_not_after` | not-after (sortable u64) `/` serial | —                 |
//! | `idx_owner`     | owner `\0` serial                 | —                   |
//! | `idx_san`       | SAN value `\0` serial             | —                   |
//! | `audit`         | seq (u64 BE)                      | AuditRecord         |
//! | `outbox`        | seq (u64 BE)                      | Event               |
//! | `api_keys`      | key id                            | ApiKeyRecord        |
//! | `meta`          | `schema_version`, `audit_head`, `outbox_next` | JSON    |
//! | `protocol_state`| namespace `\0` key (ACME records…) | opaque (JSON)     |
//!
//! Values are JSON. Every change runs in one multi-tree transaction; issuance and
//! revocation flush to disk before returning.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::{AuditEntry, AuditRecord, ChainHead};
use super::{
    ApiKeyRecord, CertificateQuery, Event, NewEvent, Page, RequestRecord, RequestState,
    RevokeOutcome, Store, StoreError, SCHEMA_VERSION,
};
use crate::model::{CertificateRecord, Revocation, StoredStatus};

const META_SCHEMA: &[u8] = b"schema_version";
const META_AUDIT_HEAD: &[u8] = b"audit_head";
const META_OUTBOX_NEXT: &[u8] = b"outbox_next";
/// `revoked/<serial>` → [`Revocation`]: the revoked certificates, for CRLs.
const META_REVOKED_PREFIX: &[u8] = b"revoked/";
/// Present once the revoked index covers every certificate (stores from before it).
const META_REVOKED_INDEXED: &[u8] = b"revoked_indexed";

fn revoked_key(serial: &str) -> Vec<u8> {
    [META_REVOKED_PREFIX, serial.as_bytes()].concat()
}

/// Group commit: callers that need their writes durable share flushes. A flush started
/// after a caller's write covers it; callers arriving while one runs wait for the next,
/// which one of them performs for all. Under load N durable writes cost far fewer than N
/// log syncs, with the same guarantee: durable on return.
#[derive(Debug, Default)]
struct GroupCommit {
    state: std::sync::Mutex<CommitState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Durability requests so far (each caller's ticket).
    requested: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is running.
    flushing: bool,
}

impl GroupCommit {
    /// Return once everything written before the call is durable.
    fn sync(&self, db: &sled::Db) -> Result<(), StoreError> {
        fn lock(m: &std::sync::Mutex<CommitState>) -> std::sync::MutexGuard<'_, CommitState> {
            m.lock().unwrap_or_else(|e| e.into_inner())
        }
        let mut state = lock(&self.state);
        state.requested += 1;
        let ticket = state.requested;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if !state.flushing {
                state.flushing = true;
                let covers = state.requested;
                drop(state);
                let result = db.flush().map_err(backend);
                state = lock(&self.state);
                state.flushing = false;
                if result.is_ok() {
                    state.durable = state.durable.max(covers);
                }
                self.done.notify_all();
                result?;
                continue;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// sled-backed [`Store`].
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    commits: GroupCommit,
    t: Trees,
    /// Protocol state (ACME accounts, orders…): `namespace \0 key` → value. Outside the
    /// transactional trees: each write stands alone.
    protocol_state: sled::Tree,
}

#[derive(Debug)]
struct Trees {
    certificates: sled::Tree,
    requests: sled::Tree,
    serials: sled::Tree,
    idx_not_after: sled::Tree,
    idx_owner: sled::Tree,
    idx_san: sled::Tree,
    audit: sled::Tree,
    outbox: sled::Tree,
    api_keys: sled::Tree,
    meta: sled::Tree,
}

/// The transactional view of every tree.
struct Tx<'a> {
    certificates: &'a TransactionalTree,
    requests: &'a TransactionalTree,
    serials: &'a TransactionalTree,
    idx_not_after: &'a TransactionalTree,
    idx_owner: &'a TransactionalTree,
    idx_san: &'a TransactionalTree,
    audit: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    api_keys: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize")
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn not_after_key(at: OffsetDateTime, serial: &str) -> Vec<u8> {
    let mut key = sortable_time(at).to_be_bytes().to_vec();
    key.push(b'/');
    key.extend_from_slice(serial.as_bytes());
    key
}

fn sortable_time(at: OffsetDateTime) -> u64 {
    (at.unix_timestamp() as u64) ^ (1 << 63)
}

fn protocol_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + 1 + key.len());
    out.extend_from_slice(namespace.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

fn pair_key(prefix: &str, serial: &str) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(serial.as_bytes());
    key
}

impl Tx<'_> {
    fn append_audit(&self, entry: &AuditEntry) -> TxResult<()> {
        let head: ChainHead = match self.meta.get(META_AUDIT_HEAD)? {
            Some(bytes) => decode("meta", &bytes).map_err(abort)?,
            None => ChainHead::default(),
        };
        let record = AuditRecord::chain(head.next_seq, entry.clone(), head.last_hash);
        self.audit
            .insert(&record.seq.to_be_bytes(), encode(&record))?;
        let next = ChainHead {
            next_seq: record.seq + 1,
            last_hash: record.hash,
        };
        self.meta.insert(META_AUDIT_HEAD, encode(&next))?;
        Ok(())
    }

    fn push_event(&self, event: &NewEvent) -> TxResult<()> {
        let seq: u64 = match self.meta.get(META_OUTBOX_NEXT)? {
            Some(bytes) => decode("meta", &bytes).map_err(abort)?,
            None => 0,
        };
        let stored = Event {
            seq,
            id: Uuid::now_v7(),
            kind: event.kind,
            time: event.time,
            data: event.data.clone(),
        };
        self.outbox.insert(&seq.to_be_bytes(), encode(&stored))?;
        self.meta.insert(META_OUTBOX_NEXT, encode(&(seq + 1)))?;
        Ok(())
    }

    fn put_request(&self, request: &RequestRecord) -> TxResult<()> {
        self.requests
            .insert(request.request_id.as_bytes(), encode(request))?;
        Ok(())
    }

    fn request(&self, id: Uuid) -> TxResult<Option<RequestRecord>> {
        match self.requests.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode("requests", &bytes).map_err(abort)?)),
            None => Ok(None),
        }
    }

    fn put_certificate(&self, cert: &CertificateRecord, new: bool) -> TxResult<()> {
        self.certificates
            .insert(cert.serial.as_bytes(), encode(cert))?;
        if new {
            self.idx_not_after
                .insert(not_after_key(cert.not_after, &cert.serial), &[])?;
            self.idx_owner
                .insert(pair_key(&cert.owner, &cert.serial), &[])?;
            for san in &cert.sans {
                self.idx_san
                    .insert(pair_key(&san.value(), &cert.serial), &[])?;
            }
        }
        Ok(())
    }
}

impl SledStore {
    /// Open (or create) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            // Favour CPU over disk space: fewer rewrites of segments and node fragments.
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                _ => backend(e),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let t = Trees {
            certificates: tree("certificates")?,
            requests: tree("requests")?,
            serials: tree("serials")?,
            idx_not_after: tree("idx_not_after")?,
            idx_owner: tree("idx_owner")?,
            idx_san: tree("idx_san")?,
            audit: tree("audit")?,
            outbox: tree("outbox")?,
            api_keys: tree("api_keys")?,
            meta: tree("meta")?,
        };
        match t.meta.get(META_SCHEMA).map_err(backend)? {
            None => {
                t.meta
                    .insert(META_SCHEMA, encode(&SCHEMA_VERSION))
                    .map_err(backend)?;
                db.flush().map_err(backend)?;
            }
            Some(bytes) => {
                let found: u32 = decode("meta", &bytes)?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        if t.meta.get(META_REVOKED_INDEXED).map_err(backend)?.is_none() {
            for item in t.certificates.iter().values() {
                let cert: CertificateRecord = decode("certificates", &item.map_err(backend)?)?;
                if let Some(revocation) = &cert.revocation {
                    t.meta
                        .insert(revoked_key(&cert.serial), encode(revocation))
                        .map_err(backend)?;
                }
            }
            t.meta
                .insert(META_REVOKED_INDEXED, encode(&true))
                .map_err(backend)?;
            db.flush().map_err(backend)?;
        }
        let protocol_state = tree("protocol_state")?;
        Ok(SledStore {
            protocol_state,
            commits: GroupCommit::default(),
            db,
            path: path.to_path_buf(),
            t,
        })
    }

    /// Directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn transact<T>(
        &self,
        durable: bool,
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let t = &self.t;
        let result = (
            &t.certificates,
            &t.requests,
            &t.serials,
            &t.idx_not_after,
            &t.idx_owner,
            &t.idx_san,
            &t.audit,
            &t.outbox,
            &t.api_keys,
            &t.meta,
        )
            .transaction(
                |(
                    certificates,
                    requests,
                    serials,
                    idx_not_after,
                    idx_owner,
                    idx_san,
                    audit,
                    outbox,
                    api_keys,
                    meta,
                )| {
                    f(&Tx {
                        certificates,
                        requests,
                        serials,
                        idx_not_after,
                        idx_owner,
                        idx_san,
                        audit,
                        outbox,
                        api_keys,
                        meta,
                    })
                },
            )
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;
        if durable {
            self.commits.sync(&self.db)?;
        }
        Ok(result)
    }

    fn get<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match tree.get(key).map_err(backend)? {
            Some(bytes) => Ok(Some(decode(name, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Serials > `after` that the query's most selective index yields, in serial order.
    /// Requests whose state passes `keep` (a scan: pending and interrupted requests are few).
    fn requests_where(
        &self,
        keep: impl Fn(&RequestState) -> bool,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.requests.iter().values() {
            let request: RequestRecord = decode("requests", &item.map_err(backend)?)?;
            if keep(&request.state) {
                out.push(request);
            }
        }
        Ok(out)
    }

    fn candidate_serials(
        &self,
        query: &CertificateQuery,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let after = query.after.clone().unwrap_or_default();
        let serial_of = |key: &[u8], prefix_len: usize| {
            String::from_utf8_lossy(&key[prefix_len..]).into_owned()
        };
        let mut serials: Vec<String> = if let Some(owner) = &query.owner {
            let prefix = pair_key(owner, "");
            self.t
                .idx_owner
                .scan_prefix(&prefix)
                .keys()
                .map(|k| k.map(|k| serial_of(&k, prefix.len())))
                .collect::<Result<_, _>>()
                .map_err(backend)?
        } else if let Some(within) = query.expiring_within {
            let start = sortable_time(now).to_be_bytes().to_vec();
            let end = (sortable_time(now + within) + 1).to_be_bytes().to_vec();
            self.t
                .idx_not_after
                .range(start..end)
                .keys()
                .map(|k| k.map(|k| serial_of(&k, 9)))
                .collect::<Result<_, _>>()
                .map_err(backend)?
        } else {
            return Ok(Vec::new());
        };
        serials.retain(|s| s.as_str() > after.as_str());
        serials.sort();
        Ok(serials)
    }
}

fn matches(query: &CertificateQuery, cert: &CertificateRecord, now: OffsetDateTime) -> bool {
    if let Some(text) = &query.san_contains {
        let needle = text.to_ascii_lowercase();
        if !cert.sans.iter().any(|s| s.value().contains(&needle)) {
            return false;
        }
    }
    if query
        .status
        .is_some_and(|status| cert.status_at(now) != status)
    {
        return false;
    }
    if let Some(within) = query.expiring_within {
        if cert.not_after < now || cert.not_after > now + within {
            return false;
        }
    }
    query.issuer.as_ref().is_none_or(|i| &cert.issuer == i)
        && query.template.as_ref().is_none_or(|t| &cert.template == t)
        && query.owner.as_ref().is_none_or(|o| &cert.owner == o)
}

impl Store for SledStore {
    fn begin_issuance(
        &self,
        request: &RequestRecord,
        decision: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let RequestState::Issuing { serial } = &request.state else {
            return Err(StoreError::Backend(
                "begin_issuance needs a request in state issuing".into(),
            ));
        };
        // Not flushed: until complete_issuance (which is) nothing has left the process, and
        // the log is sequential, so that flush also writes this reservation.
        self.transact(false, |tx| {
            if tx.serials.get(serial.as_bytes())?.is_some() {
                return Ok(false);
            }
            tx.serials
                .insert(serial.as_bytes(), request.request_id.as_bytes())?;
            tx.put_request(request)?;
            tx.append_audit(decision)?;
            Ok(true)
        })
    }

    fn complete_issuance(
        &self,
        cert: &CertificateRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        self.transact(true, |tx| {
            let mut request = tx.request(cert.request_id)?.ok_or_else(|| {
                abort(StoreError::Backend(format!(
                    "request {} was never begun",
                    cert.request_id
                )))
            })?;
            if tx.certificates.get(cert.serial.as_bytes())?.is_some() {
                return Err(abort(StoreError::Backend(format!(
                    "serial {} already recorded",
                    cert.serial
                ))));
            }
            request.state = RequestState::Issued {
                serial: cert.serial.clone(),
            };
            request.updated_at = audit.time;
            tx.put_request(&request)?;
            tx.put_certificate(cert, true)?;
            tx.append_audit(audit)?;
            tx.push_event(event)
        })
    }

    fn fail_issuance(
        &self,
        request_id: Uuid,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.transact(true, |tx| {
            if let Some(mut request) = tx.request(request_id)? {
                request.state = RequestState::Failed {
                    reason: reason.into(),
                };
                request.updated_at = audit.time;
                tx.put_request(&request)?;
            }
            tx.append_audit(audit)
        })
    }

    fn record_denial(
        &self,
        request: &RequestRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        self.transact(false, |tx| {
            tx.put_request(request)?;
            tx.append_audit(audit)?;
            tx.push_event(event)
        })
    }

    fn record_pending(
        &self,
        request: &RequestRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        self.transact(true, |tx| {
            tx.put_request(request)?;
            tx.append_audit(audit)?;
            tx.push_event(event)
        })
    }

    fn pending_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.requests_where(|state| matches!(state, RequestState::Pending { .. }))
    }

    fn interrupted_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.requests_where(|state| matches!(state, RequestState::Issuing { .. }))
    }

    fn request(&self, request_id: Uuid) -> Result<Option<RequestRecord>, StoreError> {
        Self::get(&self.t.requests, "requests", request_id.as_bytes())
    }

    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        Self::get(&self.t.certificates, "certificates", serial.as_bytes())
    }

    fn list_certificates(
        &self,
        query: &CertificateQuery,
        now: OffsetDateTime,
    ) -> Result<Page, StoreError> {
        let limit = query.limit.max(1);
        let mut items = Vec::new();
        let mut more = false;
        let mut take = |cert: CertificateRecord| {
            if !matches(query, &cert, now) {
                return true;
            }
            if items.len() == limit {
                more = true;
                return false;
            }
            items.push(cert);
            true
        };
        if query.owner.is_some() || query.expiring_within.is_some() {
            for serial in self.candidate_serials(query, now)? {
                if let Some(cert) = self.certificate(&serial)? {
                    if !take(cert) {
                        break;
                    }
                }
            }
        } else {
            let start = match &query.after {
                Some(after) => std::ops::Bound::Excluded(after.as_bytes().to_vec()),
                None => std::ops::Bound::Unbounded,
            };
            for item in self
                .t
                .certificates
                .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
                .values()
            {
                let cert: CertificateRecord = decode("certificates", &item.map_err(backend)?)?;
                if !take(cert) {
                    break;
                }
            }
        }
        let next_after = if more {
            items.last().map(|c| c.serial.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    fn revoke(
        &self,
        serial: &str,
        revocation: &Revocation,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        self.transact(true, |tx| {
            let Some(bytes) = tx.certificates.get(serial.as_bytes())? else {
                return Ok(RevokeOutcome::NotFound);
            };
            let mut cert: CertificateRecord = decode("certificates", &bytes).map_err(abort)?;
            if cert.status == StoredStatus::Revoked {
                return Ok(RevokeOutcome::AlreadyRevoked(Box::new(cert)));
            }
            cert.status = StoredStatus::Revoked;
            cert.revocation = Some(revocation.clone());
            tx.put_certificate(&cert, false)?;
            tx.meta.insert(revoked_key(serial), encode(revocation))?;
            tx.append_audit(audit)?;
            tx.push_event(event)?;
            Ok(RevokeOutcome::Revoked(Box::new(cert)))
        })
    }

    fn revoked(&self) -> Result<Vec<(String, Revocation)>, StoreError> {
        self.t
            .meta
            .scan_prefix(META_REVOKED_PREFIX)
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                let serial =
                    String::from_utf8_lossy(&key[META_REVOKED_PREFIX.len()..]).into_owned();
                Ok((serial, decode("meta", &value)?))
            })
            .collect()
    }

    fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        self.transact(true, |tx| {
            if tx.api_keys.get(key.key_id.as_bytes())?.is_some() {
                return Err(abort(StoreError::Backend(format!(
                    "API key id {} exists",
                    key.key_id
                ))));
            }
            tx.api_keys.insert(key.key_id.as_bytes(), encode(key))?;
            tx.append_audit(audit)
        })
    }

    fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Self::get(&self.t.api_keys, "api_keys", key_id.as_bytes())
    }

    fn api_key_count(&self) -> Result<usize, StoreError> {
        Ok(self.t.api_keys.len())
    }

    fn protocol_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        durable: bool,
    ) -> Result<(), StoreError> {
        self.protocol_state
            .insert(protocol_key(namespace, key), value)
            .map_err(backend)?;
        if durable {
            self.commits.sync(&self.db)?;
        }
        Ok(())
    }

    fn audit_head(&self) -> Result<ChainHead, StoreError> {
        Ok(Self::get(&self.t.meta, "meta", META_AUDIT_HEAD)?.unwrap_or_default())
    }

    fn protocol_take(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let taken = self
            .protocol_state
            .remove(protocol_key(namespace, key))
            .map_err(backend)?;
        if taken.is_some() {
            self.commits.sync(&self.db)?;
        }
        Ok(taken.map(|v| v.to_vec()))
    }

    fn protocol_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .protocol_state
            .get(protocol_key(namespace, key))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn protocol_scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let skip = namespace.len() + 1;
        self.protocol_state
            .scan_prefix(protocol_key(namespace, prefix))
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                Ok((
                    String::from_utf8_lossy(&key[skip..]).into_owned(),
                    value.to_vec(),
                ))
            })
            .collect()
    }

    fn append_audit(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        self.transact(true, |tx| tx.append_audit(audit))
    }

    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.t
            .audit
            .range(from.to_be_bytes()..)
            .values()
            .take(limit)
            .map(|v| decode("audit", &v.map_err(backend)?))
            .collect()
    }

    fn record_event(&self, audit: Option<&AuditEntry>, event: &NewEvent) -> Result<(), StoreError> {
        self.transact(true, |tx| {
            if let Some(audit) = audit {
                tx.append_audit(audit)?;
            }
            tx.push_event(event)
        })
    }

    fn outbox_next(&self) -> Result<u64, StoreError> {
        Ok(Self::get(&self.t.meta, "meta", META_OUTBOX_NEXT)?.unwrap_or(0))
    }

    fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.t
            .outbox
            .range(from.to_be_bytes()..)
            .values()
            .take(limit)
            .map(|v| decode("outbox", &v.map_err(backend)?))
            .collect()
    }
}
