//! `rampart bench store`: seed a daemon's data directory with N certificates, straight into
//! the store (no daemon running), then measure what an operator sizes an inventory by:
//! seeding rate, size on disk, how long the store takes to open, and list queries in
//! process.
//!
//! The records are what the daemon itself writes. Each certificate is really signed by the
//! built-in CA of the data directory (`<dir>/ca`, created like `rampart serve` does, so a
//! daemon started on the directory later serves the same CA), and each issuance goes
//! through [`Store::begin_issuance`] and [`Store::complete_issuance`] with the same request
//! record, audit entries (the decision's carries a real [`crate::policy::evaluate`] trace)
//! and `certificate_issued` event as the pipeline's. A share of them is then revoked
//! through [`Store::revoke`]. No shortcut: the rate is the store's durable write path
//! (group commit shares log flushes between the `--writers` threads).
//!
//! What varies (from a seeded generator, so runs are comparable; serial numbers are
//! random as rampart's are): protocol (API, ACME, EST, SCEP) with its owners and template;
//! 1–3 SANs `<service>-<n>.<env>.<zone>` (sometimes a loopback IP address: the demo policy
//! allows those); key type (P-256 or RSA-2048, from a pool of keys); not-after uniform over
//! 400 days, from 35 days ago to 365 days ahead, with the template's lifetime before it.
//!
//! Imports `store`, `ca`, `policy`, `pipeline::events`, `model`, `config` and `pkix`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::progress_bar;
use crate::ca::local::LocalCa;
use crate::ca::{CaAdapter, IssuanceOrder, Serial};
use crate::config::{Config, ExtendedKeyUsage};
use crate::model::{
    CertificateRecord, Credential, Identifier, Identity, KeyType, Protocol, Revocation,
    RevocationReason, StoredStatus,
};
use crate::pipeline::events;
use crate::policy::{Decision, PolicyRequest};
use crate::store::sled_store::{SledStore, TreeSize};
use crate::store::{
    AuditAction, AuditEntry, CertificateQuery, NewEvent, RequestRecord, RequestState,
    RevokeOutcome, Store,
};

/// Services hosts are named after (`<service>-<n>.<env>.<zone>`).
pub const SERVICES: [&str; 40] = [
    "api",
    "www",
    "mail",
    "vpn",
    "db",
    "cache",
    "auth",
    "payments",
    "billing",
    "search",
    "metrics",
    "logs",
    "git",
    "ci",
    "build",
    "cdn",
    "static",
    "media",
    "chat",
    "admin",
    "portal",
    "shop",
    "cart",
    "orders",
    "inventory",
    "crm",
    "erp",
    "hr",
    "wiki",
    "docs",
    "sso",
    "ldap",
    "kafka",
    "redis",
    "postgres",
    "mq",
    "grafana",
    "prometheus",
    "kibana",
    "jenkins",
];
const ENVIRONMENTS: [&str; 7] = ["prod", "staging", "dev", "qa", "eu1", "us1", "ap1"];
const ZONES: [&str; 12] = [
    "example.test",
    "corp.internal",
    "acme.example",
    "shop.example",
    "bank.internal",
    "iot.test",
    "lab.test",
    "eu.corp.internal",
    "us.corp.internal",
    "factory.internal",
    "partner.example",
    "cloud.test",
];

/// Lifetime of seeded certificates on the demo templates.
const SERVER_DAYS: i64 = 397;
const CLIENT_DAYS: i64 = 365;
/// The span not-after values are spread over, and how much of it lies in the past.
const SPREAD_DAYS: i64 = 400;
const EXPIRED_DAYS: i64 = 35;

