//! The upstream ACME CA adapter end to end, with a second rampart as the upstream ACME CA
//! (external account binding required there) and the adapter's exec hook publishing the
//! dns-01 records into the test DNS server the upstream validates against. The RFC 2136
//! path against a real authoritative server (Knot) and Debian's pebble as the upstream are
//! in `conformance/acme-upstream-pebble.sh`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{config_for, csr, p256, start_with, TestDaemon};
use der::Decode;
use rampart::clock::SystemClock;
use rampart::config::{
    CaAdapterConfig, Config, Dns01Config, EstUserConfig, ExecHookConfig, RoleConfig,
    UpstreamAcmeConfig,
};
use rampart::model::Protocol;
use rampart_acme::validation::test_support::{txt_record, DnsResponder, TestRecord};

const USER: &str = "device-7";
const PASSWORD: &str = "s3cret";

/// The upstream: a rampart whose ACME directory takes accounts only with an EAB key, for
/// names in `www.example` and `dev.example`, validating dns-01 at `dns`.
async fn upstream(dir: &Path, dns: &DnsResponder) -> TestDaemon {
    let mut config = config_for(dir);
    config.acme.dns_resolver = dns.addr.to_string();
    config.acme.allow_private_targets = true;
    let profile = config.acme.profiles.get_mut("default").unwrap();
    profile.anonymous_role = String::new();
    config.roles.insert(
        "downstream-ra".into(),
        RoleConfig {
            templates: vec!["server".into()],
            dns_names: vec![
                "www.example".to_string().try_into().unwrap(),
                "dev.example".to_string().try_into().unwrap(),
            ],
            ip_ranges: vec![],
            email_domains: vec![],
            uri_prefixes: vec![],
            manage: false,
            dns_checks: None,
        },
    );
    start_with(config, Arc::new(SystemClock), None).await
}

/// The downstream rampart: templates `server` and `client` signed by `upstream` through the
/// `acme` adapter, whose hook appends `set|clear NAME TOKEN VALUE` lines to `hook_log`.
async fn downstream(
    dir: &Path,
    upstream: &TestDaemon,
    eab: &serde_json::Value,
    hook_log: &Path,
) -> TestDaemon {
    let mut config: Config = config_for(dir);
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let eab_file = secrets.join("eab.key");
    std::fs::write(&eab_file, eab["hmac_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&eab_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hook = secrets.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            // A dns-01 hook returns once the DNS server serves its change: this one waits
            // (at most 5 s) until `serve_hook_records` has applied its line.
            "#!/bin/sh\nlog={log}\necho \"$1 $2 $3 $4\" >> \"$log\"\nn=$(wc -l < \"$log\")\n\
             for _ in $(seq 500); do\n\
             [ \"$(cat \"$log.served\" 2>/dev/null || echo 0)\" -ge $((n)) ] && exit 0\n\
             sleep 0.01\ndone\nexit 1\n",
            log = hook_log.display()
        ),
    )
    .unwrap();
    config.ca_adapters.insert(
        "upstream-ra".into(),
        CaAdapterConfig::Acme(UpstreamAcmeConfig {
            directory_url: upstream.daemon.acme_url.clone().unwrap(),
            trust_root_file: Some(upstream.daemon.ca_bundle.clone()),
            contact: vec!["mailto:pki@example.org".into()],
            eab_key_id: Some(eab["key_id"].as_str().unwrap().into()),
            eab_hmac_key_file: Some(eab_file),
            eab_hmac_key_env: None,
            profile: None,
            order_timeout_seconds: 30,
            dns01: Dns01Config::Exec(ExecHookConfig {
                command: vec!["/bin/sh".into(), hook.display().to_string()],
                timeout_seconds: 10,
                propagation_seconds: 0,
            }),
        }),
    );
    for template in ["server", "client"] {
        config.templates.get_mut(template).unwrap().ca = Some("upstream-ra".into());
    }
    config.est.users.insert(
        USER.into(),
        EstUserConfig {
            password_hash: common::argon2_hash(PASSWORD),
            roles: vec!["admin".into()],
        },
    );
    start_with(config, Arc::new(SystemClock), None).await
}

