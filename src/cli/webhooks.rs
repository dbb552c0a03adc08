//! `rampart webhooks list|replay|new-secret`.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::ApiArgs;
use crate::lifecycle::webhooks::Secret;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Endpoints with their position in the outbox, retries and dead letters.
    List {
        /// Print the raw JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send events to an endpoint again (exactly one of --seq, --dead-letters, --from).
    Replay {
        /// Endpoint name (`[webhooks.endpoints.<name>]`).
        endpoint: String,
        /// One event, by its outbox position (`seq` in `list`).
        #[arg(long, conflicts_with_all = ["dead_letters", "from"])]
        seq: Option<u64>,
        /// Every dead-lettered event of the endpoint.
        #[arg(long, conflicts_with = "from")]
        dead_letters: bool,
        /// Everything from this outbox position on.
        #[arg(long)]
        from: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a new random signing secret (whsec_…) for an endpoint's secret file.
    NewSecret,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Run a `webhooks` subcommand.
pub async fn run(command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::NewSecret => {
            out!("{}", Secret::generate());
        }
        WebhooksCommand::List { json, api } => {
            let list = ApiClient::new(&api)?.get_json("/api/v1/webhooks").await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            for endpoint in list.as_array().into_iter().flatten() {
                out!("{}  {}", text(&endpoint["name"]), text(&endpoint["url"]));
                out!(
                    "  cursor {}  backlog {}  last success {}",
                    endpoint["cursor"],
                    endpoint["backlog"],
                    text(&endpoint["last_success"])
                );
                if let Some(retry) = endpoint["retrying"].as_object() {
                    out!(
                        "  retrying event {} after {} attempt(s): {}",
                        retry["seq"],
                        retry["attempts"],
                        text(&retry["last_error"])
                    );
                }
                let dead = endpoint["dead_letters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                out!("  dead letters: {}", dead.len());
                for letter in dead {
                    out!(
                        "    seq {:<6} {:<22} {} attempt(s), {}: {}",
                        letter["seq"],
                        text(&letter["kind"]),
                        letter["attempts"],
                        text(&letter["dead_at"]),
                        text(&letter["last_error"])
                    );
                }
            }
        }
        WebhooksCommand::Replay {
            endpoint,
            seq,
            dead_letters,
            from,
            api,
        } => {
            let body = match (seq, dead_letters, from) {
                (Some(seq), false, None) => json!({ "seq": seq }),
                (None, true, None) => json!({ "dead_letters": true }),
                (None, false, Some(from)) => json!({ "from": from }),
                _ => anyhow::bail!("give exactly one of --seq, --dead-letters or --from"),
            };
            let answer = ApiClient::new(&api)?
                .send(
                    Method::POST,
                    &format!("/api/v1/webhooks/{endpoint}/replay"),
                    Some(body),
                )
                .await?;
            let answer: Value = serde_json::from_slice(&answer)?;
            out!(
                "{} event(s) queued for {endpoint}",
                answer["queued"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
