//! Certificates rampart looks after once issued: delivery to their targets, renewal
//! windows, and the scheduler that acts on them.
//!
//! A certificate is *managed* when it was enrolled with `auto_renew` or with delivery
//! targets (admin API). The scheduler scans the inventory every `renewal.interval_minutes`
//! for valid certificates inside their renew-before window ([`window`]):
//! - managed with `auto_renew`: re-issued through the pipeline (policy evaluated again)
//!   with the same names and template — a fresh key when rampart generated the first one,
//!   the same CSR otherwise — then delivered, and linked old → new (`certificate_renewed`).
//!   A failed renewal is retried with exponential backoff and reported (`renewal_failed`).
//! - every other one (ACME, EST and SCEP clients renew themselves): `certificate_expiring`
//!   once per window. ACME clients also see the window through ARI (RFC 9773).
//!
//! Imports `pipeline`, `store`, `model`, `pkix`, `config`, and the sibling modules
//! `delivery` and `escrow`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::delivery::{self, DeliveryMaterial};
use super::escrow;
use crate::config::Config;
use crate::model::{
    CertificateRecord, CertificateStatus, EnrollmentRequest, Identifier, Identity, KeyType,
    Protocol,
};
use crate::pipeline::{events, Outcome, Pipeline, PipelineError};
use crate::store::{CertificateQuery, EventKind, RequestState, StoreError};

const NAMESPACE: &str = "renewal";

/// Where a managed certificate's key comes from at renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum KeySource {
    /// rampart generated the key and keeps it in escrow; renewals get a fresh one.
    Generated {
        /// Key type generated.
        key_type: KeyType,
    },
    /// The requester's CSR; renewals re-submit it (same key).
    Csr {
        /// The CSR, DER.
        #[serde(with = "crate::model::base64_bytes")]
        csr_der: Vec<u8>,
    },
}

/// What rampart needs to renew and deliver a certificate by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// The requester, as authenticated at enrollment (renewals act as it).
    pub identity: Identity,
    /// Template.
    pub template: String,
    /// Key source.
    pub key: KeySource,
    /// Subject CN.
    pub common_name: Option<String>,
    /// Names.
    pub identifiers: Vec<Identifier>,
    /// Lifetime asked for.
    pub validity_days: Option<u32>,
    /// Resource.
    pub resource: Option<String>,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// Re-issue inside the renew-before window.
    pub auto_renew: bool,
    /// `[delivery.targets.<name>]` the certificate is written to.
    pub delivery_targets: Vec<String>,
    /// The successor's serial, once renewed.
    #[serde(default)]
    pub renewed_by: Option<String>,
    /// A renewal request waiting for approval.
    #[serde(default)]
    pub pending_renewal: Option<Uuid>,
    /// Failed renewal attempts in this window.
    #[serde(default)]
    pub failed_attempts: u32,
    /// No renewal attempt before this time (backoff).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retry_after: Option<OffsetDateTime>,
}

fn managed_key(serial: &str) -> String {
    format!("managed/{serial}")
}
fn expiring_key(serial: &str) -> String {
    format!("expiring/{serial}")
}
fn pending_key_escrow(request_id: Uuid) -> String {
    format!("request-{request_id}")
}

/// The renew-before window of a certificate: it opens at the returned time. Templates set
/// `renew_before_days`; otherwise `renewal.default_renew_before_percent` of the lifetime.
pub fn window(config: &Config, record: &CertificateRecord) -> OffsetDateTime {
    let lifetime = record.not_after - record.not_before;
    let before = match config
        .templates
        .get(&record.template)
        .and_then(|t| t.renew_before_days)
    {
        Some(days) => Duration::days(days.into()).min(lifetime),
        None => lifetime * f64::from(config.renewal.default_renew_before_percent) / 100.0,
    };
    record.not_after - before
}

