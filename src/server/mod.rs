//! Start-up and listeners: create or open the data directory, the store and the CA, mint
//! the first admin API key, obtain the listener certificate, bind the listeners, serve,
//! and drain on shutdown.
//!
//! Imports `api`, `pipeline`, `ca`, `store`, `config`, `clock`, `apikeys`, `files`.

pub mod client_address;
pub mod limits;
pub mod proxy_protocol;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use self::client_address::TrustedProxies;
use crate::apikeys;
use crate::ca::local::{LocalCa, LocalCaError};
use crate::ca::upstream_acme::UpstreamAcme;
use crate::ca::CaAdapter;
use crate::clock::Clock;
use crate::config::CaAdapterConfig;
use crate::config::Config;
use crate::config::Listener;
use crate::files;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pkix::pem;
use crate::store::sled_store::SledStore;
use crate::store::{AuditAction, AuditEntry, Store, StoreError};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to complete a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// File system.
    #[error("{what}: {source}")]
    Io {
        /// What was being accessed.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The built-in CA.
    #[error(transparent)]
    Ca(#[from] LocalCaError),
    /// A `[ca_adapters]` CA (its secrets).
    #[error("{0}")]
    CaAdapter(String),
    /// TLS set-up.
    #[error("TLS: {0}")]
    Tls(String),
    /// ACME set-up.
    #[error("ACME: {0}")]
    Acme(String),
    /// EST set-up.
    #[error("EST: {0}")]
    Est(String),
    /// SCEP set-up (the RA).
    #[error("SCEP: {0}")]
    Scep(String),
    /// Webhook set-up (secrets, event names).
    #[error("{0}")]
    Webhooks(String),
    /// Publication set-up (the OCSP responder).
    #[error("publish: {0}")]
    Publish(String),
    /// A key file is readable by others than its owner.
    #[error(transparent)]
    SecretFile(#[from] files::SecretFileError),
    /// A listener address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// What start-up prepared, before any listener runs.
#[derive(Debug)]
pub struct Bootstrap {
    /// The pipeline, ready.
    pub pipeline: Pipeline,
    /// Data directory.
    pub data_dir: PathBuf,
    /// PEM file with the trust anchors clients must trust.
    pub ca_bundle: PathBuf,
    /// The admin API key, when this start created it (shown once, never stored).
    pub new_admin_key: Option<String>,
}

/// The audit entry of the built-in CA's creation in `dir` (start-up and seeding tools).
pub fn ca_created_audit(
    config: &Config,
    dir: &std::path::Path,
    now: time::OffsetDateTime,
) -> AuditEntry {
    let mut details = json!({ "directory": dir });
    if !config.ca.key.is_empty() {
        // The issuing key is in a PKCS#11 token: which one.
        details["issuing_key"] = json!(config.ca.key);
    }
    AuditEntry {
        time: now,
        request_id: None,
        actor: "rampart".into(),
        action: AuditAction::CaCreated,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: format!("built-in CA created ({:?})", config.ca.key_algorithm),
        subject: None,
        details,
    }
}

/// Prepare data directory, store, CA, first admin key. Used by `serve` and `init`.
pub async fn bootstrap(config: Config, clock: Arc<dyn Clock>) -> Result<Bootstrap, ServerError> {
    let data_dir = config.server.data_dir.clone();
    files::create_private_dir(&data_dir).map_err(|source| ServerError::Io {
        what: data_dir.display().to_string(),
        source,
    })?;
    let store_dir = data_dir.join("store");
    files::create_private_dir(&store_dir).map_err(|source| ServerError::Io {
        what: store_dir.display().to_string(),
        source,
    })?;
    let store: Arc<dyn Store> = {
        let dir = store_dir.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??,
        )
    };
    let now = clock.now();
    let (ca, created) = {
        let mut ca_config = config.ca.clone();
        ca_config.crl_url = config.crl_url().unwrap_or_default();
        ca_config.ocsp_url = config.ocsp_url().unwrap_or_default();
        let dir = data_dir.join("ca");
        tokio::task::spawn_blocking(move || LocalCa::create_or_load(&dir, &ca_config, now))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??
    };
    if created {
        tracing::info!(algorithm = ?config.ca.key_algorithm, "created the built-in root and issuing CA");
        store.append_audit(&ca_created_audit(&config, &data_dir.join("ca"), now))?;
    }
    let ca_bundle = data_dir.join("ca-bundle.pem");
    let anchors = ca.trust_anchors();
    files::write_public(
        &ca_bundle,
        pem::encode_certificates(anchors.iter().map(Vec::as_slice)).as_bytes(),
    )
    .map_err(|source| ServerError::Io {
        what: ca_bundle.display().to_string(),
        source,
    })?;

    let config = Arc::new(config);
    let new_admin_key = if store.api_key_count()? == 0 {
        Some(create_admin_key(&config, store.as_ref(), now)?)
    } else {
        None
    };
    let mut adapters: BTreeMap<String, Arc<dyn CaAdapter>> = BTreeMap::new();
    for (name, adapter) in &config.ca_adapters {
        let built: Arc<dyn CaAdapter> = match adapter {
            CaAdapterConfig::Acme(upstream) => Arc::new(
                UpstreamAcme::new(name, upstream, store.clone())
                    .map_err(|e| ServerError::CaAdapter(e.to_string()))?,
            ),
        };
        adapters.insert(name.clone(), built);
    }
    let pipeline = Pipeline::new(config, store, Arc::new(ca), clock, Arc::new(Metrics::new()))
        .with_ca_adapters(adapters);
    let recovered = pipeline.recover_interrupted().await?;
    if recovered > 0 {
        tracing::warn!(
            count = recovered,
            "marked requests interrupted by the last stop as failed"
        );
    }
    Ok(Bootstrap {
        pipeline,
        data_dir,
        ca_bundle,
        new_admin_key,
    })
}

/// Create the first API key, for identity `admin` holding every managing role.
fn create_admin_key(
    config: &Config,
    store: &dyn Store,
    now: time::OffsetDateTime,
) -> Result<String, StoreError> {
    let mut roles: Vec<String> = config
        .roles
        .iter()
        .filter(|(_, r)| r.manage)
        .map(|(n, _)| n.clone())
        .collect();
    if roles.is_empty() {
        tracing::warn!("no role has `manage = true`: the first API key gets role `admin`, which the policy does not define");
        roles.push("admin".into());
    }
    let key = apikeys::generate("admin", roles.clone(), now);
    store.insert_api_key(
        &key.record,
        &AuditEntry {
            time: now,
            request_id: None,
            actor: "rampart".into(),
            action: AuditAction::ApiKeyCreated,
            outcome: "ok".into(),
            layer: None,
            rule: None,
            reason: "first admin API key, created on first start".into(),
            subject: Some(key.record.key_id.clone()),
            details: json!({ "identity": "admin", "roles": roles }),
        },
    )?;
    Ok(key.token)
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    /// Base URL of the admin API, when enabled (`http://127.0.0.1:9000`).
    pub api_url: Option<String>,
    /// Bound address of the admin API.
    pub api_addr: Option<SocketAddr>,
    /// The EST base URL, when EST is enabled.
    pub est_url: Option<String>,
    /// SCEP URL (`http://…/scep`), when enabled.
    pub scep_url: Option<String>,
    /// Bound SCEP address, when enabled.
    pub scep_addr: Option<SocketAddr>,
    /// URL of the CRL on the publish listener, when enabled.
    pub crl_url: Option<String>,
    /// URL of the OCSP responder on the publish listener, when enabled.
    pub ocsp_url: Option<String>,
    /// Bound publish address, when enabled.
    pub publish_addr: Option<SocketAddr>,
    /// SHA-256 fingerprint (hex) of the SCEP RA certificate at start, when enabled.
    pub scep_ra_fingerprint: Option<String>,
    /// Bound address of the EST listener.
    pub est_addr: Option<SocketAddr>,
    /// The default ACME directory URL, when ACME is enabled.
    pub acme_url: Option<String>,
    /// Bound address of the ACME listener.
    pub acme_addr: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// CA bundle path.
    pub ca_bundle: PathBuf,
    /// Listener certificate chain in use.
    pub listener_certificate: PathBuf,
    /// The admin API key created by this start, if any.
    pub new_admin_key: Option<String>,
    /// The pipeline the listeners serve (for embedding and tests).
    pub pipeline: Pipeline,
    /// Where the configuration came from (read again on reload).
    pub config_source: crate::config::ConfigSource,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Stop accepting, let in-flight requests finish (bounded), and return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Bootstrap and start every enabled listener.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Daemon, ServerError> {
    start_from(config, clock, crate::config::ConfigSource::Memory).await
}

/// Like [`start`], remembering where the configuration came from so that the policy can be
/// reloaded from there (SIGHUP, `rampart reload`).
pub async fn start_from(
    config: Config,
    clock: Arc<dyn Clock>,
    source: crate::config::ConfigSource,
) -> Result<Daemon, ServerError> {
    // One process-wide TLS crypto provider (aws-lc-rs) for every rustls user, including
    // HTTP clients inside validators; an embedder that chose one already keeps it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls_files = (!config.tls.cert_file.is_empty()).then(|| {
        (
            PathBuf::from(&config.tls.cert_file),
            PathBuf::from(&config.tls.key_file),
        )
    });
    let boot = bootstrap(config, clock).await?;
    let (cert_path, key_path) = match tls_files {
        Some(paths) => paths,
        None => tls::ensure_listener_certificate(&boot.pipeline, &boot.data_dir).await?,
    };
    // Keys loaded at start must be their owner's alone (the CA's are checked as it loads,
    // the SCEP RA's in `ensure_ra`).
    files::check_secret_permissions(&key_path)?;
    crate::lifecycle::escrow::check_key_file(&boot.data_dir)?;
    let tls_config = tls::server_config(&cert_path, &key_path, None)?;
    let limits_config = boot.pipeline.config().limits.clone();
    let connection_limits = limits::ConnectionLimits::from_config(&limits_config);
    let server_config = boot.pipeline.config().server.clone();
    let peers = |listener: Listener| Peers {
        listener,
        proxies: TrustedProxies::new(
            &server_config.trusted_proxies,
            server_config.forwarded_header,
        )
        .with_proxy_protocol(server_config.proxy_protocol.contains(&listener)),
        metrics: boot.pipeline.metrics().clone(),
    };
    let rate_limiter = || limits::RateLimiter::per_minute(limits_config.per_ip_requests_per_minute);
    let (shutdown, signal) = watch::channel(false);
    let mut tasks = Vec::new();
    let crls = Arc::new(crate::lifecycle::crl::Crls::new(boot.pipeline.clone()));
    let webhooks = crate::lifecycle::webhooks::Webhooks::new(boot.pipeline.clone())
        .map_err(|e| ServerError::Webhooks(e.to_string()))?;
    tasks.extend(webhooks.spawn(signal.clone()));
    if boot.pipeline.config().approvals.pending_expiry_hours > 0 {
        tasks.push(tokio::spawn(expire_pending_requests(
            boot.pipeline.clone(),
            signal.clone(),
        )));
    }
    if boot.pipeline.config().renewal.enabled {
        tasks.push(
            crate::lifecycle::renewal::Scheduler::new(boot.pipeline.clone()).spawn(signal.clone()),
        );
    }
    let scep = &boot.pipeline.config().scep;
    let (mut scep_url, mut scep_addr, mut scep_backend) = (None, None, None);
    let mut scep_ra_fingerprint = None;
    if scep.enabled {
        let (listener, addr) = bind(scep.listen).await?;
        let ra = crate::gateway::scep::ensure_ra(&boot.pipeline, &boot.data_dir)
            .await
            .map_err(|e| ServerError::Scep(e.to_string()))?;
        let backend = Arc::new(crate::gateway::scep::Backend::new(
            boot.pipeline.clone(),
            crls.clone(),
            ra,
            boot.data_dir.clone(),
        ));
        let router = limits::limit_enrollments(
            rampart_scep::router(backend.clone()),
            rate_limiter(),
            limits::Enrollments::Scep,
        );
        // Plain HTTP: SCEP messages are signed and encrypted end to end.
        tasks.push(tokio::spawn(serve(
            listener,
            router,
            None,
            connection_limits,
            peers(Listener::Scep),
            signal.clone(),
        )));
        let host = display_addr(addr, &boot.pipeline.config().server.public_hostname);
        scep_url = Some(format!("http://{host}/scep"));
        scep_ra_fingerprint = Some(crate::pkix::sha256_hex(&backend.ra_certificate()));
        scep_addr = Some(addr);
        scep_backend = Some(backend);
    }
    let publish = &boot.pipeline.config().publish;
    let (mut crl_url, mut ocsp_url, mut publish_addr) = (None, None, None);
    if publish.enabled {
        let (listener, addr) = bind(publish.listen).await?;
        let ocsp = crate::lifecycle::ocsp::Responder::new(boot.pipeline.clone())
            .map_err(ServerError::Publish)?;
        let published = crate::lifecycle::publish::Published {
            crls: crls.clone(),
            ocsp: Arc::new(ocsp),
        };
        let router = crate::lifecycle::publish::router(published);
        tasks.push(tokio::spawn(serve(
            listener,
            router,
            None,
            connection_limits,
            peers(Listener::Publish),
            signal.clone(),
        )));
        let host = display_addr(addr, &boot.pipeline.config().server.public_hostname);
        crl_url = Some(format!("http://{host}/crl/local.crl"));
        ocsp_url = Some(format!("http://{host}/ocsp"));
        publish_addr = Some(addr);
    }
    let api = &boot.pipeline.config().api;
    let (mut api_url, mut api_addr) = (None, None);
    if api.enabled {
        if !api.tls && !api.listen.ip().is_loopback() {
            tracing::warn!(listen = %api.listen, "the admin API is served over plain HTTP on a non-loopback address; set api.tls = true");
        }
        let (listener, addr) = bind(api.listen).await?;
        let router = crate::api::router(
            boot.pipeline.clone(),
            scep_backend,
            webhooks.clone(),
            source.clone(),
        );
        let scheme = if api.tls { "https" } else { "http" };
        let tls = api.tls.then(|| tls_config.clone());
        tasks.push(tokio::spawn(serve(
            listener,
            router,
            tls,
            connection_limits,
            peers(Listener::Api),
            signal.clone(),
        )));
        api_url = Some(format!(
            "{scheme}://{}",
            display_addr(addr, &boot.pipeline.config().server.public_hostname)
        ));
        api_addr = Some(addr);
    }
    let acme = &boot.pipeline.config().acme;
    let (mut acme_url, mut acme_addr, mut acme_server) = (None, None, None);
    if acme.enabled {
        let (listener, addr) = bind(acme.listen).await?;
        let server = crate::gateway::acme::server(&boot.pipeline).map_err(ServerError::Acme)?;
        server.set_max_pending_orders(limits_config.max_pending_orders_per_account);
        acme_server = Some(server.clone());
        let router = limits::limit_enrollments(
            rampart_acme::router(server.clone()),
            rate_limiter(),
            limits::Enrollments::Acme(server),
        );
        tasks.push(tokio::spawn(serve(
            listener,
            router,
            Some(tls_config.clone()),
            connection_limits,
            peers(Listener::Acme),
            signal.clone(),
        )));
        let host = display_addr(addr, &boot.pipeline.config().server.public_hostname);
        acme_url = Some(format!("https://{host}/acme/default/directory"));
        acme_addr = Some(addr);
    }
    let est = &boot.pipeline.config().est;
    let (mut est_url, mut est_addr) = (None, None);
    if est.enabled {
        let (listener, addr) = bind(est.listen).await?;
        // Client certificates are rampart's own: anchored at its root or, for devices that
        // send only their leaf (most do), at the issuing CA itself.
        // Manufacturer (IDevID) CAs are client roots too.
        let mut anchors = boot.pipeline.ca().trust_anchors();
        anchors.extend(boot.pipeline.ca().chain());
        let bootstrap = crate::gateway::est::bootstrap_certificates(&boot.pipeline)
            .map_err(ServerError::Est)?;
        anchors.extend(bootstrap.iter().map(|(_, der)| der.clone()));
        let est_tls = tls::server_config(&cert_path, &key_path, Some(&anchors))?;
        let backend = std::sync::Arc::new(
            crate::gateway::est::Backend::new(boot.pipeline.clone(), &bootstrap)
                .map_err(ServerError::Est)?,
        );
        let router = limits::limit_enrollments(
            rampart_est::router(backend),
            rate_limiter(),
            limits::Enrollments::Est,
        );
        tasks.push(tokio::spawn(serve(
            listener,
            router,
            Some(est_tls),
            connection_limits,
            peers(Listener::Est),
            signal.clone(),
        )));
        let host = display_addr(addr, &boot.pipeline.config().server.public_hostname);
        est_url = Some(format!("https://{host}/.well-known/est"));
        est_addr = Some(addr);
    }
    // Protocol state past `server.retain_protocol_state_days`.
    tasks.push(tokio::spawn(crate::gateway::retention::run_hourly(
        boot.pipeline.clone(),
        acme_server,
        signal.clone(),
    )));
    // Scheduled discovery jobs ([[discovery.jobs]]), stopped with the listeners.
    tasks.extend(crate::lifecycle::discovery::run_jobs(
        &boot.pipeline,
        signal.clone(),
    ));
    Ok(Daemon {
        crl_url,
        ocsp_url,
        publish_addr,
        scep_url,
        scep_ra_fingerprint,
        scep_addr,
        est_url,
        est_addr,
        api_url,
        api_addr,
        acme_url,
        acme_addr,
        data_dir: boot.data_dir,
        ca_bundle: boot.ca_bundle,
        listener_certificate: cert_path,
        new_admin_key: boot.new_admin_key,
        pipeline: boot.pipeline,
        config_source: source,
        shutdown,
        tasks,
    })
}

/// Deny pending requests nobody decided on in time, once a minute until shutdown.
async fn expire_pending_requests(pipeline: Pipeline, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(error) = pipeline.expire_pending().await {
            tracing::error!(%error, "expiring pending requests failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Bind a listener; the address it got (the port when `addr` asks for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bound = |source| ServerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bound)?;
    let local = listener.local_addr().map_err(bound)?;
    Ok((listener, local))
}

/// Count and log every request of `listener`.
fn observed(router: Router, listener: &'static str, metrics: Arc<Metrics>) -> Router {
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let metrics = metrics.clone();
        async move {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let started = std::time::Instant::now();
            let response = next.run(request).await;
            let status = response.status().as_u16();
            metrics.http_request(listener, method.as_str(), status);
            tracing::debug!(listener, %method, %path, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
            response
        }
    }))
}

/// `host:port` for printing: loopback listeners are shown as they are bound, wildcard
/// listeners with the public hostname.
fn display_addr(addr: SocketAddr, public_hostname: &str) -> String {
    if addr.ip().is_unspecified() {
        format!("{public_hostname}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn wait_for(mut signal: watch::Receiver<bool>) {
    while !*signal.borrow_and_update() {
        if signal.changed().await.is_err() {
            return;
        }
    }
}

/// Serve `router` on `listener`, over TLS when `tls` is set, until `signal` fires; then
/// drain for at most [`DRAIN_TIMEOUT`]. At most `limits.max_connections` connections are
/// served at once (the next is accepted when one closes); HTTP/1 request heads must arrive
/// within `limits.header_read_timeout`, and a connection that moves no byte for
/// `limits.idle_timeout` is closed. Every request carries its client's address
/// ([`axum::extract::ConnectInfo`]): the peer's, or the one a trusted proxy forwarded.
/// Requests are counted under the listener's name, as refused connections are ([`Peers`]).
async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: limits::ConnectionLimits,
    peers: Peers,
    signal: watch::Receiver<bool>,
) {
    let router = observed(router, peers.listener.as_str(), peers.metrics.clone());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = wait_for(signal);
    tokio::pin!(stop);
    loop {
        if slots.available_permits() == 0 {
            tracing::debug!(
                max = limits.max_connections,
                "connection limit reached; waiting for a connection to close"
            );
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Small request/response exchanges stall on Nagle + delayed ACK without this.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let activity = limits::Activity::new();
        let connection = serve_connection(
            limits::Tracked::new(stream, activity.clone()),
            peer,
            peers.clone(),
            router.clone(),
            acceptor.clone(),
            builder.clone(),
            graceful.watcher(),
        );
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = connection => {}
                () = activity.idle(idle_timeout) => {
                    tracing::debug!(%peer, ?idle_timeout, "closing a connection idle for too long");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after the drain timeout");
    }
}

/// Who a listener's connections come from (its trusted proxies, whether they send a PROXY
/// header) and where connections closed before their first request are counted.
#[derive(Clone)]
struct Peers {
    listener: Listener,
    proxies: TrustedProxies,
    metrics: Arc<Metrics>,
}

impl Peers {
    /// Count a connection closed before its first request, for `reason`.
    fn refused(&self, reason: &str) {
        self.metrics
            .connection_refused(self.listener.as_str(), reason);
    }
}

/// One step of opening a connection from `peer` (its PROXY header, its TLS handshake),
/// finished by `deadline`: its result, or (logged) its error, `None` when it ran out of time.
async fn opening_step<T, E: std::fmt::Display>(
    deadline: tokio::time::Instant,
    peer: SocketAddr,
    step: &str,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Option<E>> {
    match tokio::time::timeout_at(deadline, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "{step} failed");
            Err(Some(error))
        }
        Err(_) => {
            tracing::debug!(%peer, "{step} timed out");
            Err(None)
        }
    }
}

/// One connection: its PROXY header when a trusted proxy on this listener must send one,
/// the TLS handshake when `acceptor` is set (both within [`HANDSHAKE_TIMEOUT`]), then HTTP
/// until either side closes. Each request carries its client's address (from `peer` or the
/// PROXY header and, behind a trusted proxy, its forwarding header).
async fn serve_connection(
    mut stream: limits::Tracked<TcpStream>,
    mut peer: SocketAddr,
    peers: Peers,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    if peers.proxies.expects_proxy_header(peer.ip()) {
        let header = proxy_protocol::read_source(&mut stream);
        match opening_step(deadline, peer, "PROXY header", header).await {
            Ok(Some(client)) => peer = client,
            // The proxy's own connection (a health check): its address stands.
            Ok(None) => {}
            Err(_) => return peers.refused("proxy_header"),
        }
    }
    let trusted_proxies = peers.proxies.clone();
    let with_peer = |router: Router| {
        tower::ServiceExt::map_request(
            router,
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                let client = trusted_proxies.client(peer, request.headers());
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(client));
                request
            },
        )
    };
    let served = match acceptor {
        None => {
            let service = TowerToHyperService::new(with_peer(router));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            watcher.watch(connection).await
        }
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            let stream = match opening_step(deadline, peer, "TLS handshake", handshake).await {
                Ok(stream) => stream,
                // Closed without finishing a handshake it may never have begun (a TCP health
                // check, a port scan): nothing failed.
                Err(Some(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return,
                Err(_) => return peers.refused("tls_handshake"),
            };
            // The client certificate chain, for handlers that authenticate with it.
            let peer_certificates = rampart_est::PeerCertificates(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
            );
            // RFC 9266 tls-exporter, for EST proof-of-possession linking.
            let channel_binding = stream
                .get_ref()
                .1
                .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(&[]))
                .map(|value| rampart_est::ChannelBinding(value.to_vec()))
                .unwrap_or_default();
            let service = TowerToHyperService::new(with_peer(
                router
                    .layer(axum::Extension(peer_certificates))
                    .layer(axum::Extension(channel_binding)),
            ));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            watcher.watch(connection).await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