/// Serve what the hook publishes: the `set` lines not yet cleared, as TXT records. After
/// each update, `<hook_log>.served` holds the number of log lines served (the hook waits
/// for its own).
fn serve_hook_records(dns: Arc<DnsResponder>, hook_log: std::path::PathBuf) {
    tokio::spawn(async move {
        loop {
            let text = std::fs::read_to_string(&hook_log).unwrap_or_default();
            let mut live: Vec<(String, String)> = Vec::new();
            for line in text.lines() {
                let parts: Vec<&str> = line.split(' ').collect();
                let entry = (parts[1].to_string(), parts[3].to_string());
                match parts[0] {
                    "set" => live.push(entry),
                    _ => live.retain(|e| e != &entry),
                }
            }
            let records: Vec<TestRecord> = live
                .iter()
                .map(|(name, value)| txt_record(name, vec![value.as_str()]))
                .collect();
            dns.set_records(records);
            let served = hook_log.with_extension("log.served");
            let partial = hook_log.with_extension("log.served.tmp");
            std::fs::write(&partial, text.lines().count().to_string()).unwrap();
            std::fs::rename(&partial, &served).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

struct Lab {
    up: TestDaemon,
    down: TestDaemon,
    hook_log: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn lab() -> Lab {
    let (up_dir, down_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dns = Arc::new(DnsResponder::start(vec![]).await);
    let up = upstream(up_dir.path(), &dns).await;
    let (status, eab) = up
        .post(
            "/api/v1/acme/eab-keys",
            serde_json::json!({"identity": "downstream", "roles": ["downstream-ra"]}),
        )
        .await;
    assert_eq!(status, 201, "{eab}");
    let hook_log = down_dir.path().join("hook.log");
    serve_hook_records(dns.clone(), hook_log.clone());
    let down = downstream(down_dir.path(), &up, &eab, &hook_log).await;
    Lab {
        up,
        down,
        hook_log,
        _dirs: (up_dir, down_dir),
    }
}

/// `daemon`'s inventory record of `serial`.
fn recorded(daemon: &TestDaemon, serial: &str) -> Option<rampart::model::CertificateRecord> {
    daemon.daemon.pipeline.store().certificate(serial).unwrap()
}

fn serial_of(der: &[u8]) -> String {
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    rampart_acme::ari::serial_hex(cert.tbs_certificate.serial_number.as_bytes())
}

/// POST a simpleenroll with HTTP Basic to `daemon`'s EST listener: status and body.
async fn est_enroll(daemon: &TestDaemon, csr_der: &[u8]) -> (u16, Vec<u8>) {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    let bundle = std::fs::read(&daemon.daemon.ca_bundle).unwrap();
    for cert in reqwest::Certificate::from_pem_bundle(&bundle).unwrap() {
        builder = builder.add_root_certificate(cert);
    }
    let url = format!(
        "https://localhost:{}/.well-known/est/simpleenroll",
        daemon.daemon.est_addr.unwrap().port()
    );
    let response = builder
        .build()
        .unwrap()
        .post(url)
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/pkcs10")
        .body(base64::engine::general_purpose::STANDARD.encode(csr_der))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// How many certificates `daemon`'s inventory lists.
async fn certificates(daemon: &TestDaemon) -> usize {
    let (status, body) = daemon.get("/api/v1/certificates?limit=500").await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().len()
}

fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect()
}

#[tokio::test]
async fn api_and_est_requests_are_signed_upstream_and_revocations_forwarded() {
    let lab = lab().await;

    // API enrollment: the downstream decides, the upstream signs.
    let key = p256();
    let (status, body) = lab
        .down
        .enroll(&csr(&key, Some("www.example"), &["www.example"]), "server")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["issuer"], "upstream-ra", "{body}");
    let serial = body["serial"].as_str().unwrap().to_string();
    let (status, pem) = lab
        .down
        .get(&format!(
            "/api/v1/certificates/{serial}/download?format=pem"
        ))
        .await;
    assert_eq!(status, 200);
    let chain = pem_certificates(pem.as_str().unwrap());
    assert_eq!(serial_of(&chain[0]), serial);
    // Signed by the upstream's issuing CA (which the upstream's chain carries).
    let upstream_issuing = lab.up.daemon.pipeline.ca().chain()[0].clone();
    common::assert_certificate_signed_by(
        &x509_cert::Certificate::from_der(&chain[0]).unwrap(),
        &x509_cert::Certificate::from_der(&upstream_issuing).unwrap(),
    );
    assert_eq!(chain[1], upstream_issuing, "the upstream's chain is served");
    // The upstream recorded it as an ACME issuance to the EAB identity.
    let record = recorded(&lab.up, &serial).expect("the upstream recorded the certificate");
    assert_eq!(
        (record.protocol, record.owner.as_str()),
        (Protocol::Acme, "downstream")
    );
    // The hook set the record and cleared it again.
    let log = std::fs::read_to_string(&lab.hook_log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].starts_with("set _acme-challenge.www.example "),
        "{log}"
    );
    assert!(
        lines[1].starts_with("clear _acme-challenge.www.example "),
        "{log}"
    );
    assert_eq!(lines[0][3..], lines[1][5..], "the same record is cleared");

    // EST simpleenroll (HTTP Basic) on the `client` template, signed upstream too.
    let est_key = p256();
    let csr_der = rampart::pkix::pem::decode(
        &csr(&est_key, Some("dev.example"), &["dev.example"]),
        &["CERTIFICATE REQUEST"],
    )
    .unwrap();
    let (status, body) = est_enroll(&lab.down, &csr_der).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let issued = common::est_certificates(&body);
    assert_eq!(issued.len(), 1);
    common::assert_certificate_signed_by(
        &x509_cert::Certificate::from_der(&issued[0]).unwrap(),
        &x509_cert::Certificate::from_der(&upstream_issuing).unwrap(),
    );
    let record = recorded(&lab.down, &serial_of(&issued[0])).unwrap();
    assert_eq!(
        (
            record.protocol,
            record.issuer.as_str(),
            record.owner.as_str()
        ),
        (Protocol::Est, "upstream-ra", USER)
    );

    // Revocation over the downstream API reaches the upstream first.
    let (status, body) = lab
        .down
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            serde_json::json!({"reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let upstream_record = recorded(&lab.up, &serial).unwrap();
    assert!(upstream_record.revocation.is_some(), "revoked upstream");
}

#[tokio::test]
async fn upstream_refusals_are_reported_per_protocol_and_nothing_is_recorded() {
    let lab = lab().await;
    let before = (certificates(&lab.down).await, certificates(&lab.up).await);

    // The downstream's policy allows `other.example`; the upstream's does not.
    let key = p256();
    let (status, body) = lab
        .down
        .enroll(
            &csr(&key, Some("other.example"), &["other.example"]),
            "server",
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "ca_failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("upstream CA") && message.contains("rejectedIdentifier"),
        "{message}"
    );

    let csr_der = rampart::pkix::pem::decode(
        &csr(&p256(), Some("other.example"), &["other.example"]),
        &["CERTIFICATE REQUEST"],
    )
    .unwrap();
    let (status, body) = est_enroll(&lab.down, &csr_der).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("rejectedIdentifier"));

    // Names dns-01 cannot prove are refused before anything is ordered.
    let (status, body) = lab
        .down
        .enroll(&csr(&p256(), None, &["127.0.0.1"]), "server")
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("dns-01"),
        "{body}"
    );

    assert_eq!(
        (certificates(&lab.down).await, certificates(&lab.up).await),
        before,
        "nothing recorded downstream, nothing issued upstream"
    );
    let failures = lab.down.get("/api/v1/audit?action=issuance_failed").await.1;
    assert_eq!(failures["items"].as_array().unwrap().len(), 3, "{failures}");
}
