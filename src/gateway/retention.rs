//! Protocol state that is done goes after `server.retain_protocol_state_days`: expired
//! ACME orders and their authorizations, decided SCEP transactions and EST re-send
//! records. Clients never come back for them, and a busy RA would otherwise keep one or
//! more per certificate for ever. Accounts, certificates, requests and the audit stay.
//!
//! Imports `pipeline`, `store`, `model`, `metrics` and the gateways' namespaces.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tokio::sync::watch;
use uuid::Uuid;

use crate::pipeline::Pipeline;
use crate::store::{RequestState, Store, StoreError};

/// How often done state is looked for.
const INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Entries read at a time.
const BATCH: usize = 256;

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Expired ACME orders.
    pub acme_orders: usize,
    /// ACME authorizations.
    pub acme_authorizations: usize,
    /// Decided SCEP transactions.
    pub scep_transactions: usize,
    /// Decided EST re-send records.
    pub est_resends: usize,
}

/// [`prune`] at start and every [`INTERVAL`] while `server.retain_protocol_state_days`
/// is above 0 (read at each pass, so a reload applies), until `shutdown` turns true.
pub async fn run_hourly(
    pipeline: Pipeline,
    acme: Option<Arc<rampart_acme::AcmeServer>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let days = pipeline.config().server.retain_protocol_state_days;
        if days > 0 {
            let metrics = pipeline.metrics();
            match prune(&pipeline, acme.as_deref(), Duration::days(days.into())).await {
                Ok(removed) => {
                    for (kind, count) in [
                        ("acme_order", removed.acme_orders),
                        ("acme_authorization", removed.acme_authorizations),
                        ("scep_transaction", removed.scep_transactions),
                        ("est_resend", removed.est_resends),
                    ] {
                        metrics.lifecycle_operations("retention", kind, "removed", count as u64);
                    }
                    if removed != Removed::default() {
                        tracing::info!(
                            acme_orders = removed.acme_orders,
                            acme_authorizations = removed.acme_authorizations,
                            scep_transactions = removed.scep_transactions,
                            est_resends = removed.est_resends,
                            "protocol state past its retention removed"
                        )
                    }
                }
                Err(error) => {
                    metrics.lifecycle_operation("retention", "pass", "failed");
                    tracing::error!(%error, "removing protocol state past its retention failed")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass with `retain`.
pub async fn prune(
    pipeline: &Pipeline,
    acme: Option<&rampart_acme::AcmeServer>,
    retain: Duration,
) -> Result<Removed, String> {
    let mut removed = Removed::default();
    if let Some(acme) = acme {
        let pruned = acme
            .prune_expired(retain)
            .await
            .map_err(|problem| problem.detail)?;
        removed.acme_orders = pruned.orders;
        removed.acme_authorizations = pruned.authzs;
    }
    let now = pipeline.clock().now();
    let store = pipeline.store().clone();
    let [scep, est] =
        tokio::task::spawn_blocking(move || prune_decided(store.as_ref(), now - retain, now))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    removed.scep_transactions = scep;
    removed.est_resends = est;
    Ok(removed)
}

/// `<time>/<namespace>/<key>` (time: unix seconds, 16 hex digits, so keys sort by it):
/// the SCEP transactions and EST re-send records to look at once their request, made at
/// that time, is past the retention. Filed by [`file`] when the entry is written.
const DUE: &str = "retention.due";
/// Present once [`DUE`] covers the entries written before it.
const DUE_INDEXED: &str = "retention.indexed";

/// How to read the request id from an entry.
type RequestOf = fn(&[u8]) -> Option<Uuid>;

/// The namespaces filed in [`DUE`], with how to read the request id from their entries.
const FILED: [(&str, RequestOf); 2] = [
    (super::scep::TRANSACTIONS, super::scep::transaction_request),
    (super::est::RESENT, super::est::resend_request),
];

fn due_key(at: OffsetDateTime, namespace: &str, key: &str) -> String {
    format!("{:016x}/{namespace}/{key}", at.unix_timestamp().max(0))
}

/// File entry `key` of `namespace` (one of [`FILED`]), whose request is made `at`, for
/// [`prune`]. Written before the entry itself: an index entry whose entry never came is
/// dropped when its time comes.
pub(crate) fn file(
    store: &dyn Store,
    namespace: &str,
    key: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    store.protocol_put(DUE, &due_key(at, namespace, key), &[], false)
}

/// Remove the entries of [`FILED`] whose request was made before `before` and is decided,
/// or is gone; an entry whose request still waits (for an approval, or its CA) is filed
/// again under `now`. Walks [`DUE`] up to `before` only; the first pass over entries
/// written before it reads them all once to file them. Returns how many went, per
/// namespace of [`FILED`].
fn prune_decided(
    store: &dyn Store,
    before: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<[usize; 2], StoreError> {
    if store.protocol_get(DUE_INDEXED, "")?.is_none() {
        file_unindexed(store, now)?;
    }
    let mut removed = [0; 2];
    let mut after = None::<String>;
    loop {
        let page = store.protocol_scan_after(DUE, "", after.as_deref(), BATCH)?;
        if page.is_empty() {
            return Ok(removed);
        }
        for (due, _) in page {
            after = Some(due.clone());
            let Some((at, filed, key)) = parse_due(&due) else {
                continue;
            };
            if at > before.unix_timestamp() {
                return Ok(removed);
            }
            store.protocol_delete(DUE, &due, false)?;
            let (namespace, request_of) = FILED[filed];
            let request = match store.protocol_get(namespace, key)? {
                // One that does not decode is left alone, and no longer looked at.
                Some(value) => match request_of(&value) {
                    Some(request_id) => store.request(request_id)?,
                    None => continue,
                },
                // Gone already.
                None => continue,
            };
            match request {
                Some(request) if request.created_at > before => {
                    file(store, namespace, key, request.created_at)?
                }
                Some(request)
                    if matches!(
                        request.state,
                        RequestState::Pending { .. } | RequestState::Issuing { .. }
                    ) =>
                {
                    file(store, namespace, key, now)?
                }
                // Decided, or its request is gone.
                _ => {
                    store.protocol_delete(namespace, key, false)?;
                    removed[filed] += 1;
                }
            }
        }
    }
}

/// The time, the index in [`FILED`] and the entry's key of a [`DUE`] key.
fn parse_due(due: &str) -> Option<(i64, usize, &str)> {
    let mut parts = due.splitn(3, '/');
    let at = i64::from_str_radix(parts.next()?, 16).ok()?;
    let (namespace, key) = (parts.next()?, parts.next()?);
    let filed = FILED.iter().position(|(n, _)| *n == namespace)?;
    Some((at, filed, key))
}

/// File every entry of [`FILED`] written before [`DUE`] existed (under its request's
/// time, or `now` when the request is gone), then mark it done.
fn file_unindexed(store: &dyn Store, now: OffsetDateTime) -> Result<(), StoreError> {
    for (namespace, request_of) in FILED {
        let mut after = None::<String>;
        loop {
            let page = store.protocol_scan_after(namespace, "", after.as_deref(), BATCH)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (key, value) in page {
                let Some(request_id) = request_of(&value) else {
                    continue;
                };
                let at = store.request(request_id)?.map_or(now, |r| r.created_at);
                file(store, namespace, &key, at)?;
            }
        }
    }
    store.protocol_put(DUE_INDEXED, "", &[], false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::store::sled_store::SledStore;
    use crate::store::{AuditAction, AuditEntry, EventKind, NewEvent, RequestRecord};

    fn request(state: RequestState, created_at: OffsetDateTime) -> RequestRecord {
        RequestRecord {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Scep,
            identity: "device".into(),
            template: "server".into(),
            identifiers: vec![],
            state,
            created_at,
            updated_at: created_at,
            pending: None,
            client: None,
        }
    }

    fn audit(time: OffsetDateTime) -> AuditEntry {
        AuditEntry {
            time,
            request_id: None,
            actor: "test".into(),
            action: AuditAction::Decision,
            outcome: "denied".into(),
            layer: None,
            rule: None,
            reason: String::new(),
            subject: None,
            details: serde_json::json!({}),
        }
    }

    fn entry(request_id: Uuid) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "request_id": request_id,
            "csr_sha256": "",
        }))
        .unwrap()
    }

    #[test]
    fn entries_from_before_the_index_are_filed_once_and_only_decided_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let long_ago = now - Duration::days(60);
        let denied = request(
            RequestState::Denied {
                reason: "no".into(),
            },
            long_ago,
        );
        let event = NewEvent {
            kind: EventKind::RequestDenied,
            time: long_ago,
            data: serde_json::json!({}),
        };
        store
            .record_denial(&denied, &audit(long_ago), &event)
            .unwrap();
        let recent = request(
            RequestState::Denied {
                reason: "no".into(),
            },
            now,
        );
        store.record_denial(&recent, &audit(now), &event).unwrap();
        let signing = request(
            RequestState::Issuing {
                serial: "01".into(),
            },
            long_ago,
        );
        assert!(store.begin_issuance(&signing, &audit(long_ago)).unwrap());
        // Written before the index existed: a transaction and a re-send record of the old
        // denied request, one of a recent one, one of a request still being signed, one
        // of a request that is gone.
        let scep = super::super::scep::TRANSACTIONS;
        let est = super::super::est::RESENT;
        for (namespace, key, request_id) in [
            (scep, "old", denied.request_id),
            (est, "old", denied.request_id),
            (scep, "recent", recent.request_id),
            (scep, "signing", signing.request_id),
            (scep, "gone", Uuid::now_v7()),
        ] {
            store
                .protocol_put(namespace, key, &entry(request_id), false)
                .unwrap();
        }
        let keys = |namespace| {
            let entries = store.protocol_scan(namespace, "").unwrap();
            entries.into_iter().map(|(key, _)| key).collect::<Vec<_>>()
        };
        let before = now - Duration::days(30);
        // The entry whose request is gone may be an issuance under way whose request is not
        // written yet: it is looked at again once `now` is past the retention.
        assert_eq!(prune_decided(&store, before, now).unwrap(), [1, 1]);
        assert_eq!(keys(scep), ["gone", "recent", "signing"]);
        assert!(keys(est).is_empty());

        // Later passes walk the index only: an entry that escaped it is not looked at, and
        // the one still signing is filed again.
        store
            .protocol_put(scep, "unfiled", &entry(denied.request_id), false)
            .unwrap();
        assert_eq!(prune_decided(&store, before, now).unwrap(), [0, 0]);
        let later = now + Duration::days(31);
        assert_eq!(
            prune_decided(&store, later - Duration::days(30), later).unwrap(),
            [2, 0],
            "the recent one, now old, and the one whose request is gone"
        );
        assert_eq!(keys(scep), ["signing", "unfiled"]);
    }
}
