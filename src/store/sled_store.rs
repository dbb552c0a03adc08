//! The embedded sled backend (sled 0.34). One tree per record kind plus secondary indexes:
//!
//! | tree            | key                               | value               |
//! |-----------------|-----------------------------------|---------------------|
//! | `certificates`  | serial                            | CertificateRecord: JSON, then the DER (module `certificate_value`) |
//! | `requests`      | request id (16 bytes)             | RequestRecord       |
//! | `serials`       | serial reserved by an issuance that failed, or replaced by an upstream CA's | request id |
//! | `idx_expiry`    | not-after day (u32 BE) serial     | not-after (sortable u64 BE), then the SAN values, `\n`-joined |
//! | `idx_owner`     | owner `\0` serial                 | —                   |
//! | `idx_open_requests` | request id (16 bytes), requests pending (or issuing, from before `issuing`) | — |
//! | `issuing`       | request id (16 bytes)             | IssuingIntent: the request (state issuing) and its decision's audit entry |
//! | `journal`       | request id (16 bytes)             | the writes of a change being applied (binary) |
//! | `audit`         | seq (u64 BE) of its first record  | AuditRecord, or an array of those appended together (an issuance's decision and outcome) |
//! | `outbox`        | seq (u64 BE)                      | Event               |
//! | `api_keys`      | key id                            | ApiKeyRecord        |
//! | `meta`          | `schema_version`, `audit_head`, `outbox_next` (JSON); `chain/<id>`: an issuer chain certificate records refer to | |
//! | `protocol_state`| namespace `\0` key (ACME records…) | opaque (JSON)     |
//!
//! Values are JSON but for the binary ones named above. Every change is atomic; issuance
//! and revocation are flushed to disk (through [`GroupCommit`]) before they are reported done. Most changes are one multi-tree transaction, but an issuance — the hot path —
//! uses none: a sled transaction costs far more than its writes (it takes sled's global
//! write lock, which waits for every flush in progress and stops every other read and write
//! meanwhile, and it seals and writes the log buffer twice). [`Store::begin_issuance`]
//! writes one `issuing` record (a single key, atomic by itself), and the serial is reserved
//! in memory, so that two issuances under way cannot take the same one.
//! [`Store::complete_issuance`] is a `Journal` entry: its writes — the intent moved into
//! place (the decision's audit entry), the certificate and its indexes,
//! its audit entry and event, the request's new state — are recorded under one key, applied,
//! and the entry removed; [`SledStore::open`] applies again any entry a crash left. A failed
//! or interrupted issuance burns the serial and audits the decision and the failure in one
//! transaction (its serial kept in `serials`; an issued certificate's serial is the key of
//! its record).
//!
//! Every entry costs memory whatever its size: sled keeps each page's log locations in
//! memory, and a leaf page holds at most 16 entries. So a certificate has as few entries
//! as its queries need (certificate, request, `idx_expiry` with its SAN text, `idx_owner`,
//! its decision and issuance audit records in one entry, its event).
//!
//! Listings come a page at a time in serial order, and each filter has an index that yields
//! candidates in that order, so a page costs about `limit` record reads whatever the
//! inventory's size:
//! - owner: `idx_owner`, a range scan from `owner \0 after`;
//! - expiry window: `idx_expiry`, one range per day of the window (each in serial order),
//!   merged;
//! - SAN substring: [`SanCatalog`] (module `san_catalog`), every certificate's SAN values
//!   in serial order, searched with a SIMD substring search block by block. A substring
//!   index (n-grams) would cost tens of index entries per name on every issuance and
//!   gigabytes at a million certificates; the catalog costs its offsets in memory (~9 MB at
//!   a million certificates), its serials and text in files the page cache holds (~100 MB
//!   with two names each), and a scan of that text (tens of ms) for a substring found
//!   nowhere, less when matches are frequent. It is saved when the store closes and read
//!   back at the next open, with the certificates issued since (after a crash) found in
//!   the audit chain ([`SavedCatalog`]); a missing or damaged file, a foreign chain or more
//!   than [`SAN_CATCH_UP_LIMIT`] records since mean a rebuild from `idx_expiry`, in the
//!   background.
//!
//! Requests waiting for approval (and, in stores from before `issuing`, left issuing by a
//! crash) come from `idx_open_requests`, issuances a crash interrupted from `issuing` (both
//! read at every start), not from a scan of every request ever made.
//!
//! Stores written before these indexes get them at the first open (`idx_expiry` from the
//! former `idx_not_after`, its SAN text from the former `idx_san_text` or the
//! certificates, `idx_open_requests` from the requests).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::{AuditAction, AuditEntry, AuditRecord, ChainHead};
use super::group_commit::GroupCommit;
use super::{
    ApiKeyRecord, CertificateQuery, Event, Flush, NewEvent, Page, Pruned, RequestRecord,
    RequestState, RevokeOutcome, Store, StoreError, SCHEMA_VERSION,
};
use crate::model::{CertificateRecord, Revocation, StoredStatus};
use certificate_value::Chains;
use san_catalog::{CatalogOrigin, SanCandidates, SanCatalog, SanIndex};

mod certificate_value;
mod san_catalog;

const META_SCHEMA: &[u8] = b"schema_version";
const META_AUDIT_HEAD: &[u8] = b"audit_head";
const META_OUTBOX_NEXT: &[u8] = b"outbox_next";
/// `revoked/<serial>` → [`Revocation`]: the revoked certificates, for CRLs.
const META_REVOKED_PREFIX: &[u8] = b"revoked/";
/// Present once the revoked index covers every certificate (stores from before it).
const META_REVOKED_INDEXED: &[u8] = b"revoked_indexed";

/// Bytes of decoded pages sled keeps in memory, by sled's own count: the heap they take
/// is several times that (at a million certificates, 32 MiB here meant ~100 MB more
/// resident memory than 8 MiB once queries had read pages, for the same query latencies).
const SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Present once every `idx_expiry` value holds its certificate's SAN text (stores from
/// before it kept the text in `idx_san_text`).
const META_SAN_IN_EXPIRY: &[u8] = b"san_in_expiry";
/// Marker of the former `idx_san_text` tree's coverage, removed with it.
const META_LEGACY_SAN_TEXT_INDEXED: &[u8] = b"san_text_indexed";
/// Present once `idx_open_requests` covers every request (stores from before it).
const META_OPEN_REQUESTS_INDEXED: &[u8] = b"open_requests_indexed";
/// [`SavedCatalog`]: the SAN catalog file saved when the store last closed.
const META_SAN_CATALOG: &[u8] = b"san_catalog";

/// The SAN catalog file a closing store saved, and the audit chain's head then: the file
/// holds every certificate whose `issued` audit record comes before that head. Every
/// issuance appends to the audit chain, so an open catches up from the records after it —
/// after a crash, or a run of a rampart that does not know this record — rather than
/// rebuilding the catalog from `idx_expiry`.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct SavedCatalog {
    label: san_catalog::Label,
    audit_head: ChainHead,
}

/// Audit records after a saved catalog's head beyond which an open rebuilds the catalog
/// instead of catching up (each record caught up may cost a certificate read; a rebuild
/// reads every `idx_expiry` entry, which is much cheaper per certificate).
const SAN_CATCH_UP_LIMIT: u64 = 100_000;

/// Issuances after which a running store saves the SAN catalog again, well inside
/// [`SAN_CATCH_UP_LIMIT`] (an issuance writes two audit records): an open after a crash
/// then catches up instead of rebuilding (seconds, and ~70 MiB more resident memory, at a
/// million certificates). At that size a save writes ~100 MB while issuances wait.
#[cfg(not(test))]
const SAN_SAVE_EVERY: u64 = 30_000;
#[cfg(test)]
const SAN_SAVE_EVERY: u64 = 100;

/// What the SAN catalog is loaded from at open.
struct CatalogSources {
    /// The catalog saved at the last close, if any.
    saved: Option<SavedCatalog>,
    /// The audit chain's head at open: certificates issued from here on reach the catalog
    /// through [`Store::complete_issuance`].
    head: ChainHead,
    idx_expiry: sled::Tree,
    audit: sled::Tree,
    certificates: sled::Tree,
}

impl CatalogSources {
    fn of(t: &Trees) -> Result<Self, StoreError> {
        Ok(CatalogSources {
            saved: SledStore::get(&t.meta, "meta", META_SAN_CATALOG)?,
            head: SledStore::get(&t.meta, "meta", META_AUDIT_HEAD)?.unwrap_or_default(),
            idx_expiry: t.idx_expiry.clone(),
            audit: t.audit.clone(),
            certificates: t.certificates.clone(),
        })
    }
}

/// An issuance under way, as [`Store::begin_issuance`] writes it (`issuing` tree).
#[derive(Debug, serde::Deserialize)]
struct IssuingIntent {
    /// The request, in state `Issuing`.
    request: RequestRecord,
    /// The audit entry of the decision, appended when the issuance ends.
    decision: AuditEntry,
}

/// [`IssuingIntent`] as written (borrowing, to spare copies).
#[derive(Serialize)]
struct IssuingIntentRef<'a> {
    request: &'a RequestRecord,
    decision: &'a AuditEntry,
}
/// The expiry index before `idx_expiry` (not-after `/` serial, in time order): emptied into
/// `idx_expiry` at open.
const LEGACY_NOT_AFTER_TREE: &str = "idx_not_after";
/// Expiry windows longer than this many days are served by a scan in serial order (most of
/// the inventory matches them) rather than by merging one range per day.
const MAX_EXPIRY_DAYS_MERGED: i64 = 1024;

fn revoked_key(serial: &str) -> Vec<u8> {
    [META_REVOKED_PREFIX, serial.as_bytes()].concat()
}

/// sled-backed [`Store`].
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    /// Flushes shared by durable changes (its thread holds the database open until the
    /// store is dropped).
    commits: GroupCommit,
    t: Trees,
    /// The issuer chains certificate records refer to.
    chains: Chains,
    /// Serials of the issuances under way (in `issuing`): no second one may take them.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Store changes made as [`Journal`] entries, while they are applied.
    journal: sled::Tree,
    /// Held by every change that writes the transactional trees (a transaction or a
    /// journal entry): journal entries are applied without a transaction, so no other
    /// change may read or write those trees meanwhile.
    writer: std::sync::Mutex<()>,
    /// Protocol state (ACME accounts, orders…): `namespace \0 key` → value. Outside the
    /// transactional trees: each write stands alone.
    protocol_state: sled::Tree,
    /// Every certificate's SAN values, for substring queries.
    san: std::sync::Arc<SanIndex>,
    /// The thread loading the SAN catalog at open (joined on drop).
    san_loader: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Issuances between their audit record and their SAN catalog insert: a catalog saved
    /// while any is must not claim the audit head.
    catalog_pending: std::sync::atomic::AtomicUsize,
    /// Issuances since the SAN catalog was last saved (or the store opened).
    issued_since_save: std::sync::atomic::AtomicU64,
    /// [`Store::revocations_since_open`].
    revocations: std::sync::atomic::AtomicU64,
    /// Set when an issuance failed after its audit record may have been written: its
    /// certificate may be missing from the catalog, which is then not saved (the next
    /// open rebuilds it).
    catalog_unsure: std::sync::atomic::AtomicBool,
}

/// One issuance counted in [`SledStore::catalog_pending`] until dropped.
struct CatalogPending<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> CatalogPending<'a> {
    fn begin(pending: &'a std::sync::atomic::AtomicUsize) -> Self {
        pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CatalogPending(pending)
    }
}

impl Drop for CatalogPending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // The loader holds the database open: stop it before the store is released, so
        // that the directory can be opened again at once. (A rebuild stops where it is; a
        // saved file is read to the end, which is quick.)
        self.san
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let loader = self
            .san_loader
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(loader) = loader {
            let _ = loader.join();
        }
        self.save_san_catalog();
    }
}

/// Up to `limit` records of the `audit` tree from seq `from` on.
fn read_audit_records(
    audit: &sled::Tree,
    from: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    // Records appended together share the entry keyed by the first one's seq: start at the
    // entry holding `from`.
    let start = match audit.range(..=from.to_be_bytes()).next_back() {
        Some(item) => item.map_err(backend)?.0,
        None => sled::IVec::from(&from.to_be_bytes()),
    };
    let mut out = Vec::new();
    for value in audit.range(start..).values() {
        let value = value.map_err(backend)?;
        let records: Vec<AuditRecord> = if value.first() == Some(&b'[') {
            decode("audit", &value)?
        } else {
            vec![decode("audit", &value)?]
        };
        for record in records.into_iter().filter(|r| r.seq >= from) {
            if out.len() == limit {
                return Ok(out);
            }
            out.push(record);
        }
    }
    Ok(out)
}

