//! Protocol state that is done goes after `server.retain_protocol_state_days`: expired
//! ACME orders and their authorizations, decided SCEP transactions and EST re-send
//! records. Clients never come back for them, and a busy RA would otherwise keep one or
//! more per certificate for ever. Accounts, certificates, requests and the audit stay.
//!
//! Imports `pipeline`, `store`, `model` and the gateways' namespaces.

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
            match prune(&pipeline, acme.as_deref(), Duration::days(days.into())).await {
                Ok(removed) if removed != Removed::default() => tracing::info!(
                    acme_orders = removed.acme_orders,
                    acme_authorizations = removed.acme_authorizations,
                    scep_transactions = removed.scep_transactions,
                    est_resends = removed.est_resends,
                    "protocol state past its retention removed"
                ),
                Ok(_) => {}
                Err(error) => {
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
    let before = pipeline.clock().now() - retain;
    let store = pipeline.store().clone();
    let (scep, est) = tokio::task::spawn_blocking(move || {
        let scep = prune_decided(
            store.as_ref(),
            super::scep::TRANSACTIONS,
            before,
            super::scep::transaction_request,
        )?;
        let est = prune_decided(
            store.as_ref(),
            super::est::RESENT,
            before,
            super::est::resend_request,
        )?;
        Ok::<_, StoreError>((scep, est))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    removed.scep_transactions = scep;
    removed.est_resends = est;
    Ok(removed)
}

/// Remove the entries of `namespace` whose request (`request_of` reads its id from the
/// entry) was made before `before` and is decided, or is gone. An entry whose request
/// still waits (for an approval, or its CA) stays, and so does one that does not decode.
fn prune_decided(
    store: &dyn Store,
    namespace: &str,
    before: OffsetDateTime,
    request_of: fn(&[u8]) -> Option<Uuid>,
) -> Result<usize, StoreError> {
    let (mut removed, mut after) = (0, None::<String>);
    loop {
        let page = store.protocol_scan_after(namespace, "", after.as_deref(), BATCH)?;
        let Some((last, _)) = page.last() else {
            return Ok(removed);
        };
        after = Some(last.clone());
        for (key, value) in page {
            let Some(request_id) = request_of(&value) else {
                continue;
            };
            let done = match store.request(request_id)? {
                None => true,
                Some(request) => {
                    request.created_at < before
                        && !matches!(
                            request.state,
                            RequestState::Pending { .. } | RequestState::Issuing { .. }
                        )
                }
            };
            if done {
                store.protocol_delete(namespace, &key, false)?;
                removed += 1;
            }
        }
    }
}
