//! Configuration files: `rampart::config::Config::load` on a file with the input as its
//! text — TOML syntax (with the line hint of syntax errors), the merge over the embedded
//! defaults (and the demo policy's replacement), figment's typed extraction and
//! `Config::validate` — then, for a configuration that loads, the policy evaluated over
//! it for every template, as the pipeline does for a request.
//!
//! The environment is part of `load`; the fuzz process sets no `RAMPART__*` variable.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rampart::config::Config;
use rampart::model::{Credential, Identifier, Identity, KeyType};
use rampart::policy::{evaluate, PolicyRequest};

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

fn identifiers() -> &'static [Identifier] {
    static IDENTIFIERS: OnceLock<Vec<Identifier>> = OnceLock::new();
    IDENTIFIERS.get_or_init(|| {
        vec![
            Identifier::dns("app.test").expect("a DNS name"),
            Identifier::dns("*.example").expect("a DNS name"),
            Identifier::Ip("127.0.0.1".parse().expect("an address")),
            Identifier::Ip("::1".parse().expect("an address")),
        ]
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
    let identity = Identity {
        name: "fuzz".into(),
        roles: config.roles.keys().cloned().collect(),
        credential: Credential::System,
    };
    for template in config.templates.keys() {
        for (identifiers, key_type, validity_days) in [
            (identifiers(), KeyType::EcdsaP256, None),
            (&identifiers()[..1], KeyType::Rsa { bits: 2048 }, Some(30)),
            (&identifiers()[2..], KeyType::Ed25519, Some(u32::MAX)),
        ] {
            let _ = evaluate(
                &config,
                &PolicyRequest {
                    identity: &identity,
                    template,
                    identifiers,
                    common_name: identifiers.first().map(|_| "app.test"),
                    key_type,
                    validity_days,
                    issued_last_day: 0,
                },
            );
        }
    }
});