/// Install `index`'s catalog: the file saved at the last close, caught up with the
/// certificates issued since, if that works; otherwise rebuilt from `idx_expiry`.
fn load_san_catalog(index: &SanIndex, dir: &Path, sources: CatalogSources) {
    let from_file = sources.saved.as_ref().and_then(|saved| {
        SanCatalog::open_saved(dir, &saved.label)
            .map_err(|e| StoreError::Backend(format!("SAN catalog file: {e}")))
            .and_then(|mut catalog| {
                let caught_up = catch_up_san_catalog(&mut catalog, &sources, &saved.audit_head)?;
                tracing::info!(caught_up, "SAN catalog read back from its file");
                let _ = index.origin.set(CatalogOrigin::Saved { caught_up });
                Ok(catalog)
            })
            .inspect_err(|error| {
                tracing::warn!(%error, "the saved SAN catalog is not usable: rebuilding it from the store");
            })
            .ok()
    });
    index.finish(match from_file {
        Some(catalog) => Ok(catalog),
        None => {
            let _ = index.origin.set(CatalogOrigin::Rebuilt);
            SanCatalog::load(&sources.idx_expiry, &index.closing, dir)
        }
    })
}

/// Add to `catalog`, saved at audit head `saved`, the certificates issued between that head
/// and the one at open; how many. An error when the chain is not the one it was saved
/// with, or when so much happened since that a rebuild is quicker.
fn catch_up_san_catalog(
    catalog: &mut SanCatalog,
    sources: &CatalogSources,
    saved: &ChainHead,
) -> Result<usize, StoreError> {
    let foreign =
        || StoreError::Backend("the audit chain is not the one the catalog was saved with".into());
    let (from, to) = (saved.next_seq, sources.head.next_seq);
    if to < from || to - from > SAN_CATCH_UP_LIMIT {
        return Err(StoreError::Backend(format!(
            "saved at audit record {from}, the store is at {to}"
        )));
    }
    if from == to {
        return if *saved == sources.head {
            Ok(0)
        } else {
            Err(foreign())
        };
    }
    let mut caught_up = 0;
    // From the record before the saved head, to check that it is this chain's.
    let mut next = from.saturating_sub(1);
    while next < to {
        let records = read_audit_records(&sources.audit, next, 1024)?;
        let Some(last) = records.last() else {
            break;
        };
        next = last.seq + 1;
        for record in records.iter().filter(|r| r.seq < to) {
            if record.seq + 1 == from && record.hash != saved.last_hash {
                return Err(foreign());
            }
            let issued = record.seq >= from && record.entry.action == AuditAction::Issued;
            let Some(serial) = record.entry.subject.as_deref().filter(|_| issued) else {
                continue;
            };
            let stored = sources
                .certificates
                .get(serial.as_bytes())
                .map_err(backend)?;
            if let Some(bytes) = stored {
                let (cert, _) = certificate_value::decode_record(&bytes)?;
                catalog.insert(&cert.serial, &san_text(&cert));
                caught_up += 1;
            }
        }
    }
    // Everything in the main segment, where the installation at the end of the load looks
    // for the certificates issued meanwhile.
    catalog.merge_tail();
    Ok(caught_up)
}

#[derive(Debug)]
struct Trees {
    certificates: sled::Tree,
    requests: sled::Tree,
    serials: sled::Tree,
    idx_expiry: sled::Tree,
    idx_owner: sled::Tree,
    idx_open_requests: sled::Tree,
    issuing: sled::Tree,
    audit: sled::Tree,
    outbox: sled::Tree,
    api_keys: sled::Tree,
    meta: sled::Tree,
}

/// The transactional view of every tree.
struct Tx<'a> {
    chains: &'a Chains,
    certificates: &'a TransactionalTree,
    requests: &'a TransactionalTree,
    serials: &'a TransactionalTree,
    idx_expiry: &'a TransactionalTree,
    idx_owner: &'a TransactionalTree,
    idx_open_requests: &'a TransactionalTree,
    issuing: &'a TransactionalTree,
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

fn sortable_time(at: OffsetDateTime) -> u64 {
    (at.unix_timestamp() as u64) ^ (1 << 63)
}

/// The day (UTC) of `at`, as the sortable first four bytes of `idx_expiry` keys.
fn expiry_day(at: OffsetDateTime) -> u32 {
    day_bucket(at.unix_timestamp())
}

fn day_bucket(unix_seconds: i64) -> u32 {
    (unix_seconds.div_euclid(86_400) + (1 << 31)) as u32
}

/// An `idx_expiry` value: the sortable not-after, then the SAN text.
fn expiry_value(sortable_not_after: u64, san_text: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + san_text.len());
    value.extend_from_slice(&sortable_not_after.to_be_bytes());
    value.extend_from_slice(san_text.as_bytes());
    value
}

/// The sortable not-after and the SAN text of an `idx_expiry` value.
fn split_expiry_value(value: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    match value.split_first_chunk::<8>() {
        Some((at, text)) => Ok((u64::from_be_bytes(*at), text)),
        None => Err(StoreError::Corrupt {
            tree: "idx_expiry",
            reason: "value shorter than its not-after".into(),
        }),
    }
}

fn expiry_key(day: u32, serial: &str) -> Vec<u8> {
    let mut key = day.to_be_bytes().to_vec();
    key.extend_from_slice(serial.as_bytes());
    key
}

/// Whether a request in `state` is kept in `idx_open_requests`.
fn is_open(state: &RequestState) -> bool {
    matches!(
        state,
        RequestState::Issuing { .. } | RequestState::Pending { .. }
    )
}

/// SAN values as `idx_expiry` and the catalog keep them.
fn san_text(cert: &CertificateRecord) -> String {
    let values: Vec<String> = cert.sans.iter().map(|s| s.value()).collect();
    values.join("\n")
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

/// The trees, by name: what a [`Journal`] entry records, by code. Codes are never reused:
/// 5 was `idx_san` (SAN value → serial, written but never read; dropped at open since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeId {
    Certificates = 0,
    Requests = 1,
    Serials = 2,
    IdxExpiry = 3,
    IdxOwner = 4,
    IdxOpenRequests = 7,
    Issuing = 8,
    Audit = 9,
    Outbox = 10,
    ApiKeys = 11,
    Meta = 12,
}

/// The retired `idx_san` tree: its name (dropped at open) and its journal code (writes to
/// it in an entry a crash left are skipped).
const RETIRED_SAN_TREE: (&str, u8) = ("idx_san", 5);
/// The retired `idx_san_text` tree (serial → SAN text; the text is in `idx_expiry` now):
/// read once at open to move its text, then dropped; journal writes to it are skipped (the
/// move reads a certificate's text from its record when the tree lacks it).
const RETIRED_SAN_TEXT_TREE: (&str, u8) = ("idx_san_text", 6);
/// Every retired tree: dropped at open (after what moves out of them has), skipped in
/// journal entries.
const RETIRED_TREES: [(&str, u8); 2] = [RETIRED_SAN_TREE, RETIRED_SAN_TEXT_TREE];

impl TreeId {
    /// Every tree.
    const ALL: [TreeId; 11] = [
        TreeId::Certificates,
        TreeId::Requests,
        TreeId::Serials,
        TreeId::IdxExpiry,
        TreeId::IdxOwner,
        TreeId::IdxOpenRequests,
        TreeId::Issuing,
        TreeId::Audit,
        TreeId::Outbox,
        TreeId::ApiKeys,
        TreeId::Meta,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<TreeId> {
        TreeId::ALL.into_iter().find(|tree| tree.code() == code)
    }
}

impl Trees {
    fn by_id(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Certificates => &self.certificates,
            TreeId::Requests => &self.requests,
            TreeId::Serials => &self.serials,
            TreeId::IdxExpiry => &self.idx_expiry,
            TreeId::IdxOwner => &self.idx_owner,
            TreeId::IdxOpenRequests => &self.idx_open_requests,
            TreeId::Issuing => &self.issuing,
            TreeId::Audit => &self.audit,
            TreeId::Outbox => &self.outbox,
            TreeId::ApiKeys => &self.api_keys,
            TreeId::Meta => &self.meta,
        }
    }
}

impl From<StoreError> for ConflictableTransactionError<StoreError> {
    fn from(error: StoreError) -> Self {
        ConflictableTransactionError::Abort(error)
    }
}

/// The reads and writes of one store change, made in a sled transaction ([`Tx`]) or
/// gathered into a journal entry ([`Journal`]). The record keeping below is written once,
/// over either.
trait Change {
    type Error: From<StoreError>;

    /// The value of `key`, this change's own writes included.
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Self::Error>;
    fn insert(&self, tree: TreeId, key: &[u8], value: &[u8]) -> Result<(), Self::Error>;
    /// Remove `key`, returning its value.
    fn remove(&self, tree: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Self::Error>;
    /// The chains certificate records refer to.
    fn chains(&self) -> &Chains;

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), Self::Error> {
        self.append_audit_records(&[entry])
    }

    /// Append `entries` to the chain, in order, as one `audit` entry keyed by the first
    /// one's seq (a JSON array when there are several: every sled entry costs memory, and
    /// an issuance audits its decision and its outcome together).
    fn append_audit_records(&self, entries: &[&AuditEntry]) -> Result<(), Self::Error> {
        let mut head: ChainHead = match self.get(TreeId::Meta, META_AUDIT_HEAD)? {
            Some(bytes) => decode("meta", &bytes)?,
            None => ChainHead::default(),
        };
        let first = head.next_seq;
        let records: Vec<AuditRecord> = entries
            .iter()
            .map(|entry| {
                let record =
                    AuditRecord::chain(head.next_seq, (*entry).clone(), head.last_hash.clone());
                head = ChainHead {
                    next_seq: record.seq + 1,
                    last_hash: record.hash.clone(),
                };
                record
            })
            .collect();
        let value = match records.as_slice() {
            [] => return Ok(()),
            [record] => encode(record),
            records => encode(&records),
        };
        // The records before the head: a reader that sees the head finds them.
        self.insert(TreeId::Audit, &first.to_be_bytes(), &value)?;
        self.insert(TreeId::Meta, META_AUDIT_HEAD, &encode(&head))
    }

    fn push_event(&self, event: &NewEvent) -> Result<(), Self::Error> {
        let seq: u64 = match self.get(TreeId::Meta, META_OUTBOX_NEXT)? {
            Some(bytes) => decode("meta", &bytes)?,
            None => 0,
        };
        let stored = Event {
            seq,
            id: Uuid::now_v7(),
            kind: event.kind,
            time: event.time,
            data: event.data.clone(),
        };
        // The event before the counter, for the same reason.
        self.insert(TreeId::Outbox, &seq.to_be_bytes(), &encode(&stored))?;
        self.insert(TreeId::Meta, META_OUTBOX_NEXT, &encode(&(seq + 1)))
    }

    fn put_request(&self, request: &RequestRecord) -> Result<(), Self::Error> {
        let id = request.request_id.as_bytes();
        self.insert(TreeId::Requests, id, &encode(request))?;
        if is_open(&request.state) {
            self.insert(TreeId::IdxOpenRequests, id, &[])
        } else {
            self.remove(TreeId::IdxOpenRequests, id).map(drop)
        }
    }

    fn request(&self, id: Uuid) -> Result<Option<RequestRecord>, Self::Error> {
        match self.get(TreeId::Requests, id.as_bytes())? {
            Some(bytes) => Ok(Some(decode("requests", &bytes)?)),
            None => Ok(None),
        }
    }

    /// End the issuance under way for request `id`: remove its intent. Returns the request
    /// (state `Issuing`) and its decision's audit entry (for the caller to append), or
    /// `None` when no intent is recorded (a request begun by a rampart from before
    /// `issuing`: its serial and decision are already in place).
    fn end_intent(&self, id: Uuid) -> Result<Option<(RequestRecord, AuditEntry)>, Self::Error> {
        let Some(bytes) = self.remove(TreeId::Issuing, id.as_bytes())? else {
            return Ok(None);
        };
        let intent: IssuingIntent = decode("issuing", &bytes)?;
        let RequestState::Issuing { serial } = &intent.request.state else {
            return Err(StoreError::Corrupt {
                tree: "issuing",
                reason: format!("request {id} is not issuing"),
            }
            .into());
        };
        if let Some(owner) = self.get(TreeId::Serials, serial.as_bytes())? {
            if owner != id.as_bytes() {
                return Err(
                    StoreError::Backend(format!("serial {serial} already recorded")).into(),
                );
            }
        }
        Ok(Some((intent.request, intent.decision)))
    }