/// What to run.
#[derive(Debug, Clone)]
pub struct StoreBench {
    /// The data directory (`server.data_dir`): the store goes to `<dir>/store`, the CA to
    /// `<dir>/ca`.
    pub data_dir: PathBuf,
    /// Certificates to add.
    pub certs: usize,
    /// Threads writing to the store at once.
    pub writers: usize,
    /// Certificates generated (signed) before each round of writes.
    pub batch: usize,
    /// Seed of the generator of names, owners, dates and key choices.
    pub seed: u64,
    /// Share of the certificates revoked afterwards, in per mille.
    pub revoked_per_mille: u32,
    /// List queries of each kind timed after reopening (0: none).
    pub queries: usize,
    /// The configuration (CA settings, templates and roles for the policy traces).
    pub config: Config,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct StoreReport {
    /// Certificates added.
    pub certs: usize,
    /// Of which revoked.
    pub revoked: usize,
    /// Time spent generating and signing (not in the store).
    pub generate: Duration,
    /// Time spent in store writes.
    pub write: Duration,
    /// Bytes on disk of `<dir>/store` (allocated blocks).
    pub disk_bytes: u64,
    /// Apparent size of the files of `<dir>/store`.
    pub file_bytes: u64,
    /// Time [`SledStore::open`] took on the seeded store.
    pub open: Duration,
    /// What each tree holds, largest first.
    pub trees: Vec<TreeSize>,
    /// Latency of timed queries by kind: (name, p50, p99, items in the first page).
    pub queries: Vec<(String, Duration, Duration, usize)>,
}

/// splitmix64: small, fast, and good enough to spread test data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn for_item(seed: u64, index: usize) -> Self {
        let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.next();
        rng
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Everything one issuance writes, as the pipeline writes it.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// The request, in state `Issuing` with the reserved serial.
    pub request: RequestRecord,
    /// The policy decision's audit entry.
    pub decision: AuditEntry,
    /// The certificate.
    pub record: CertificateRecord,
    /// The issuance's audit entry.
    pub issued: AuditEntry,
    /// `certificate_issued`.
    pub event: NewEvent,
}

impl Issuance {
    /// Write it as the pipeline does: the serial reserved with the request and its decision,
    /// then the certificate with its audit entry and event (durable on return).
    pub fn write_to(&self, store: &dyn Store) -> anyhow::Result<()> {
        if !store.begin_issuance(&self.request, &self.decision)? {
            bail!(
                "serial {} was already taken (a 128-bit random collision)",
                self.record.serial
            );
        }
        store.complete_issuance(&self.record, &self.issued, &self.event)?;
        Ok(())
    }
}

/// Makes seeded issuances: certificate `i` of seed `s` always has the same names, owner,
/// template, key and dates (serial numbers are random).
#[derive(Debug)]
pub struct Seeder {
    ca: LocalCa,
    config: Config,
    /// Public keys (SPKI BIT STRING contents) with their type.
    keys: Vec<(Vec<u8>, KeyType)>,
    now: OffsetDateTime,
    seed: u64,
}

/// The output of a future that completes when first polled (the built-in CA signs
/// synchronously behind its async trait method).
fn ready<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The `i`-th host name of the seeded inventory's distribution (also what the generator
/// puts first in certificate `i`), for queries that must find something.
pub fn host_name(seed: u64, index: usize) -> String {
    // The first draws of `Generator::make`.
    name(&mut Rng::for_item(seed, index))
}

fn name(rng: &mut Rng) -> String {
    format!(
        "{}-{}.{}.{}",
        rng.pick(&SERVICES),
        rng.below(100_000),
        rng.pick(&ENVIRONMENTS),
        rng.pick(&ZONES)
    )
}

impl Seeder {
    /// Over the built-in CA of `data_dir` (created as `rampart serve` creates it, and
    /// audited in `store`, when missing), with not-after dates spread around now.
    pub fn new(
        data_dir: &Path,
        config: &Config,
        store: &dyn Store,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond");
        Ok(Seeder {
            ca: data_dir_ca(data_dir, config, store, now)?,
            config: config.clone(),
            keys: key_pool()?,
            now,
            seed,
        })
    }

