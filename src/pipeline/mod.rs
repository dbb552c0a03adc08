//! The one enrollment pipeline every front end calls: read the CSR → policy decision →
//! reserve the serial → CA → record, audit and queue the event. Denials are recorded
//! and audited with their reason; nothing is half-written: a request is either denied,
//! issued, or (if the CA fails or the process dies while signing) marked failed.
//!
//! Imports `policy`, `ca`, `store`, `model`, `pkix`, `config`, `clock`, `metrics`.

pub mod dns;
pub mod events;
pub mod keygen;
mod rate_window;
mod refusals;
pub mod resources;
pub mod submission;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use time::Duration;
use uuid::Uuid;

use crate::ca::{CaAdapter, CaError, IssuanceOrder, Serial};
use crate::clock::Clock;
use crate::config::{Config, ExtendedKeyUsage};
use crate::metrics::Metrics;
use crate::model::{
    CertificateRecord, EnrollmentRequest, Identifier, Identity, KeyType, Protocol, StoredStatus,
};
use crate::pkix::csr::{CsrError, VerifiedCsr};
use crate::pkix::goodkey;
use crate::pkix::sha256_hex;
use crate::policy::{self, Approval, Decision, Denial, Evaluation, Layer, PolicyRequest, Step};
use crate::store::{
    AuditAction, AuditEntry, EventKind, PendingEnrollment, RequestRecord, RequestState, Store,
    StoreError,
};

/// Certificates start this long before the moment of issuance, to absorb clock skew.
const BACKDATE: Duration = Duration::minutes(5);

/// A pipeline failure that is not a decision: the caller answers with a server error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA failed after approval; the request is recorded as failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The submission's task ended without an outcome (it panicked, or the daemon is
    /// stopping): the request's state in the store tells what became of it.
    #[error("the submission ended without an outcome: {0}")]
    Aborted(String),
}

/// Why an approval action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such request.
    #[error("no such request")]
    NotFound,
    /// The request is not waiting for approval.
    #[error("the request is not waiting for approval")]
    NotPending,
    /// The approver holds none of the template's approver roles (or, when it names none,
    /// no managing role).
    #[error("approving needs one of the template's approver roles (or a managing role when it names none)")]
    NotAnApprover,
    /// The request waited longer than `approvals.pending_expiry_hours` and was denied.
    #[error("the request expired before anyone decided on it")]
    Expired,
    /// Four eyes: nobody approves their own request.
    #[error("requesters cannot decide on their own requests")]
    OwnRequest,
    /// The stored request can no longer be issued.
    #[error("the request cannot be issued: {0}")]
    Unusable(String),
    /// Issuance failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// What came of a submission.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Issued and recorded.
    Issued(Box<CertificateRecord>),
    /// Waiting for a person's approval (recorded and audited).
    Pending {
        /// The request's id (poll or approve it by this).
        request_id: Uuid,
        /// Why.
        reason: String,
    },
    /// Refused, with the deciding layer, rule and reason (recorded and audited).
    Denied {
        /// The request's id.
        request_id: Uuid,
        /// Why.
        denial: Denial,
    },
}

/// A decision on a request, before anything is recorded.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The verified CSR, when it could be read.
    pub csr: Option<VerifiedCsr>,
    /// The names decided on.
    pub identifiers: Vec<Identifier>,
    /// The decision and its trace.
    pub evaluation: Evaluation,
}

/// What the CA signs for, once approved.
struct Approved<'a> {
    request_id: Uuid,
    protocol: Protocol,
    identity: &'a Identity,
    template: &'a str,
    approval: Approval,
    public_key: Vec<u8>,
    /// The request as sent (empty for rampart's own certificates).
    csr_der: Vec<u8>,
    key_type: KeyType,
    extended_key_usages: Vec<ExtendedKeyUsage>,
    key_encipherment: bool,
    resource: Option<String>,
    metadata: std::collections::BTreeMap<String, String>,
    renews: Option<String>,
    trace: Vec<Step>,
    /// The address the request came from, if it came over the network.
    client: Option<IpAddr>,
    /// Its place in a rate-limited template's count, taken when policy decided.
    reservation: Option<rate_window::Reservation>,
}

/// Whom a refusal before any request is recorded under.
#[derive(Debug, Clone)]
pub struct Claimant {
    /// The front door.
    pub protocol: Protocol,
    /// The identity claimed (refused credentials) or established (pre-checks).
    pub name: String,
    /// The client's address (the TCP peer, or the client a trusted proxy names).
    pub client: Option<IpAddr>,
}

/// The enrollment pipeline and its collaborators.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Swapped whole by [`Pipeline::reload_policy`]; readers take a snapshot per use.
    config: Arc<arc_swap::ArcSwap<Config>>,
    store: Arc<dyn Store>,
    ca: Arc<dyn CaAdapter>,
    /// `[ca_adapters]` by name: the CAs templates may name besides the built-in one.
    other_cas: Arc<BTreeMap<String, Arc<dyn CaAdapter>>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Issuances per (template, identity) over the last day, for rate-limited templates.
    rate_windows: Arc<rate_window::RateWindows>,
    /// Resource ownership look-ups (policy layer 3), cached.
    resources: Arc<resources::Directory>,
    /// The resolver of layer 2's DNS checks.
    dns: Arc<dns::PolicyDns>,
    /// How many refusals before a request this minute's audit holds.
    refusals: Arc<std::sync::Mutex<refusals::RefusalWindow>>,
}

