//! Publishing ACME dns-01 records (`_acme-challenge.<name> TXT "<value>"`, RFC 8555 §8.4)
//! for the upstream ACME adapter: RFC 2136 dynamic updates signed with TSIG (RFC 8945)
//! through hickory's DNS client, sent to the zone's primary server; or an operator's hook
//! program for DNS providers with their own APIs.
//!
//! Only the record rampart added is removed again (delete by RDATA), so concurrent
//! challenges for the same name — an apex and its wildcard — do not clobber each other.
//!
//! Imports `config` and `files`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::ResponseCode;
use hickory_client::proto::rr::rdata::TXT;
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use tokio::process::Command;

use crate::config::{Dns01Config, ExecHookConfig, Rfc2136Config};
use crate::files;

/// Allowed clock difference for TSIG (RFC 8945 §5.2.3 recommends 300 s).
const TSIG_FUDGE_SECONDS: u16 = 300;
/// One DNS exchange with the primary.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the primary to serve a record it accepted.
const SERVE_WAIT: Duration = Duration::from_secs(10);

/// One challenge record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// `_acme-challenge.<name>`, without the trailing dot.
    pub name: String,
    /// The challenge token (hooks may want it; RFC 2136 does not).
    pub token: String,
    /// The TXT value: base64url(SHA-256(key authorization)).
    pub value: String,
}

impl ChallengeRecord {
    /// The record for a dns-01 challenge on `identifier` (a wildcard's base name is used).
    pub fn for_identifier(identifier: &str, token: &str, value: String) -> Self {
        let base = identifier.strip_prefix("*.").unwrap_or(identifier);
        ChallengeRecord {
            name: format!("_acme-challenge.{}", base.trim_end_matches('.')),
            token: token.to_string(),
            value,
        }
    }
}

/// Why a record could not be published or removed.
#[derive(Debug, thiserror::Error)]
pub enum Dns01Error {
    /// The TSIG secret cannot be read or used.
    #[error("dns-01 TSIG key: {0}")]
    Key(String),
    /// The DNS server refused or did not answer.
    #[error("DNS update at {server}: {reason}")]
    Update {
        /// The primary.
        server: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The hook failed.
    #[error("dns-01 hook `{program}`: {reason}")]
    Hook {
        /// The program.
        program: String,
        /// Exit status and the end of its stderr, or the spawn error.
        reason: String,
    },
}

/// Where dns-01 records go.
#[derive(Debug)]
pub enum Dns01Publisher {
    /// RFC 2136 to a primary.
    Rfc2136(Rfc2136Publisher),
    /// An operator's program.
    Exec(ExecHook),
}

impl Dns01Publisher {
    /// From `[ca_adapters.<name>.dns01]`; reads the TSIG secret now.
    pub fn from_config(config: &Dns01Config) -> Result<Self, Dns01Error> {
        Ok(match config {
            Dns01Config::Rfc2136(update) => Dns01Publisher::Rfc2136(Rfc2136Publisher::new(update)?),
            Dns01Config::Exec(hook) => Dns01Publisher::Exec(ExecHook {
                config: hook.clone(),
            }),
        })
    }

    /// Add the record; returns once the primary serves it (RFC 2136) or the hook
    /// succeeded, and the configured propagation time has passed.
    pub async fn publish(&self, record: &ChallengeRecord) -> Result<(), Dns01Error> {
        let propagation = match self {
            Dns01Publisher::Rfc2136(update) => {
                update.publish(record).await?;
                update.config.propagation_seconds
            }
            Dns01Publisher::Exec(hook) => {
                hook.run("set", record).await?;
                hook.config.propagation_seconds
            }
        };
        if propagation > 0 {
            tokio::time::sleep(Duration::from_secs(propagation)).await;
        }
        Ok(())
    }