    fn put_certificate(&self, cert: &CertificateRecord, new: bool) -> Result<(), Self::Error> {
        let serial = cert.serial.as_bytes();
        let chain = certificate_value::chain_id(&cert.chain);
        if let Some(id) = &chain {
            // The first certificate of a chain brings it along.
            if !self.chains().is_stored(id)? {
                self.insert(
                    TreeId::Meta,
                    &certificate_value::chain_key(id),
                    &certificate_value::encode_chain(&cert.chain),
                )?;
            }
        }
        let value = certificate_value::encode(cert, chain.as_ref());
        self.insert(TreeId::Certificates, serial, &value)?;
        if new {
            self.insert(
                TreeId::IdxExpiry,
                &expiry_key(expiry_day(cert.not_after), &cert.serial),
                &expiry_value(sortable_time(cert.not_after), &san_text(cert)),
            )?;
            self.insert(TreeId::IdxOwner, &pair_key(&cert.owner, &cert.serial), &[])?;
        }
        Ok(())
    }
}

impl Tx<'_> {
    fn by_id(&self, id: TreeId) -> &TransactionalTree {
        match id {
            TreeId::Certificates => self.certificates,
            TreeId::Requests => self.requests,
            TreeId::Serials => self.serials,
            TreeId::IdxExpiry => self.idx_expiry,
            TreeId::IdxOwner => self.idx_owner,
            TreeId::IdxOpenRequests => self.idx_open_requests,
            TreeId::Issuing => self.issuing,
            TreeId::Audit => self.audit,
            TreeId::Outbox => self.outbox,
            TreeId::ApiKeys => self.api_keys,
            TreeId::Meta => self.meta,
        }
    }
}

impl Change for Tx<'_> {
    type Error = ConflictableTransactionError<StoreError>;

    fn get(&self, tree: TreeId, key: &[u8]) -> TxResult<Option<sled::IVec>> {
        Ok(self.by_id(tree).get(key)?)
    }

    fn insert(&self, tree: TreeId, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.by_id(tree).insert(key, value)?;
        Ok(())
    }

    fn remove(&self, tree: TreeId, key: &[u8]) -> TxResult<Option<sled::IVec>> {
        Ok(self.by_id(tree).remove(key)?)
    }

    fn chains(&self) -> &Chains {
        self.chains
    }
}

/// The second half of an issuance: the request's intent ends (serial reserved, decision
/// audited), the certificate and its indexes are recorded, its audit entry and event
/// appended, and the request marked issued. Returns the serial reserved at the start,
/// which is the certificate's unless an upstream CA chose its own.
fn record_issuance<C: Change>(
    change: &C,
    cert: &CertificateRecord,
    audit: &AuditEntry,
    event: &NewEvent,
) -> Result<String, C::Error> {
    let (begun, decision) = match change.end_intent(cert.request_id)? {
        Some((request, decision)) => (Some(request), Some(decision)),
        None => (change.request(cert.request_id)?, None),
    };
    let mut request = begun.ok_or_else(|| {
        StoreError::Backend(format!("request {} was never begun", cert.request_id))
    })?;
    let RequestState::Issuing { serial: reserved } = request.state else {
        return Err(StoreError::Backend(format!(
            "request {} is not being issued",
            cert.request_id
        ))
        .into());
    };
    if change
        .get(TreeId::Certificates, cert.serial.as_bytes())?
        .is_some()
    {
        return Err(StoreError::Backend(format!("serial {} already recorded", cert.serial)).into());
    }
    if reserved != cert.serial {
        // An upstream CA chose the serial: the one reserved stays burnt.
        change.insert(
            TreeId::Serials,
            reserved.as_bytes(),
            cert.request_id.as_bytes(),
        )?;
    }
    request.state = RequestState::Issued {
        serial: cert.serial.clone(),
    };
    request.updated_at = audit.time;
    change.put_certificate(cert, true)?;
    // The outcome's record names the certificate whatever the caller filled in: an open
    // finds the certificates issued after a saved SAN catalog by it. (The pipeline's entry
    // already does: no copy then.)
    let outcome = if audit.action == AuditAction::Issued
        && audit.subject.as_deref() == Some(cert.serial.as_str())
    {
        std::borrow::Cow::Borrowed(audit)
    } else {
        std::borrow::Cow::Owned(AuditEntry {
            action: AuditAction::Issued,
            subject: Some(cert.serial.clone()),
            ..audit.clone()
        })
    };
    let audited: Vec<&AuditEntry> = decision.iter().chain([outcome.as_ref()]).collect();
    change.append_audit_records(&audited)?;
    change.push_event(event)?;
    change.put_request(&request)?;
    Ok(reserved)
}

/// One write of a [`Journal`] entry: tree, key, and the value (`None` removes).
type Write = (TreeId, Vec<u8>, Option<Vec<u8>>);

/// A store change made without a sled transaction: its writes are gathered, written as
/// one `journal` entry (a single key, so all or nothing), then applied one by one with
/// plain inserts and removes, and the entry removed. sled recovers a prefix of its log, so
/// after a crash either the entry is gone with every write after it, or it is there and
/// [`SledStore::open`] applies it again (the writes are idempotent). Readers may see a
/// change half applied for the few microseconds it takes; writers may not: journaled
/// changes and transactions both run under [`SledStore`]'s writer lock.
struct Journal<'a> {
    trees: &'a Trees,
    chains: &'a Chains,
    /// In order; `None` removes.
    writes: std::cell::RefCell<Vec<Write>>,
}

impl<'a> Journal<'a> {
    fn new(trees: &'a Trees, chains: &'a Chains) -> Self {
        Journal {
            trees,
            chains,
            writes: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The entry: per write, the tree's code, the key's length (u32 BE) and the key, then
    /// 0 (remove) or 1 and the value's length (u32 BE) and the value.
    fn encode(writes: &[Write]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tree, key, value) in writes {
            out.push(tree.code());
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
            match value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                    out.extend_from_slice(value);
                }
            }
        }
        out
    }

    fn decode(mut entry: &[u8]) -> Result<Vec<Write>, StoreError> {
        fn corrupt() -> StoreError {
            StoreError::Corrupt {
                tree: "journal",
                reason: "truncated or unknown entry".into(),
            }
        }
        fn take<'b>(entry: &mut &'b [u8], n: usize) -> Result<&'b [u8], StoreError> {
            if entry.len() < n {
                return Err(corrupt());
            }
            let (head, rest) = entry.split_at(n);
            *entry = rest;
            Ok(head)
        }
        fn length(entry: &mut &[u8]) -> Result<usize, StoreError> {
            let bytes: [u8; 4] = take(entry, 4)?.try_into().map_err(|_| corrupt())?;
            Ok(u32::from_be_bytes(bytes) as usize)
        }
        let mut writes = Vec::new();
        while !entry.is_empty() {
            let code = take(&mut entry, 1)?[0];
            let key_len = length(&mut entry)?;
            let key = take(&mut entry, key_len)?.to_vec();
            let value = match take(&mut entry, 1)?[0] {
                0 => None,
                1 => {
                    let value_len = length(&mut entry)?;
                    Some(take(&mut entry, value_len)?.to_vec())
                }
                _ => return Err(corrupt()),
            };
            if RETIRED_TREES.iter().any(|(_, retired)| *retired == code) {
                continue;
            }
            let tree = TreeId::from_code(code).ok_or_else(corrupt)?;
            writes.push((tree, key, value));
        }
        Ok(writes)
    }

    /// Apply `writes` in order, except that removals from `issuing` come last: a request
    /// reads as issuing until its new state is in place.
    fn apply(trees: &Trees, writes: &[Write]) -> Result<(), StoreError> {
        let last = |(tree, _, value): &&Write| *tree == TreeId::Issuing && value.is_none();
        let (late, early): (Vec<_>, Vec<_>) = writes.iter().partition(last);
        for (tree, key, value) in early.into_iter().chain(late) {
            let tree = trees.by_id(*tree);
            match value {
                Some(value) => drop(
                    tree.insert(key.as_slice(), value.as_slice())
                        .map_err(backend)?,
                ),
                None => drop(tree.remove(key.as_slice()).map_err(backend)?),
            }
        }
        Ok(())
    }
}

impl Change for Journal<'_> {
    type Error = StoreError;

    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let writes = self.writes.borrow();
        if let Some((_, _, value)) = writes
            .iter()
            .rev()
            .find(|(t, k, _)| *t == tree && k.as_slice() == key)
        {
            return Ok(value.as_deref().map(sled::IVec::from));
        }
        self.trees.by_id(tree).get(key).map_err(backend)
    }

    fn insert(&self, tree: TreeId, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.writes
            .borrow_mut()
            .push((tree, key.to_vec(), Some(value.to_vec())));
        Ok(())
    }

    fn remove(&self, tree: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let old = self.get(tree, key)?;
        self.writes.borrow_mut().push((tree, key.to_vec(), None));
        Ok(old)
    }

    fn chains(&self) -> &Chains {
        self.chains
    }
}

/// Open sled's database in `path`. A lock still held for a moment after the same process
/// dropped its previous handle (sled's I/O threads let go of the files after the handle)
/// is waited for, up to [`LOCK_RELEASE_WAIT`]; a store another process holds open is
/// [`StoreError::Locked`] after that.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match open_db_once(path) {
            Err(StoreError::Locked { .. }) if started.elapsed() < LOCK_RELEASE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

/// How long [`open_db`] waits for a lock to be released.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The sled database in `path`, as rampart configures it.
fn open_db_once(path: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        // Favour CPU over disk space: fewer rewrites of segments and node fragments.
        .mode(sled::Mode::HighThroughput)
        // sled's own page cache (default 1 GiB) keeps every page read until it is full:
        // at a million certificates that made the daemon's memory grow to gigabytes.
        // Pages beyond it are read again through the kernel's page cache.
        .cache_capacity(SLED_CACHE_BYTES)
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
        })
}

/// Offline compaction (`rampart compact`): sled 0.34 cleans its log lazily, and an
/// issuance is written twice (journal entry, then the trees), so a busy store holds several
/// times its live entries on disk. A copy of every tree into a fresh store holds only what
/// is live (at a million certificates: 25 GiB before, 7.9 GiB after). Start time and memory
/// follow the number of entries, which the copy keeps.
///
/// Steps, each safe to interrupt: copy into `<store>.compacting` (removed and redone if a
/// run stopped there); compare a digest of what was read with one of what the copy holds; open the copy once, so that sled
/// writes its snapshot then and not at the daemon's next start; rename the store to
/// `<store>.before-compaction`, the copy to the store, and remove the old one. While
/// `<store>.before-compaction` exists [`SledStore::open`] refuses to start, and the next
/// compaction finishes the swap (the copy was complete before the first rename).
pub mod compaction {
    use std::path::{Path, PathBuf};

    use super::{backend, open_db};
    use crate::store::StoreError;

