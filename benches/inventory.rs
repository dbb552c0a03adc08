//! The inventory and the policy: store insert (a whole issuance, durable), lookup by
//! serial, the expiry-range listing, and policy evaluation with the default configuration.
//!
//! The store is a `SledStore` in a temporary directory, seeded with `rampart bench store`'s
//! realistic records (`INVENTORY` certificates signed by the data directory's CA).
//! `cargo bench --bench inventory`; figures in docs/BENCHMARKS.md.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rampart::bench::store::Seeder;
use rampart::config::Config;
use rampart::model::{Credential, Identifier, Identity, KeyType};
use rampart::policy::{evaluate, Decision, PolicyRequest};
use rampart::store::sled_store::SledStore;
use rampart::store::{CertificateQuery, Store};
use time::OffsetDateTime;

/// Certificates in the store the reads run against.
const INVENTORY: usize = 20_000;

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load_default().unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    let seeder = Seeder::new(dir.path(), &config, &store, 1).unwrap();
    // Seed with two writer threads: durable writes share log flushes.
    let issuances: Vec<_> = (0..INVENTORY).map(|i| seeder.make(i).unwrap()).collect();
    let serials: Vec<String> = issuances.iter().map(|i| i.record.serial.clone()).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(issuance) = issuances.get(i) else {
                    return;
                };
                issuance.write_to(&store).unwrap();
            });
        }
    });
    drop(issuances);
    let mut group = c.benchmark_group("store");
    // One issuance as the pipeline writes it: begin (serial, request, decision audit) and
    // complete (certificate, indexes, audit, event), flushed to disk before returning.
    let fresh = AtomicUsize::new(INVENTORY);
    group.bench_function("insert (begin + complete issuance, durable)", |b| {
        b.iter_batched(
            || seeder.make(fresh.fetch_add(1, Ordering::SeqCst)).unwrap(),
            |issuance| issuance.write_to(&store).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut n = 0;
    group.bench_function(format!("certificate(serial) of {INVENTORY}"), |b| {
        b.iter(|| {
            n = (n + 7919) % serials.len();
            store.certificate(&serials[n]).unwrap().unwrap()
        })
    });
    let now = OffsetDateTime::now_utc();
    let expiring = CertificateQuery {
        expiring_within: Some(time::Duration::days(30)),
        limit: 50,
        ..Default::default()
    };
    group.bench_function(
        format!("list expiring_within=30d, first 50 of {INVENTORY}"),
        |b| b.iter(|| store.list_certificates(&expiring, now).unwrap()),
    );
    group.finish();
}

fn policy(c: &mut Criterion) {
    let config = Config::load_default().unwrap();
    let identity = Identity {
        name: "admin".into(),
        roles: vec!["admin".into()],
        credential: Credential::ApiKey {
            key_id: "rpk_bench".into(),
        },
    };
    let identifiers = vec![
        Identifier::dns("app.bench.test").unwrap(),
        Identifier::dns("www.app.bench.test").unwrap(),
        Identifier::Ip("127.0.0.1".parse().unwrap()),
    ];
    let request = PolicyRequest {
        identity: &identity,
        template: "server",
        identifiers: &identifiers,
        common_name: Some("app.bench.test"),
        key_type: KeyType::EcdsaP256,
        validity_days: Some(90),
        issued_last_day: 0,
        resources: &[],
        dns: None,
    };
    assert!(matches!(
        evaluate(&config, &request).decision,
        Decision::Approved(_)
    ));
    c.bench_function("policy evaluate (default config, 3 names)", |b| {
        b.iter(|| evaluate(&config, &request))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = store, policy
}
criterion_main!(benches);
