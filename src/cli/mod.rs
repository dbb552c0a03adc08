//! Command line: `serve`, `init` and `certs …`. Thin: parse arguments, call `server` or
//! the admin API, print.
//!
//! `certs` subcommands talk to the running daemon's admin API (the store is held by the
//! daemon, and going through the API keeps one place for access checks and audit). They
//! find it from the config (`api.listen`) or `--api-url`, and authenticate with
//! `--api-key` / `RAMPART_API_KEY`.

/// `println!` for command output. A closed stdout (`rampart certs list | head`,
/// `… | grep -q`) becomes an `io::Error` the command returns rather than a panic, and
/// `main` ends quietly on it ([`is_closed_output`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cli::OutputError)?
    }};
}

mod certs;
mod client;
mod discover;
mod renewal;
mod webhooks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::server;

/// Writing a command's output to stdout failed (told apart from the admin API's own I/O
/// errors, which are failures whatever their kind).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub struct OutputError(pub std::io::Error);

/// Whether a command failed only because the reader closed its stdout (a pipe to `head` or
/// `grep -q`). Such a command ends quietly with success, as `cat` and `grep` do.
pub fn is_closed_output(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<OutputError>()
            .is_some_and(|output| output.0.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// rampart: certificate registration authority.
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Run the daemon (embedded defaults when no --config is given).
    Serve {
        /// Configuration file (TOML); environment variables RAMPART__<SECTION>__<KEY> override it.
        #[arg(long, env = "RAMPART_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a fully commented DIR/rampart.toml, create the CA in DIR and print an admin API key.
    Init {
        /// Directory to initialise (created if missing).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        pkcs11: Pkcs11InitArgs,
    },
    /// Inspect, revoke and export issued certificates (through the running daemon's API).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Read a password on stdin and print its argon2 hash (for `[est.users]`).
    HashPassword,
    /// Rewrite the store (server.data_dir/store) with only its live entries, giving back the
    /// disk sled has not cleaned. The daemon must be stopped; minutes at a million certificates.
    Compact {
        /// Configuration file (TOML); environment variables RAMPART__<SECTION>__<KEY> override it.
        #[arg(long, env = "RAMPART_CONFIG")]
        config: Option<PathBuf>,
    },
    /// API keys (through the running daemon's API).
    #[command(subcommand)]
    Apikeys(ApikeysCommand),
    /// Requests waiting for approval (through the running daemon's API).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Dry-run the policy on a CSR: the decision and each layer's verdict, nothing issued.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Managed certificates and the renewal scheduler (through the running daemon's API).
    #[command(subcommand)]
    Renewal(renewal::RenewalCommand),
    /// Webhook endpoints, dead letters and replays (through the running daemon's API).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Re-read the configuration and apply its policy (templates, roles, approvals, key
    /// policy) without a restart; an invalid file changes nothing. Same as SIGHUP.
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check the tamper-evident audit log (through the running daemon's API).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Drive a real protocol against a server and report throughput, latency and the
    /// server's CPU time per operation.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Find certificates on TLS endpoints and in files (scanned from here) and add them to
    /// the inventory, marking those rampart did not issue as external.
    #[command(subcommand)]
    Discover(discover::DiscoverCommand),
}

#[derive(Debug, Subcommand)]
enum ApikeysCommand {
    /// Create a key for an identity with roles; the token is printed once.
    Create {
        /// Identity name.
        #[arg(long)]
        identity: String,
        /// A role (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// List requests waiting for a decision.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one request: who asked, for what, why it waits, and its CSR.
    Show {
        /// Request id.
        request_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approve a request: it is issued now (not by its own requester).
    Approve {
        /// Request id.
        request_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deny a request.
    Deny {
        /// Request id.
        request_id: String,
        /// Why (recorded in the audit log and returned to the client).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Decide on a CSR for a template (exit 0 approved, 1 denied).
    Check {
        /// Template name.
        #[arg(long)]
        template: String,
        /// PEM CSR file.
        #[arg(long)]
        csr: PathBuf,
        /// Lifetime to ask for, in days.
        #[arg(long)]
        validity_days: Option<u32>,
        /// Decide for this identity instead of the API key's (managing roles only).
        #[arg(long)]
        identity: Option<String>,
        /// A role of that identity (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The resource the certificate would be for (server, namespace…).
        #[arg(long)]
        resource: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List audit records (oldest first), filtered.
    List {
        /// Only records by this identity.
        #[arg(long)]
        identity: Option<String>,
        /// Only records mentioning this name (DNS name, IP, serial, key id).
        #[arg(long)]
        name: Option<String>,
        /// Only this outcome: approved, denied, pending, ok, failed.
        #[arg(long)]
        decision: Option<String>,
        /// Only this action: decision, issued, issuance_failed, revoked, api_key_created, …
        #[arg(long)]
        action: Option<String>,
        /// Only requests from this client address or network (203.0.113.0/24).
        #[arg(long)]
        client: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Walk the hash chain; exit 1 and name the first bad record if it was edited,
    /// removed, reordered or truncated.
    Verify {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Full ACME orders with real http-01 validation (works against any ACME server).
    Acme {
        /// Directory URL of the server under test.
        #[arg(long)]
        target: String,
        /// PEM bundle the client trusts (default: /etc/ssl/certs/ca-certificates.crt).
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Parallel workers, one ACME account each.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Orders in all.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Stop starting orders after this many seconds (--count still bounds the run).
        #[arg(long)]
        duration: Option<u64>,
        /// Where the http-01 responder listens; configure the server to validate there.
        #[arg(long, default_value = "0.0.0.0:5002")]
        http01_listen: std::net::SocketAddr,
        /// Where a DNS responder answering every name with 127.0.0.1 listens (UDP); point the
        /// server's resolver at it.
        #[arg(long)]
        dns_listen: Option<std::net::SocketAddr>,
        /// pid of the server, to report its CPU time per order from /proc/<pid>/stat.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Send newOrder requests one at a time (servers that wedge under concurrency).
        #[arg(long)]
        serialize_new_order: bool,
        /// Append every certificate chain received (PEM) to this file.
        #[arg(long)]
        certificates_out: Option<PathBuf>,
    },
    /// Full SCEP PKCSReq enrollments, a fresh RSA key each (works against any SCEP server).
    /// Exits 1 if an enrollment failed or a serial number was issued twice.
    Scep {
        /// SCEP URL of the server under test, e.g. http://127.0.0.1:8080/scep.
        #[arg(long)]
        target: String,
        /// Parallel workers.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Enrollments in all; their keys and CSRs are made before the clock starts.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Stop starting enrollments after this many seconds (--count still bounds the run).
        #[arg(long)]
        duration: Option<u64>,
        /// PKCS#9 challengePassword to put in each CSR.
        #[arg(long)]
        challenge: Option<String>,
        /// Content-encryption algorithm of the request envelope.
        #[arg(long, value_enum, default_value_t = ScepCipher::Aes256)]
        cipher: ScepCipher,
        /// pid of the server, to report its CPU time per enrollment from /proc/<pid>/stat.
        #[arg(long)]
        server_pid: Option<u32>,
        /// RSA key size of each enrollment's key (2048, 3072 or 4096).
        #[arg(long, default_value_t = 2048)]
        key_bits: u32,
    },
    /// EST simpleenroll (RFC 7030), a fresh key and CSR each (works against any EST server).
    /// Exits 1 if an enrollment failed or a serial number was issued twice.
    Est {
        /// EST base URL of the server under test, e.g.
        /// https://localhost:9443/.well-known/est (a label may follow).
        #[arg(long)]
        target: String,
        /// PEM bundle the client trusts (default: /etc/ssl/certs/ca-certificates.crt).
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Parallel workers.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Enrollments in all; their keys and CSRs are made before the clock starts.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Stop starting enrollments after this many seconds (--count still bounds the run).
        #[arg(long)]
        duration: Option<u64>,
        /// keepalive: one connection per worker, reused; handshake: a new connection and
        /// full TLS handshake (no resumption) per enrollment.
        #[arg(long, value_enum, default_value_t = EstMode::Keepalive)]
        mode: EstMode,
        /// HTTP Basic user.
        #[arg(long, requires = "password_env")]
        user: Option<String>,
        /// Environment variable holding the HTTP Basic password.
        #[arg(long, requires = "user")]
        password_env: Option<String>,
        /// TLS client certificate (PEM, leaf first).
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// Private key of the client certificate (PEM).
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// Key type of each enrollment's fresh key.
        #[arg(long, value_enum, default_value_t = EstKey::P256)]
        key_type: EstKey,
        /// DNS zone of the requested names (est-<run>-<n>.<domain>).
        #[arg(long, default_value = "bench.test")]
        domain: String,
        /// pid of the server, to report its CPU time per enrollment from /proc/<pid>/stat.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Seed a data directory's store with N certificates (no daemon may be running on it),
    /// then report seeding rate, size on disk, open time and in-process query latency.
    Store {
        /// The data directory (server.data_dir): store in DIR/store, CA in DIR/ca.
        #[arg(long)]
        data_dir: PathBuf,
        /// Certificates to add.
        #[arg(long, default_value_t = 10_000)]
        certs: usize,
        /// Configuration (CA settings; policy for the decision traces). Default: embedded.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Threads writing to the store at once (durable writes share log flushes).
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Certificates signed before each round of writes.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Seed of the names, owners, dates and key choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of the certificates revoked afterwards, per mille.
        #[arg(long, default_value_t = 10)]
        revoked_per_mille: u32,
        /// Queries of each kind timed in process after reopening (0: none).
        #[arg(long, default_value_t = 50)]
        queries: usize,
    },
}

/// Connection use of `bench est`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EstMode {
    /// One persistent connection per worker.
    Keepalive,
    /// A new connection and full TLS handshake per enrollment.
    Handshake,
}

/// Key type of `bench est` enrollments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EstKey {
    /// ECDSA P-256.
    P256,
    /// RSA 2048.
    Rsa2048,
}

/// Content-encryption algorithm of a SCEP request envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScepCipher {
    /// AES-256-CBC.
    Aes256,
    /// AES-128-CBC.
    Aes128,
    /// Three-key triple DES-CBC.
    Des3,
    /// Single DES-CBC (legacy).
    Des,
}

/// `init` with the issuing CA key in a PKCS#11 token.
#[derive(Debug, Args)]
struct Pkcs11InitArgs {
    /// PKCS#11 module (shared library) of the token, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, requires = "pkcs11_uri")]
    pkcs11_module: Option<PathBuf>,
    /// RFC 7512 URI of the issuing CA key, e.g. "pkcs11:token=rampart;object=issuing-ca":
    /// generated in the token unless it holds that key already. The user PIN comes from
    /// --pkcs11-pin-file or the RAMPART_PKCS11_PIN environment variable.
    #[arg(long, requires = "pkcs11_module")]
    pkcs11_uri: Option<String>,
    /// File holding the token's user PIN (mode 0600), written into the configuration as
    /// ca.pin_file (default: the RAMPART_PKCS11_PIN environment variable).
    #[arg(long, requires = "pkcs11_uri")]
    pkcs11_pin_file: Option<PathBuf>,
}

/// Where and how to reach the admin API.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Configuration file the daemon runs with (to find the API address and CA bundle).
    #[arg(long, env = "RAMPART_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Admin API base URL (default: from the configuration's api.listen).
    #[arg(long, env = "RAMPART_API_URL", global = true)]
    api_url: Option<String>,
    /// API key (`rpk_…`).
    #[arg(long, env = "RAMPART_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// CA bundle to trust when the API is served over HTTPS (default: <data_dir>/ca-bundle.pem).
    #[arg(long, global = true)]
    ca_bundle: Option<PathBuf>,
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()).await,
        Command::Init { dir, pkcs11 } => init(&dir, &pkcs11).await,
        Command::Certs(command) => certs::run(command).await,
        Command::Discover(command) => discover::run(command).await,
        Command::Webhooks(command) => webhooks::run(command).await,
        Command::Reload { api } => {
            let answer = client::ApiClient::new(&api)?
                .send(reqwest::Method::POST, "/api/v1/reload", None)
                .await?;
            let answer: serde_json::Value = serde_json::from_slice(&answer)?;
            out!("policy reloaded");
            for section in answer["needs_restart"].as_array().into_iter().flatten() {
                out!(
                    "  [{}] changed too: it takes effect after a restart",
                    section.as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Renewal(command) => renewal::run(command).await,
        Command::Approvals(command) => approvals(command).await,
        Command::Apikeys(ApikeysCommand::Create {
            identity,
            roles,
            api,
        }) => {
            let body = serde_json::json!({ "identity": identity, "roles": roles });
            let answer = client::ApiClient::new(&api)?
                .send(reqwest::Method::POST, "/api/v1/api-keys", Some(body))
                .await?;
            let key: serde_json::Value = serde_json::from_slice(&answer)?;
            out!(
                "API key for {} (shown only now, stored only as a hash):",
                key["identity"].as_str().unwrap_or("")
            );
            out!("  {}", key["token"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact { config } => {
            let store_dir = Config::load(config.as_deref())?
                .server
                .data_dir
                .join("store");
            if !store_dir.is_dir() {
                bail!("{}: no store there", store_dir.display());
            }
            out!(
                "compacting {} (the daemon must be stopped)…",
                store_dir.display()
            );
            let started = std::time::Instant::now();
            let dir = store_dir.clone();
            let done = tokio::task::spawn_blocking(move || {
                crate::store::sled_store::compaction::compact(&dir)
            })
            .await??;
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            out!(
                "compacted {}: {} entries, {:.0} MiB → {:.0} MiB in {:.1} s",
                store_dir.display(),
                done.entries,
                mib(done.bytes_before),
                mib(done.bytes_after),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword => {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("empty password");
            }
            let mut salt = [0u8; 16];
            aws_lc_rs::rand::fill(&mut salt)
                .map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
            let hash = argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            out!("{hash}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check {
            template,
            csr,
            validity_days,
            identity,
            roles,
            resource,
            api,
        }) => {
            let csr = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading {}", csr.display()))?;
            let body = serde_json::json!({
                "csr": csr, "template": template, "validity_days": validity_days,
                "identity": identity, "roles": roles, "resource": resource,
            });
            let client = client::ApiClient::new(&api)?;
            let answer: serde_json::Value = serde_json::from_slice(
                &client
                    .send(reqwest::Method::POST, "/api/v1/policy/check", Some(body))
                    .await?,
            )?;
            for step in answer["trace"].as_array().into_iter().flatten() {
                out!(
                    "{:<9} {:<7} {}",
                    step["layer"].as_str().unwrap_or(""),
                    step["verdict"].as_str().unwrap_or(""),
                    step["detail"].as_str().unwrap_or("")
                );
            }
            if answer["decision"] == "approved" {
                out!(
                    "APPROVED for {} ({} days)",
                    answer["identity"].as_str().unwrap_or(""),
                    answer["validity_days"]
                );
                Ok(ExitCode::SUCCESS)
            } else {
                out!(
                    "DENIED by {} rule {}: {}",
                    answer["layer"].as_str().unwrap_or(""),
                    answer["rule"].as_str().unwrap_or(""),
                    answer["reason"].as_str().unwrap_or("")
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Audit(AuditCommand::List {
            identity,
            name,
            decision,
            action,
            client,
            limit,
            json,
            api,
        }) => {
            let mut query = vec![format!("limit={limit}")];
            for (key, value) in [
                ("identity", identity),
                ("name", name),
                ("decision", decision),
                ("action", action),
                ("client", client),
            ] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", certs::urlencode(&value)));
                }
            }
            let page = client::ApiClient::new(&api)?
                .get_json(&format!("/api/v1/audit?{}", query.join("&")))
                .await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(ExitCode::SUCCESS);
            }
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
            for record in page["items"].as_array().into_iter().flatten() {
                let entry = &record["entry"];
                let decided = match (entry["layer"].as_str(), entry["rule"].as_str()) {
                    (Some(layer), Some(rule)) => format!(" [{layer}/{rule}]"),
                    _ => String::new(),
                };
                let client = match entry["details"]["client"].as_str() {
                    Some(client) => format!(" (from {client})"),
                    None => String::new(),
                };
                out!(
                    "{:>6} {} {:<14} {:<16} {:<8}{} {}{}",
                    record["seq"],
                    text(&entry["time"]),
                    text(&entry["actor"]),
                    text(&entry["action"]),
                    text(&entry["outcome"]),
                    decided,
                    text(&entry["reason"]),
                    client
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify { api }) => {
            let result = client::ApiClient::new(&api)?
                .get_json("/api/v1/audit/verify")
                .await?;
            match result["result"].as_str() {
                Some("intact") => {
                    out!(
                        "audit log intact: {} records, head {}",
                        result["records"],
                        result["head"].as_str().unwrap_or("")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    out!(
                        "audit log BROKEN at record {}: {}",
                        result["seq"],
                        result["reason"].as_str().unwrap_or("")
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Bench(BenchCommand::Acme {
            target,
            ca_bundle,
            concurrency,
            count,
            duration,
            http01_listen,
            dns_listen,
            server_pid,
            serialize_new_order,
            certificates_out,
        }) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let bench = crate::bench::acme::AcmeBench {
                target,
                ca_bundle,
                concurrency,
                count,
                duration: duration.map(std::time::Duration::from_secs),
                http01_listen,
                dns_listen,
                server_pid,
                serialize_new_order,
                certificates_out,
            };
            let stats = bench.run().await?;
            Ok(if stats.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(BenchCommand::Scep {
            target,
            concurrency,
            count,
            duration,
            challenge,
            cipher,
            server_pid,
            key_bits,
        }) => {
            use rampart_scep::crypto::ContentCipher;
            let bench = crate::bench::scep::ScepBench {
                target,
                concurrency,
                count,
                duration: duration.map(std::time::Duration::from_secs),
                challenge,
                cipher: match cipher {
                    ScepCipher::Aes256 => ContentCipher::Aes256Cbc,
                    ScepCipher::Aes128 => ContentCipher::Aes128Cbc,
                    ScepCipher::Des3 => ContentCipher::DesEde3Cbc,
                    ScepCipher::Des => ContentCipher::DesCbc,
                },
                server_pid,
                key_bits,
            };
            let stats = bench.run().await?;
            let duplicates = stats
                .counters
                .iter()
                .any(|(name, n)| *name == crate::bench::scep::DUPLICATE_SERIALS && *n > 0);
            Ok(if stats.failed == 0 && !duplicates {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(BenchCommand::Est {
            target,
            ca_bundle,
            concurrency,
            count,
            duration,
            mode,
            user,
            password_env,
            client_cert,
            client_key,
            key_type,
            domain,
            server_pid,
        }) => {
            use crate::bench::est::{ConnectionMode, EnrollKey, EstBench, EstCredentials};
            let basic = match (user, password_env) {
                (Some(user), Some(var)) => {
                    let password = std::env::var(&var)
                        .with_context(|| format!("--password-env {var}: not set"))?;
                    Some((user, password))
                }
                _ => None,
            };
            let bench = EstBench {
                target,
                ca_bundle,
                concurrency,
                count,
                duration: duration.map(std::time::Duration::from_secs),
                mode: match mode {
                    EstMode::Keepalive => ConnectionMode::KeepAlive,
                    EstMode::Handshake => ConnectionMode::Handshake,
                },
                credentials: EstCredentials {
                    basic,
                    client_certificate: client_cert.zip(client_key),
                },
                key: match key_type {
                    EstKey::P256 => EnrollKey::EcdsaP256,
                    EstKey::Rsa2048 => EnrollKey::Rsa2048,
                },
                domain,
                server_pid,
            };
            let stats = bench.run().await?;
            let duplicates = stats
                .counters
                .iter()
                .any(|(name, n)| *name == crate::bench::DUPLICATE_SERIALS && *n > 0);
            Ok(if stats.failed == 0 && !duplicates {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(BenchCommand::Store {
            data_dir,
            certs,
            config,
            writers,
            batch,
            seed,
            revoked_per_mille,
            queries,
        }) => {
            let bench = crate::bench::store::StoreBench {
                data_dir,
                certs,
                writers,
                batch,
                seed,
                revoked_per_mille,
                queries,
                config: Config::load(config.as_deref())?,
            };
            tokio::task::spawn_blocking(move || bench.run()).await??;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file)?;
    let source = crate::config::ConfigSource::Loaded(config_file.map(Path::to_path_buf));
    let daemon = server::start_from(config, Arc::new(SystemClock), source.clone()).await?;
    if let Err(error) = print_banner(&daemon) {
        // A daemon whose stdout is closed keeps serving; the banner (and a first start's
        // admin key) is what is lost, so say so where the logs go.
        tracing::warn!(%error, "cannot print the startup banner on stdout");
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                let pipeline = daemon.pipeline.clone();
                let source = source.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let config = source.read().map_err(|e| e.to_string())?;
                    pipeline.reload_policy(config, "SIGHUP")
                })
                .await;
                match outcome {
                    Ok(Ok(needs_restart)) if needs_restart.is_empty() => {}
                    Ok(Ok(needs_restart)) => tracing::warn!(sections = ?needs_restart,
                        "SIGHUP: these sections changed and take effect only after a restart"),
                    Ok(Err(reason)) => tracing::error!(%reason,
                        "SIGHUP: the configuration is invalid; the running policy stays"),
                    Err(error) => tracing::error!(%error, "SIGHUP: reload task failed"),
                }
            }
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    daemon.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// What `serve` prints once the listeners are up: where each protocol is, and a first
/// start's admin key.
fn print_banner(daemon: &server::Daemon) -> anyhow::Result<()> {
    out!("rampart {} is running", env!("CARGO_PKG_VERSION"));
    if let Some(url) = &daemon.api_url {
        out!("  admin API   {url}/api/v1/   (also {url}/healthz and {url}/metrics)");
    }
    let listeners = [
        (
            "ACME",
            &daemon.acme_url,
            "   (profiles: /acme/<profile>/directory)",
        ),
        (
            "EST",
            &daemon.est_url,
            "/   (cacerts, simpleenroll, simplereenroll)",
        ),
        (
            "SCEP",
            &daemon.scep_url,
            "   (profiles: /scep/<profile>; ?operation=GetCACaps|GetCACert|PKIOperation)",
        ),
        ("CRL", &daemon.crl_url, ""),
        ("OCSP", &daemon.ocsp_url, ""),
    ];
    for (name, url, after) in listeners {
        if let Some(url) = url {
            out!("  {name:<11} {url}{after}");
        }
    }
    if let Some(fingerprint) = &daemon.scep_ra_fingerprint {
        out!("  SCEP RA     sha256 {fingerprint}   (scepclient -ca-fingerprint)");
    }
    out!("  CA bundle   {}", daemon.ca_bundle.display());
    out!("  data        {}", daemon.data_dir.display());
    if let Some(key) = &daemon.new_admin_key {
        print_new_key(key)?;
    }
    out!("Stop with Ctrl-C (or SIGTERM); SIGHUP or `rampart reload` reloads the policy.");
    Ok(())
}

fn print_new_key(key: &str) -> anyhow::Result<()> {
    out!();
    out!("First start: an admin API key was created. It is shown only now and stored only as a hash:");
    out!("  export RAMPART_API_KEY={key}");
    out!();
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The embedded commented configuration with `server.data_dir` set to `data_dir`.
fn config_text_for(data_dir: &Path) -> anyhow::Result<String> {
    set_config_value(
        DEFAULT_CONFIG_TOML,
        "data_dir = \"./rampart-data\"",
        "data_dir",
        data_dir,
    )
}

/// `text` with its `default_line` replaced by `key = <value>` (a TOML string).
fn set_config_value(
    text: &str,
    default_line: &str,
    key: &str,
    value: &Path,
) -> anyhow::Result<String> {
    if !text.lines().any(|line| line == default_line) {
        bail!("the embedded configuration lost its `{default_line}` line");
    }
    let value = value
        .to_str()
        .with_context(|| format!("{key}: the path is not UTF-8"))?;
    let value = toml::Value::String(value.to_string());
    Ok(text.replacen(
        &format!("\n{default_line}\n"),
        &format!("\n{key} = {value}\n"),
        1,
    ))
}

/// The `[ca]` lines for a token-held issuing key.
fn with_pkcs11(text: String, pkcs11: &Pkcs11InitArgs) -> anyhow::Result<String> {
    let (Some(module), Some(uri)) = (&pkcs11.pkcs11_module, &pkcs11.pkcs11_uri) else {
        return Ok(text);
    };
    // Refused here, before anything is written: a URI the daemon could not use.
    uri.parse::<crate::ca::pkcs11::Pkcs11Uri>()
        .with_context(|| format!("--pkcs11-uri {uri}"))?;
    let module = std::path::absolute(module)
        .with_context(|| format!("--pkcs11-module {}", module.display()))?;
    if !module.is_file() {
        bail!(
            "--pkcs11-module {}: no such file (for SoftHSM2: apt-get install softhsm2)",
            module.display()
        );
    }
    let text = set_config_value(&text, "key = \"\"", "key", Path::new(uri))?;
    let text = set_config_value(&text, "pkcs11_module = \"\"", "pkcs11_module", &module)?;
    match &pkcs11.pkcs11_pin_file {
        Some(pin_file) => {
            let pin_file = std::path::absolute(pin_file)
                .with_context(|| format!("--pkcs11-pin-file {}", pin_file.display()))?;
            set_config_value(&text, "pin_file = \"\"", "pin_file", &pin_file)
        }
        None => Ok(text),
    }
}

async fn init(dir: &Path, pkcs11: &Pkcs11InitArgs) -> anyhow::Result<ExitCode> {
    let config_path = dir.join("rampart.toml");
    if config_path.exists() {
        bail!(
            "{} already exists; rampart init does not overwrite a configuration",
            config_path.display()
        );
    }
    crate::files::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let text = with_pkcs11(config_text_for(&dir)?, pkcs11)?;
    crate::files::write_public(&config_path, text.as_bytes())
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = Config::load(Some(&config_path))?;
    let boot = match server::bootstrap(config, Arc::new(SystemClock)).await {
        Ok(boot) => boot,
        Err(error) => {
            // No CA was made (a token that refused the PIN, say): take back the
            // configuration so that init can simply be run again.
            if !dir.join("ca").join("ca.json").exists() {
                let _ = std::fs::remove_file(&config_path);
            }
            return Err(error.into());
        }
    };
    // The SCEP RA is made now too, so its fingerprint can go to devices before first start.
    let ra = if boot.pipeline.config().scep.enabled {
        Some(crate::gateway::scep::ensure_ra(&boot.pipeline, &boot.data_dir).await?)
    } else {
        None
    };
    out!("Initialised {}", dir.display());
    out!("  configuration  {}", config_path.display());
    out!("  CA bundle      {}", boot.ca_bundle.display());
    if let Some(uri) = &pkcs11.pkcs11_uri {
        out!("  issuing key    {uri}   (in the PKCS#11 token; no key file)");
    }
    if let Some(ra) = &ra {
        out!(
            "  SCEP RA        sha256 {}",
            crate::pkix::sha256_hex(&ra.certificate_der)
        );
    }
    if let Some(key) = &boot.new_admin_key {
        print_new_key(key)?;
    }
    out!(
        "Start with: rampart serve --config {}",
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn approvals(command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApprovalsCommand::Show { request_id, api } => {
            let path = format!("/api/v1/approvals/{request_id}");
            let request = client::ApiClient::new(&api)?.get_json(&path).await?;
            out!("{}", serde_json::to_string_pretty(&request)?);
        }
        ApprovalsCommand::List { api } => {
            let list = client::ApiClient::new(&api)?
                .get_json("/api/v1/approvals")
                .await?;
            out!(
                "{:<38} {:<16} {:<8} {:<10} IDENTIFIERS",
                "REQUEST",
                "IDENTITY",
                "VIA",
                "TEMPLATE"
            );
            for item in list["items"].as_array().into_iter().flatten() {
                let names: Vec<&str> = item["identifiers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["value"].as_str())
                    .collect();
                out!(
                    "{:<38} {:<16} {:<8} {:<10} {}",
                    item["request_id"].as_str().unwrap_or(""),
                    item["identity"].as_str().unwrap_or(""),
                    item["protocol"].as_str().unwrap_or(""),
                    item["template"].as_str().unwrap_or(""),
                    names.join(",")
                );
            }
        }
        ApprovalsCommand::Approve { request_id, api } => {
            let path = format!("/api/v1/approvals/{request_id}/approve");
            let body = client::ApiClient::new(&api)?
                .send(reqwest::Method::POST, &path, Some(serde_json::json!({})))
                .await?;
            let cert: serde_json::Value = serde_json::from_slice(&body)?;
            out!(
                "approved: certificate {} issued",
                cert["serial"].as_str().unwrap_or("")
            );
        }
        ApprovalsCommand::Deny {
            request_id,
            reason,
            api,
        } => {
            let path = format!("/api/v1/approvals/{request_id}/deny");
            client::ApiClient::new(&api)?
                .send(
                    reqwest::Method::POST,
                    &path,
                    Some(serde_json::json!({ "reason": reason })),
                )
                .await?;
            out!("denied {request_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_counts_as_closed_output() {
        let broken = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let stdout = anyhow::Error::new(OutputError(broken())).context("listing");
        assert!(is_closed_output(&stdout));
        // The admin API connection breaking is a failure, not a satisfied reader.
        let api = anyhow::Error::new(broken()).context("calling the admin API");
        assert!(!is_closed_output(&api));
        let full = anyhow::Error::new(OutputError(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        )));
        assert!(!is_closed_output(&full));
    }

    #[test]
    fn init_config_points_at_the_directory_and_parses() {
        let text = config_text_for(Path::new("/srv/ra \"x\"")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rampart.toml");
        std::fs::write(&file, text).unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.server.data_dir, PathBuf::from("/srv/ra \"x\""));
        assert_eq!(
            config.roles.len(),
            Config::load_default().unwrap().roles.len()
        );
    }

    #[test]
    fn init_writes_the_token_key_into_the_ca_section() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("libtoken.so");
        std::fs::write(&module, b"").unwrap();
        let args = |uri: &str| Pkcs11InitArgs {
            pkcs11_module: Some(module.clone()),
            pkcs11_uri: Some(uri.into()),
            pkcs11_pin_file: Some(dir.path().join("token.pin")),
        };
        let base = config_text_for(dir.path()).unwrap();
        let text = with_pkcs11(base.clone(), &args("pkcs11:token=ra;object=issuing-ca")).unwrap();
        let file = dir.path().join("rampart.toml");
        std::fs::write(&file, text).unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.ca.key, "pkcs11:token=ra;object=issuing-ca");
        assert_eq!(PathBuf::from(&config.ca.pkcs11_module), module);
        assert_eq!(
            PathBuf::from(&config.ca.pin_file),
            dir.path().join("token.pin")
        );
        // Only [ca] changed: tls.key_file and the like keep their defaults.
        assert_eq!(config.tls.key_file, "");

        let error = with_pkcs11(base.clone(), &args("pkcs11:object=k?pin-value=1234"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--pkcs11-uri"), "{error}");
        let missing = Pkcs11InitArgs {
            pkcs11_module: Some(dir.path().join("missing.so")),
            ..args("pkcs11:object=k")
        };
        let error = with_pkcs11(base.clone(), &missing).unwrap_err().to_string();
        assert!(error.contains("no such file"), "{error}");
        let none = Pkcs11InitArgs {
            pkcs11_module: None,
            pkcs11_uri: None,
            pkcs11_pin_file: None,
        };
        assert_eq!(with_pkcs11(base.clone(), &none).unwrap(), base);
    }
}