    /// What a compaction did.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Compaction {
        /// Entries copied (every tree).
        pub entries: u64,
        /// Bytes of the store's files before and after.
        pub bytes_before: u64,
        /// See `bytes_before`.
        pub bytes_after: u64,
    }

    fn sibling(path: &Path, suffix: &str) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        path.with_file_name(name)
    }

    /// Where the store is kept while the compacted copy is put in its place.
    pub(super) fn retired(path: &Path) -> PathBuf {
        sibling(path, ".before-compaction")
    }

    fn io(what: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |e| StoreError::Backend(format!("{}: {e}", what.display()))
    }

    /// Apparent bytes of the files below `dir`.
    fn size(dir: &Path) -> Result<u64, StoreError> {
        Ok(crate::files::disk_usage(dir).map_err(io(dir))?.1)
    }

    /// SHA-256 over every (tree, key, value), each length-prefixed, in the order given.
    struct Fingerprint(aws_lc_rs::digest::Context);

    impl Fingerprint {
        fn new() -> Self {
            Fingerprint(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
        }

        fn add(&mut self, parts: [&[u8]; 3]) {
            for part in parts {
                self.0.update(&(part.len() as u64).to_be_bytes());
                self.0.update(part);
            }
        }

        fn finish(self) -> Vec<u8> {
            self.0.finish().as_ref().to_vec()
        }
    }

    /// Finish a swap a crash interrupted: the copy into place, the old store removed.
    fn finish_swap(path: &Path, fresh: &Path) -> Result<(), StoreError> {
        let retired = retired(path);
        if !retired.exists() {
            return Ok(());
        }
        if !path.exists() {
            std::fs::rename(fresh, path).map_err(io(fresh))?;
        }
        std::fs::remove_dir_all(&retired).map_err(io(&retired))
    }

    /// Compact the store in `path` (no daemon may have it open).
    pub fn compact(path: &Path) -> Result<Compaction, StoreError> {
        const BATCH: usize = 4096;
        let fresh = sibling(path, ".compacting");
        finish_swap(path, &fresh)?;
        let bytes_before = size(path)?;
        let old = open_db(path)?;
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        }
        crate::files::create_private_dir(&fresh).map_err(io(&fresh))?;
        let new = open_db(&fresh)?;
        let mut entries = 0;
        // Of what was read from the old store while copying: the old store is read once.
        let mut copied = Fingerprint::new();
        let names = old.tree_names();
        for name in &names {
            let (from, to) = (
                old.open_tree(name).map_err(backend)?,
                new.open_tree(name).map_err(backend)?,
            );
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for item in from.iter() {
                let (key, value) = item.map_err(backend)?;
                copied.add([name, &key, &value]);
                batch.insert(key, value);
                in_batch += 1;
                entries += 1;
                if in_batch == BATCH {
                    to.apply_batch(std::mem::take(&mut batch))
                        .map_err(backend)?;
                    in_batch = 0;
                }
            }
            to.apply_batch(batch).map_err(backend)?;
        }
        new.flush().map_err(backend)?;
        let mut written = Fingerprint::new();
        for name in &names {
            for item in new.open_tree(name).map_err(backend)?.iter() {
                let (key, value) = item.map_err(backend)?;
                written.add([name, &key, &value]);
            }
        }
        if copied.finish() != written.finish() {
            return Err(StoreError::Backend(format!(
                "{}: the compacted copy differs from the store; the store is unchanged",
                fresh.display()
            )));
        }
        drop((old, new));
        drop(open_db(&fresh)?);
        // The saved SAN catalog describes the same entries (its record in `meta` was
        // copied): it comes along, so that the next open does not rebuild it.
        let catalog = super::san_catalog::saved_path(path);
        if catalog.exists() {
            let copy = super::san_catalog::saved_path(&fresh);
            std::fs::copy(&catalog, &copy).map_err(io(&catalog))?;
        }
        std::fs::rename(path, retired(path)).map_err(io(path))?;
        finish_swap(path, &fresh)?;
        Ok(Compaction {
            entries,
            bytes_before,
            bytes_after: size(path)?,
        })
    }
}

/// What one tree holds: entries and the bytes of their keys and values (before sled's own
/// overhead), for `rampart bench store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSize {
    /// The tree's name.
    pub name: String,
    /// Entries.
    pub entries: u64,
    /// Bytes of all keys.
    pub key_bytes: u64,
    /// Bytes of all values.
    pub value_bytes: u64,
}