impl Pipeline {
    /// Assemble a pipeline.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        ca: Arc<dyn CaAdapter>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Pipeline {
            config: Arc::new(arc_swap::ArcSwap::new(config)),
            store,
            ca,
            other_cas: Arc::default(),
            clock,
            metrics,
            rate_windows: Arc::default(),
            resources: Arc::default(),
            dns: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// The configuration it decides on.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Replace the policy — `[templates]`, `[roles]`, `[approvals]`, `[policy]` and
    /// `[resources]` — with
    /// those of `new`, which must validate together with the running configuration;
    /// audited. Other sections are fixed at start: the ones `new` changes are returned
    /// (they take effect after a restart). On error nothing changes.
    pub fn reload_policy(&self, new: Config, actor: &str) -> Result<Vec<String>, String> {
        let current = self.config();
        let mut merged = Config::clone(&current);
        merged.templates = new.templates.clone();
        merged.roles = new.roles.clone();
        merged.approvals = new.approvals.clone();
        merged.policy = new.policy.clone();
        merged.resources = new.resources.clone();
        merged.validate().map_err(|e| e.to_string())?;
        let sections = |config: &Config| match serde_json::to_value(config) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let (before, after, wanted) = (sections(&current), sections(&merged), sections(&new));
        let changed: Vec<String> = after
            .iter()
            .filter(|(key, value)| before.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .collect();
        let needs_restart: Vec<String> = wanted
            .iter()
            .filter(|(key, value)| after.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .collect();
        let audit = AuditEntry {
            time: self.clock.now(),
            request_id: None,
            actor: actor.to_string(),
            action: AuditAction::PolicyReloaded,
            outcome: "ok".into(),
            layer: None,
            rule: None,
            reason: if changed.is_empty() {
                "policy reloaded, nothing changed".into()
            } else {
                format!("policy reloaded: {} changed", changed.join(", "))
            },
            subject: None,
            details: json!({ "changed": changed, "needs_restart": needs_restart }),
        };
        self.store.append_audit(&audit).map_err(|e| e.to_string())?;
        self.config.store(Arc::new(merged));
        self.resources.clear();
        self.dns.clear();
        tracing::info!(changed = ?changed, needs_restart = ?needs_restart, by = %actor, "policy reloaded");
        Ok(needs_restart)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Audit credentials a protocol refused at its door, before any request exists (the
    /// identity layer): whom they claimed and from where, why they were refused, and what
    /// the protocol knows of the attempt (`details`, an object; never the secret itself).
    /// The refusal stands whether or not the record is written.
    pub async fn audit_refused_credentials(
        &self,
        claimant: Claimant,
        reason: String,
        details: serde_json::Value,
    ) {
        let (claimed, reason) = (refusals::clip(claimant.name), refusals::clip(reason));
        tracing::info!(protocol = claimant.protocol.as_str(), claimed = %claimed, client = ?claimant.client, reason = %reason, "credentials refused");
        let refusal = self.refusal(AuditAction::CredentialsRefused, claimed, Layer::Identity);
        self.audit_refusal(claimant.protocol, claimant.client, reason, details, refusal)
            .await;
    }

    /// Audit a policy check that refused before any request exists (ACME newOrder and
    /// newAuthz pre-checks, CAA): a `decision`, `denied` by `layer` (and `rule`), without
    /// a request id.
    pub async fn audit_precheck_denial(
        &self,
        claimant: Claimant,
        layer: Layer,
        rule: Option<&str>,
        reason: String,
        details: serde_json::Value,
    ) {
        let (identity, reason) = (refusals::clip(claimant.name), refusals::clip(reason));
        tracing::info!(protocol = claimant.protocol.as_str(), identity = %identity, client = ?claimant.client, layer = layer.as_str(), reason = %reason, "refused before a request");
        let mut refusal = self.refusal(AuditAction::Decision, identity, layer);
        refusal.rule = rule.map(str::to_string);
        self.audit_refusal(claimant.protocol, claimant.client, reason, details, refusal)
            .await;
    }

    /// The audit entry of a refusal before any request, but for its reason and details.
    fn refusal(&self, action: AuditAction, actor: String, layer: Layer) -> AuditEntry {
        AuditEntry {
            time: self.clock.now(),
            request_id: None,
            actor,
            action,
            outcome: "denied".into(),
            layer: Some(layer.as_str().into()),
            rule: None,
            reason: String::new(),
            subject: None,
            details: serde_json::Value::Null,
        }
    }

    /// Record `refusal` with `reason` and `details` (an object; the protocol and the client
    /// address are added) within the bounds of [`refusals`]; every one counts in the
    /// decision metrics. A store failure is logged.
    async fn audit_refusal(
        &self,
        protocol: Protocol,
        client: Option<IpAddr>,
        reason: String,
        details: serde_json::Value,
        mut refusal: AuditEntry,
    ) {
        self.metrics.decision(
            protocol.as_str(),
            "denied",
            refusal.layer.as_deref().unwrap_or_default(),
        );
        let minute = refusal.time.unix_timestamp().div_euclid(60);
        let admitted = self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(minute, &refusal.actor, client);
        let Some(unrecorded) = admitted else {
            return;
        };
        let mut details = match refusals::clip_details(details) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        details.insert("protocol".into(), protocol.as_str().into());
        if !unrecorded.is_empty() {
            details.insert("unrecorded_before".into(), unrecorded.total.into());
            details.insert("unrecorded_by_actor".into(), json!(unrecorded.by_actor));
            if unrecorded.other_actors > 0 {
                details.insert(
                    "unrecorded_other_actors".into(),
                    unrecorded.other_actors.into(),
                );
            }
        }
        refusal.reason = reason;
        refusal.details = with_client(serde_json::Value::Object(details), client);
        if let Err(e) = self
            .with_store(move |store| store.append_audit(&refusal))
            .await
        {
            tracing::warn!(error = %e, "the audit record of a refusal was not written");
        }
    }

    /// Add the `[ca_adapters]` CAs, by name.
    pub fn with_ca_adapters(mut self, adapters: BTreeMap<String, Arc<dyn CaAdapter>>) -> Self {
        self.other_cas = Arc::new(adapters);
        self
    }

    /// The built-in CA: it signs rampart's own certificates, CRLs and OCSP answers, and
    /// every template that names no other.
    pub fn ca(&self) -> &Arc<dyn CaAdapter> {
        &self.ca
    }

    /// The CA that signs for `template` (its `ca`, else the built-in one).
    pub fn ca_for_template(&self, template: &str) -> Arc<dyn CaAdapter> {
        self.config()
            .templates
            .get(template)
            .and_then(|t| t.ca.as_deref())
            .and_then(|name| self.other_cas.get(name))
            .unwrap_or(&self.ca)
            .clone()
    }

    /// Whether `[ca_adapters]` added any CA besides the built-in one.
    pub fn has_other_cas(&self) -> bool {
        !self.other_cas.is_empty()
    }

    /// The CA whose [`CaAdapter::id`] is `id` (a certificate record's `issuer`).
    pub fn ca_by_id(&self, id: &str) -> Option<Arc<dyn CaAdapter>> {
        if self.ca.id() == id {
            return Some(self.ca.clone());
        }
        self.other_cas.values().find(|ca| ca.id() == id).cloned()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Run a blocking store operation off the async workers.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Whether `template` has a `rate_limit_per_day` (its issuances are counted).
    fn rate_limited(&self, template: &str) -> bool {
        self.config()
            .templates
            .get(template)
            .is_some_and(|t| t.rate_limit_per_day.is_some())
    }

    /// Submit an enrollment request: decide, and issue when approved.
    pub async fn submit(&self, request: EnrollmentRequest) -> Result<Outcome, PipelineError> {
        let parsed = VerifiedCsr::parse(&request.csr_der);
        self.submit_csr(request, parsed, None).await
    }

    /// [`Pipeline::submit`] for a front door that has parsed and verified the request's CSR
    /// already (to read its challenge password, say): `csr` is `request.csr_der`'s, and is
    /// not parsed and verified a second time.
    pub async fn submit_verified(
        &self,
        request: EnrollmentRequest,
        csr: VerifiedCsr,
    ) -> Result<Outcome, PipelineError> {
        debug_assert_eq!(csr.der, request.csr_der);
        self.submit_csr(request, Ok(csr), None).await
    }

    /// The submission; `issuing` is told when the request is approved and goes to the CA
    /// (dropped untold when it is decided otherwise).
    async fn submit_csr(
        &self,
        request: EnrollmentRequest,
        parsed: Result<VerifiedCsr, CsrError>,
        issuing: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Outcome, PipelineError> {
        let limited = self.rate_limited(&request.template);
        // A place in the day's count, held until the request is issued or ends otherwise. A
        // store that cannot be read counts as the limit reached (the template layer says so).
        let (reservation, issued_last_day) = match limited {
            true => match self.rate_windows.reserve(
                self.store.as_ref(),
                &request.template,
                &request.identity.name,
                self.clock.now(),
            ) {
                Ok(reservation) => {
                    let before = reservation.count_before();
                    (Some(reservation), Some(before))
                }
                Err(_) => (None, Some(u32::MAX)),
            },
            false => (None, None),
        };
        let started = Instant::now();
        let Assessment {
            csr,
            identifiers,
            evaluation,
        } = self.assess_csr(&request, parsed, issued_last_day).await;
        let (csr, approval) = match (csr, evaluation.decision) {
            (Some(csr), Decision::Approved(approval)) => (csr, approval),
            (_, Decision::Denied(denial)) => {
                drop(reservation);
                return self
                    .deny(&request, identifiers, denial, evaluation.trace)
                    .await;
            }
            (None, Decision::Approved(_)) => unreachable!("an unreadable CSR is never approved"),
        };
        if let Some(reason) = approval.needs_approval.clone() {
            // Counted when an approver lets it through and it is issued.
            drop(reservation);
            return self
                .hold(&request, approval, evaluation.trace, reason)
                .await;
        }
        let template = &self.config().templates[&request.template];
        let approved = Approved {
            request_id: request.request_id,
            protocol: request.protocol,
            identity: &request.identity,
            template: &request.template,
            approval,
            public_key: csr.public_key,
            csr_der: csr.der,
            key_type: csr.key_type,
            key_encipherment: key_encipherment(csr.key_type, &template.extended_key_usages),
            extended_key_usages: template.extended_key_usages.clone(),
            resource: request.resource.clone(),
            metadata: request.metadata.clone(),
            renews: request.renews.clone(),
            trace: evaluation.trace,
            client: request.client,
            reservation,
        };
        if let Some(issuing) = issuing {
            // The caller may be gone: then nobody waits.
            let _ = issuing.send(());
        }
        let record = self.issue(approved).await?;
        self.metrics
            .issuance(request.protocol.as_str(), started.elapsed().as_secs_f64());
        Ok(Outcome::Issued(Box::new(record)))
    }

    /// Keep an approved-by-policy request until a person decides (durably, audited).
    async fn hold(
        &self,
        request: &EnrollmentRequest,
        approval: Approval,
        trace: Vec<Step>,
        reason: String,
    ) -> Result<Outcome, PipelineError> {
        let now = self.clock.now();
        self.metrics
            .decision(request.protocol.as_str(), "pending", "template");
        let record = RequestRecord {
            request_id: request.request_id,
            protocol: request.protocol,
            identity: request.identity.name.clone(),
            template: request.template.clone(),
            identifiers: approval.identifiers.clone(),
            state: RequestState::Pending {
                reason: reason.clone(),
            },
            created_at: now,
            updated_at: now,
            pending: Some(PendingEnrollment {
                csr_sha256: sha256_hex(&request.csr_der),
                csr_der: request.csr_der.clone(),
                identity: request.identity.clone(),
                common_name: approval.common_name.clone(),
                validity_days: approval.validity_days,
                resource: request.resource.clone(),
                metadata: request.metadata.clone(),
                renews: request.renews.clone(),
            }),
            client: request.client,
        };
        let audit = AuditEntry {
            time: now,
            request_id: Some(request.request_id),
            actor: request.identity.name.clone(),
            action: AuditAction::Decision,
            outcome: "pending".into(),
            layer: Some(Layer::Template.as_str().into()),
            rule: Some("approval_required".into()),
            reason: reason.clone(),
            subject: None,
            details: with_client(
                json!({ "protocol": request.protocol, "template": request.template,
                    "identifiers": approval.identifiers, "trace": trace }),
                request.client,
            ),
        };
        let event = events::request(
            EventKind::RequestPending,
            request.request_id,
            &request.identity.name,
            &request.template,
            &approval.identifiers,
            with_client(
                json!({ "reason": reason, "protocol": request.protocol }),
                request.client,
            ),
            now,
        );
        self.with_store(move |store| store.record_pending(&record, &audit, &event))
            .await?;
        tracing::info!(request_id = %request.request_id, %reason, "request waits for approval");
        Ok(Outcome::Pending {
            request_id: request.request_id,
            reason,
        })
    }

    /// An approver approves a pending request: it is issued now. Four eyes: the approver
    /// must hold a managing role and must not be the requester.
    pub async fn approve(
        &self,
        request_id: Uuid,
        approver: &Identity,
    ) -> Result<CertificateRecord, ApprovalError> {
        let (record, pending) = self.pending(request_id, approver).await?;
        let csr = VerifiedCsr::parse(&pending.csr_der)
            .map_err(|e| ApprovalError::Unusable(e.to_string()))?;
        // The blocked-key list may have grown while the request waited.
        goodkey::check(&csr.spki_der, &self.config().policy.blocked_spki_sha256)
            .map_err(|e| ApprovalError::Unusable(e.to_string()))?;
        let config = self.config();
        let template = config.templates.get(&record.template).ok_or_else(|| {
            ApprovalError::Unusable(format!("template `{}` no longer exists", record.template))
        })?;
        let mut metadata = pending.metadata.clone();
        metadata.insert("approved_by".into(), approver.name.clone());
        let approved = Approved {
            request_id,
            protocol: record.protocol,
            identity: &pending.identity,
            template: &record.template,
            approval: Approval {
                identifiers: record.identifiers.clone(),
                common_name: pending.common_name.clone(),
                validity_days: pending.validity_days,
                needs_approval: None,
            },
            public_key: csr.public_key,
            csr_der: csr.der,
            key_type: csr.key_type,
            key_encipherment: key_encipherment(csr.key_type, &template.extended_key_usages),
            extended_key_usages: template.extended_key_usages.clone(),
            resource: pending.resource.clone(),
            metadata,
            renews: pending.renews.clone(),
            trace: vec![Step {
                layer: Layer::Template,
                verdict: "approved",
                detail: format!("approved by {}", approver.name),
            }],
            client: record.client,
            reservation: None,
        };
        let event = events::request(
            EventKind::RequestApproved,
            request_id,
            &pending.identity.name,
            &record.template,
            &record.identifiers,
            with_client(
                json!({ "approver": approver.name, "protocol": record.protocol }),
                record.client,
            ),
            self.clock.now(),
        );
        self.with_store(move |store| store.record_event(None, &event))
            .await
            .map_err(PipelineError::from)?;
        Ok(self.issue(approved).await?)
    }

    /// An approver refuses a pending request.
    pub async fn reject(
        &self,
        request_id: Uuid,
        approver: &Identity,
        reason: &str,
    ) -> Result<(), ApprovalError> {
        let (record, pending) = self.pending(request_id, approver).await?;
        let denial = Denial::new(
            Layer::Template,
            "approval_denied",
            format!("denied by {}: {reason}", approver.name),
        );
        self.deny_held(record, pending, denial).await?;
        Ok(())
    }

    /// A pending request the approver may decide on.
    async fn pending(
        &self,
        request_id: Uuid,
        approver: &Identity,
    ) -> Result<(RequestRecord, PendingEnrollment), ApprovalError> {
        let record = self
            .with_store(move |store| store.request(request_id))
            .await
            .map_err(PipelineError::from)?
            .ok_or(ApprovalError::NotFound)?;
        let (RequestState::Pending { .. }, Some(pending)) = (&record.state, record.pending.clone())
        else {
            return Err(ApprovalError::NotPending);
        };
        if self.expired(&record) {
            self.expire(record, pending).await?;
            return Err(ApprovalError::Expired);
        }
        if !policy::identity::may_approve(&self.config(), approver, &record.template) {
            return Err(ApprovalError::NotAnApprover);
        }
        if approver.name == pending.identity.name {
            return Err(ApprovalError::OwnRequest);
        }
        Ok((record, pending))
    }

    /// Whether a pending request waited past `approvals.pending_expiry_hours`.
    fn expired(&self, record: &RequestRecord) -> bool {
        let hours = self.config().approvals.pending_expiry_hours;
        hours > 0 && self.clock.now() - record.created_at > Duration::hours(hours.into())
    }

    /// Deny a held request (audited, `request_denied` event) with `denial`.
    async fn deny_held(
        &self,
        record: RequestRecord,
        pending: PendingEnrollment,
        denial: Denial,
    ) -> Result<(), PipelineError> {
        let request = EnrollmentRequest {
            request_id: record.request_id,
            protocol: record.protocol,
            identity: pending.identity,
            csr_der: pending.csr_der,
            template: record.template,
            requested_identifiers: Some(record.identifiers.clone()),
            validity_days: Some(pending.validity_days),
            resource: pending.resource,
            metadata: pending.metadata,
            renews: pending.renews,
            client: record.client,
        };
        self.deny(&request, record.identifiers, denial, Vec::new())
            .await?;
        Ok(())
    }

    /// Deny an expired pending request.
    async fn expire(
        &self,
        record: RequestRecord,
        pending: PendingEnrollment,
    ) -> Result<(), PipelineError> {
        let denial = Denial::new(
            Layer::Template,
            "approval_expired",
            format!(
                "nobody decided within {} hours",
                self.config().approvals.pending_expiry_hours
            ),
        );
        self.deny_held(record, pending, denial).await
    }

    /// Deny every pending request that waited too long; returns how many.
    pub async fn expire_pending(&self) -> Result<usize, PipelineError> {
        let pending = self.with_store(|store| store.pending_requests()).await?;
        let mut expired = 0;
        for record in pending {
            if let (true, Some(enrollment)) = (self.expired(&record), record.pending.clone()) {
                tracing::info!(request_id = %record.request_id, "pending request expired");
                self.expire(record, enrollment).await?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Where a request stands (for protocols polling a pending request).
    pub async fn request_state(
        &self,
        request_id: Uuid,
    ) -> Result<Option<RequestState>, StoreError> {
        // A read: microseconds in memory, cheaper on this task than a hop to the pool.
        Ok(self.store.request(request_id)?.map(|r| r.state))
    }

    /// Decide on a request without recording or issuing anything (dry run: `policy check`).
    pub async fn assess(&self, request: &EnrollmentRequest) -> Assessment {
        self.assess_csr(request, VerifiedCsr::parse(&request.csr_der), None)
            .await
    }

    /// [`Pipeline::assess`] with the request's CSR parsed (or the reason it could not be),
    /// and, on a rate-limited template, the day's count when the caller reserved a place in
    /// it (`None`: the count as it stands, nothing reserved).
    async fn assess_csr(
        &self,
        request: &EnrollmentRequest,
        parsed: Result<VerifiedCsr, CsrError>,
        reserved_count: Option<u32>,
    ) -> Assessment {
        let csr = match parsed {
            Ok(csr) => csr,
            Err(error) => {
                let denial = csr_denial(&error);
                let trace = vec![Step {
                    layer: Layer::Input,
                    verdict: "denied",
                    detail: denial.reason.clone(),
                }];
                return Assessment {
                    csr: None,
                    identifiers: Vec::new(),
                    evaluation: Evaluation {
                        decision: Decision::Denied(denial),
                        trace,
                    },
                };
            }
        };
        let identifiers = requested_identifiers(request, &csr);
        let limited = self.rate_limited(&request.template);
        // A store that cannot be read counts as the limit reached (the template layer says so).
        let issued_last_day = match (limited, reserved_count) {
            (true, Some(count)) => count,
            (true, None) => self
                .rate_windows
                .count(
                    self.store.as_ref(),
                    &request.template,
                    &request.identity.name,
                    self.clock.now(),
                )
                .unwrap_or(u32::MAX),
            (false, _) => 0,
        };
        // Layer 3's input: who owns the resources the request concerns.
        let config = self.config.load_full();
        let concerned = policy::resources::concerned(
            &config.resources,
            request.resource.as_deref(),
            &identifiers,
        );
        let lookups = match concerned.is_empty() {
            true => Vec::new(),
            false => {
                self.resources
                    .lookup_all(&config.resources, &concerned)
                    .await
            }
        };
        // Layer 2's input for roles with DNS checks: what the DNS says about the names.
        let dns_facts = match policy::needs_dns(&config, &request.identity, &request.template) {
            true => Some(self.dns.facts(&config.policy, &identifiers).await),
            false => None,
        };
        let mut evaluation = policy::evaluate(
            &config,
            &PolicyRequest {
                identity: &request.identity,
                template: &request.template,
                identifiers: &identifiers,
                common_name: csr.common_name.as_deref(),
                key_type: csr.key_type,
                validity_days: request.validity_days,
                issued_last_day,
                resources: &lookups,
                dns: dns_facts.as_ref(),
            },
        );
        // Weak keys are refused once policy would approve (its precise reasons, such as a
        // template's RSA size floor, come first) and before anything is held or signed.
        if matches!(evaluation.decision, Decision::Approved(_)) {
            if let Err(weak) =
                goodkey::check(&csr.spki_der, &self.config().policy.blocked_spki_sha256)
            {
                let denial = csr_denial(&CsrError::WeakKey(weak));
                let detail = denial.reason.clone();
                evaluation.trace.push(Step {
                    layer: Layer::Input,
                    verdict: "denied",
                    detail,
                });
                evaluation.decision = Decision::Denied(denial);
            }
        }
        Assessment {
            csr: Some(csr),
            identifiers,
            evaluation,
        }
    }

    /// Issue a certificate for rampart itself (its listeners, the SCEP RA), outside the
    /// policy, which governs requesters. Recorded and audited like any other issuance.
    pub async fn issue_internal(
        &self,
        purpose: InternalPurpose,
        public_key: Vec<u8>,
        key_type: KeyType,
        validity_days: u32,
    ) -> Result<CertificateRecord, PipelineError> {
        let identity = Identity::system();
        let (template, identifiers, common_name, extended_key_usages, key_encipherment) =
            match purpose {
                InternalPurpose::Listener(identifiers) => {
                    let common_name = identifiers.first().map(Identifier::value);
                    let ekus = vec![ExtendedKeyUsage::ServerAuth];
                    let encipherment = self::key_encipherment(key_type, &ekus);
                    (
                        "rampart-listener",
                        identifiers,
                        common_name,
                        ekus,
                        encipherment,
                    )
                }
                // RFC 8894 §2.1: the RA signs replies and decrypts requests' content keys.
                InternalPurpose::ScepRa => (
                    "rampart-scep-ra",
                    vec![],
                    Some(format!("{} SCEP RA", self.config().ca.common_name)),
                    vec![],
                    true,
                ),
            };
        let approved = Approved {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Internal,
            identity: &identity,
            template,
            approval: Approval {
                identifiers,
                common_name,
                validity_days,
                needs_approval: None,
            },
            public_key,
            csr_der: Vec::new(),
            key_type,
            extended_key_usages,
            key_encipherment,
            resource: None,
            metadata: Default::default(),
            renews: None,
            trace: vec![],
            client: None,
            reservation: None,
        };
        self.issue(approved).await
    }

    /// The inventory record of `der`, when it is a certificate rampart issued (same serial
    /// and the very same bytes); `None` for anything else.
    pub async fn issued_record(&self, der: &[u8]) -> Result<Option<CertificateRecord>, StoreError> {
        use der::Decode;
        let Ok(cert) = x509_cert::Certificate::from_der(der) else {
            return Ok(None);
        };
        let serial = rampart_acme::ari::serial_hex(cert.tbs_certificate.serial_number.as_bytes());
        let record = self
            .with_store(move |store| store.certificate(&serial))
            .await?;
        Ok(record.filter(|r| r.der == der))
    }

    /// Mark requests left in `issuing` by a crash as failed. Called once at start-up.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        self.with_store(move |store| {
            let interrupted = store.interrupted_requests()?;
            for request in &interrupted {
                let reason = "interrupted: rampart stopped before the certificate was recorded";
                let audit = AuditEntry {
                    time: now,
                    request_id: Some(request.request_id),
                    actor: "rampart".into(),
                    action: AuditAction::IssuanceFailed,
                    outcome: "failed".into(),
                    layer: None,
                    rule: None,
                    reason: reason.into(),
                    subject: None,
                    details: json!({}),
                };
                store.fail_issuance(request.request_id, reason, &audit)?;
            }
            Ok(interrupted.len())
        })
        .await
    }

    async fn deny(
        &self,
        request: &EnrollmentRequest,
        identifiers: Vec<Identifier>,
        denial: Denial,
        trace: Vec<Step>,
    ) -> Result<Outcome, PipelineError> {
        let now = self.clock.now();
        tracing::info!(request_id = %request.request_id, layer = denial.layer.as_str(), rule = denial.rule,
            reason = %denial.reason, "request denied");
        self.metrics
            .decision(request.protocol.as_str(), "denied", denial.layer.as_str());
        let record = RequestRecord {
            request_id: request.request_id,
            protocol: request.protocol,
            identity: request.identity.name.clone(),
            template: request.template.clone(),
            identifiers: identifiers.clone(),
            state: RequestState::Denied {
                reason: denial.reason.clone(),
            },
            created_at: now,
            updated_at: now,
            pending: None,
            client: request.client,
        };
        let audit = AuditEntry {
            time: now,
            request_id: Some(request.request_id),
            actor: request.identity.name.clone(),
            action: AuditAction::Decision,
            outcome: "denied".into(),
            layer: Some(denial.layer.as_str().into()),
            rule: Some(denial.rule.into()),
            reason: denial.reason.clone(),
            subject: None,
            details: with_client(
                json!({
                    "protocol": request.protocol,
                    "template": request.template,
                    "identifiers": identifiers,
                    "trace": trace,
                }),
                request.client,
            ),
        };
        let event = events::request(
            EventKind::RequestDenied,
            request.request_id,
            &request.identity.name,
            &request.template,
            &identifiers,
            with_client(
                json!({ "protocol": request.protocol, "layer": denial.layer,
                    "rule": denial.rule, "reason": denial.reason }),
                request.client,
            ),
            now,
        );
        self.with_store(move |store| store.record_denial(&record, &audit, &event))
            .await?;
        Ok(Outcome::Denied {
            request_id: request.request_id,
            denial,
        })
    }

    async fn issue(&self, approved: Approved<'_>) -> Result<CertificateRecord, PipelineError> {
        // Certificates carry whole seconds; so does the record.
        let now = self
            .clock
            .now()
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond");
        let protocol = approved.protocol.as_str();
        self.metrics.decision(protocol, "approved", "");
        let actor = approved.identity.name.clone();
        let decision = AuditEntry {
            time: now,
            request_id: Some(approved.request_id),
            actor: actor.clone(),
            action: AuditAction::Decision,
            outcome: "approved".into(),
            layer: None,
            rule: None,
            reason: format!(
                "template `{}` approved for {} name(s)",
                approved.template,
                approved.approval.identifiers.len()
            ),
            subject: None,
            details: with_client(
                json!({
                    "protocol": approved.protocol,
                    "template": approved.template,
                    "identifiers": approved.approval.identifiers,
                    "validity_days": approved.approval.validity_days,
                    "trace": approved.trace,
                }),
                approved.client,
            ),
        };
        let serial = loop {
            let serial = Serial::generate();
            let request = RequestRecord {
                request_id: approved.request_id,
                protocol: approved.protocol,
                identity: actor.clone(),
                template: approved.template.to_string(),
                identifiers: approved.approval.identifiers.clone(),
                state: RequestState::Issuing {
                    serial: serial.to_string(),
                },
                created_at: now,
                updated_at: now,
                pending: None,
                client: approved.client,
            };
            // Not flushed (complete_issuance's flush covers it): an in-memory write, done
            // on this task rather than paying a hop to the blocking pool.
            let reserved = self.store.begin_issuance(&request, &decision)?;
            if reserved {
                break serial;
            }
        };
        let order = IssuanceOrder {
            serial: serial.clone(),
            public_key: approved.public_key,
            key_type: approved.key_type,
            common_name: approved.approval.common_name,
            sans: approved.approval.identifiers.clone(),
            not_before: now - BACKDATE,
            not_after: now + Duration::days(approved.approval.validity_days.into()),
            key_encipherment: approved.key_encipherment,
            extended_key_usages: approved.extended_key_usages,
            csr_der: approved.csr_der,
        };
        // rampart's own certificates (no CSR) always come from the built-in CA.
        let ca = match order.csr_der.is_empty() {
            true => self.ca.clone(),
            false => self.ca_for_template(approved.template),
        };
        let issued = match ca.issue(&order).await {
            Ok(issued) => issued,
            Err(error) => {
                tracing::error!(request_id = %approved.request_id, %serial, %error, "CA failed");
                let reason = error.to_string();
                let audit = AuditEntry {
                    time: self.clock.now(),
                    request_id: Some(approved.request_id),
                    actor,
                    action: AuditAction::IssuanceFailed,
                    outcome: "failed".into(),
                    layer: None,
                    rule: None,
                    reason: reason.clone(),
                    subject: Some(serial.to_string()),
                    details: json!({ "ca": ca.id() }),
                };
                let request_id = approved.request_id;
                self.with_store(move |store| store.fail_issuance(request_id, &reason, &audit))
                    .await?;
                return Err(error.into());
            }
        };
        let mut record = CertificateRecord {
            serial: issued.serial,
            request_id: approved.request_id,
            protocol: approved.protocol,
            owner: actor.clone(),
            template: approved.template.to_string(),
            issuer: ca.id().to_string(),
            subject: issued.subject,
            sans: order.sans,
            key_type: order.key_type,
            not_before: issued.not_before,
            not_after: issued.not_after,
            sha256_fingerprint: sha256_hex(&issued.der),
            resource: approved.resource,
            metadata: approved.metadata,
            status: StoredStatus::Valid,
            revocation: None,
            der: issued.der,
            chain: issued.chain,
        };
        let mut audit = issued_audit(&record, actor, self.clock.now());
        audit.details = with_client(audit.details, approved.client);
        // A renewal names the certificate it replaces; the event links the two when that
        // certificate is the same requester's.
        let replaced = match &approved.renews {
            Some(serial) => self
                .store
                .certificate(serial)?
                .filter(|old| old.owner == record.owner),
            None => None,
        };
        if let Some(old) = &replaced {
            record.metadata.insert("renews".into(), old.serial.clone());
        }
        let mut event = match &replaced {
            Some(old) => events::renewed(&record, old, audit.time),
            None => events::issued(&record, audit.time),
        };
        // Where the request came from, as its decision and request events say.
        event.data = with_client(event.data, approved.client);
        if self.rate_limited(&record.template) {
            // Its mark is written now; complete_issuance's flush makes it durable. Should that
            // change fail, the mark stays: the identity is counted a certificate more, never
            // one less.
            self.rate_windows.record(
                self.store.as_ref(),
                &record.template,
                &record.owner,
                now,
                record.request_id,
                approved.reservation,
            )?;
        }
        // Written on the blocking pool: the change is in-memory work, but the SAN catalog
        // it updates may be held for milliseconds by a query's scan, a merge or a save, which
        // no async worker may wait for. The flush that makes it durable is awaited here, not
        // waited for on that thread (the store's own thread runs it, shared with concurrent
        // changes). The record travels to that thread and back rather than being copied.
        let (flush, record) = self
            .with_store(move |store| {
                let flush = store.record_issuance(&record, &audit, &event)?;
                Ok((flush, record))
            })
            .await?;
        flush.completed().await?;
        tracing::info!(request_id = %record.request_id, serial = %record.serial, owner = %record.owner, "certificate issued");
        Ok(record)
    }
}

/// The audit entry of a recorded issuance (the pipeline's, and seeding tools').
pub fn issued_audit(
    record: &CertificateRecord,
    actor: String,
    time: time::OffsetDateTime,
) -> AuditEntry {
    AuditEntry {
        time,
        request_id: Some(record.request_id),
        actor,
        action: AuditAction::Issued,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: format!("issued by `{}`", record.issuer),
        subject: Some(record.serial.clone()),
        details: json!({
            "sans": record.sans,
            "not_after": record.not_after.unix_timestamp(),
            "sha256_fingerprint": record.sha256_fingerprint,
        }),
    }
}

/// keyEncipherment goes to RSA keys of TLS servers (RSA key exchange).
/// `details` (an object) with the address the request came from, when known.
fn with_client(mut details: serde_json::Value, client: Option<IpAddr>) -> serde_json::Value {
    if let (Some(client), serde_json::Value::Object(map)) = (client, &mut details) {
        map.insert("client".into(), client.to_string().into());
    }
    details
}

fn key_encipherment(key_type: KeyType, extended_key_usages: &[ExtendedKeyUsage]) -> bool {
    matches!(key_type, KeyType::Rsa { .. })
        && extended_key_usages.contains(&ExtendedKeyUsage::ServerAuth)
}

/// What rampart issues to itself.
#[derive(Debug, Clone)]
pub enum InternalPurpose {
    /// A listener's TLS certificate for these names.
    Listener(Vec<Identifier>),
    /// The SCEP RA certificate (RSA; digitalSignature + keyEncipherment, no names).
    ScepRa,
}

/// The names to issue for: those the protocol authorized, else [`csr_identifiers`].
fn requested_identifiers(request: &EnrollmentRequest, csr: &VerifiedCsr) -> Vec<Identifier> {
    match &request.requested_identifiers {
        Some(ids) => ids.clone(),
        None => csr_identifiers(csr),
    }
}

/// The names a CSR asks for: its SANs, else a subject CN that is a DNS name or IP address
/// (older clients and many devices put the name only there).
pub fn csr_identifiers(csr: &VerifiedCsr) -> Vec<Identifier> {
    if !csr.identifiers.is_empty() {
        return csr.identifiers.clone();
    }
    let from_cn = csr.common_name.as_deref().and_then(|cn| match cn.parse() {
        Ok(ip) => Some(Identifier::Ip(ip)),
        Err(_) => Identifier::dns(cn).ok(),
    });
    from_cn.into_iter().collect()
}

/// The input-layer denial for a CSR that cannot be used.
fn csr_denial(error: &CsrError) -> Denial {
    let rule = match error {
        CsrError::Malformed(_) => "malformed_csr",
        CsrError::UnsupportedSignatureAlgorithm(_) => "unsupported_signature_algorithm",
        CsrError::UnsupportedKey(_) => "unsupported_key",
        CsrError::BadSignature => "bad_csr_signature",
        CsrError::BadName(_) => "bad_name",
        CsrError::WeakKey(_) => "weak_key",
    };
    Denial::new(Layer::Input, rule, error.to_string())
}
