//! `rampart certs list|show|revoke|export`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::ApiArgs;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// List certificates (filters combine).
    List {
        #[command(flatten)]
        filters: ListFilters,
        /// Print the raw JSON pages instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one certificate, with its PEM.
    Show {
        /// Serial (hex).
        serial: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a certificate.
    Revoke {
        /// Serial (hex).
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
        /// superseded, cessationOfOperation, privilegeWithdrawn, aACompromise (or the code).
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Write a certificate (and the key, when rampart holds it) to delivery targets now,
    /// running their reload commands.
    Deliver {
        /// Serial (hex).
        serial: String,
        /// A `[delivery.targets.<name>]` (repeatable).
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Write a certificate (pem: with chain; der: leaf only; p7b: PKCS#7 with chain).
    Export {
        /// Serial (hex).
        serial: String,
        /// pem, der or p7b.
        #[arg(long, default_value = "pem")]
        format: String,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
pub struct ListFilters {
    /// Some SAN contains this text.
    #[arg(long)]
    san: Option<String>,
    /// valid, expired or revoked.
    #[arg(long)]
    status: Option<String>,
    /// Expiring within e.g. 30d, 12h.
    #[arg(long)]
    expiring_within: Option<String>,
    /// Issuing CA adapter (e.g. local).
    #[arg(long)]
    issuer: Option<String>,
    /// Template.
    #[arg(long)]
    template: Option<String>,
    /// Owner identity.
    #[arg(long)]
    owner: Option<String>,
    /// Stop after this many certificates (default: all).
    #[arg(long)]
    limit: Option<usize>,
}

fn query_string(filters: &ListFilters, after: Option<&str>) -> String {
    let pairs = [
        ("san", filters.san.as_deref()),
        ("status", filters.status.as_deref()),
        ("expiring_within", filters.expiring_within.as_deref()),
        ("issuer", filters.issuer.as_deref()),
        ("template", filters.template.as_deref()),
        ("owner", filters.owner.as_deref()),
        ("after", after),
    ];
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

pub(super) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sans_text(cert: &Value) -> String {
    cert["sans"]
        .as_array()
        .map(|sans| {
            sans.iter()
                .filter_map(|s| s["value"].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub async fn run(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::List { filters, json, api } => {
            let client = ApiClient::new(&api)?;
            let mut after: Option<String> = None;
            let mut shown = 0usize;
            let mut stdout = std::io::stdout().lock();
            // The header only once the first page arrived, so that errors print alone.
            let mut header_printed = json;
            'pages: loop {
                let page = client
                    .get_json(&format!(
                        "/api/v1/certificates{}",
                        query_string(&filters, after.as_deref())
                    ))
                    .await?;
                if json {
                    writeln!(stdout, "{page}")?;
                }
                if !header_printed {
                    writeln!(
                        stdout,
                        "{:<34} {:<8} {:<21} {:<10} {:<12} SANS",
                        "SERIAL", "STATUS", "NOT AFTER", "TEMPLATE", "OWNER"
                    )?;
                    header_printed = true;
                }
                for cert in page["items"].as_array().into_iter().flatten() {
                    if filters.limit.is_some_and(|limit| shown >= limit) {
                        break 'pages;
                    }
                    shown += 1;
                    if !json {
                        writeln!(
                            stdout,
                            "{:<34} {:<8} {:<21} {:<10} {:<12} {}",
                            cert["serial"].as_str().unwrap_or(""),
                            cert["status"].as_str().unwrap_or(""),
                            cert["not_after"].as_str().unwrap_or(""),
                            cert["template"].as_str().unwrap_or(""),
                            cert["owner"].as_str().unwrap_or(""),
                            sans_text(cert)
                        )?;
                    }
                }
                match page["next_after"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
        }
        CertsCommand::Show { serial, api } => {
            let client = ApiClient::new(&api)?;
            let cert = client
                .get_json(&format!("/api/v1/certificates/{}", urlencode(&serial)))
                .await?;
            out!("{}", serde_json::to_string_pretty(&cert)?);
        }
        CertsCommand::Revoke {
            serial,
            reason,
            api,
        } => {
            let client = ApiClient::new(&api)?;
            let path = format!("/api/v1/certificates/{}/revoke", urlencode(&serial));
            let body = client
                .send(Method::POST, &path, Some(json!({ "reason": reason })))
                .await?;
            let cert: Value = serde_json::from_slice(&body)?;
            out!(
                "revoked {} ({})",
                cert["serial"].as_str().unwrap_or(&serial),
                cert["revocation"]["reason"].as_str().unwrap_or("")
            );
        }
        CertsCommand::Deliver {
            serial,
            targets,
            api,
        } => {
            let client = ApiClient::new(&api)?;
            let path = format!("/api/v1/certificates/{}/deliver", urlencode(&serial));
            let body = client
                .send(Method::POST, &path, Some(json!({ "targets": targets })))
                .await?;
            let outcomes: Vec<Value> = serde_json::from_slice(&body)?;
            let mut failed = false;
            for outcome in &outcomes {
                let target = outcome["target"].as_str().unwrap_or("?");
                match outcome["error"].as_str() {
                    None => out!("delivered {serial} to {target}"),
                    Some(error) => {
                        failed = true;
                        out!("NOT delivered to {target}: {error}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        CertsCommand::Export {
            serial,
            format,
            out,
            api,
        } => {
            let client = ApiClient::new(&api)?;
            let path = format!(
                "/api/v1/certificates/{}/download?format={}",
                urlencode(&serial),
                urlencode(&format)
            );
            let body = client.send(Method::GET, &path, None).await?;
            match out {
                Some(file) => {
                    crate::files::write_public(&file, &body)
                        .with_context(|| format!("writing {}", file.display()))?;
                    eprintln!("wrote {}", file.display());
                }
                None => std::io::stdout().lock().write_all(&body)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
