//! Webhook delivery from the store's outbox, signed per the Standard Webhooks scheme
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`).
//!
//! Each endpoint has its own worker and its own cursor in the outbox, so a receiver that
//! is down delays only its own events. Events are delivered at least once and in outbox
//! order: the cursor moves past an event only after a 2xx answer or after the event is
//! dead-lettered (`webhooks.max_attempts` failed attempts, retried with exponential backoff
//! and jitter). Cursors, attempt counts and dead letters live in the store, so a restart or
//! a crash resumes where delivery stood; an event whose 2xx was not yet recorded is sent
//! again with the same `webhook-id`, which receivers use to drop duplicates.
//!
//! The outbox keeps events `webhooks.retain_events_days` for replays; older ones that every
//! endpoint has got past are removed at start and hourly ([`Webhooks::prune_outbox`]),
//! except those with a dead letter, which stay until it is replayed.
//!
//! Imports `pipeline` (store, clock, metrics), `store`, `config` and `files`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::{WebhookEndpointConfig, WebhooksConfig};
use crate::pipeline::Pipeline;
use crate::store::{Event, EventKind, StoreError};

/// Store namespace of delivery state.
const NAMESPACE: &str = "webhooks";
/// How often an idle worker looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How often events past their retention are looked for.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Events removed per store call.
const PRUNE_BATCH: usize = 1000;
/// Prefix of Standard Webhooks secrets.
const SECRET_PREFIX: &str = "whsec_";

/// A webhook set-up or management failure.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A secret is missing or malformed (the message never contains it).
    #[error("webhooks.endpoints.{endpoint}: {reason}")]
    Secret {
        /// Endpoint name.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// An endpoint subscribes to an event type that does not exist.
    #[error("webhooks.endpoints.{endpoint}.events: {reason}")]
    UnknownEvent {
        /// Endpoint name.
        endpoint: String,
        /// The parser's message.
        reason: String,
    },
    /// No endpoint of that name.
    #[error("no webhook endpoint named `{0}`")]
    NoSuchEndpoint(String),
    /// A replay names an event that is not in the outbox or not for that endpoint.
    #[error("{0}")]
    BadReplay(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A Standard Webhooks signing secret (`whsec_` + base64 of the key bytes).
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Parse `whsec_<base64>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or("the secret must start with `whsec_` (Standard Webhooks format)")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the secret after `whsec_` is not base64")?;
        if bytes.len() < 16 {
            return Err("the secret must hold at least 16 bytes".into());
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// A new random secret in `whsec_` form (32 bytes).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

/// Load an endpoint's secret from its file (which must not be group/world readable) or
/// its environment variable.
fn load_secret(name: &str, endpoint: &WebhookEndpointConfig) -> Result<Secret, WebhookError> {
    let fail = |reason: String| WebhookError::Secret {
        endpoint: name.to_string(),
        reason,
    };
    let text = crate::files::read_configured_secret(
        endpoint.secret_file.as_deref(),
        endpoint.secret_env.as_deref(),
    )
    .map_err(fail)?;
    Secret::parse(&text).map_err(fail)
}

/// One configured endpoint, ready to deliver.
#[derive(Debug, Clone)]
struct Endpoint {
    name: String,
    url: String,
    secret: Secret,
    events: Vec<EventKind>,
    templates: Vec<String>,
}

impl Endpoint {
    fn wants(&self, event: &Event) -> bool {
        let kind_ok = self.events.is_empty() || self.events.contains(&event.kind);
        let template_ok = self.templates.is_empty()
            || event.data["template"]
                .as_str()
                .is_some_and(|t| self.templates.iter().any(|wanted| wanted == t));
        kind_ok && template_ok
    }
}

/// Where an endpoint's delivery stands (kept in the store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// Next outbox sequence number to consider.
    cursor: u64,
    /// The event being retried and its failed attempts so far.
    retrying: Option<Retry>,
    /// Last successful delivery.
    #[serde(default, with = "time::serde::rfc3339::option")]
    last_success: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Retry {
    seq: u64,
    attempts: u32,
    last_error: String,
}

/// An event given up on for one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Outbox position.
    pub seq: u64,
    /// Event id (`webhook-id`).
    pub event_id: String,
    /// Event type.
    pub kind: EventKind,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// When it was given up on.
    #[serde(with = "time::serde::rfc3339")]
    pub dead_at: OffsetDateTime,
}

