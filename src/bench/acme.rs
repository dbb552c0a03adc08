//! `rampart bench acme`: full ACME orders (new account per worker, newOrder, http-01,
//! finalize with a fresh key and CSR, certificate download) against any directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::responders::{serve_any_name_dns, serve_http01, Tokens};
use super::{progress_bar, report, root_store, ServerCpu, Stall, Stats};

/// What to run.
#[derive(Debug, Clone)]
pub struct AcmeBench {
    /// Directory URL.
    pub target: String,
    /// PEM bundle to trust (default: /etc/ssl/certs/ca-certificates.crt).
    pub ca_bundle: Option<PathBuf>,
    /// Parallel workers (one account each).
    pub concurrency: usize,
    /// Orders in all.
    pub count: usize,
    /// Stop starting orders after this long (`count` still bounds the run).
    pub duration: Option<Duration>,
    /// Where the http-01 responder listens (the server validates against this port).
    pub http01_listen: SocketAddr,
    /// Where the any-name DNS responder listens (the server's resolver), if wanted.
    pub dns_listen: Option<SocketAddr>,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
    /// Send newOrder requests one at a time (for servers that wedge otherwise).
    pub serialize_new_order: bool,
    /// Append every certificate chain received (PEM) to this file (crash tests compare it
    /// with the server's inventory).
    pub certificates_out: Option<PathBuf>,
}

struct Shared {
    config: AcmeBench,
    tokens: Tokens,
    next: AtomicUsize,
    stats: Mutex<Stats>,
    new_order_lock: tokio::sync::Mutex<()>,
    /// One writer at a time for `certificates_out`.
    chains_out: Mutex<()>,
    run: String,
    progress: indicatif::ProgressBar,
    /// When to stop starting orders.
    deadline: Option<Instant>,
    stall: Stall,
}

fn retries() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(5))
        .backoff(1.5)
        .timeout(Duration::from_secs(60))
}

impl AcmeBench {
    /// Run and print the report.
    pub async fn run(self) -> anyhow::Result<Stats> {
        let tokens = Tokens::default();
        serve_http01(self.http01_listen, tokens.clone()).await?;
        if let Some(dns) = self.dns_listen {
            serve_any_name_dns(dns).await?;
        }
        let progress = progress_bar(self.count);
        let shared = Arc::new(Shared {
            run: format!("{:x}", rand_suffix()),
            config: self.clone(),
            tokens,
            next: AtomicUsize::new(0),
            stats: Mutex::new(Stats::default()),
            new_order_lock: tokio::sync::Mutex::new(()),
            chains_out: Mutex::new(()),
            progress,
            deadline: self.duration.map(|d| Instant::now() + d),
            stall: Stall::default(),
        });
        let server_cpu = ServerCpu::start(self.server_pid);
        let started = Instant::now();
        let workers: Vec<_> = (0..self.concurrency.max(1))
            .map(|w| tokio::spawn(worker(w, shared.clone())))
            .collect();
        for worker in workers {
            worker.await?;
        }
        let elapsed = started.elapsed();
        shared.progress.finish_and_clear();
        let stats = std::mem::take(&mut *shared.stats.lock().expect("stats lock"));
        report("acme", &stats, elapsed, server_cpu.used());
        Ok(stats)
    }
}

fn rand_suffix() -> u32 {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    u32::from_le_bytes(bytes)
}

/// An HTTPS client for instant-acme with TCP_NODELAY: without it each POST's body waits
/// for the ACK of its headers (Nagle + delayed ACK, ~40 ms per request).
fn http_client(ca_bundle: Option<&PathBuf>) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    let roots = root_store(ca_bundle.map(PathBuf::as_path))?;
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    Ok(Box::new(NonceKeeping {
        inner: Box::new(client),
        unspent: Arc::default(),
    }))
}

/// instant-acme's HTTP client keeping the nonce of the latest answer, as certbot and lego
/// do: instant-acme holds none when it starts an order, and would ask `newNonce` for one
/// before each newOrder, a request those clients do not send. The Replay-Nonce of the
/// latest answer, while no POST has been sent since, answers that HEAD instead. One per
/// account, whose requests go one at a time; a nonce the server no longer takes is
/// answered `badNonce` with a fresh one, which instant-acme retries with.
struct NonceKeeping {
    inner: Box<dyn instant_acme::HttpClient>,
    unspent: Arc<Mutex<Option<axum::http::HeaderValue>>>,
}

