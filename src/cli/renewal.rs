//! `rampart renewal list|scan`.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::client::ApiClient;
use super::ApiArgs;

#[derive(Debug, Subcommand)]
pub enum RenewalCommand {
    /// Certificates rampart renews or delivers itself, with their windows and state.
    List {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run the renewal scan now instead of waiting for the scheduler.
    Scan {
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Run a `renewal` subcommand.
pub async fn run(command: RenewalCommand) -> anyhow::Result<ExitCode> {
    match command {
        RenewalCommand::List { json, api } => {
            let list = ApiClient::new(&api)?.get_json("/api/v1/renewal").await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            out!(
                "{:<34} {:<10} {:<6} {:<21} {:<34} TARGETS",
                "SERIAL",
                "TEMPLATE",
                "AUTO",
                "WINDOW OPENS",
                "RENEWED BY"
            );
            for item in list.as_array().into_iter().flatten() {
                let targets: Vec<String> = item["delivery_targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                out!(
                    "{:<34} {:<10} {:<6} {:<21} {:<34} {}",
                    text(&item["serial"]),
                    text(&item["template"]),
                    text(&item["auto_renew"]),
                    text(&item["window_opens"]),
                    text(&item["renewed_by"]),
                    targets.join(",")
                );
            }
        }
        RenewalCommand::Scan { api } => {
            let body = ApiClient::new(&api)?
                .send(Method::POST, "/api/v1/renewal/scan", None)
                .await?;
            let report: Value = serde_json::from_slice(&body)?;
            out!("due: {}", report["due"]);
            for pair in report["renewed"].as_array().into_iter().flatten() {
                out!("renewed {} -> {}", text(&pair[0]), text(&pair[1]));
            }
            for serial in report["failed"].as_array().into_iter().flatten() {
                out!("renewal failed: {}", text(serial));
            }
            for serial in report["pending"].as_array().into_iter().flatten() {
                out!("renewal waits for approval: {}", text(serial));
            }
            for serial in report["expiring_events"].as_array().into_iter().flatten() {
                out!("certificate_expiring sent: {}", text(serial));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