/// An endpoint's state, as `rampart webhooks list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Subscribed event types (empty = all).
    pub events: Vec<String>,
    /// Template filter (empty = all).
    pub templates: Vec<String>,
    /// Next outbox position to consider.
    pub cursor: u64,
    /// Events queued in the outbox and not yet considered by this endpoint.
    pub backlog: u64,
    /// The event being retried, with attempts so far and the last error.
    pub retrying: Option<serde_json::Value>,
    /// Last successful delivery.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Events queued for replay.
    pub replay_queue: Vec<u64>,
}

/// What to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// One event, by outbox position (delivered even if it was delivered before).
    Event(u64),
    /// Every dead letter of the endpoint.
    DeadLetters,
    /// Everything from this outbox position on (the cursor moves back).
    From(u64),
}

fn progress_key(endpoint: &str) -> String {
    format!("progress/{endpoint}")
}
fn dead_prefix(endpoint: &str) -> String {
    format!("dead/{endpoint}/")
}
fn dead_key(endpoint: &str, seq: u64) -> String {
    format!("{}{seq:020}", dead_prefix(endpoint))
}
fn replay_prefix(endpoint: &str) -> String {
    format!("replay/{endpoint}/")
}
fn replay_key(endpoint: &str, seq: u64) -> String {
    format!("{}{seq:020}", replay_prefix(endpoint))
}
/// The outbox position a replay or dead-letter key names.
fn key_seq(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// The webhook subsystem: endpoints, their workers and management operations.
#[derive(Debug, Clone)]
pub struct Webhooks {
    pipeline: Pipeline,
    settings: WebhooksConfig,
    endpoints: Arc<Vec<Endpoint>>,
    http: reqwest::Client,
}

impl Webhooks {
    /// Check the configuration (event names, secrets) and prepare the endpoints.
    pub fn new(pipeline: Pipeline) -> Result<Webhooks, WebhookError> {
        let settings = pipeline.config().webhooks.clone();
        let mut endpoints = Vec::new();
        for (name, endpoint) in &settings.endpoints {
            let events = endpoint
                .events
                .iter()
                .map(|e| e.parse::<EventKind>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| WebhookError::UnknownEvent {
                    endpoint: name.clone(),
                    reason,
                })?;
            endpoints.push(Endpoint {
                name: name.clone(),
                url: endpoint.url.clone(),
                secret: load_secret(name, endpoint)?,
                events,
                templates: endpoint.templates.clone(),
            });
        }
        // Receivers with rampart-issued certificates are trusted besides the system roots.
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(settings.timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rampart/", env!("CARGO_PKG_VERSION")));
        for der in pipeline.ca().trust_anchors() {
            if let Ok(cert) = reqwest::Certificate::from_der(&der) {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| WebhookError::BadReplay(format!("HTTP client: {e}")))?;
        Ok(Webhooks {
            pipeline,
            settings,
            endpoints: Arc::new(endpoints),
            http,
        })
    }

    /// Start one worker per endpoint, and the outbox's pruning (unless events are kept for
    /// ever); they stop when `shutdown` turns true.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = (0..self.endpoints.len())
            .map(|index| {
                let this = self.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { this.run(index, shutdown).await })
            })
            .collect();
        if self.settings.retain_events_days > 0 {
            let this = self.clone();
            tasks.push(tokio::spawn(
                async move { this.prune_hourly(shutdown).await },
            ));
        }
        tasks
    }

    /// Remove the events that every endpoint has got past (and has not queued for replay)
    /// once they are older than `webhooks.retain_events_days`; returns how many. A
    /// dead-lettered event stays as long as its dead letter, so that it can be replayed.
    /// Without endpoints, age alone decides. Events are kept for ever when the setting is 0.
    pub fn prune_outbox(&self) -> Result<usize, StoreError> {
        let days = self.settings.retain_events_days;
        if days == 0 {
            return Ok(0);
        }
        let store = self.pipeline.store();
        let mut below = store.outbox_next()?;
        // What an endpoint may still send whatever its cursor: its dead letters (for a
        // replay) and its replay queue. Read in the order the workers write: an event is
        // dead-lettered before the cursor passes it, and queued for replay before its dead
        // letter is taken, so an event moving between them is seen in one place or another.
        let mut keep = std::collections::BTreeSet::new();
        for endpoint in self.endpoints.iter() {
            below = below.min(self.progress(&endpoint.name)?.cursor);
            for prefix in [dead_prefix(&endpoint.name), replay_prefix(&endpoint.name)] {
                let keys = store.protocol_scan(NAMESPACE, &prefix)?;
                keep.extend(keys.iter().filter_map(|(key, _)| key_seq(key)));
            }
        }
        let queued_before = self.pipeline.clock().now() - time::Duration::days(days.into());
        let (mut removed, mut from) = (0, 0);
        loop {
            let batch = store.prune_events(from, below, queued_before, &keep, PRUNE_BATCH)?;
            removed += batch.removed;
            match batch.resume {
                Some(next) => from = next,
                None => return Ok(removed),
            }
        }
    }

    /// [`Webhooks::prune_outbox`] at start and every [`PRUNE_INTERVAL`].
    async fn prune_hourly(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.prune_outbox()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => {
                    tracing::info!(
                        removed,
                        "webhook outbox: events past their retention removed"
                    )
                }
                Ok(Err(error)) => tracing::error!(%error, "webhook outbox pruning failed"),
                Err(error) => tracing::error!(%error, "webhook outbox pruning panicked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn endpoint(&self, name: &str) -> Result<&Endpoint, WebhookError> {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| WebhookError::NoSuchEndpoint(name.to_string()))
    }

    fn progress(&self, endpoint: &str) -> Result<Progress, StoreError> {
        match self
            .pipeline
            .store()
            .protocol_get(NAMESPACE, &progress_key(endpoint))?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                tree: "webhooks",
                reason: e.to_string(),
            }),
            None => Ok(Progress::default()),
        }
    }

    fn save_progress(
        &self,
        endpoint: &str,
        progress: &Progress,
        durable: bool,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(progress).expect("progress serializes");
        self.pipeline
            .store()
            .protocol_put(NAMESPACE, &progress_key(endpoint), &bytes, durable)
    }

    /// Every endpoint's state.
    pub fn status(&self) -> Result<Vec<EndpointStatus>, WebhookError> {
        let store = self.pipeline.store();
        let next = store.outbox_next()?;
        let mut out = Vec::new();
        for endpoint in self.endpoints.iter() {
            let progress = self.progress(&endpoint.name)?;
            let dead_letters = store
                .protocol_scan(NAMESPACE, &dead_prefix(&endpoint.name))?
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect();
            let replay_queue = store
                .protocol_scan(NAMESPACE, &replay_prefix(&endpoint.name))?
                .into_iter()
                .filter_map(|(k, _)| key_seq(&k))
                .collect();
            out.push(EndpointStatus {
                name: endpoint.name.clone(),
                url: endpoint.url.clone(),
                events: endpoint
                    .events
                    .iter()
                    .map(|k| k.as_str().to_string())
                    .collect(),
                templates: endpoint.templates.clone(),
                cursor: progress.cursor,
                backlog: next.saturating_sub(progress.cursor),
                retrying: progress.retrying.map(
                    |r| json!({ "seq": r.seq, "attempts": r.attempts, "last_error": r.last_error }),
                ),
                last_success: progress.last_success,
                dead_letters,
                replay_queue,
            });
        }
        Ok(out)
    }

    /// Queue events for delivery again; returns how many were queued.
    pub fn replay(&self, endpoint: &str, what: Replay) -> Result<u64, WebhookError> {
        let endpoint = self.endpoint(endpoint)?;
        let store = self.pipeline.store();
        match what {
            Replay::Event(seq) => {
                let event = store
                    .events(seq, 1)?
                    .into_iter()
                    .find(|e| e.seq == seq)
                    .ok_or_else(|| {
                        WebhookError::BadReplay(format!("no event {seq} in the outbox"))
                    })?;
                if !endpoint.wants(&event) {
                    return Err(WebhookError::BadReplay(format!(
                        "event {seq} ({}) is not one endpoint `{}` subscribes to",
                        event.kind.as_str(),
                        endpoint.name
                    )));
                }
                store.protocol_put(NAMESPACE, &replay_key(&endpoint.name, seq), b"", true)?;
                store.protocol_take(NAMESPACE, &dead_key(&endpoint.name, seq))?;
                Ok(1)
            }
            Replay::DeadLetters => {
                let dead = store.protocol_scan(NAMESPACE, &dead_prefix(&endpoint.name))?;
                let mut queued = 0;
                for (key, value) in dead {
                    let Ok(letter) = serde_json::from_slice::<DeadLetter>(&value) else {
                        continue;
                    };
                    store.protocol_put(
                        NAMESPACE,
                        &replay_key(&endpoint.name, letter.seq),
                        b"",
                        true,
                    )?;
                    store.protocol_take(NAMESPACE, &key)?;
                    queued += 1;
                }
                Ok(queued)
            }
            Replay::From(seq) => {
                let next = store.outbox_next()?;
                if seq > next {
                    return Err(WebhookError::BadReplay(format!(
                        "no event {seq} yet: the next event will be {next}"
                    )));
                }
                let mut progress = self.progress(&endpoint.name)?;
                progress.cursor = progress.cursor.min(seq);
                progress.retrying = None;
                self.save_progress(&endpoint.name, &progress, true)?;
                Ok(next - progress.cursor)
            }
        }
    }

    /// One endpoint's worker: replays first, then the outbox from the cursor.
    async fn run(&self, index: usize, mut shutdown: watch::Receiver<bool>) {
        let endpoint = &self.endpoints[index];
        tracing::info!(endpoint = %endpoint.name, url = %endpoint.url, "webhook delivery started");
        loop {
            if *shutdown.borrow() {
                return;
            }
            let step = self.step(endpoint, &mut shutdown).await;
            match step {
                Ok(Step::Worked) => {}
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(Step::ShuttingDown) => return,
                Err(error) => {
                    tracing::error!(endpoint = %endpoint.name, %error, "webhook delivery: store error");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    async fn step(
        &self,
        endpoint: &Endpoint,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Step, StoreError> {
        let store = self.pipeline.store();
        // Replays first, one at a time.
        if let Some((key, _)) = store
            .protocol_scan(NAMESPACE, &replay_prefix(&endpoint.name))?
            .into_iter()
            .next()
        {
            let seq = key_seq(&key).unwrap_or(0);
            if let Some(event) = store.events(seq, 1)?.into_iter().find(|e| e.seq == seq) {
                if self.deliver(endpoint, &event, shutdown).await? == Delivery::ShuttingDown {
                    return Ok(Step::ShuttingDown);
                }
            }
            store.protocol_take(NAMESPACE, &key)?;
            return Ok(Step::Worked);
        }
        let progress = self.progress(&endpoint.name)?;
        let batch = store.events(progress.cursor, 64)?;
        if batch.is_empty() {
            return Ok(Step::Idle);
        }
        for event in batch {
            if endpoint.wants(&event)
                && self.deliver(endpoint, &event, shutdown).await? == Delivery::ShuttingDown
            {
                return Ok(Step::ShuttingDown);
            }
            let mut progress = self.progress(&endpoint.name)?;
            progress.cursor = event.seq + 1;
            // At least once: losing this write in a crash only means sending again.
            self.save_progress(&endpoint.name, &progress, false)?;
        }
        Ok(Step::Worked)
    }

    /// Deliver one event, retrying with backoff until it succeeds or is dead-lettered.
    async fn deliver(
        &self,
        endpoint: &Endpoint,
        event: &Event,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Delivery, StoreError> {
        let metrics = self.pipeline.metrics();
        let mut attempts = match self.progress(&endpoint.name)?.retrying {
            Some(retry) if retry.seq == event.seq => retry.attempts,
            _ => 0,
        };
        loop {
            if *shutdown.borrow() {
                return Ok(Delivery::ShuttingDown);
            }
            let result = self.attempt(endpoint, event).await;
            let mut progress = self.progress(&endpoint.name)?;
            let error = match result {
                Ok(()) => {
                    metrics.webhook_delivery(&endpoint.name, "delivered");
                    progress.retrying = None;
                    progress.last_success = Some(self.pipeline.clock().now());
                    self.save_progress(&endpoint.name, &progress, false)?;
                    tracing::debug!(endpoint = %endpoint.name, seq = event.seq, kind = event.kind.as_str(), "webhook delivered");
                    return Ok(Delivery::Delivered);
                }
                Err(error) => error,
            };
            attempts += 1;
            metrics.webhook_delivery(&endpoint.name, "failed");
            tracing::warn!(endpoint = %endpoint.name, seq = event.seq, attempt = attempts, %error, "webhook delivery failed");
            if attempts >= self.settings.max_attempts {
                let letter = DeadLetter {
                    seq: event.seq,
                    event_id: event.id.to_string(),
                    kind: event.kind,
                    attempts,
                    last_error: error,
                    dead_at: self.pipeline.clock().now(),
                };
                self.pipeline.store().protocol_put(
                    NAMESPACE,
                    &dead_key(&endpoint.name, event.seq),
                    &serde_json::to_vec(&letter).expect("dead letter serializes"),
                    true,
                )?;
                progress.retrying = None;
                self.save_progress(&endpoint.name, &progress, true)?;
                metrics.webhook_delivery(&endpoint.name, "dead_lettered");
                tracing::error!(endpoint = %endpoint.name, seq = event.seq, attempts, "webhook event dead-lettered");
                return Ok(Delivery::DeadLettered);
            }
            progress.retrying = Some(Retry {
                seq: event.seq,
                attempts,
                last_error: error,
            });
            self.save_progress(&endpoint.name, &progress, true)?;
            let wait = backoff(&self.settings, attempts);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return Ok(Delivery::ShuttingDown),
            }
        }
    }

    /// One signed POST; `Err` with a short description unless the receiver answered 2xx.
    async fn attempt(&self, endpoint: &Endpoint, event: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(&json!({
            "type": event.kind.as_str(),
            "timestamp": event.time.format(&Rfc3339).unwrap_or_default(),
            "data": event.data,
        }))
        .expect("payload serializes");
        let id = event.id.to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = endpoint.secret.sign(&id, timestamp, &body);
        let response = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Worked,
    Idle,
    ShuttingDown,
}

#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Delivered,
    DeadLettered,
    ShuttingDown,
}

/// A transport error without the URL's query (which might carry a token).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Delay before retry number `attempts` (1-based): initial × 2^(attempts−1), capped, with
/// ±20 % jitter so that endpoints recovering together are not hit in lockstep.
fn backoff(settings: &WebhooksConfig, attempts: u32) -> Duration {
    let base = settings
        .initial_backoff_ms
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
    let capped = base.min(settings.max_backoff_seconds.saturating_mul(1000));
    let mut random = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut random);
    // 0.8 … 1.2
    let factor = 0.8 + 0.4 * f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX);
    Duration::from_millis((capped as f64 * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_need_the_prefix_and_enough_bytes() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
        let fresh = Secret::generate();
        assert!(Secret::parse(&fresh).is_ok());
        assert_ne!(fresh, Secret::generate());
        assert_eq!(format!("{:?}", Secret::parse(&fresh).unwrap()), "Secret(…)");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let settings = WebhooksConfig {
            initial_backoff_ms: 1000,
            max_backoff_seconds: 10,
            ..WebhooksConfig::default()
        };
        for (attempt, nominal) in [
            (1, 1000.0),
            (2, 2000.0),
            (3, 4000.0),
            (5, 10_000.0),
            (40, 10_000.0),
        ] {
            let wait = backoff(&settings, attempt).as_millis() as f64;
            assert!(
                wait >= nominal * 0.8 - 1.0 && wait <= nominal * 1.2 + 1.0,
                "{attempt}: {wait}"
            );
        }
    }

    #[test]
    fn endpoints_filter_by_type_and_template() {
        let endpoint = Endpoint {
            name: "e".into(),
            url: "http://x".into(),
            secret: Secret::parse(&Secret::generate()).unwrap(),
            events: vec![EventKind::CertificateIssued],
            templates: vec!["tls-server".into()],
        };
        let event = |kind, template: &str| Event {
            seq: 0,
            id: uuid::Uuid::nil(),
            kind,
            time: OffsetDateTime::UNIX_EPOCH,
            data: json!({ "template": template }),
        };
        assert!(endpoint.wants(&event(EventKind::CertificateIssued, "tls-server")));
        assert!(!endpoint.wants(&event(EventKind::CertificateRevoked, "tls-server")));
        assert!(!endpoint.wants(&event(EventKind::CertificateIssued, "device")));
    }
}