    /// Issuance number `index`: policy evaluated, certificate signed, records built.
    pub fn make(&self, index: usize) -> anyhow::Result<Issuance> {
        let mut rng = Rng::for_item(self.seed, index);
        // First, so that `host_name` finds it.
        let first = name(&mut rng);
        // Protocol mix: most certificates come through ACME and the API, devices use EST
        // and SCEP.
        let (protocol, owner, template) = match rng.below(100) {
            0..=44 => (
                Protocol::Acme,
                format!("acme:acct-{:03}", rng.below(200)),
                "server",
            ),
            45..=74 => (
                Protocol::Api,
                format!("team-{:02}", rng.below(12) + 1),
                if rng.below(4) == 0 {
                    "client"
                } else {
                    "server"
                },
            ),
            75..=89 => (
                Protocol::Est,
                format!("est-gw-{}", rng.below(5) + 1),
                "client",
            ),
            _ => (Protocol::Scep, "mdm".to_string(), "client"),
        };
        let mut sans = vec![Identifier::dns(&first).map_err(anyhow::Error::msg)?];
        for _ in 0..rng.below(3) {
            let extra = match rng.below(10) {
                // An address the demo policy allows.
                0 => Identifier::Ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    127,
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                    rng.below(254) as u8 + 1,
                ))),
                1..=4 => {
                    // The service alias of the host: `<service>.<env>.<zone>`.
                    let alias = first.split_once('-').map_or("", |(service, _)| service);
                    let rest = first.split_once('.').map_or("", |(_, rest)| rest);
                    Identifier::dns(&format!("{alias}.{rest}")).map_err(anyhow::Error::msg)?
                }
                _ => Identifier::dns(&name(&mut rng)).map_err(anyhow::Error::msg)?,
            };
            if !sans.contains(&extra) {
                sans.push(extra);
            }
        }
        let (public_key, key_type) = rng.pick(&self.keys).clone();
        let not_after = self.now - time::Duration::days(EXPIRED_DAYS)
            + time::Duration::seconds(rng.below((SPREAD_DAYS * 86_400) as u64) as i64);
        let validity_days = if template == "server" {
            SERVER_DAYS
        } else {
            CLIENT_DAYS
        };
        let issued_at = (not_after - time::Duration::days(validity_days))
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond");
        let identity = Identity {
            name: owner.clone(),
            roles: vec!["admin".into()],
            credential: match protocol {
                Protocol::Acme => Credential::AcmeAccount {
                    account_id: owner.trim_start_matches("acme:").into(),
                },
                Protocol::Est => Credential::EstUser {
                    user: owner.clone(),
                },
                _ => Credential::ApiKey {
                    key_id: format!("rpk_{owner}"),
                },
            },
        };
        let common_name = match &sans[0] {
            Identifier::Dns(name) => Some(name.clone()),
            _ => None,
        };
        let evaluation = crate::policy::evaluate(
            &self.config,
            &PolicyRequest {
                identity: &identity,
                template,
                identifiers: &sans,
                common_name: common_name.as_deref(),
                key_type,
                validity_days: Some(validity_days as u32),
                issued_last_day: 0,
                resources: &[],
                dns: None,
            },
        );
        let approval = match evaluation.decision {
            Decision::Approved(approval) => approval,
            Decision::Denied(denial) => bail!(
                "the configuration's policy refuses a seeded request ({}): give a \
                 configuration whose role `admin` allows template `{template}` and the \
                 seeded zones for {validity_days} days",
                denial.reason
            ),
        };
        let request_id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            issued_at.unix_timestamp() as u64,
            0,
        ));
        let serial = Serial::generate();
        let decision = AuditEntry {
            time: issued_at,
            request_id: Some(request_id),
            actor: owner.clone(),
            action: AuditAction::Decision,
            outcome: "approved".into(),
            layer: None,
            rule: None,
            reason: format!(
                "template `{template}` approved for {} name(s)",
                approval.identifiers.len()
            ),
            subject: None,
            details: json!({
                "protocol": protocol,
                "template": template,
                "identifiers": approval.identifiers,
                "validity_days": approval.validity_days,
                "trace": evaluation.trace,
            }),
        };
        let request = RequestRecord {
            request_id,
            protocol,
            identity: owner.clone(),
            template: template.into(),
            identifiers: approval.identifiers.clone(),
            state: RequestState::Issuing {
                serial: serial.to_string(),
            },
            created_at: issued_at,
            updated_at: issued_at,
            pending: None,
            client: None,
        };
        let extended_key_usages = self.config.templates[template].extended_key_usages.clone();
        let order = IssuanceOrder {
            serial: serial.clone(),
            public_key,
            key_type,
            common_name: approval.common_name.clone(),
            sans: approval.identifiers.clone(),
            // The pipeline backdates by a minute.
            not_before: issued_at - time::Duration::minutes(1),
            not_after: issued_at + time::Duration::days(approval.validity_days.into()),
            key_encipherment: matches!(key_type, KeyType::Rsa { .. })
                && extended_key_usages.contains(&ExtendedKeyUsage::ServerAuth),
            extended_key_usages,
            csr_der: Vec::new(),
        };
        let issued = ready(self.ca.issue(&order))
            .context("the built-in CA did not sign synchronously")?
            .context("the CA refused a seeded order")?;
        let metadata = match protocol {
            Protocol::Est => BTreeMap::from([("est_operation".into(), "simpleenroll".into())]),
            _ => BTreeMap::new(),
        };
        let record = CertificateRecord {
            serial: serial.to_string(),
            request_id,
            protocol,
            owner: owner.clone(),
            template: template.into(),
            issuer: self.ca.id().into(),
            subject: issued.subject,
            sans: order.sans,
            key_type,
            not_before: issued.not_before,
            not_after: issued.not_after,
            sha256_fingerprint: crate::pkix::sha256_hex(&issued.der),
            resource: None,
            metadata,
            status: StoredStatus::Valid,
            revocation: None,
            der: issued.der,
            chain: issued.chain,
        };
        let issued_audit = crate::pipeline::issued_audit(&record, owner, issued_at);
        let event = events::issued(&record, issued_at);
        Ok(Issuance {
            request,
            decision,
            record,
            issued: issued_audit,
            event,
        })
    }
}