/// The ARI (RFC 9773) suggested window: the first third of the renew-before window, so
/// that clients renew early in it and have time left to retry.
pub fn suggested_window(
    config: &Config,
    record: &CertificateRecord,
) -> (OffsetDateTime, OffsetDateTime) {
    let start = window(config, record);
    (start, start + (record.not_after - start) / 3)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: "renewal",
        reason: e.to_string(),
    })
}

async fn load(pipeline: &Pipeline, serial: &str) -> Result<Option<Managed>, StoreError> {
    let key = managed_key(serial);
    match pipeline
        .with_store(move |store| store.protocol_get(NAMESPACE, &key))
        .await?
    {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Record that rampart manages `serial` (durable).
pub async fn register(
    pipeline: &Pipeline,
    serial: &str,
    managed: &Managed,
) -> Result<(), StoreError> {
    let key = managed_key(serial);
    let value = serde_json::to_vec(managed).expect("managed record serializes");
    pipeline
        .with_store(move |store| store.protocol_put(NAMESPACE, &key, &value, true))
        .await
}

/// The outcome of writing a certificate to one target.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryOutcome {
    /// Target name.
    pub target: String,
    /// Whether the files are in place (and the reload command succeeded).
    pub delivered: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

/// Write `record` (and `key`, when rampart holds it) to each target; a failure is logged,
/// counted and queued as a `delivery_failed` event (the target's previous files are
/// restored by `delivery`).
pub async fn deliver_all(
    pipeline: &Pipeline,
    record: &CertificateRecord,
    key: Option<&[u8]>,
    targets: &[String],
) -> Vec<DeliveryOutcome> {
    let material = DeliveryMaterial {
        certificate_der: record.der.clone(),
        chain_der: record.chain.clone(),
        private_key_pkcs8: key.map(|k| Zeroizing::new(k.to_vec())),
    };
    let mut outcomes = Vec::new();
    for name in targets {
        let config = pipeline.config();
        let Some(target) = config.delivery.targets.get(name) else {
            outcomes.push(DeliveryOutcome {
                target: name.clone(),
                delivered: false,
                error: Some(format!("no delivery target named `{name}` is configured")),
            });
            continue;
        };
        let result = delivery::deliver(name, target, &material).await;
        let metrics = pipeline.metrics();
        match result {
            Ok(_) => {
                metrics.lifecycle_operation("delivery", name, "delivered");
                tracing::info!(serial = %record.serial, target = %name, "certificate delivered");
                outcomes.push(DeliveryOutcome {
                    target: name.clone(),
                    delivered: true,
                    error: None,
                });
            }
            Err(error) => {
                metrics.lifecycle_operation("delivery", name, "failed");
                let reason = error.to_string();
                tracing::error!(serial = %record.serial, target = %name, %reason, "delivery failed");
                let event = events::failure(
                    EventKind::DeliveryFailed,
                    record,
                    &reason,
                    json!({ "target": name, "previous_files_in_place": error.previous_files_in_place() }),
                    pipeline.clock().now(),
                );
                if let Err(e) = pipeline
                    .with_store(move |store| store.record_event(None, &event))
                    .await
                {
                    tracing::error!(error = %e, "cannot queue the delivery_failed event");
                }
                outcomes.push(DeliveryOutcome {
                    target: name.clone(),
                    delivered: false,
                    error: Some(reason),
                });
            }
        }
    }
    outcomes
}

/// After an issuance rampart manages: escrow a generated key, register, deliver.
pub async fn adopt(
    pipeline: &Pipeline,
    record: &CertificateRecord,
    managed: &Managed,
    generated_key: Option<&[u8]>,
) -> Result<Vec<DeliveryOutcome>, String> {
    if let Some(key) = generated_key {
        escrow::deposit(pipeline, &record.serial, key)
            .await
            .map_err(|e| format!("key escrow: {e}"))?;
    }
    register(pipeline, &record.serial, managed)
        .await
        .map_err(|e| e.to_string())?;
    Ok(deliver_all(pipeline, record, generated_key, &managed.delivery_targets).await)
}

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// Certificates inside their window.
    pub due: usize,
    /// Renewed now (serial pairs old → new).
    pub renewed: Vec<(String, String)>,
    /// Renewals that failed now.
    pub failed: Vec<String>,
    /// Renewals waiting for approval.
    pub pending: Vec<String>,
    /// `certificate_expiring` events queued now.
    pub expiring_events: Vec<String>,
}

/// The renewal scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pipeline: Pipeline,
}