impl SledStore {
    /// Every tree's size (a full scan of the store: for benchmarks and diagnostics).
    pub fn tree_sizes(&self) -> Result<Vec<TreeSize>, StoreError> {
        let mut sizes = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name).map_err(backend)?;
            let mut size = TreeSize {
                name: String::from_utf8_lossy(&name).into_owned(),
                entries: 0,
                key_bytes: 0,
                value_bytes: 0,
            };
            for entry in tree.iter() {
                let (key, value) = entry.map_err(backend)?;
                size.entries += 1;
                size.key_bytes += key.len() as u64;
                size.value_bytes += value.len() as u64;
            }
            sizes.push(size);
        }
        Ok(sizes)
    }

    /// Open (or create) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if compaction::retired(path).exists() {
            return Err(StoreError::Backend(format!(
                "{}: a compaction was interrupted while the compacted store was put in place; \
                 run `rampart compact` again to finish it",
                path.display()
            )));
        }
        let db = open_db(path)?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let t = Trees {
            certificates: tree("certificates")?,
            requests: tree("requests")?,
            serials: tree("serials")?,
            idx_expiry: tree("idx_expiry")?,
            idx_owner: tree("idx_owner")?,
            idx_open_requests: tree("idx_open_requests")?,
            issuing: tree("issuing")?,
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
                if found < SCHEMA_VERSION {
                    // A rampart from before would misread what this one writes (version 3:
                    // certificate records without JSON around their DER).
                    t.meta
                        .insert(META_SCHEMA, encode(&SCHEMA_VERSION))
                        .map_err(backend)?;
                    db.flush().map_err(backend)?;
                }
            }
        }
        // Changes a crash interrupted while they were applied: apply them again.
        let journal = tree("journal")?;
        if journal.first().map_err(backend)?.is_some() {
            for item in journal.iter() {
                let (key, entry) = item.map_err(backend)?;
                Journal::apply(&t, &Journal::decode(&entry)?)?;
                journal.remove(key).map_err(backend)?;
            }
            db.flush().map_err(backend)?;
        }
        if t.meta.get(META_REVOKED_INDEXED).map_err(backend)?.is_none() {
            for item in t.certificates.iter().values() {
                let (cert, _) = certificate_value::decode_record(&item.map_err(backend)?)?;
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
        // A store last written by a rampart from before `idx_expiry` (or a downgrade since)
        // has entries in the legacy expiry index (without SAN text): index them.
        let legacy = tree(LEGACY_NOT_AFTER_TREE)?;
        if legacy.first().map_err(backend)?.is_some() {
            migrate_legacy_expiry(&legacy, &t.idx_expiry)?;
            t.meta.remove(META_SAN_IN_EXPIRY).map_err(backend)?;
        }
        if t.meta.get(META_SAN_IN_EXPIRY).map_err(backend)?.is_none() {
            let retired = tree(RETIRED_SAN_TEXT_TREE.0)?;
            move_san_text_into_expiry(&retired, &t)?;
            t.meta
                .insert(META_SAN_IN_EXPIRY, encode(&true))
                .map_err(backend)?;
            t.meta
                .remove(META_LEGACY_SAN_TEXT_INDEXED)
                .map_err(backend)?;
            // A rampart from before would misread the new `idx_expiry` values.
            t.meta
                .insert(META_SCHEMA, encode(&SCHEMA_VERSION))
                .map_err(backend)?;
            db.flush().map_err(backend)?;
        }
        // Their entries are gone, with sled's pages for them.
        let mut dropped = false;
        for (name, _) in RETIRED_TREES {
            dropped |= db.drop_tree(name).map_err(backend)?;
        }
        if dropped {
            db.flush().map_err(backend)?;
        }
        if t.meta
            .get(META_OPEN_REQUESTS_INDEXED)
            .map_err(backend)?
            .is_none()
        {
            for item in t.requests.iter().values() {
                let request: RequestRecord = decode("requests", &item.map_err(backend)?)?;
                if is_open(&request.state) {
                    t.idx_open_requests
                        .insert(request.request_id.as_bytes(), &[])
                        .map_err(backend)?;
                }
            }
            t.meta
                .insert(META_OPEN_REQUESTS_INDEXED, encode(&true))
                .map_err(backend)?;
            db.flush().map_err(backend)?;
        }
        // The SAN catalog saved at the last close, and the certificates issued since.
        // Reading every certificate's names takes a while at a million certificates: the
        // store opens without waiting, and SAN queries wait for the catalog.
        let san = std::sync::Arc::new(SanIndex::new(path));
        let loader = {
            let (san, dir, sources) = (san.clone(), path.to_path_buf(), CatalogSources::of(&t)?);
            std::thread::Builder::new()
                .name("san-catalog".into())
                .spawn(move || load_san_catalog(&san, &dir, sources))
        };
        let loader = match loader {
            Ok(handle) => Some(handle),
            Err(_) => {
                load_san_catalog(&san, path, CatalogSources::of(&t)?);
                None
            }
        };
        let protocol_state = tree("protocol_state")?;
        // Issuances a crash interrupted keep their serials until start-up fails them.
        let mut in_flight = std::collections::HashSet::new();
        for intent in t.issuing.iter().values() {
            let intent: IssuingIntent = decode("issuing", &intent.map_err(backend)?)?;
            if let RequestState::Issuing { serial } = intent.request.state {
                in_flight.insert(serial);
            }
        }
        Ok(SledStore {
            protocol_state,
            commits: GroupCommit::start(Box::new({
                let db = db.clone();
                move || db.flush().map(|_| ()).map_err(backend)
            }))
            .map_err(backend)?,
            db,
            path: path.to_path_buf(),
            chains: Chains::new(t.meta.clone()),
            t,
            in_flight: std::sync::Mutex::new(in_flight),
            journal,
            writer: std::sync::Mutex::new(()),
            san,
            san_loader: std::sync::Mutex::new(loader),
            catalog_pending: Default::default(),
            issued_since_save: Default::default(),
            revocations: Default::default(),
            catalog_unsure: Default::default(),
        })
    }

    /// Save the SAN catalog for the next open (at close; a loaded, usable catalog only).
    /// Without it the next open rebuilds the catalog, so a failure is only logged.
    fn save_san_catalog(&self) {
        if !self.san.is_loaded()
            || self
                .catalog_unsure
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let catalog = self.san.catalog.write().unwrap_or_else(|e| e.into_inner());
        if !catalog.is_usable() {
            return;
        }
        match Self::get::<ChainHead>(&self.t.meta, "meta", META_AUDIT_HEAD) {
            Ok(head) => self.write_san_catalog(catalog, head.unwrap_or_default()),
            Err(error) => {
                tracing::warn!(%error, "SAN catalog not saved: the next start rebuilds it from the store");
            }
        }
    }

    /// Save the SAN catalog while issuances go on, every [`SAN_SAVE_EVERY`] of them, so
    /// that an open after a crash catches up from the audit chain. Only when every
    /// certificate whose audit record comes before the head it records is in it: no
    /// issuance may be between its audit record and its catalog insert, checked under the
    /// catalog's lock after the head is read (an insert needs that lock). Otherwise the
    /// next issuance tries again.
    fn save_san_catalog_while_running(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.issued_since_save.load(SeqCst) < SAN_SAVE_EVERY
            || self.catalog_pending.load(SeqCst) != 0
            || !self.san.is_loaded()
        {
            return;
        }
        let catalog = self.san.catalog.write().unwrap_or_else(|e| e.into_inner());
        // The head first, then no issuance between record and insert: every certificate
        // audited before the head is in the catalog.
        let Ok(head) = Self::get::<ChainHead>(&self.t.meta, "meta", META_AUDIT_HEAD) else {
            return;
        };
        if !catalog.is_usable()
            || self.catalog_pending.load(SeqCst) != 0
            || self.issued_since_save.load(SeqCst) < SAN_SAVE_EVERY
            || self.catalog_unsure.load(SeqCst)
        {
            return;
        }
        self.issued_since_save.store(0, SeqCst);
        let head = head.unwrap_or_default();
        tracing::info!(
            audit_head = head.next_seq,
            "saving the SAN catalog (a start after a crash catches up from here)"
        );
        self.write_san_catalog(catalog, head);
    }

    /// Write `catalog` (locked) to its file and record it with `audit_head`: every
    /// certificate audited before that head is in it.
    fn write_san_catalog(
        &self,
        mut catalog: std::sync::RwLockWriteGuard<'_, SanCatalog>,
        audit_head: ChainHead,
    ) {
        let saved = (|| {
            let label = catalog
                .save()
                .map_err(|e| StoreError::Backend(format!("SAN catalog: {e}")))?;
            let record = SavedCatalog { label, audit_head };
            // Nothing changed since the open read it: no write, no flush.
            if Self::get::<SavedCatalog>(&self.t.meta, "meta", META_SAN_CATALOG)?.as_ref()
                == Some(&record)
            {
                return Ok(());
            }
            self.t
                .meta
                .insert(META_SAN_CATALOG, encode(&record))
                .map_err(backend)?;
            drop(catalog);
            self.commits.sync()
        })();
        if let Err(error) = saved {
            tracing::warn!(%error, "SAN catalog not saved: the next start rebuilds it from the store");
        }
    }

    /// Directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The issuance of `serial` ended (recorded in `serials`): forget it as under way.
    fn released(&self, serial: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(serial);
    }

    fn transact<T>(
        &self,
        durable: bool,
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let t = &self.t;
        let writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let result = (
            &t.certificates,
            &t.requests,
            &t.serials,
            &t.idx_expiry,
            &t.idx_owner,
            &t.idx_open_requests,
            &t.issuing,
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
                    idx_expiry,
                    idx_owner,
                    idx_open_requests,
                    issuing,
                    audit,
                    outbox,
                    api_keys,
                    meta,
                )| {
                    f(&Tx {
                        chains: &self.chains,
                        certificates,
                        requests,
                        serials,
                        idx_expiry,
                        idx_owner,
                        idx_open_requests,
                        issuing,
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
        drop(writing);
        if durable {
            self.commits.sync()?;
        }
        Ok(result)
    }

    /// Make a change without a transaction, as a [`Journal`] entry under `key` (unique
    /// among changes under way). Not flushed.
    fn journaled<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&Journal<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let change = Journal::new(&self.t, &self.chains);
        let result = f(&change)?;
        let writes = change.writes.into_inner();
        self.journal
            .insert(key, Journal::encode(&writes))
            .map_err(backend)?;
        Journal::apply(&self.t, &writes)?;
        self.journal.remove(key).map_err(backend)?;
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

    /// Open requests (issuing or pending: few) whose state passes `keep`.
    fn requests_where(
        &self,
        keep: impl Fn(&RequestState) -> bool,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        for id in self.t.idx_open_requests.iter().keys() {
            let Some(request) =
                Self::get::<RequestRecord>(&self.t.requests, "requests", &id.map_err(backend)?)?
            else {
                continue;
            };
            if keep(&request.state) {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// Serials of the certificates the query's most selective index yields, ascending and
    /// after `query.after`; `None` when no index applies (then every certificate is a
    /// candidate, in serial order).
    fn candidates(
        &self,
        query: &CertificateQuery,
        now: OffsetDateTime,
    ) -> Result<Option<Candidates<'_>>, StoreError> {
        let after = query.after.clone();
        if let Some(needle) = &query.san_contains {
            let needle = needle.to_ascii_lowercase();
            if self.san.loaded_catalog().answers(&needle) {
                return Ok(Some(Box::new(SanCandidates::new(&self.san, needle, after))));
            }
        }
        if let Some(owner) = &query.owner {
            let prefix = pair_key(owner, "");
            let lower = match &after {
                Some(after) => Bound::Excluded(pair_key(owner, after)),
                None => Bound::Included(prefix.clone()),
            };
            let mut upper = owner.as_bytes().to_vec();
            upper.push(1);
            let skip = prefix.len();
            return Ok(Some(Box::new(
                self.t
                    .idx_owner
                    .range::<Vec<u8>, _>((lower, Bound::Excluded(upper)))
                    .keys()
                    .map(move |key| {
                        key.map(|k| String::from_utf8_lossy(&k[skip..]).into_owned())
                            .map_err(backend)
                    }),
            )));
        }
        if let Some(within) = query
            .expiring_within
            .filter(|w| w.whole_days() <= MAX_EXPIRY_DAYS_MERGED)
        {
            return Ok(Some(Box::new(ExpiryMerge::new(
                &self.t.idx_expiry,
                now,
                now + within,
                after.as_deref(),
            )?)));
        }
        Ok(None)
    }
}

/// Candidate serials, ascending.
type Candidates<'a> = Box<dyn Iterator<Item = Result<String, StoreError>> + 'a>;

/// The serials of `idx_expiry` with a not-after in `[start, end]`, ascending: one range
/// per day of the window (each in serial order), merged.
struct ExpiryMerge {
    days: Vec<sled::Iter>,
    /// The next entry of each day: (serial, day index, sortable not-after).
    heads: std::collections::BinaryHeap<std::cmp::Reverse<(Vec<u8>, usize, u64)>>,
    start: u64,
    end: u64,
}

impl ExpiryMerge {
    fn new(
        tree: &sled::Tree,
        start: OffsetDateTime,
        end: OffsetDateTime,
        after: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut merge = ExpiryMerge {
            days: Vec::new(),
            heads: std::collections::BinaryHeap::new(),
            start: sortable_time(start),
            end: sortable_time(end),
        };
        for day in expiry_day(start)..=expiry_day(end) {
            let lower = match after {
                Some(after) => Bound::Excluded(expiry_key(day, after)),
                None => Bound::Included(day.to_be_bytes().to_vec()),
            };
            let upper = match day.checked_add(1) {
                Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
                None => Bound::Unbounded,
            };
            merge.days.push(tree.range::<Vec<u8>, _>((lower, upper)));
            merge.advance(merge.days.len() - 1)?;
        }
        Ok(merge)
    }

    /// Put day `index`'s next entry among the heads.
    fn advance(&mut self, index: usize) -> Result<(), StoreError> {
        if let Some(item) = self.days[index].next() {
            let (key, value) = item.map_err(backend)?;
            let (at, _) = split_expiry_value(&value)?;
            self.heads
                .push(std::cmp::Reverse((key[4..].to_vec(), index, at)));
        }
        Ok(())
    }
}

impl Iterator for ExpiryMerge {
    type Item = Result<String, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let std::cmp::Reverse((serial, index, at)) = self.heads.pop()?;
            if let Err(e) = self.advance(index) {
                return Some(Err(e));
            }
            // The first and last days also hold certificates outside the window.
            if (self.start..=self.end).contains(&at) {
                return Some(Ok(String::from_utf8_lossy(&serial).into_owned()));
            }
        }
    }
}

/// Give every `idx_expiry` value without SAN text its certificate's: from the retired
/// `idx_san_text`, or from the certificate's record where that lacks it. Idempotent.
fn move_san_text_into_expiry(retired: &sled::Tree, trees: &Trees) -> Result<(), StoreError> {
    for item in trees.idx_expiry.iter() {
        let (key, value) = item.map_err(backend)?;
        let (at, text) = split_expiry_value(&value)?;
        if !text.is_empty() {
            continue;
        }
        let serial = key.get(4..).unwrap_or_default();
        let text = match retired.get(serial).map_err(backend)? {
            Some(text) => String::from_utf8_lossy(&text).into_owned(),
            None => match trees.certificates.get(serial).map_err(backend)? {
                Some(bytes) => san_text(&certificate_value::decode_record(&bytes)?.0),
                None => continue,
            },
        };
        trees
            .idx_expiry
            .insert(key, expiry_value(at, &text))
            .map_err(backend)?;
    }
    Ok(())
}

/// Move the legacy expiry index (`sortable not-after / serial` keys) into `idx_expiry`.
fn migrate_legacy_expiry(legacy: &sled::Tree, expiry: &sled::Tree) -> Result<(), StoreError> {
    for key in legacy.iter().keys() {
        let key = key.map_err(backend)?;
        let (Some(at), Some(serial)) = (key.get(..8), key.get(9..)) else {
            return Err(StoreError::Corrupt {
                tree: LEGACY_NOT_AFTER_TREE,
                reason: "key too short".into(),
            });
        };
        let at: [u8; 8] = at.try_into().expect("8 bytes");
        let unix = (u64::from_be_bytes(at) ^ (1 << 63)) as i64;
        let serial = String::from_utf8_lossy(serial);
        expiry
            .insert(expiry_key(day_bucket(unix), &serial), &at)
            .map_err(backend)?;
    }
    legacy.clear().map_err(backend)?;
    Ok(())
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
        // One insert, no transaction (see the module docs). The serial is reserved in memory
        // first, until complete_issuance or fail_issuance records it, and only then looked
        // up in the trees, without the lock: at scale the certificates lookup reads a leaf
        // from disk, and concurrent issuances must not queue behind it. Not flushed: until
        // complete_issuance (which is) nothing has left the process, and the log is
        // sequential, so that flush also writes this intent.
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial.clone())
        {
            return Ok(false);
        }
        let taken = |tree: &sled::Tree| tree.contains_key(serial.as_bytes()).map_err(backend);
        let begun = (|| {
            if taken(&self.t.serials)? || taken(&self.t.certificates)? {
                return Ok(false);
            }
            let intent = IssuingIntentRef { request, decision };
            self.t
                .issuing
                .insert(request.request_id.as_bytes(), encode(&intent))
                .map_err(backend)?;
            Ok(true)
        })();
        if !matches!(begun, Ok(true)) {
            self.released(serial);
        }
        begun
    }

    fn record_issuance(
        &self,
        cert: &CertificateRecord,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<Flush, StoreError> {
        // The issuance's one change: a journal entry, not a transaction (see the module
        // docs), then a flush shared with concurrent ones.
        let pending = CatalogPending::begin(&self.catalog_pending);
        let announced = self.commits.announce();
        let reserved = self
            .journaled(cert.request_id.as_bytes(), |change| {
                record_issuance(change, cert, audit, event)
            })
            .inspect_err(|_| {
                self.catalog_unsure
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            })?;
        let flush = self.commits.request_announced(announced);
        self.released(&reserved);
        self.san.insert(&cert.serial, &san_text(cert));
        drop(pending);
        self.issued_since_save
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.save_san_catalog_while_running();
        Ok(flush)
    }

    fn fail_issuance(
        &self,
        request_id: Uuid,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let serial = self.transact(true, |tx| {
            let (begun, decision) = match tx.end_intent(request_id)? {
                Some((request, decision)) => (Some(request), Some(decision)),
                None => (tx.request(request_id)?, None),
            };
            let mut serial = None;
            if let Some(mut request) = begun {
                if let RequestState::Issuing { serial: reserved } = &request.state {
                    // Burnt: the CA may have signed with it.
                    tx.insert(TreeId::Serials, reserved.as_bytes(), request_id.as_bytes())?;
                    serial = Some(reserved.clone());
                }
                request.state = RequestState::Failed {
                    reason: reason.into(),
                };
                request.updated_at = audit.time;
                tx.put_request(&request)?;
            }
            let audited: Vec<&AuditEntry> = decision.iter().chain([audit]).collect();
            tx.append_audit_records(&audited)?;
            Ok(serial)
        })?;
        if let Some(serial) = serial {
            self.released(&serial);
        }
        Ok(())
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
        let mut pending =
            self.requests_where(|state| matches!(state, RequestState::Pending { .. }))?;
        // An approved one being issued right now is no longer pending.
        let mut issuing = Vec::new();
        for request in &pending {
            issuing.push(
                self.t
                    .issuing
                    .contains_key(request.request_id.as_bytes())
                    .map_err(backend)?,
            );
        }
        let mut issuing = issuing.into_iter();
        pending.retain(|_| !issuing.next().unwrap_or(false));
        Ok(pending)
    }

    fn interrupted_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let mut interrupted = Vec::new();
        for intent in self.t.issuing.iter().values() {
            let intent: IssuingIntent = decode("issuing", &intent.map_err(backend)?)?;
            interrupted.push(intent.request);
        }
        // Begun by a rampart from before `issuing`.
        interrupted
            .extend(self.requests_where(|state| matches!(state, RequestState::Issuing { .. }))?);
        Ok(interrupted)
    }

    fn request(&self, request_id: Uuid) -> Result<Option<RequestRecord>, StoreError> {
        if let Some(intent) = self.t.issuing.get(request_id.as_bytes()).map_err(backend)? {
            let intent: IssuingIntent = decode("issuing", &intent)?;
            return Ok(Some(intent.request));
        }
        Self::get(&self.t.requests, "requests", request_id.as_bytes())
    }

    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        match self
            .t
            .certificates
            .get(serial.as_bytes())
            .map_err(backend)?
        {
            Some(bytes) => Ok(Some(self.chains.record(&bytes)?)),
            None => Ok(None),
        }
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
        if let Some(candidates) = self.candidates(query, now)? {
            for serial in candidates {
                if let Some(cert) = self.certificate(&serial?)? {
                    if !take(cert) {
                        break;
                    }
                }
            }
        } else {
            let start = match &query.after {
                Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
                None => Bound::Unbounded,
            };
            for item in self
                .t
                .certificates
                .range::<Vec<u8>, _>((start, Bound::Unbounded))
                .values()
            {
                let cert = self.chains.record(&item.map_err(backend)?)?;
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
            let mut cert = tx.chains.record(&bytes).map_err(abort)?;
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
        .inspect(|outcome| {
            if matches!(outcome, RevokeOutcome::Revoked(_)) {
                self.revocations
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    }

    fn revocations_since_open(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::SeqCst)
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
            self.commits.sync()?;
        }
        Ok(())
    }

    fn audit_head(&self) -> Result<ChainHead, StoreError> {
        Ok(Self::get(&self.t.meta, "meta", META_AUDIT_HEAD)?.unwrap_or_default())
    }

    fn protocol_delete(&self, namespace: &str, key: &str, durable: bool) -> Result<(), StoreError> {
        let removed = self
            .protocol_state
            .remove(protocol_key(namespace, key))
            .map_err(backend)?;
        if durable && removed.is_some() {
            self.commits.sync()?;
        }
        Ok(())
    }

    fn protocol_take(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let taken = self
            .protocol_state
            .remove(protocol_key(namespace, key))
            .map_err(backend)?;
        if taken.is_some() {
            self.commits.sync()?;
        }
        Ok(taken.map(|v| v.to_vec()))
    }

    fn flush(&self) -> Flush {
        self.commits.request()
    }

    fn protocol_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .protocol_state
            .get(protocol_key(namespace, key))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn protocol_scan_after(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let skip = namespace.len() + 1;
        let start = protocol_key(namespace, prefix);
        let from = match after {
            Some(after) => Bound::Excluded(protocol_key(namespace, after)),
            None => Bound::Included(start.clone()),
        };
        self.protocol_state
            .range::<Vec<u8>, _>((from, Bound::Unbounded))
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(key, _)| key.starts_with(&start))
            })
            .take(limit)
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
        read_audit_records(&self.t.audit, from, limit)
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

    fn prune_events(
        &self,
        from: u64,
        below: u64,
        queued_before: OffsetDateTime,
        keep: &std::collections::BTreeSet<u64>,
        limit: usize,
    ) -> Result<Pruned, StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        let mut resume = None;
        for entry in self.t.outbox.range(from.to_be_bytes()..below.to_be_bytes()) {
            let (key, value) = entry.map_err(backend)?;
            let event: Event = decode("outbox", &value)?;
            if removed == limit {
                resume = Some(event.seq);
                break;
            }
            if event.time >= queued_before {
                break;
            }
            if keep.contains(&event.seq) {
                continue;
            }
            batch.remove(key);
            removed += 1;
        }
        // Only old keys, which no writer touches; the lock keeps the writers' contract.
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.t.outbox.apply_batch(batch).map_err(backend)?;
        Ok(Pruned { removed, resume })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Identifier, KeyType, Protocol};
    use crate::store::{AuditAction, AuditVerification, EventKind};
    use std::collections::BTreeMap;

    const NAMES: [&str; 6] = ["api", "www", "payments", "mail", "db", "vpn"];

    fn entry(time: OffsetDateTime, action: AuditAction) -> AuditEntry {
        AuditEntry {
            time,
            request_id: None,
            actor: "t".into(),
            action,
            outcome: "ok".into(),
            layer: None,
            rule: None,
            reason: String::new(),
            subject: None,
            details: serde_json::json!({}),
        }
    }

    /// Certificate `i`: a pseudo-random serial, one of three owners, 1–3 names, a not-after
    /// from 100 days ago to 200 days ahead.
    fn issue(store: &SledStore, i: u64, now: OffsetDateTime) -> CertificateRecord {
        let mix = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 7);
        let serial = format!("{:x}", mix | 1 << 40);
        let sans = (0..=(mix % 3))
            .map(|k| {
                let name = NAMES[((mix >> (8 * k)) % 6) as usize];
                Identifier::dns(&format!("{name}-{}.zone{}.test", i % 97, k)).unwrap()
            })
            .collect::<Vec<_>>();
        let mut sans_unique = Vec::new();
        for san in sans {
            if !sans_unique.contains(&san) {
                sans_unique.push(san);
            }
        }
        let not_after = now - time::Duration::days(100)
            + time::Duration::seconds(((mix >> 16) % (300 * 86_400)) as i64);
        let request_id = Uuid::new_v4();
        let request = RequestRecord {
            request_id,
            protocol: Protocol::Api,
            identity: format!("owner-{}", i % 3),
            template: "server".into(),
            identifiers: sans_unique.clone(),
            state: RequestState::Issuing {
                serial: serial.clone(),
            },
            created_at: now,
            updated_at: now,
            pending: None,
            client: None,
        };
        assert!(store
            .begin_issuance(&request, &entry(now, AuditAction::Decision))
            .unwrap());
        let cert = CertificateRecord {
            serial,
            request_id,
            protocol: Protocol::Api,
            owner: format!("owner-{}", i % 3),
            template: if i.is_multiple_of(4) {
                "client"
            } else {
                "server"
            }
            .into(),
            issuer: "local".into(),
            subject: String::new(),
            sans: sans_unique,
            key_type: KeyType::EcdsaP256,
            not_before: not_after - time::Duration::days(90),
            not_after: not_after.replace_nanosecond(0).unwrap(),
            sha256_fingerprint: String::new(),
            resource: None,
            metadata: BTreeMap::new(),
            status: StoredStatus::Valid,
            revocation: None,
            der: Vec::new(),
            chain: Vec::new(),
        };
        let event = NewEvent {
            kind: EventKind::CertificateIssued,
            time: now,
            data: serde_json::json!({}),
        };
        store
            .complete_issuance(&cert, &entry(now, AuditAction::Issued), &event)
            .unwrap();
        cert
    }

    fn queries() -> Vec<CertificateQuery> {
        let days = |d| Some(time::Duration::days(d));
        let san = |s: &str| Some(s.to_string());
        vec![
            CertificateQuery::default(),
            CertificateQuery {
                expiring_within: days(1),
                ..Default::default()
            },
            CertificateQuery {
                expiring_within: days(30),
                ..Default::default()
            },
            CertificateQuery {
                expiring_within: days(5000),
                ..Default::default()
            },
            CertificateQuery {
                owner: san("owner-1"),
                ..Default::default()
            },
            CertificateQuery {
                owner: san("owner-2"),
                expiring_within: days(60),
                ..Default::default()
            },
            CertificateQuery {
                san_contains: san("PAYMENTS-"),
                ..Default::default()
            },
            CertificateQuery {
                san_contains: san("-42.zone"),
                ..Default::default()
            },
            CertificateQuery {
                san_contains: san("nowhere"),
                ..Default::default()
            },
            CertificateQuery {
                san_contains: san("api"),
                expiring_within: days(90),
                template: san("server"),
                ..Default::default()
            },
            CertificateQuery {
                san_contains: san("zone2"),
                owner: san("owner-0"),
                ..Default::default()
            },
            CertificateQuery {
                san_contains: san("a\nb"),
                ..Default::default()
            },
        ]
    }

    /// Every query, paged by 7, gives exactly the brute-force answer in serial order.
    fn check_queries(store: &SledStore, all: &[CertificateRecord], now: OffsetDateTime) {
        for query in queries() {
            let mut expected: Vec<&str> = all
                .iter()
                .filter(|c| matches(&query, c, now))
                .map(|c| c.serial.as_str())
                .collect();
            expected.sort_unstable();
            let mut got = Vec::new();
            let mut page_query = CertificateQuery {
                limit: 7,
                ..query.clone()
            };
            loop {
                let page = store.list_certificates(&page_query, now).unwrap();
                assert!(page.items.len() <= 7);
                got.extend(page.items.iter().map(|c| c.serial.clone()));
                match page.next_after {
                    Some(after) => page_query.after = Some(after),
                    None => break,
                }
            }
            assert_eq!(got, expected, "{query:?}");
        }
    }

    #[test]
    fn protocol_scans_page_through_one_prefix_of_one_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for key in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
            store
                .protocol_put("ns", key, key.as_bytes(), false)
                .unwrap();
        }
        store.protocol_put("other", "a/9", b"x", false).unwrap();
        let keys = |items: Vec<(String, Vec<u8>)>| -> Vec<String> {
            items.into_iter().map(|(key, _)| key).collect()
        };
        assert_eq!(
            keys(store.protocol_scan("ns", "a/").unwrap()),
            ["a/1", "a/2", "a/3", "a/4", "a/5"]
        );
        assert_eq!(
            keys(
                store
                    .protocol_scan_after("ns", "a/", Some("a/2"), 2)
                    .unwrap()
            ),
            ["a/3", "a/4"]
        );
        assert_eq!(
            keys(
                store
                    .protocol_scan_after("ns", "a/", Some("a/4"), 10)
                    .unwrap()
            ),
            ["a/5"]
        );
        assert!(store
            .protocol_scan_after("ns", "a/", Some("a/5"), 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            keys(store.protocol_scan_after("ns", "a/", None, 1).unwrap()),
            ["a/1"]
        );
    }

    #[test]
    fn indexed_listings_agree_with_a_scan_before_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let all: Vec<CertificateRecord> = {
            let store = SledStore::open(dir.path()).unwrap();
            let all: Vec<_> = (0..400).map(|i| issue(&store, i, now)).collect();
            // Only the tail holds them yet.
            check_queries(&store, &all, now);
            // Merged into the main segment.
            drop(store.san.loaded_catalog());
            store.san.catalog.write().unwrap().merge_tail();
            check_queries(&store, &all, now);
            // A main segment and a tail.
            let mut all = all;
            all.extend((400..500).map(|i| issue(&store, i, now)));
            check_queries(&store, &all, now);
            all
        };
        // Read back from the file saved at close.
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.san.loaded_catalog().main_len(), 500);
        check_queries(&store, &all, now);
    }

    /// Put back a SAN catalog file and its record as a store saved them (a crash since).
    fn restore_san_catalog(dir: &Path, file: &[u8], record: &[u8]) {
        std::fs::write(dir.join("san-catalog"), file).unwrap();
        let db = sled::Config::new().path(dir).open().unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(META_SAN_CATALOG, record)
            .unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn a_running_store_saves_the_san_catalog_so_that_a_crash_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let every = SAN_SAVE_EVERY;
        let (saved_file, saved_record, all) = {
            let store = SledStore::open(dir.path()).unwrap();
            drop(store.san.loaded_catalog());
            let mut all: Vec<CertificateRecord> =
                (0..every + 5).map(|i| issue(&store, i, now)).collect();
            // Saved at the `every`-th issuance, with the head after it.
            let record = store.t.meta.get(META_SAN_CATALOG).unwrap().unwrap();
            let saved: SavedCatalog = decode("meta", &record).unwrap();
            let head: ChainHead =
                decode("meta", &store.t.meta.get(META_AUDIT_HEAD).unwrap().unwrap()).unwrap();
            assert!(saved.audit_head.next_seq > 0);
            assert!(saved.audit_head.next_seq < head.next_seq);
            let file = std::fs::read(dir.path().join("san-catalog")).unwrap();
            all.extend((every + 5..every + 12).map(|i| issue(&store, i, now)));
            (file, record.to_vec(), all)
        };
        // As after a crash: the file and record saved while running; the twelve issuances
        // since are caught up from the audit chain.
        restore_san_catalog(dir.path(), &saved_file, &saved_record);
        let store = SledStore::open(dir.path()).unwrap();
        drop(store.san.loaded_catalog());
        assert_eq!(
            *store.san.origin.get().unwrap(),
            CatalogOrigin::Saved { caught_up: 12 }
        );
        check_queries(&store, &all, now);
    }

    #[test]
    fn the_san_catalog_saved_at_close_is_read_back_and_caught_up_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let origin = |store: &SledStore| {
            drop(store.san.loaded_catalog());
            *store.san.origin.get().unwrap()
        };
        let file = dir.path().join("san-catalog");
        let mut all: Vec<CertificateRecord> = {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(origin(&store), CatalogOrigin::Rebuilt);
            (0..150).map(|i| issue(&store, i, now)).collect()
        };
        // Read back; the file and its record as this close left them, for the crash below.
        let (saved_file, saved_record) = {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(origin(&store), CatalogOrigin::Saved { caught_up: 0 });
            check_queries(&store, &all, now);
            let record = store.t.meta.get(META_SAN_CATALOG).unwrap().unwrap();
            let saved = (std::fs::read(&file).unwrap(), record);
            all.extend((150..160).map(|i| issue(&store, i, now)));
            check_queries(&store, &all, now);
            saved
        };
        // Saved again at close, with the certificates issued since.
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(origin(&store), CatalogOrigin::Saved { caught_up: 0 });
            assert_eq!(store.san.loaded_catalog().main_len(), 160);
            check_queries(&store, &all, now);
        }
        // As after a crash: the file and record of the earlier close, the ten issuances
        // since only in the store. They are caught up from the audit chain.
        let restore = |record: &[u8]| restore_san_catalog(dir.path(), &saved_file, record);
        restore(&saved_record);
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(origin(&store), CatalogOrigin::Saved { caught_up: 10 });
            assert_eq!(store.san.loaded_catalog().main_len(), 160);
            check_queries(&store, &all, now);
        }
        // A record of another chain (the file copied from another store, say): rebuilt.
        let mut foreign: SavedCatalog = decode("meta", &saved_record).unwrap();
        foreign.audit_head.last_hash = "0".repeat(64);
        restore(&encode(&foreign));
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(origin(&store), CatalogOrigin::Rebuilt);
            check_queries(&store, &all, now);
        }
        // A damaged file: rebuilt.
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(origin(&store), CatalogOrigin::Rebuilt);
            check_queries(&store, &all, now);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(origin(&store), CatalogOrigin::Saved { caught_up: 0 });
        check_queries(&store, &all, now);
    }

    #[test]
    fn certificates_share_one_stored_chain_and_records_of_version_2_read_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let chain = vec![vec![0x30; 500], vec![0x31; 400]];
        let chain_entries = |store: &SledStore| store.t.meta.scan_prefix(b"chain/").count();
        let (request, mut legacy) = issuing("0e01", now);
        legacy.chain = chain.clone();
        {
            let store = SledStore::open(dir.path()).unwrap();
            issue_both_steps(&store, &request, &legacy, now);
            // As version 2 left it: JSON, with the DER and the chain in base64.
            store
                .t
                .certificates
                .insert(legacy.serial.as_bytes(), encode(&legacy))
                .unwrap();
            for key in store.t.meta.scan_prefix(b"chain/").keys() {
                store.t.meta.remove(key.unwrap()).unwrap();
            }
            store.t.meta.insert(META_SCHEMA, encode(&2u32)).unwrap();
            store.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let version: u32 =
            decode("meta", &store.t.meta.get(META_SCHEMA).unwrap().unwrap()).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.certificate("0e01").unwrap().unwrap(), legacy);
        assert_eq!(chain_entries(&store), 0);

        let mut all = vec![legacy];
        for serial in ["0e02", "0e03"] {
            let (request, mut cert) = issuing(serial, now);
            cert.chain = chain.clone();
            issue_both_steps(&store, &request, &cert, now);
            // The chain is not in the record: only its id.
            let stored = store
                .t
                .certificates
                .get(serial.as_bytes())
                .unwrap()
                .unwrap();
            assert!(stored.len() < 600, "{} bytes", stored.len());
            assert_eq!(store.certificate(serial).unwrap().unwrap(), cert);
            all.push(cert);
        }
        assert_eq!(chain_entries(&store), 1);

        // Revocation rewrites a record in a transaction: the version 2 record takes the
        // new form, and both keep their chain.
        let revocation = Revocation {
            revoked_at: now.replace_nanosecond(0).unwrap(),
            reason: crate::model::RevocationReason::KeyCompromise,
            revoked_by: "t".into(),
        };
        for cert in &mut all[..2] {
            let outcome = store
                .revoke(
                    &cert.serial,
                    &revocation,
                    &entry(now, AuditAction::Revoked),
                    &issued_event(now),
                )
                .unwrap();
            assert!(matches!(outcome, RevokeOutcome::Revoked(_)));
            cert.status = StoredStatus::Revoked;
            cert.revocation = Some(revocation.clone());
        }
        // The revocation count moves with the revoked list, and only with it.
        assert_eq!(store.revocations_since_open(), 2);
        for serial in [all[0].serial.as_str(), "ffff"] {
            let outcome = store
                .revoke(
                    serial,
                    &revocation,
                    &entry(now, AuditAction::Revoked),
                    &issued_event(now),
                )
                .unwrap();
            assert!(!matches!(outcome, RevokeOutcome::Revoked(_)));
        }
        assert_eq!(store.revocations_since_open(), 2);
        assert_eq!(store.revoked().unwrap().len(), 2);
        assert_eq!(store.t.certificates.get("0e01").unwrap().unwrap()[0], 1);
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        let page = store
            .list_certificates(
                &CertificateQuery {
                    limit: 10,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(page.items, all);
        assert_eq!(chain_entries(&store), 1);
    }

    #[test]
    fn version_1_stores_get_the_san_text_moved_into_idx_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let all: Vec<CertificateRecord> = {
            let store = SledStore::open(dir.path()).unwrap();
            let all: Vec<_> = (0..60).map(|i| issue(&store, i, now)).collect();
            // As version 1 left it: not-after only in idx_expiry, the text in idx_san_text
            // (but for one certificate, whose text comes from its record).
            let retired = store.db.open_tree(RETIRED_SAN_TEXT_TREE.0).unwrap();
            for item in store.t.idx_expiry.iter() {
                let (key, value) = item.unwrap();
                let (at, text) = split_expiry_value(&value).unwrap();
                assert!(!text.is_empty());
                if &key[4..] != all[7].serial.as_bytes() {
                    retired.insert(&key[4..], text).unwrap();
                }
                store.t.idx_expiry.insert(key, &at.to_be_bytes()).unwrap();
            }
            store.t.meta.remove(META_SAN_IN_EXPIRY).unwrap();
            store
                .t
                .meta
                .insert(META_LEGACY_SAN_TEXT_INDEXED, encode(&true))
                .unwrap();
            store.t.meta.insert(META_SCHEMA, encode(&1u32)).unwrap();
            store.db.flush().unwrap();
            all
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert!(!store
            .db
            .tree_names()
            .contains(&sled::IVec::from(RETIRED_SAN_TEXT_TREE.0)));
        let version: u32 =
            decode("meta", &store.t.meta.get(META_SCHEMA).unwrap().unwrap()).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(store
            .t
            .meta
            .get(META_LEGACY_SAN_TEXT_INDEXED)
            .unwrap()
            .is_none());
        for cert in &all {
            let key = expiry_key(expiry_day(cert.not_after), &cert.serial);
            let value = store.t.idx_expiry.get(key).unwrap().unwrap();
            assert_eq!(
                value.as_ref(),
                expiry_value(sortable_time(cert.not_after), &san_text(cert))
            );
        }
        assert_eq!(store.san.loaded_catalog().main_len(), 60);
        check_queries(&store, &all, now);
    }

    #[test]
    fn audit_records_page_through_records_appended_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        store
            .append_audit(&entry(now, AuditAction::PolicyReloaded))
            .unwrap();
        for i in 0..3 {
            issue(&store, i, now);
        }
        store
            .append_audit(&entry(now, AuditAction::ApiKeyCreated))
            .unwrap();
        // One entry for the lone records, one per issuance for its two.
        assert_eq!(store.t.audit.len(), 5);
        let all = store.audit_records(0, 100).unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        for from in 0..9 {
            for limit in 0..4 {
                let page = store.audit_records(from, limit).unwrap();
                let expected: Vec<_> = all
                    .iter()
                    .filter(|r| r.seq >= from)
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(page, expected, "from {from}, limit {limit}");
            }
        }
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { records: 8, .. }
        ));
    }

    #[test]
    fn issued_serials_live_in_certificates_and_failed_ones_stay_burnt() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let cert = issue(&store, 1, now);
        assert!(store.t.serials.is_empty());
        let request = |serial: &str| RequestRecord {
            request_id: Uuid::new_v4(),
            protocol: Protocol::Api,
            identity: "t".into(),
            template: "server".into(),
            identifiers: Vec::new(),
            state: RequestState::Issuing {
                serial: serial.into(),
            },
            created_at: now,
            updated_at: now,
            pending: None,
            client: None,
        };
        let decision = entry(now, AuditAction::Decision);
        assert!(!store
            .begin_issuance(&request(&cert.serial), &decision)
            .unwrap());
        // A refusal leaves no reservation behind.
        assert!(!store.in_flight.lock().unwrap().contains(&cert.serial));
        let failing = request("0bad");
        assert!(store.begin_issuance(&failing, &decision).unwrap());
        // A serial being issued is refused to another request.
        assert!(!store.begin_issuance(&request("0bad"), &decision).unwrap());
        assert!(store.in_flight.lock().unwrap().contains("0bad"));
        store
            .fail_issuance(
                failing.request_id,
                "the CA refused",
                &entry(now, AuditAction::IssuanceFailed),
            )
            .unwrap();
        assert_eq!(
            store.t.serials.get(b"0bad").unwrap().unwrap().as_ref(),
            failing.request_id.as_bytes()
        );
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(!store.begin_issuance(&request("0bad"), &decision).unwrap());
        assert!(!store
            .begin_issuance(&request(&cert.serial), &decision)
            .unwrap());
    }

    #[test]
    fn stores_with_the_legacy_expiry_index_are_reindexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let all: Vec<CertificateRecord> = {
            let store = SledStore::open(dir.path()).unwrap();
            let all: Vec<_> = (0..200).map(|i| issue(&store, i, now)).collect();
            let interrupted = RequestRecord {
                request_id: Uuid::new_v4(),
                protocol: Protocol::Api,
                identity: "t".into(),
                template: "server".into(),
                identifiers: Vec::new(),
                state: RequestState::Issuing {
                    serial: "ff".into(),
                },
                created_at: now,
                updated_at: now,
                pending: None,
                client: None,
            };
            assert!(store
                .begin_issuance(&interrupted, &entry(now, AuditAction::Decision))
                .unwrap());
            assert_eq!(
                store.interrupted_requests().unwrap(),
                std::slice::from_ref(&interrupted)
            );
            // As a rampart from before idx_expiry and idx_open_requests left it.
            store.t.idx_open_requests.clear().unwrap();
            store.t.meta.remove(META_OPEN_REQUESTS_INDEXED).unwrap();
            store.t.idx_expiry.clear().unwrap();
            let legacy = store.db.open_tree(LEGACY_NOT_AFTER_TREE).unwrap();
            for cert in &all {
                let mut key = sortable_time(cert.not_after).to_be_bytes().to_vec();
                key.push(b'/');
                key.extend_from_slice(cert.serial.as_bytes());
                legacy.insert(key, &[]).unwrap();
            }
            store.db.flush().unwrap();
            all
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store
            .db
            .open_tree(LEGACY_NOT_AFTER_TREE)
            .unwrap()
            .is_empty());
        assert_eq!(store.t.idx_expiry.len(), 200);
        check_queries(&store, &all, now);
        let interrupted = store.interrupted_requests().unwrap();
        assert_eq!(interrupted.len(), 1);
        // Failing it closes it.
        store
            .fail_issuance(
                interrupted[0].request_id,
                "interrupted",
                &entry(now, AuditAction::IssuanceFailed),
            )
            .unwrap();
        assert!(store.interrupted_requests().unwrap().is_empty());
        assert!(store.pending_requests().unwrap().is_empty());
    }

    /// A request issuing `serial` and the certificate it gets.
    fn issuing(serial: &str, now: OffsetDateTime) -> (RequestRecord, CertificateRecord) {
        let request_id = Uuid::new_v4();
        let sans = vec![Identifier::dns(&format!("{serial}.test")).unwrap()];
        let request = RequestRecord {
            request_id,
            protocol: Protocol::Acme,
            identity: "t".into(),
            template: "server".into(),
            identifiers: sans.clone(),
            state: RequestState::Issuing {
                serial: serial.into(),
            },
            created_at: now,
            updated_at: now,
            pending: None,
            client: None,
        };
        let cert = CertificateRecord {
            serial: serial.into(),
            request_id,
            protocol: Protocol::Acme,
            owner: "t".into(),
            template: "server".into(),
            issuer: "local".into(),
            subject: String::new(),
            sans,
            key_type: KeyType::EcdsaP256,
            not_before: now,
            not_after: (now + time::Duration::days(30))
                .replace_nanosecond(0)
                .unwrap(),
            sha256_fingerprint: String::new(),
            resource: None,
            metadata: BTreeMap::new(),
            status: StoredStatus::Valid,
            revocation: None,
            der: vec![1, 2, 3],
            chain: Vec::new(),
        };
        (request, cert)
    }

    /// Both steps of an issuance, each expected to succeed.
    fn issue_both_steps(
        store: &SledStore,
        request: &RequestRecord,
        cert: &CertificateRecord,
        now: OffsetDateTime,
    ) {
        assert!(store
            .begin_issuance(request, &entry(now, AuditAction::Decision))
            .unwrap());
        store
            .complete_issuance(cert, &entry(now, AuditAction::Issued), &issued_event(now))
            .unwrap();
    }

    fn issued_event(now: OffsetDateTime) -> NewEvent {
        NewEvent {
            kind: EventKind::CertificateIssued,
            time: now,
            data: serde_json::json!({}),
        }
    }

    fn audit_actions(store: &SledStore) -> Vec<AuditAction> {
        store
            .audit_records(0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| r.entry.action)
            .collect()
    }

    #[test]
    fn an_issuance_reserves_its_serial_at_once_and_records_the_rest_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let (request, cert) = issuing("0a01", now);
        assert!(store
            .begin_issuance(&request, &entry(now, AuditAction::Decision))
            .unwrap());
        // Under way: it reads as issuing, would be failed by a restart, and its serial is
        // taken — but nothing is audited yet.
        assert_eq!(
            store.request(request.request_id).unwrap(),
            Some(request.clone())
        );
        assert_eq!(
            store.interrupted_requests().unwrap(),
            std::slice::from_ref(&request)
        );
        let (rival, _) = issuing("0a01", now);
        assert!(!store
            .begin_issuance(&rival, &entry(now, AuditAction::Decision))
            .unwrap());
        assert!(audit_actions(&store).is_empty());

        store
            .complete_issuance(&cert, &entry(now, AuditAction::Issued), &issued_event(now))
            .unwrap();
        assert_eq!(
            store.request(request.request_id).unwrap().unwrap().state,
            RequestState::Issued {
                serial: "0a01".into()
            }
        );
        assert_eq!(store.certificate("0a01").unwrap(), Some(cert.clone()));
        assert!(store.interrupted_requests().unwrap().is_empty());
        assert!(store.journal.is_empty());
        // The decision comes right before the issuance in the chain, which verifies.
        assert_eq!(
            audit_actions(&store),
            [AuditAction::Decision, AuditAction::Issued]
        );
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { records: 2, .. }
        ));
        assert_eq!(store.events(0, 10).unwrap().len(), 1);
        // The serial stays taken; a certificate is recorded once.
        assert!(!store
            .begin_issuance(&rival, &entry(now, AuditAction::Decision))
            .unwrap());
        assert!(store
            .complete_issuance(&cert, &entry(now, AuditAction::Issued), &issued_event(now))
            .is_err());
        assert_eq!(audit_actions(&store).len(), 2);
    }

    #[test]
    fn a_certificate_may_carry_a_serial_an_upstream_ca_chose() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let (request, _) = issuing("0e05", now);
        let (_, mut cert) = issuing("0e06", now);
        cert.request_id = request.request_id;
        issue_both_steps(&store, &request, &cert, now);
        assert_eq!(
            store.request(request.request_id).unwrap().unwrap().state,
            RequestState::Issued {
                serial: "0e06".into()
            }
        );
        // The reserved serial stays burnt and is no longer under way.
        assert!(store.in_flight.lock().unwrap().is_empty());
        let (again, _) = issuing("0e05", now);
        assert!(!store
            .begin_issuance(&again, &entry(now, AuditAction::Decision))
            .unwrap());
    }

    #[test]
    fn a_failed_issuance_burns_its_serial_and_audits_its_decision() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let (request, _) = issuing("0b02", now);
        assert!(store
            .begin_issuance(&request, &entry(now, AuditAction::Decision))
            .unwrap());
        store
            .fail_issuance(
                request.request_id,
                "CA down",
                &entry(now, AuditAction::IssuanceFailed),
            )
            .unwrap();
        assert_eq!(
            store.request(request.request_id).unwrap().unwrap().state,
            RequestState::Failed {
                reason: "CA down".into()
            }
        );
        assert_eq!(
            audit_actions(&store),
            [AuditAction::Decision, AuditAction::IssuanceFailed]
        );
        let (again, _) = issuing("0b02", now);
        assert!(!store
            .begin_issuance(&again, &entry(now, AuditAction::Decision))
            .unwrap());
    }

    #[test]
    fn an_issuance_cut_short_by_a_crash_is_failed_at_start_up_with_its_serial_burnt() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (request, _) = issuing("0c03", now);
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store
                .begin_issuance(&request, &entry(now, AuditAction::Decision))
                .unwrap());
            store.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        // Still reserved after the restart, until recovery fails it.
        let (rival, _) = issuing("0c03", now);
        assert!(!store
            .begin_issuance(&rival, &entry(now, AuditAction::Decision))
            .unwrap());
        assert_eq!(
            store.interrupted_requests().unwrap(),
            std::slice::from_ref(&request)
        );
        store
            .fail_issuance(
                request.request_id,
                "interrupted",
                &entry(now, AuditAction::IssuanceFailed),
            )
            .unwrap();
        assert!(store.interrupted_requests().unwrap().is_empty());
        assert!(!store
            .begin_issuance(&rival, &entry(now, AuditAction::Decision))
            .unwrap());
    }

    #[test]
    fn compaction_keeps_every_entry_and_finishes_an_interrupted_swap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let now = OffsetDateTime::now_utc();
        let serials = ["0c01", "0c02", "0c03"];
        {
            let store = SledStore::open(&path).unwrap();
            for serial in serials {
                let (request, cert) = issuing(serial, now);
                issue_both_steps(&store, &request, &cert, now);
            }
            store
                .protocol_put("acme", "account/1", b"{}", true)
                .unwrap();
            // Loaded, so that the close saves it (a close during the load stops the load).
            drop(store.san.loaded_catalog());
        }
        let check = |path: &Path| {
            let store = SledStore::open(path).unwrap();
            // The saved SAN catalog came along.
            drop(store.san.loaded_catalog());
            assert_eq!(
                store.san.origin.get(),
                Some(&CatalogOrigin::Saved { caught_up: 0 })
            );
            for serial in serials {
                assert!(store.certificate(serial).unwrap().is_some(), "{serial}");
            }
            assert_eq!(audit_actions(&store).len(), 2 * serials.len());
            assert!(matches!(
                store.verify_audit().unwrap(),
                AuditVerification::Intact { records: 6, .. }
            ));
            assert_eq!(
                store.protocol_get("acme", "account/1").unwrap().as_deref(),
                Some(&b"{}"[..])
            );
        };
        let done = compaction::compact(&path).unwrap();
        assert!(done.entries >= 3 * 8, "{done:?}");
        assert!(!compaction::retired(&path).exists());
        assert!(!dir.path().join("store.compacting").exists());
        check(&path);

        // Stopped after the store was moved aside, before the copy took its place: the
        // complete copy is the store itself here, the store moved aside any directory.
        std::fs::rename(&path, dir.path().join("store.compacting")).unwrap();
        std::fs::create_dir(compaction::retired(&path)).unwrap();
        let refused = SledStore::open(&path).unwrap_err().to_string();
        assert!(refused.contains("rampart compact"), "{refused}");
        assert!(!path.exists(), "the refusal created a store");
        compaction::compact(&path).unwrap();
        assert!(!compaction::retired(&path).exists());
        check(&path);

        // A daemon holding the store: refused, nothing changed.
        let open = SledStore::open(&path).unwrap();
        assert!(matches!(
            compaction::compact(&path),
            Err(StoreError::Locked { .. })
        ));
        drop(open);
        check(&path);
    }

    #[test]
    fn a_journal_entry_left_half_applied_by_a_crash_is_applied_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (request, cert) = issuing("0d04", now);
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store
                .begin_issuance(&request, &entry(now, AuditAction::Decision))
                .unwrap());
            // What complete_issuance writes, stopped after the entry and one of its writes.
            let change = Journal::new(&store.t, &store.chains);
            record_issuance(
                &change,
                &cert,
                &entry(now, AuditAction::Issued),
                &issued_event(now),
            )
            .unwrap();
            let writes = change.writes.into_inner();
            assert!(writes.len() > 5, "{}", writes.len());
            assert_eq!(Journal::decode(&Journal::encode(&writes)).unwrap(), writes);
            // As a rampart from before idx_san and idx_san_text were retired wrote it: with
            // writes to both.
            let mut entry = Journal::encode(&writes);
            entry.extend_from_slice(&[RETIRED_SAN_TREE.1, 0, 0, 0, 1, b'a', 1, 0, 0, 0, 0]);
            entry.extend_from_slice(&[RETIRED_SAN_TEXT_TREE.1, 0, 0, 0, 1, b'b', 0]);
            assert_eq!(Journal::decode(&entry).unwrap(), writes);
            let retired = store.db.open_tree(RETIRED_SAN_TREE.0).unwrap();
            retired.insert(b"a.test\x000d04", &[]).unwrap();
            store
                .journal
                .insert(request.request_id.as_bytes(), entry)
                .unwrap();
            Journal::apply(&store.t, &writes[..1]).unwrap();
            store.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.journal.is_empty());
        assert!(!store
            .db
            .tree_names()
            .contains(&sled::IVec::from(RETIRED_SAN_TREE.0)));
        assert_eq!(store.certificate("0d04").unwrap(), Some(cert));
        assert_eq!(
            store.request(request.request_id).unwrap().unwrap().state,
            RequestState::Issued {
                serial: "0d04".into()
            }
        );
        assert!(store.interrupted_requests().unwrap().is_empty());
        assert_eq!(
            audit_actions(&store),
            [AuditAction::Decision, AuditAction::Issued]
        );
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { records: 2, .. }
        ));
        assert_eq!(
            store
                .list_certificates(
                    &CertificateQuery {
                        san_contains: Some("0d04".into()),
                        limit: 10,
                        ..Default::default()
                    },
                    now
                )
                .unwrap()
                .items
                .len(),
            1
        );
        // A corrupt entry is refused rather than half applied.
        assert!(Journal::decode(&[0, 0, 0, 0, 9]).is_err());
        assert!(Journal::decode(&[200]).is_err());
    }

    #[test]
    fn pruning_removes_old_events_below_the_bound_but_the_kept_ones_and_stops_at_the_first_young_one(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let start = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let day = time::Duration::days(1);
        // Queued on days 0, 1, 2, 3, then one out of order (day 1) after a young one.
        for offset in [0, 1, 2, 3, 5, 1] {
            store
                .record_event(None, &issued_event(start + day * offset))
                .unwrap();
        }
        let seqs = |store: &SledStore| -> Vec<u64> {
            store
                .events(0, 100)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        let none = std::collections::BTreeSet::new();
        // Nothing is older than day 0.
        assert_eq!(
            store.prune_events(0, 6, start, &none, 100).unwrap().removed,
            0
        );
        // The bound holds back what an endpoint has not got past (seq 1 and later).
        assert_eq!(
            store
                .prune_events(0, 1, start + day * 4, &none, 100)
                .unwrap()
                .removed,
            1
        );
        assert_eq!(seqs(&store), [1, 2, 3, 4, 5]);
        // The limit.
        assert_eq!(
            store
                .prune_events(0, 6, start + day * 4, &none, 1)
                .unwrap()
                .removed,
            1
        );
        assert_eq!(seqs(&store), [2, 3, 4, 5]);
        // An event to keep (a dead letter's) stays; the ones after it still go. Pruning
        // stops at the first event young enough to keep (seq 4, day 5), even though the one
        // after it is older.
        let dead_letter = std::collections::BTreeSet::from([2]);
        assert_eq!(
            store
                .prune_events(0, 6, start + day * 4, &dead_letter, 1)
                .unwrap()
                .removed,
            1
        );
        assert_eq!(seqs(&store), [2, 4, 5]);
        // A call that stops at its limit says where to go on; one that stops at a young
        // event or the bound does not.
        let stopped = store
            .prune_events(0, 6, start + day * 4, &dead_letter, 0)
            .unwrap();
        assert_eq!((stopped.removed, stopped.resume), (0, Some(2)));
        assert_eq!(
            store
                .prune_events(4, 6, start + day * 4, &none, 100)
                .unwrap(),
            Pruned {
                removed: 0,
                resume: None
            }
        );
        assert_eq!(
            store
                .prune_events(0, 6, start + day * 4, &dead_letter, 100)
                .unwrap()
                .removed,
            0
        );
        assert_eq!(
            store
                .prune_events(0, 6, start + day * 4, &none, 100)
                .unwrap()
                .removed,
            1
        );
        assert_eq!(seqs(&store), [4, 5]);
        // The sequence goes on.
        assert_eq!(store.outbox_next().unwrap(), 6);
        store.record_event(None, &issued_event(start)).unwrap();
        assert_eq!(seqs(&store), [4, 5, 6]);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&store), [4, 5, 6]);
    }
}
