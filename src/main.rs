//! The `rampart` binary: logging, runtime, `cli::run` — nothing else.

use std::process::ExitCode;

use clap::Parser;
use rampart::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc malloc: allocation-heavy request handling on many threads
/// (async workers, the blocking pool, sled's I/O threads) contends on glibc's arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_heap_in_small_pages();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rampart::cli::run(cli)) {
        Ok(code) => code,
        // `rampart certs list | head`: the reader has what it wanted.
        Err(error) if rampart::cli::is_closed_output(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// Transparent huge pages off for this process, unless the operator set mimalloc's own
/// `MIMALLOC_ALLOW_THP` (which mimalloc then applies). With the kernel's THP on `always`,
/// every 2 MiB of heap that mimalloc touches becomes resident whole and is zeroed whole
/// when it is faulted in again after a purge: an idle daemon was 78 MiB resident instead
/// of 29, and ACME orders cost 5–19 % more CPU (docs/BENCHMARKS.md, "Huge pages"). Called
/// first thing, before the runtime and the store allocate; a kernel without the call
/// (before 3.15, or not Linux) keeps its behaviour.
fn keep_heap_in_small_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

/// The error and its causes on one line, skipping causes its message already includes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