impl Scheduler {
    /// A scheduler over the pipeline's inventory and clock.
    pub fn new(pipeline: Pipeline) -> Self {
        Scheduler { pipeline }
    }

    /// Scan every `renewal.interval_minutes` until `shutdown`.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let interval = std::time::Duration::from_secs(
                u64::from(self.pipeline.config().renewal.interval_minutes) * 60,
            );
            loop {
                match self.scan().await {
                    Ok(report) if report.due > 0 => {
                        tracing::info!(
                            due = report.due,
                            renewed = report.renewed.len(),
                            failed = report.failed.len(),
                            expiring = report.expiring_events.len(),
                            "renewal scan"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "renewal scan failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })
    }

    /// One pass over the inventory at the clock's now.
    pub async fn scan(&self) -> Result<ScanReport, StoreError> {
        let config = self.pipeline.config();
        let now = self.pipeline.clock().now();
        // Nothing can be due earlier than the longest renew-before any template allows.
        let horizon = config
            .templates
            .values()
            .map(|t| {
                let lifetime = Duration::days(t.max_validity_days.into());
                match t.renew_before_days {
                    Some(days) => Duration::days(days.into()),
                    None => {
                        lifetime * f64::from(config.renewal.default_renew_before_percent) / 100.0
                    }
                }
            })
            .max()
            .unwrap_or(Duration::days(30));
        let mut report = ScanReport::default();
        let mut after = None;
        loop {
            let query = CertificateQuery {
                status: Some(CertificateStatus::Valid),
                expiring_within: Some(horizon),
                after: after.clone(),
                limit: 256,
                ..CertificateQuery::default()
            };
            let page = self
                .pipeline
                .with_store(move |store| store.list_certificates(&query, now))
                .await?;
            for record in &page.items {
                // A successor issued by this very scan waits for the next one.
                let issued_now = report.renewed.iter().any(|(_, new)| *new == record.serial);
                if !issued_now && now >= window(&config, record) {
                    report.due += 1;
                    self.due(record, now, &mut report).await?;
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(report)
    }

    async fn due(
        &self,
        record: &CertificateRecord,
        now: OffsetDateTime,
        report: &mut ScanReport,
    ) -> Result<(), StoreError> {
        match load(&self.pipeline, &record.serial).await? {
            Some(managed) if managed.auto_renew => {
                if managed.renewed_by.is_some()
                    || managed.retry_after.is_some_and(|at| now < at)
                    || managed.failed_attempts >= self.pipeline.config().renewal.max_attempts
                {
                    return Ok(());
                }
                self.renew(record, managed, now, report).await
            }
            _ => self.announce(record, now, report).await,
        }
    }

    /// `certificate_expiring`, once per certificate (its window opens once).
    async fn announce(
        &self,
        record: &CertificateRecord,
        now: OffsetDateTime,
        report: &mut ScanReport,
    ) -> Result<(), StoreError> {
        let marker = expiring_key(&record.serial);
        let seen = marker.clone();
        if self
            .pipeline
            .with_store(move |store| store.protocol_get(NAMESPACE, &seen))
            .await?
            .is_some()
        {
            return Ok(());
        }
        // Event first, then the marker: a crash in between repeats the event rather than
        // losing it (at least once).
        let event = events::expiring(record, window(&self.pipeline.config(), record), now);
        self.pipeline
            .with_store(move |store| {
                store.record_event(None, &event)?;
                store.protocol_put(NAMESPACE, &marker, b"", true)
            })
            .await?;
        self.pipeline.metrics().lifecycle_operation(
            "renewal",
            &record.template,
            "expiring_announced",
        );
        report.expiring_events.push(record.serial.clone());
        Ok(())
    }

    async fn renew(
        &self,
        old: &CertificateRecord,
        mut managed: Managed,
        now: OffsetDateTime,
        report: &mut ScanReport,
    ) -> Result<(), StoreError> {
        let outcome = match managed.pending_renewal {
            Some(request_id) => self.resolve_pending(request_id).await?,
            None => self.submit(old, &managed).await,
        };
        let metrics = self.pipeline.metrics();
        match outcome {
            Attempt::Issued { record: new, key } => {
                let mut successor = managed.clone();
                successor.renewed_by = None;
                successor.pending_renewal = None;
                successor.failed_attempts = 0;
                successor.retry_after = None;
                let deliveries = adopt(
                    &self.pipeline,
                    &new,
                    &successor,
                    key.as_deref().map(|k| &k[..]),
                )
                .await;
                if let Err(reason) = deliveries {
                    tracing::error!(serial = %new.serial, %reason, "renewed certificate not adopted");
                }
                managed.renewed_by = Some(new.serial.clone());
                managed.pending_renewal = None;
                register(&self.pipeline, &old.serial, &managed).await?;
                metrics.lifecycle_operation("renewal", &old.template, "renewed");
                tracing::info!(old = %old.serial, new = %new.serial, "certificate renewed");
                report
                    .renewed
                    .push((old.serial.clone(), new.serial.clone()));
            }
            Attempt::Pending(request_id) => {
                managed.pending_renewal = Some(request_id);
                register(&self.pipeline, &old.serial, &managed).await?;
                report.pending.push(old.serial.clone());
            }
            Attempt::Failed(reason) => {
                managed.pending_renewal = None;
                managed.failed_attempts += 1;
                let settings = &self.pipeline.config().renewal;
                let delay = settings
                    .initial_backoff_seconds
                    .saturating_mul(1u64 << (managed.failed_attempts - 1).min(20));
                managed.retry_after =
                    Some(now + Duration::seconds(delay.min(i64::MAX as u64) as i64));
                let final_attempt = managed.failed_attempts >= settings.max_attempts;
                register(&self.pipeline, &old.serial, &managed).await?;
                let event = events::failure(
                    EventKind::RenewalFailed,
                    old,
                    &reason,
                    json!({ "attempt": managed.failed_attempts,
                        "next_attempt": if final_attempt { None } else { managed.retry_after.map(|t| t.unix_timestamp()) } }),
                    now,
                );
                self.pipeline
                    .with_store(move |store| store.record_event(None, &event))
                    .await?;
                metrics.lifecycle_operation("renewal", &old.template, "failed");
                tracing::warn!(serial = %old.serial, attempt = managed.failed_attempts, %reason, "renewal failed");
                report.failed.push(old.serial.clone());
            }
        }
        Ok(())
    }

    async fn submit(&self, old: &CertificateRecord, managed: &Managed) -> Attempt {
        let (csr_der, key) = match &managed.key {
            KeySource::Csr { csr_der } => (csr_der.clone(), None),
            KeySource::Generated { key_type } => {
                match crate::pipeline::keygen::generate(
                    *key_type,
                    managed.common_name.clone(),
                    managed.identifiers.clone(),
                )
                .await
                {
                    Ok(generated) => (generated.csr_der, Some(generated.pkcs8)),
                    Err(reason) => return Attempt::Failed(reason),
                }
            }
        };
        let request = EnrollmentRequest {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Api,
            identity: managed.identity.clone(),
            csr_der,
            template: managed.template.clone(),
            requested_identifiers: None,
            validity_days: managed.validity_days,
            resource: managed.resource.clone(),
            metadata: managed.metadata.clone(),
            renews: Some(old.serial.clone()),
            client: None,
        };
        let request_id = request.request_id;
        match self.pipeline.submit(request).await {
            Ok(Outcome::Issued(record)) => Attempt::Issued { record, key },
            Ok(Outcome::Pending { .. }) => {
                // Keep a generated key until a person decides.
                if let Some(key) = &key {
                    if let Err(e) =
                        escrow::deposit(&self.pipeline, &pending_key_escrow(request_id), key).await
                    {
                        return Attempt::Failed(format!("key escrow: {e}"));
                    }
                }
                Attempt::Pending(request_id)
            }
            Ok(Outcome::Denied { denial, .. }) => Attempt::Failed(format!(
                "denied by the {} layer ({}): {}",
                denial.layer.as_str(),
                denial.rule,
                denial.reason
            )),
            Err(PipelineError::Ca(e)) => Attempt::Failed(format!("CA: {e}")),
            Err(PipelineError::Store(e)) => Attempt::Failed(format!("store: {e}")),
            Err(e @ PipelineError::Aborted(_)) => Attempt::Failed(e.to_string()),
        }
    }

    async fn resolve_pending(&self, request_id: Uuid) -> Result<Attempt, StoreError> {
        let request = self
            .pipeline
            .with_store(move |store| store.request(request_id))
            .await?;
        Ok(match request.map(|r| r.state) {
            Some(RequestState::Issued { serial }) => {
                let found = self
                    .pipeline
                    .with_store(move |store| store.certificate(&serial))
                    .await?;
                match found {
                    Some(record) => {
                        let key = escrow::withdraw(&self.pipeline, &pending_key_escrow(request_id))
                            .await
                            .ok()
                            .flatten()
                            .map(Zeroizing::new);
                        Attempt::Issued {
                            record: Box::new(record),
                            key,
                        }
                    }
                    None => Attempt::Failed("the approved renewal's certificate is missing".into()),
                }
            }
            Some(RequestState::Pending { .. } | RequestState::Issuing { .. }) => {
                Attempt::Pending(request_id)
            }
            Some(RequestState::Denied { reason } | RequestState::Failed { reason }) => {
                Attempt::Failed(reason)
            }
            None => Attempt::Failed("the renewal request is gone".into()),
        })
    }
}

enum Attempt {
    Issued {
        record: Box<CertificateRecord>,
        key: Option<Zeroizing<Vec<u8>>>,
    },
    Pending(Uuid),
    Failed(String),
}

/// A managed certificate as `rampart renewal list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ManagedView {
    /// Serial.
    pub serial: String,
    /// The management record.
    #[serde(flatten)]
    pub managed: Managed,
    /// When its renew-before window opens (absent when the certificate is gone).
    #[serde(with = "time::serde::rfc3339::option")]
    pub window_opens: Option<OffsetDateTime>,
    /// Not-after.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

/// Every managed certificate, in serial order.
pub async fn managed(pipeline: &Pipeline) -> Result<Vec<ManagedView>, StoreError> {
    let entries = pipeline
        .with_store(|store| store.protocol_scan(NAMESPACE, "managed/"))
        .await?;
    let mut out = Vec::new();
    for (key, value) in entries {
        let serial = key.trim_start_matches("managed/").to_string();
        let managed: Managed = decode(&value)?;
        let owned = serial.clone();
        let record = pipeline
            .with_store(move |store| store.certificate(&owned))
            .await?;
        out.push(ManagedView {
            window_opens: record.as_ref().map(|r| window(&pipeline.config(), r)),
            not_after: record.as_ref().map(|r| r.not_after),
            serial,
            managed,
        });
    }
    Ok(out)
}

/// Deliver an issued certificate (with its escrowed key, if rampart holds one) to `targets`
/// again; `None` when there is no such certificate.
pub async fn redeliver(
    pipeline: &Pipeline,
    serial: &str,
    targets: &[String],
) -> Result<Option<Vec<DeliveryOutcome>>, String> {
    let owned = serial.to_string();
    let Some(record) = pipeline
        .with_store(move |store| store.certificate(&owned))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let key = escrow::withdraw(pipeline, serial)
        .await
        .map_err(|e| format!("key escrow: {e}"))?
        .map(Zeroizing::new);
    Ok(Some(
        deliver_all(pipeline, &record, key.as_deref().map(|k| &k[..]), targets).await,
    ))
}
