//! `rampart bench`: drive a real protocol against any server (rampart or a peer) and
//! report completed/failed operations, throughput, latency percentiles and — given the
//! server's pid — the server's own CPU time per operation, which is what carries over
//! from machine to machine when client and server share the cores.
//!
//! The protocol benches import nothing from the daemon but `pkix`; they talk to servers
//! over the network only. `rampart bench store` ([`store`]) is the exception: it seeds and
//! measures a store directory directly, with no daemon running.

pub mod acme;
pub mod est;
pub mod responders;
pub mod scep;
pub mod store;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use x509_cert::Certificate;

/// Name of the counter of serial numbers issued more than once (enrollment benches).
pub const DUPLICATE_SERIALS: &str = "duplicate_serials";

/// Outcome of a run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Latency of each completed operation.
    pub latencies: Vec<Duration>,
    /// Failed operations.
    pub failed: usize,
    /// The first distinct errors.
    pub first_errors: Vec<String>,
    /// Protocol-specific counts (e.g. SCEP's duplicate serials), printed in the summary and
    /// appended to the `RESULT` line as `key=value`.
    pub counters: Vec<(&'static str, usize)>,
}

impl Stats {
    /// Record a failure (keeping up to five distinct messages).
    pub fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.first_errors.len() < 5 && !self.first_errors.contains(&error) {
            self.first_errors.push(error);
        }
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are
    // space-separated: state is field 3, utime 14 and stime 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI userspace sees.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// How long one operation (an ACME order, an enrollment) may take before it counts as
/// failed: a server that stops answering (pebble 2.4 wedges under concurrent newOrder)
/// ends the run with failures instead of hanging it.
pub const OPERATION_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Whether the server under test stopped answering: once an operation has run out of
/// time, no worker starts another.
#[derive(Debug)]
pub(crate) struct Stall {
    stalled: std::sync::atomic::AtomicBool,
    time_limit: Duration,
}

impl Default for Stall {
    fn default() -> Self {
        Stall::with_time_limit(OPERATION_TIME_LIMIT)
    }
}

impl Stall {
    fn with_time_limit(time_limit: Duration) -> Self {
        Stall {
            stalled: std::sync::atomic::AtomicBool::new(false),
            time_limit,
        }
    }

    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    /// `operation`, failed if it takes longer than the time limit (and then the run is
    /// stalled).
    pub(crate) async fn limit<T>(
        &self,
        operation: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.time_limit, operation).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.stalled.store(true, Ordering::SeqCst);
                Err(format!(
                    "no answer within {:?}: the server stalled, no further operation started",
                    self.time_limit
                ))
            }
        }
    }
}

/// Debian's system trust store, used when no bundle is given.
pub(crate) const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The certificates of a PEM bundle (default: [`SYSTEM_BUNDLE`]) as TLS trust anchors.
pub(crate) fn root_store(
    ca_bundle: Option<&std::path::Path>,
) -> Result<rustls::RootCertStore, String> {
    let bundle = ca_bundle.unwrap_or(std::path::Path::new(SYSTEM_BUNDLE));
    let pem = std::fs::read_to_string(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::pkix::pem::decode_certificates(&pem)
        .map_err(|e| format!("{}: {e}", bundle.display()))?
    {
        roots
            .add(der.into())
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
    }
    Ok(roots)
}

/// A progress bar of `len` operations on stderr, hidden when stderr is not a terminal.
pub(crate) fn progress_bar(len: usize) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(len as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress
}

/// Measures the CPU time a server process uses during a run.
pub(crate) struct ServerCpu {
    pid: Option<u32>,
    before: Option<Duration>,
}

impl ServerCpu {
    /// Take the first reading (nothing is measured without a pid).
    pub(crate) fn start(pid: Option<u32>) -> Self {
        ServerCpu {
            pid,
            before: pid.and_then(process_cpu_time),
        }
    }

    /// CPU time used since [`ServerCpu::start`], if both readings worked.
    pub(crate) fn used(&self) -> Option<Duration> {
        let after = self.pid.and_then(process_cpu_time)?;
        Some(after.saturating_sub(self.before?))
    }
}

/// Make `count` items with `make(i)` (i = 0..count) on every core, off the async workers,
/// with a progress bar; returned in index order. Used for the keys and CSRs enrollment
/// benches prepare before the clock starts.
pub(crate) async fn prepare<T, F>(count: usize, make: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> anyhow::Result<T> + Send + Sync + 'static,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let progress = progress_bar(count);
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            let (next, progress, make) = (next.clone(), progress.clone(), make.clone());
            tokio::task::spawn_blocking(move || {
                let mut made = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(made);
                    }
                    made.push((i, make(i)?));
                    progress.inc(1);
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    progress.finish_and_clear();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, item)| item).collect())
}

/// What [`enroll_all`] measured.
#[derive(Debug)]
pub(crate) struct Run {
    /// Latencies, failures and the [`DUPLICATE_SERIALS`] counter.
    pub stats: Stats,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// The server's CPU time over the run, when its pid was given and readable.
    pub server_cpu: Option<Duration>,
}