impl instant_acme::HttpClient for NonceKeeping {
    fn request(
        &self,
        request: axum::http::Request<instant_acme::BodyWrapper<axum::body::Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<instant_acme::BytesResponse, instant_acme::Error>,
                > + Send,
        >,
    > {
        const REPLAY_NONCE: &str = "replay-nonce";
        let mut unspent = self.unspent.lock().expect("nonce lock");
        if request.method() == axum::http::Method::HEAD {
            if let Some(nonce) = unspent.take() {
                let mut answer = axum::http::Response::new(());
                answer.headers_mut().insert(REPLAY_NONCE, nonce);
                let (parts, ()) = answer.into_parts();
                return Box::pin(async move {
                    Ok(instant_acme::BytesResponse {
                        parts,
                        body: Box::new(axum::body::Bytes::new()),
                    })
                });
            }
        }
        // Any other request may spend the latest nonce (a POST carries one): forget it.
        *unspent = None;
        drop(unspent);
        let answer = self.inner.request(request);
        let unspent = self.unspent.clone();
        Box::pin(async move {
            let answer = answer.await?;
            if let Some(nonce) = answer.parts.headers.get(REPLAY_NONCE) {
                *unspent.lock().expect("nonce lock") = Some(nonce.clone());
            }
            Ok(answer)
        })
    }
}

async fn account(shared: &Shared) -> Result<Account, String> {
    let builder = Account::builder_with_http(http_client(shared.config.ca_bundle.as_ref())?);
    let new = NewAccount {
        contact: &[],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    builder
        .create(&new, shared.config.target.clone(), None)
        .await
        .map(|(a, _)| a)
        .map_err(|e| format!("newAccount: {e}"))
}

async fn worker(w: usize, shared: Arc<Shared>) {
    let account = match shared.stall.limit(account(&shared)).await {
        Ok(account) => account,
        Err(error) => {
            // Count this worker's share as failed so the totals add up.
            let mut stats = shared.stats.lock().expect("stats lock");
            while shared.next.fetch_add(1, Ordering::SeqCst) < shared.config.count {
                stats.fail(error.clone());
                shared.progress.inc(1);
            }
            return;
        }
    };
    loop {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) || shared.stall.stalled() {
            return;
        }
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        if i >= shared.config.count {
            return;
        }
        // A fresh name per order, so that no authorization is reused.
        let name = format!("o{i}-w{w}-{}.bench.test", shared.run);
        let started = Instant::now();
        let outcome = shared.stall.limit(order(&shared, &account, name)).await;
        let mut stats = shared.stats.lock().expect("stats lock");
        match outcome {
            Ok(()) => stats.latencies.push(started.elapsed()),
            Err(error) => stats.fail(error),
        }
        shared.progress.inc(1);
    }
}

async fn order(shared: &Shared, account: &Account, name: String) -> Result<(), String> {
    // Made before the order, as certbot and lego do: instant-acme's own `finalize()` fetches
    // every authorization again to learn the names, a request no real client sends.
    let csr = fresh_csr(&name)?;
    let identifiers = [Identifier::Dns(name)];
    let mut order = {
        let _serial = if shared.config.serialize_new_order {
            Some(shared.new_order_lock.lock().await)
        } else {
            None
        };
        account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("newOrder: {e}"))?
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or("no http-01 challenge offered")?;
        let key_authorization = challenge.key_authorization().as_str().to_string();
        shared
            .tokens
            .lock()
            .expect("tokens lock")
            .insert(challenge.token.clone(), key_authorization);
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    let status = order
        .poll_ready(&retries())
        .await
        .map_err(|e| format!("order: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!("order ended {status:?}"));
    }
    order
        .finalize_csr(&csr)
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = certificate(&mut order).await?;
    if let Some(path) = &shared.config.certificates_out {
        let _one_writer = shared.chains_out.lock().expect("writer lock");
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(chain.as_bytes()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The certificate chain of a finalized order. As lego and cert-manager do, an order that
/// finalize answered `valid` is downloaded without fetching it again (instant-acme's
/// `poll_certificate` fetches it once more, as certbot does); any other is polled with
/// [`retries`], which honours the server's Retry-After.
async fn certificate(order: &mut instant_acme::Order) -> Result<String, String> {
    let chain = if order.state().status == OrderStatus::Valid {
        order.certificate().await.and_then(|chain| {
            chain.ok_or(instant_acme::Error::Str(
                "a valid order without its certificate",
            ))
        })
    } else {
        order.poll_certificate(&retries()).await
    };
    chain.map_err(|e| format!("certificate: {e}"))
}

/// A CSR for `name` (DNS SAN, empty subject) under a fresh P-256 key, in DER.
fn fresh_csr(name: &str) -> Result<Vec<u8>, String> {
    let made = || -> Result<Vec<u8>, rcgen::Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        Ok(params.serialize_request(&key)?.der().to_vec())
    };
    made().map_err(|e| format!("CSR: {e}"))
}