/// A pool of subject keys: certificates share them (the store does not care whose key a
/// certificate carries; signing a fresh key per certificate would only slow seeding).
fn key_pool() -> anyhow::Result<Vec<(Vec<u8>, KeyType)>> {
    use rcgen::PublicKeyData;
    let mut keys = Vec::new();
    for i in 0..80 {
        let (key, key_type) = if i % 5 == 4 {
            (
                rcgen::KeyPair::generate_rsa_for(
                    &rcgen::PKCS_RSA_SHA256,
                    rcgen::RsaKeySize::_2048,
                )?,
                KeyType::Rsa { bits: 2048 },
            )
        } else {
            (
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
                KeyType::EcdsaP256,
            )
        };
        keys.push((key.der_bytes().to_vec(), key_type));
    }
    Ok(keys)
}

/// The built-in CA of `data_dir`, created as `rampart serve` creates it when missing (and
/// audited the same way).
fn data_dir_ca(
    data_dir: &Path,
    config: &Config,
    store: &dyn Store,
    now: OffsetDateTime,
) -> anyhow::Result<LocalCa> {
    let mut ca_config = config.ca.clone();
    ca_config.crl_url = config.crl_url().unwrap_or_default();
    ca_config.ocsp_url = config.ocsp_url().unwrap_or_default();
    let dir = data_dir.join("ca");
    let (ca, created) = LocalCa::create_or_load(&dir, &ca_config, now)
        .with_context(|| format!("the CA in {}", dir.display()))?;
    if created {
        store.append_audit(&crate::server::ca_created_audit(config, &dir, now))?;
    }
    Ok(ca)
}

impl StoreBench {
    /// Seed, measure and print the report (blocking: call from a blocking thread).
    pub fn run(self) -> anyhow::Result<StoreReport> {
        let store_dir = self.data_dir.join("store");
        crate::files::create_private_dir(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        crate::files::create_private_dir(&store_dir)
            .with_context(|| format!("creating {}", store_dir.display()))?;
        let store = SledStore::open(&store_dir)?;
        let generator = Seeder::new(&self.data_dir, &self.config, &store, self.seed)?;
        let now = generator.now;
        eprintln!(
            "seeding {} certificates into {} ({} writer threads, batches of {})",
            self.certs,
            store_dir.display(),
            self.writers.max(1),
            self.batch.max(1)
        );
        let (mut generate, mut write) = (Duration::ZERO, Duration::ZERO);
        let mut revoke_next = Vec::new();
        let progress = progress_bar(self.certs);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut done = 0;
        while done < self.certs {
            let n = self.batch.max(1).min(self.certs - done);
            let started = Instant::now();
            let batch = generate_batch(&generator, done..done + n, threads)?;
            generate += started.elapsed();
            // Revoke a deterministic share (the serials are random: pick by index).
            for (i, issuance) in batch.iter().enumerate() {
                let mut rng = Rng::for_item(self.seed ^ 0x5eed, done + i);
                if rng.below(1000) < u64::from(self.revoked_per_mille) {
                    revoke_next.push(issuance.record.clone());
                }
            }
            let started = Instant::now();
            write_batch(&store, batch, self.writers.max(1))?;
            write += started.elapsed();
            done += n;
            progress.set_position(done as u64);
        }
        let started = Instant::now();
        let revoked = revoke_all(&store, &revoke_next, now, self.writers.max(1))?;
        write += started.elapsed();
        progress.finish_and_clear();
        drop(store);
        let (disk_bytes, file_bytes) = crate::files::disk_usage(&store_dir)
            .with_context(|| format!("sizing {}", store_dir.display()))?;
        let started = Instant::now();
        let store = SledStore::open(&store_dir)?;
        let open = started.elapsed();
        let mut trees = store.tree_sizes()?;
        trees.sort_by_key(|t| std::cmp::Reverse(t.key_bytes + t.value_bytes));
        let queries = if self.queries > 0 {
            time_queries(&store, self.seed, self.certs, self.queries)?
        } else {
            Vec::new()
        };
        let report = StoreReport {
            certs: self.certs,
            revoked,
            generate,
            write,
            disk_bytes,
            file_bytes,
            open,
            trees,
            queries,
        };
        print_report(&report, self.seed);
        Ok(report)
    }
}

fn generate_batch(
    generator: &Seeder,
    indexes: std::ops::Range<usize>,
    threads: usize,
) -> anyhow::Result<Vec<Issuance>> {
    let next = AtomicUsize::new(indexes.start);
    let made = Mutex::new(Vec::with_capacity(indexes.len()));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= indexes.end {
                            return Ok(());
                        }
                        let issuance = generator.make(i)?;
                        made.lock().expect("batch lock").push((i, issuance));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let mut made = made.into_inner().expect("batch lock");
    made.sort_by_key(|(i, _)| *i);
    Ok(made.into_iter().map(|(_, issuance)| issuance).collect())
}

/// Each issuance as the pipeline writes it: the serial reserved with the request and its
/// decision, then the certificate with its audit entry and event (durable on return).
fn write_batch(store: &SledStore, batch: Vec<Issuance>, writers: usize) -> anyhow::Result<()> {
    let queue = Mutex::new(batch.into_iter());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..writers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let Some(issuance) = queue.lock().expect("queue lock").next() else {
                            return Ok(());
                        };
                        issuance.write_to(store)?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })
}

