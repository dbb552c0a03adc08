//! `rampart bench`: drive a real protocol against any server (rampart or a peer) and
//! report completed/failed operations, throughput, latency percentiles and — given the
//! server's pid — the server's own CPU time per operation, which is what carries over
//! from machine to machine when client and server share the cores.
//!
//! Imports nothing from the daemon but `pkix`; it talks to servers over the network only.

pub mod acme;
pub mod responders;
pub mod scep;

use std::time::Duration;

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
}
