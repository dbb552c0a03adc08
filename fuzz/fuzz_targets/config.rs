//! Configuration files: `rampart::config::Config::load` on a file with the input as its
//! text — TOML syntax (with the line hint of syntax errors), the merge over the embedded
//! defaults (and the demo policy's replacement), figment's typed extraction and
//! `Config::validate`, and the URLs derived from a configuration that loads.
//!
//! The environment is part of `load`; the fuzz process sets no `RAMPART__*` variable.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rampart::config::Config;

/// One file per process, rewritten for every input (parallel jobs do not share it).
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("rampart-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    if std::fs::write(path(), data).is_err() {
        return;
    }
    let Ok(config) = Config::load(Some(path())) else {
        return;
    };
    let _ = config.crl_url();
    let _ = config.ocsp_url();
    let _ = config.acme.resolver_addr();
});