/// Revoke `records` as the revocation path does (audit entry, event, durable).
fn revoke_all(
    store: &SledStore,
    records: &[CertificateRecord],
    now: OffsetDateTime,
    writers: usize,
) -> anyhow::Result<usize> {
    let queue = Mutex::new(records.iter());
    let revoked = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..writers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let Some(record) = queue.lock().expect("queue lock").next() else {
                            return Ok(());
                        };
                        // Some time between issuance and now.
                        let revoked_at =
                            record.not_before + (now.min(record.not_after) - record.not_before) / 2;
                        let revocation = Revocation {
                            revoked_at,
                            reason: RevocationReason::Superseded,
                            revoked_by: record.owner.clone(),
                        };
                        let audit = AuditEntry {
                            time: revoked_at,
                            request_id: None,
                            actor: record.owner.clone(),
                            action: AuditAction::Revoked,
                            outcome: "ok".into(),
                            layer: None,
                            rule: None,
                            reason: RevocationReason::Superseded.name().into(),
                            subject: Some(record.serial.clone()),
                            details: json!({ "reason_code": RevocationReason::Superseded.code() }),
                        };
                        let mut revoked_record = record.clone();
                        revoked_record.revocation = Some(revocation.clone());
                        let event = events::revoked(&revoked_record, revoked_at);
                        match store.revoke(&record.serial, &revocation, &audit, &event)? {
                            RevokeOutcome::Revoked(_) => {
                                revoked.fetch_add(1, Ordering::SeqCst);
                            }
                            other => bail!("revoking {}: {other:?}", record.serial),
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a revoking thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(revoked.into_inner())
}

/// Makes the `i`-th query of a kind.
type QueryMaker = Box<dyn Fn(usize) -> CertificateQuery>;

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (at(0.5), at(0.99))
}

/// Time the API's list queries in process: the first page (50) of certificates expiring
/// within 30 days, and of SAN substrings that match one certificate, a service's share
/// (1/40), and nothing.
fn time_queries(
    store: &SledStore,
    seed: u64,
    certs: usize,
    rounds: usize,
) -> anyhow::Result<Vec<(String, Duration, Duration, usize)>> {
    let now = OffsetDateTime::now_utc();
    let query = |q: CertificateQuery| -> anyhow::Result<(Duration, usize)> {
        let started = Instant::now();
        let page = store.list_certificates(&q, now)?;
        Ok((started.elapsed(), page.items.len()))
    };
    let mut kinds: Vec<(String, QueryMaker)> = vec![(
        "expiring_within=30d".into(),
        Box::new(|_| CertificateQuery {
            expiring_within: Some(time::Duration::days(30)),
            limit: 50,
            ..Default::default()
        }),
    )];
    let seeded = certs.max(1);
    kinds.push((
        "san=<one host>".into(),
        Box::new(move |i| CertificateQuery {
            san_contains: Some(host_name(seed, (i * 7919) % seeded)),
            limit: 50,
            ..Default::default()
        }),
    ));
    kinds.push((
        "san=payments-".into(),
        Box::new(|_| CertificateQuery {
            san_contains: Some("payments-".into()),
            limit: 50,
            ..Default::default()
        }),
    ));
    kinds.push((
        "san=<no match>".into(),
        Box::new(|_| CertificateQuery {
            san_contains: Some("no-such-host".into()),
            limit: 50,
            ..Default::default()
        }),
    ));
    let mut out = Vec::new();
    for (name, make) in kinds {
        let mut samples = Vec::with_capacity(rounds);
        let mut items = 0;
        for i in 0..rounds {
            let (took, found) = query(make(i))?;
            samples.push(took);
            items = found;
        }
        let (p50, p99) = percentiles(samples);
        out.push((name, p50, p99, items));
    }
    Ok(out)
}