    /// Remove the record again.
    pub async fn remove(&self, record: &ChallengeRecord) -> Result<(), Dns01Error> {
        match self {
            Dns01Publisher::Rfc2136(update) => update.remove(record).await,
            Dns01Publisher::Exec(hook) => hook.run("clear", record).await,
        }
    }
}

/// TSIG-signed RFC 2136 updates to one primary server.
pub struct Rfc2136Publisher {
    config: Rfc2136Config,
    signer: Arc<TSigner>,
}

impl std::fmt::Debug for Rfc2136Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Publisher")
            .field("server", &self.config.server)
            .field("tsig_key_name", &self.config.tsig_key_name)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Publisher {
    fn new(config: &Rfc2136Config) -> Result<Self, Dns01Error> {
        let secret = files::read_configured_secret(
            config.tsig_secret_file.as_deref(),
            config.tsig_secret_env.as_deref(),
        )
        .map_err(Dns01Error::Key)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| Dns01Error::Key("the TSIG secret is not base64".into()))?;
        let algorithm = match config.tsig_algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => return Err(Dns01Error::Key(format!("unsupported algorithm {other}"))),
        };
        let key_name = Name::from_str(&config.tsig_key_name)
            .map_err(|e| Dns01Error::Key(format!("key name: {e}")))?;
        let signer = TSigner::new(key, algorithm, key_name, TSIG_FUDGE_SECONDS)
            .map_err(|e| Dns01Error::Key(e.to_string()))?;
        Ok(Rfc2136Publisher {
            config: config.clone(),
            signer: Arc::new(signer),
        })
    }

    fn failure(&self, reason: impl ToString) -> Dns01Error {
        Dns01Error::Update {
            server: self.config.server,
            reason: reason.to_string(),
        }
    }

    /// A TCP connection to the primary whose messages are TSIG-signed and whose answers
    /// are TSIG-verified.
    async fn connect(&self) -> Result<Client, Dns01Error> {
        let (stream, sender) = TcpClientStream::new(
            self.config.server,
            None,
            Some(DNS_TIMEOUT),
            TokioRuntimeProvider::new(),
        );
        let (client, background) =
            Client::with_timeout(stream, sender, DNS_TIMEOUT, Some(self.signer.clone()))
                .await
                .map_err(|e| self.failure(e))?;
        tokio::spawn(background);
        Ok(client)
    }

    /// The zone to update: configured, or the closest enclosing name for which the primary
    /// answers an SOA.
    async fn zone(&self, client: &mut Client, record: &Name) -> Result<Name, Dns01Error> {
        if let Some(zone) = &self.config.zone {
            return Name::from_str(zone).map_err(|e| self.failure(format!("zone: {e}")));
        }
        let mut candidate = record.base_name();
        while !candidate.is_root() {
            if let Ok(response) = client
                .query(candidate.clone(), DNSClass::IN, RecordType::SOA)
                .await
            {
                let apex = response
                    .answers()
                    .iter()
                    .any(|r| r.record_type() == RecordType::SOA && r.name() == &candidate);
                if apex {
                    return Ok(candidate);
                }
            }
            candidate = candidate.base_name();
        }
        Err(self.failure(format!(
            "the server is authoritative for no zone enclosing {record}; set dns01.zone"
        )))
    }

    fn rrset(&self, name: &Name, value: &str) -> RecordSet {
        let mut set = RecordSet::with_ttl(name.clone(), RecordType::TXT, self.config.ttl);
        set.insert(
            Record::from_rdata(
                name.clone(),
                self.config.ttl,
                RData::TXT(TXT::new(vec![value.to_string()])),
            ),
            0,
        );
        set
    }

    fn name(&self, record: &ChallengeRecord) -> Result<Name, Dns01Error> {
        let mut name = Name::from_str(&record.name)
            .map_err(|e| self.failure(format!("record name {}: {e}", record.name)))?;
        name.set_fqdn(true);
        Ok(name)
    }

    fn check(&self, what: &str, code: ResponseCode) -> Result<(), Dns01Error> {
        match code {
            ResponseCode::NoError => Ok(()),
            other => Err(self.failure(format!("{what} answered {other}"))),
        }
    }

    async fn publish(&self, record: &ChallengeRecord) -> Result<(), Dns01Error> {
        let name = self.name(record)?;
        let mut client = self.connect().await?;
        let zone = self.zone(&mut client, &name).await?;
        let response = client
            .append(self.rrset(&name, &record.value), zone.clone(), false)
            .await
            .map_err(|e| self.failure(e))?;
        self.check("the update", response.response_code())?;
        tracing::debug!(name = %name, zone = %zone, "dns-01: TXT record added by RFC 2136 update");
        // The primary applied it; wait until it answers with it.
        let deadline = tokio::time::Instant::now() + SERVE_WAIT;
        loop {
            if let Ok(answer) = client
                .query(name.clone(), DNSClass::IN, RecordType::TXT)
                .await
            {
                let served = answer.answers().iter().any(|r| match r.data() {
                    RData::TXT(txt) => txt
                        .txt_data()
                        .iter()
                        .any(|part| part.as_ref() == record.value.as_bytes()),
                    _ => false,
                });
                if served {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.failure(format!(
                    "the update was accepted but {name} TXT is not served after {}s",
                    SERVE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn remove(&self, record: &ChallengeRecord) -> Result<(), Dns01Error> {
        let name = self.name(record)?;
        let mut client = self.connect().await?;
        let zone = self.zone(&mut client, &name).await?;
        let response = client
            .delete_by_rdata(self.rrset(&name, &record.value), zone)
            .await
            .map_err(|e| self.failure(e))?;
        self.check("the delete", response.response_code())?;
        tracing::debug!(name = %name, "dns-01: TXT record removed by RFC 2136 update");
        Ok(())
    }
}

/// An operator's program, run as `COMMAND… set|clear RECORD_NAME TOKEN VALUE` with the same
/// values in `RAMPART_DNS01_ACTION`, `RAMPART_DNS01_NAME`, `RAMPART_DNS01_TOKEN` and
/// `RAMPART_DNS01_VALUE`; exit status 0 means done.
#[derive(Debug)]
pub struct ExecHook {
    config: ExecHookConfig,
}

impl ExecHook {
    async fn run(&self, action: &str, record: &ChallengeRecord) -> Result<(), Dns01Error> {
        let program = self.config.command[0].clone();
        let failure = |reason: String| Dns01Error::Hook {
            program: program.clone(),
            reason,
        };
        let mut command = Command::new(&program);
        command
            .args(&self.config.command[1..])
            .args([action, &record.name, &record.token, &record.value])
            .env("RAMPART_DNS01_ACTION", action)
            .env("RAMPART_DNS01_NAME", &record.name)
            .env("RAMPART_DNS01_TOKEN", &record.token)
            .env("RAMPART_DNS01_VALUE", &record.value)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| failure(e.to_string()))?;
        let limit = Duration::from_secs(self.config.timeout_seconds);
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| failure(format!("did not finish within {}s", limit.as_secs())))?
            .map_err(|e| failure(e.to_string()))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" / ");
        Err(failure(format!(
            "{action} exited with {}: {tail}",
            output.status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_record_names() {
        let apex = ChallengeRecord::for_identifier("example.test", "t", "v".into());
        assert_eq!(apex.name, "_acme-challenge.example.test");
        let wildcard = ChallengeRecord::for_identifier("*.example.test", "t", "v".into());
        assert_eq!(wildcard.name, "_acme-challenge.example.test");
        let dotted = ChallengeRecord::for_identifier("a.example.test.", "t", "v".into());
        assert_eq!(dotted.name, "_acme-challenge.a.example.test");
    }

    #[tokio::test]
    async fn hook_gets_arguments_and_environment_and_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$* $RAMPART_DNS01_ACTION $RAMPART_DNS01_VALUE\" >> {}\n[ \"$1\" = set ] || {{ echo cannot clear >&2; exit 3; }}\n",
                log.display()
            ),
        )
        .unwrap();
        let publisher = Dns01Publisher::Exec(ExecHook {
            config: ExecHookConfig {
                command: vec!["/bin/sh".into(), script.display().to_string()],
                timeout_seconds: 5,
                propagation_seconds: 0,
            },
        });
        let record = ChallengeRecord::for_identifier("www.example.test", "tok", "val".into());
        publisher.publish(&record).await.unwrap();
        let error = publisher.remove(&record).await.unwrap_err().to_string();
        assert!(error.contains("cannot clear"), "{error}");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls,
            "set _acme-challenge.www.example.test tok val set val\n\
             clear _acme-challenge.www.example.test tok val clear val\n"
        );
    }

    #[tokio::test]
    async fn hook_timeout_is_an_error() {
        let publisher = Dns01Publisher::Exec(ExecHook {
            config: ExecHookConfig {
                command: vec!["/bin/sh".into(), "-c".into(), "sleep 10".into()],
                timeout_seconds: 1,
                propagation_seconds: 0,
            },
        });
        let record = ChallengeRecord::for_identifier("a.test", "t", "v".into());
        let error = publisher.publish(&record).await.unwrap_err().to_string();
        assert!(error.contains("did not finish within 1s"), "{error}");
    }
}
