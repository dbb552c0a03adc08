//! `rampart discover tls|files|list`. Scans run here, from the operator's vantage point;
//! what they find is posted to the daemon's API, which classifies and records it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::ApiArgs;
use crate::lifecycle::discovery::{self, Source};

/// Base64 text per request at most, well below the API's default body limit (64 KiB).
const BATCH_BYTES: usize = 32 * 1024;
/// Failures printed one by one; beyond this only their count.
const FAILURES_SHOWN: usize = 20;

#[derive(Debug, Subcommand)]
pub enum DiscoverCommand {
    /// Handshake with TLS endpoints and add the certificate each presents to the inventory
    /// (exit status 1 when no target answered).
    Tls {
        /// Comma-separated host:port (sent as SNI), IP:port, [IPv6]:port or CIDR:port
        /// (at most 4096 addresses per range).
        #[arg(long, required = true, value_delimiter = ',')]
        targets: Vec<String>,
        /// Handshakes at once.
        #[arg(
            long,
            default_value_t = discovery::DEFAULT_CONCURRENCY,
            value_parser = parse_concurrency
        )]
        concurrency: usize,
        /// Time per target for connect and handshake: e.g. 5s, 500ms.
        #[arg(long, default_value = "5s", value_parser = parse_timeout)]
        timeout: Duration,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Search a directory (recursively) or a file for PEM, DER and PKCS#12 certificates
    /// and add them to the inventory.
    Files {
        /// Directory or file.
        #[arg(long)]
        path: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List discovered certificates, soonest expiry first.
    List {
        /// Only certificates rampart did not issue.
        #[arg(long)]
        external: bool,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| format!("`{text}`: a number from 1 to 1024"))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 1),
        None => (text.strip_suffix('s').unwrap_or(text), 1000),
    };
    number
        .parse::<u64>()
        .ok()
        .map(|n| Duration::from_millis(n.saturating_mul(unit)))
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(300))
        .ok_or_else(|| format!("`{text}`: use e.g. 5s or 500ms (at most 300s)"))
}

pub async fn run(command: DiscoverCommand) -> anyhow::Result<ExitCode> {
    match command {
        DiscoverCommand::Tls {
            targets,
            concurrency,
            timeout,
            api,
        } => {
            let targets = discovery::parse_targets(targets.iter().map(String::as_str))?;
            // The key is checked before the scan, not after minutes of handshakes.
            let client = ApiClient::new(&api)?;
            let count = targets.len();
            eprintln!("scanning {count} TLS target(s), {concurrency} at a time");
            let probes = discovery::scan_tls(targets, concurrency, timeout).await;
            let mut report = Report::default();
            for probe in probes {
                match probe.result {
                    // The endpoint's own certificate; the chain it sends is its issuers'.
                    Ok(chain) => {
                        let leaf = chain.into_iter().take(1).collect();
                        report
                            .post(&client, Source::Tls, &probe.location, leaf)
                            .await?
                    }
                    Err(reason) => report.failed(&probe.location, "unreachable", &reason),
                }
            }
            report.print()?;
            out!(
                "{count} target(s): {} answered, {} certificate(s) recorded",
                report.places,
                report.items.len()
            );
            Ok(if report.places == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        DiscoverCommand::Files { path, api } => {
            let client = ApiClient::new(&api)?;
            let root = path.clone();
            let findings = tokio::task::spawn_blocking(move || discovery::scan_files(&root))
                .await?
                .with_context(|| format!("searching {}", path.display()))?;
            let mut report = Report::default();
            for finding in findings {
                let location = finding.path.display().to_string();
                match finding.result {
                    Ok(certificates) => {
                        report
                            .post(&client, Source::File, &location, certificates)
                            .await?
                    }
                    Err(reason) => report.failed(&location, "skipped", &reason),
                }
            }
            report.print()?;
            out!(
                "{} file(s) with certificates, {} certificate(s) recorded, {} skipped",
                report.places,
                report.items.len(),
                report.failures.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        DiscoverCommand::List {
            external,
            json,
            api,
        } => {
            let path = if external {
                "/api/v1/discovery?external=true"
            } else {
                "/api/v1/discovery"
            };
            let list = ApiClient::new(&api)?.get_json(path).await?;
            if json {
                out!("{list}");
            } else {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                print_table(&items)?;
                out!("{} certificate(s)", items.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a scan recorded and what it could not.
#[derive(Default)]
struct Report {
    items: Vec<Value>,
    places: usize,
    failures: Vec<String>,
}

impl Report {
    /// Post one place's certificates, in batches the API accepts.
    async fn post(
        &mut self,
        client: &ApiClient,
        source: Source,
        location: &str,
        certificates: Vec<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let encoded: Vec<String> = certificates
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect();
        let mut batch: Vec<&String> = Vec::new();
        let mut size = 0;
        for (i, text) in encoded.iter().enumerate() {
            batch.push(text);
            size += text.len();
            let next = encoded.get(i + 1).map_or(0, String::len);
            if next == 0 || size + next > BATCH_BYTES {
                let body = json!({ "source": source, "location": location, "certificates": batch });
                let answer = client
                    .send(Method::POST, "/api/v1/discovery", Some(body))
                    .await
                    .with_context(|| format!("recording what {location} holds"))?;
                let answer: Value = serde_json::from_slice(&answer)?;
                self.items
                    .extend(answer["items"].as_array().cloned().unwrap_or_default());
                batch.clear();
                size = 0;
            }
        }
        self.places += 1;
        Ok(())
    }

    fn failed(&mut self, location: &str, what: &str, reason: &str) {
        self.failures
            .push(format!("{what:<11} {location}: {reason}"));
    }

    fn print(&self) -> anyhow::Result<()> {
        if !self.items.is_empty() {
            print_table(&self.items)?;
        }
        for line in self.failures.iter().take(FAILURES_SHOWN) {
            out!("{line}");
        }
        if self.failures.len() > FAILURES_SHOWN {
            out!(
                "… and {} more not shown",
                self.failures.len() - FAILURES_SHOWN
            );
        }
        Ok(())
    }
}

/// `text` cut to `width` characters (with an ellipsis when cut).
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn print_table(items: &[Value]) -> anyhow::Result<()> {
    out!(
        "{:<16} {:<8} {:<20} {:<40} {:<32} ISSUER",
        "FINGERPRINT",
        "ISSUED",
        "NOT AFTER",
        "LOCATION",
        "SUBJECT"
    );
    for item in items {
        let text = |key: &str| item[key].as_str().unwrap_or("").to_string();
        let issued = if item["issued_by_rampart"].as_bool().unwrap_or(false) {
            "rampart"
        } else {
            "external"
        };
        out!(
            "{:<16} {:<8} {:<20} {:<40} {:<32} {}",
            text("sha256_fingerprint").get(..16).unwrap_or_default(),
            issued,
            text("not_after"),
            fit(&text("location"), 40),
            fit(&text("subject"), 32),
            text("issuer")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["0s", "", "5m", "-1s", "301s", "99999999999999999999s"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_text_is_cut() {
        assert_eq!(fit("short", 8), "short");
        assert_eq!(fit("0123456789", 5), "0123…");
    }
}