fn print_report(report: &StoreReport, seed: u64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rate = |n: usize, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let total = report.generate + report.write;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "seeded {} certificates ({} revoked) in {:.1} s: {:.0}/s overall; signing {:.0}/s, \
         store writes {:.0}/s",
        report.certs,
        report.revoked,
        total.as_secs_f64(),
        rate(report.certs, total),
        rate(report.certs, report.generate),
        rate(report.certs, report.write),
    );
    println!(
        "store size {:.0} MiB on disk ({:.0} MiB apparent), {:.0} bytes per certificate",
        mib(report.disk_bytes),
        mib(report.file_bytes),
        report.disk_bytes as f64 / report.certs.max(1) as f64
    );
    for tree in &report.trees {
        println!(
            "  tree {:<18} {:>10} entries {:>9.1} MiB ({:.0} bytes per certificate)",
            tree.name,
            tree.entries,
            mib(tree.key_bytes + tree.value_bytes),
            (tree.key_bytes + tree.value_bytes) as f64 / report.certs.max(1) as f64
        );
    }
    println!("store open {:.0} ms", ms(report.open));
    for (name, p50, p99, items) in &report.queries {
        println!(
            "query {name}: p50 {:.2} ms  p99 {:.2} ms  ({items} items)",
            ms(*p50),
            ms(*p99)
        );
    }
    println!(
        "sample SAN query: ?san={} (one certificate), ?san=payments- (1/40 of them)",
        host_name(seed, 0)
    );
    let query_fields: String = report
        .queries
        .iter()
        .enumerate()
        .map(|(i, (_, p50, p99, _))| {
            format!(" q{i}_p50_ms={:.2} q{i}_p99_ms={:.2}", ms(*p50), ms(*p99))
        })
        .collect();
    println!(
        "RESULT protocol=store certs={} revoked={} seconds={:.3} per_second={:.2} \
         write_per_second={:.2} disk_bytes={} open_ms={:.1}{query_fields}",
        report.certs,
        report.revoked,
        total.as_secs_f64(),
        rate(report.certs, total),
        rate(report.certs, report.write),
        report.disk_bytes,
        ms(report.open),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_a_store_the_daemon_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let bench = StoreBench {
            data_dir: dir.path().to_path_buf(),
            certs: 60,
            writers: 3,
            batch: 25,
            seed: 7,
            revoked_per_mille: 100,
            queries: 2,
            config: Config::load_default().unwrap(),
        };
        let report = bench.run().unwrap();
        assert_eq!(report.certs, 60);
        assert!(report.revoked > 0 && report.revoked < 60);
        assert!(report.disk_bytes > 0);
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let now = OffsetDateTime::now_utc();
        let all = store
            .list_certificates(
                &CertificateQuery {
                    limit: 1000,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(all.items.len(), 60);
        assert_eq!(store.revoked().unwrap().len(), report.revoked);
        // Real certificates of the data directory's CA, with the recorded names.
        let first = &all.items[0];
        let parsed = <x509_cert::Certificate as der::Decode>::from_der(&first.der).unwrap();
        assert_eq!(
            rampart_acme::ari::serial_hex(parsed.tbs_certificate.serial_number.as_bytes()),
            first.serial
        );
        assert!(dir.path().join("ca/issuing.cert.pem").exists());
        // The first host name is findable by SAN, as the report says.
        let found = store
            .list_certificates(
                &CertificateQuery {
                    san_contains: Some(host_name(7, 0)),
                    limit: 10,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert!(!found.items.is_empty());
        // Every issuance is in the audit chain, intact.
        assert!(matches!(
            store.verify_audit().unwrap(),
            crate::store::AuditVerification::Intact { .. }
        ));
    }
}