/// Run one enrollment per prepared item with `concurrency` workers, each taking the next
/// item until none is left or `duration` has passed. `enroll(worker, item)` returns the
/// serial number of the certificate it obtained; serials seen twice are counted as
/// [`DUPLICATE_SERIALS`]. Only this loop is timed.
pub(crate) async fn enroll_all<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    duration: Option<Duration>,
    server_pid: Option<u32>,
    enroll: F,
) -> anyhow::Result<Run>
where
    T: Send + 'static,
    F: Fn(usize, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + Send,
{
    #[derive(Default)]
    struct Tally {
        stats: Stats,
        serials: Vec<Vec<u8>>,
    }
    let progress = progress_bar(items.len());
    let queue = Arc::new(Mutex::new(items.into_iter()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let enroll = Arc::new(enroll);
    let server_cpu = ServerCpu::start(server_pid);
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let stall = Arc::new(Stall::default());
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|worker| {
            let (queue, tally, enroll, progress, stall) = (
                queue.clone(),
                tally.clone(),
                enroll.clone(),
                progress.clone(),
                stall.clone(),
            );
            tokio::spawn(async move {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) || stall.stalled() {
                        return;
                    }
                    let Some(item) = queue.lock().expect("queue lock").next() else {
                        return;
                    };
                    let begun = Instant::now();
                    let outcome = stall.limit(enroll(worker, item)).await;
                    let latency = begun.elapsed();
                    let mut tally = tally.lock().expect("tally lock");
                    match outcome {
                        Ok(serial) => {
                            tally.stats.latencies.push(latency);
                            tally.serials.push(serial);
                        }
                        Err(error) => tally.stats.fail(error),
                    }
                    progress.inc(1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed();
    let server_cpu = server_cpu.used();
    progress.finish_and_clear();
    let Tally { mut stats, serials } = std::mem::take(&mut *tally.lock().expect("tally lock"));
    let distinct = serials.iter().collect::<HashSet<_>>().len();
    stats
        .counters
        .push((DUPLICATE_SERIALS, serials.len() - distinct));
    Ok(Run {
        stats,
        elapsed,
        server_cpu,
    })
}

/// The serial number (DER INTEGER contents) of the one certificate among `certificates`
/// (DER) whose public key is `key`: an enrollment answer must deliver exactly one.
pub(crate) fn issued_serial(
    certificates: &[Vec<u8>],
    key: &spki::SubjectPublicKeyInfoOwned,
) -> Result<Vec<u8>, String> {
    use der::Decode;
    let issued: Vec<Certificate> = certificates
        .iter()
        .filter_map(|der| Certificate::from_der(der).ok())
        .filter(|c| &c.tbs_certificate.subject_public_key_info == key)
        .collect();
    match issued.as_slice() {
        [one] => Ok(one.tbs_certificate.serial_number.as_bytes().to_vec()),
        [] => Err(format!(
            "none of the {} certificates returned has the CSR's key",
            certificates.len()
        )),
        _ => Err("several certificates returned have the CSR's key".into()),
    }
}

/// Print the human summary and the `RESULT` line.
pub fn report(protocol: &str, stats: &Stats, elapsed: Duration, server_cpu: Option<Duration>) {
    let completed = stats.latencies.len();
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        completed as f64 / seconds
    } else {
        0.0
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p95, p99) = (
        ms(stats.quantile(0.50)),
        ms(stats.quantile(0.95)),
        ms(stats.quantile(0.99)),
    );
    println!(
        "completed {completed}  failed {}  elapsed {seconds:.2} s  throughput {rate:.1}/s",
        stats.failed
    );
    println!("latency p50 {p50:.1} ms  p95 {p95:.1} ms  p99 {p99:.1} ms");
    for (name, value) in &stats.counters {
        println!("{name} {value}");
    }
    for error in &stats.first_errors {
        println!("error: {error}");
    }
    let cpu_per_op = server_cpu
        .filter(|_| completed > 0)
        .map(|cpu| ms(cpu) / completed as f64);
    if let Some(cpu) = cpu_per_op {
        println!("server CPU {cpu:.3} ms per operation");
    }
    let cpu_field = cpu_per_op
        .map(|c| format!(" server_cpu_ms_per_op={c:.3}"))
        .unwrap_or_default();
    let counter_fields: String = stats
        .counters
        .iter()
        .map(|(name, value)| format!(" {name}={value}"))
        .collect();
    println!(
        "RESULT protocol={protocol} completed={completed} failed={} seconds={seconds:.3} per_second={rate:.2} \
         p50_ms={p50:.2} p95_ms={p95:.2} p99_ms={p99:.2}{cpu_field}{counter_fields}",
        stats.failed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_own_cpu_time() {
        let mut stats = Stats {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Default::default()
        };
        assert_eq!(stats.quantile(0.5), Duration::from_millis(51));
        assert_eq!(stats.quantile(0.99), Duration::from_millis(99));
        for _ in 0..10 {
            stats.fail("same".into());
        }
        assert_eq!((stats.failed, stats.first_errors.len()), (10, 1));
        assert!(process_cpu_time(std::process::id()).is_some());
        assert!(process_cpu_time(u32::MAX).is_none());
    }

    #[tokio::test]
    async fn an_operation_past_the_time_limit_fails_and_stalls_the_run() {
        let stall = Stall::with_time_limit(Duration::from_millis(20));
        assert_eq!(stall.limit(async { Ok::<_, String>(1) }).await, Ok(1));
        assert!(!stall.stalled());
        let never = std::future::pending::<Result<(), String>>();
        let error = stall.limit(never).await.unwrap_err();
        assert!(error.contains("stalled"), "{error}");
        assert!(stall.stalled());
    }
}
