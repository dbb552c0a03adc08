//! ACME end to end with instant-acme as the client against a daemon started in-process:
//! http-01, dns-01 (wildcard) and tls-alpn-01 validated against responders on loopback and
//! a test DNS server; refusals; revocation; key rollover; deactivation.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config_for, start_with};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy, RevocationRequest,
};
use rampart::clock::SystemClock;
use rampart::model::{Protocol, StoredStatus};
use rampart_acme::validation::test_support::{
    a_record, caa_record, txt_record, DnsResponder, HttpReply, HttpResponder,
};
use rcgen::PublicKeyData;
use rustls::pki_types::CertificateDer;

/// The daemon with ACME on, a DNS server resolving every test name to 127.0.0.1 and an
/// http-01 responder serving whatever key authorizations the test puts in `tokens`.
struct Lab {
    d: common::TestDaemon,
    dns: DnsResponder,
    tokens: Arc<Mutex<Vec<(String, String)>>>,
    _http: HttpResponder,
    directory: String,
    tlsalpn_port: u16,
}

const NAMES: [&str; 8] = [
    "www.example",
    "late.example",
    "api.example",
    "wild.example",
    "alpn.example",
    "bad.example",
    "caa-allow.example",
    "caa-deny.example",
];

fn base_records() -> Vec<rampart_acme::validation::test_support::TestRecord> {
    NAMES.iter().map(|n| a_record(n, [127, 0, 0, 1])).collect()
}

async fn lab() -> (Lab, tempfile::TempDir) {
    lab_with(|_| {}).await
}

async fn lab_with(adjust: impl FnOnce(&mut rampart::config::Config)) -> (Lab, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let served = tokens.clone();
    let http = HttpResponder::start(move |path: &str| {
        let token = path.trim_start_matches("/.well-known/acme-challenge/");
        match served.lock().unwrap().iter().find(|(t, _)| t == token) {
            Some((_, key_authorization)) => HttpReply::ok(key_authorization.clone()),
            None => HttpReply::status(404),
        }
    })
    .await;
    let dns = DnsResponder::start(base_records()).await;
    // A port for tls-alpn-01 responders, reserved by binding and releasing it.
    let tlsalpn_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config_for(dir.path());
    config.acme.allow_private_targets = true;
    config.acme.http01_port = http.port;
    config.acme.tlsalpn01_port = tlsalpn_port;
    config.acme.dns_resolver = dns.addr.to_string();
    adjust(&mut config);
    let d = start_with(config, Arc::new(SystemClock), None).await;
    let directory = d.daemon.acme_url.clone().unwrap();
    (
        Lab {
            d,
            dns,
            tokens,
            _http: http,
            directory,
            tlsalpn_port,
        },
        dir,
    )
}

impl Lab {
    /// The inventory's record of the leaf of `pem_chain`.
    fn recorded(&self, pem_chain: &str) -> rampart::model::CertificateRecord {
        self.d
            .daemon
            .pipeline
            .store()
            .certificate(&serial_of(pem_chain))
            .unwrap()
            .expect("the certificate is recorded")
    }

    async fn account(&self) -> (Account, AccountCredentials) {
        Account::builder_with_root(&self.d.daemon.ca_bundle)
            .unwrap()
            .create(
                &NewAccount {
                    contact: &["mailto:ops@example.org"],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await
            .unwrap()
    }
}

fn retries() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .timeout(Duration::from_secs(15))
}

/// Complete every authorization of `order` with `kind`, answering through the lab.
async fn authorize(lab: &Lab, order: &mut instant_acme::Order, kind: ChallengeType) {
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.unwrap();
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz.challenge(kind.clone()).expect("challenge offered");
        let key_authorization = challenge.key_authorization();
        let name = challenge.identifier().to_string();
        match kind {
            ChallengeType::Http01 => {
                lab.tokens.lock().unwrap().push((
                    challenge.token.clone(),
                    key_authorization.as_str().to_string(),
                ));
            }
            ChallengeType::Dns01 => {
                let mut records = base_records();
                let base = name.trim_start_matches("*.");
                records.push(txt_record(
                    &format!("_acme-challenge.{base}"),
                    vec![&key_authorization.dns_value()],
                ));
                lab.dns.set_records(records);
            }
            ChallengeType::TlsAlpn01 => {
                tokio::spawn(tls_alpn_responder(
                    lab.tlsalpn_port,
                    name.clone(),
                    key_authorization.digest().as_ref().to_vec(),
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => unreachable!(),
        }
        challenge.set_ready().await.unwrap();
    }
}

/// Serve one RFC 8737 validation connection.
async fn tls_alpn_responder(port: u16, name: String, digest: Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name]).unwrap();
    let mut extension = rcgen::CustomExtension::new_acme_identifier(&digest);
    extension.set_criticality(true);
    params.custom_extensions = vec![extension];
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Built by hand: `with_single_cert` runs webpki, which rejects the critical
    // acmeIdentifier extension.
    let signing_key = provider
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing_key,
    );
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    if let Ok(Ok((stream, _))) =
        tokio::time::timeout(Duration::from_secs(15), listener.accept()).await
    {
        let _ = acceptor.accept(stream).await;
    }
}

/// A new order for `names`, authorized with `kind` and ready to finalize.
async fn ready_order(
    lab: &Lab,
    account: &Account,
    names: &[&str],
    kind: ChallengeType,
) -> instant_acme::Order {
    let identifiers: Vec<Identifier> = names
        .iter()
        .map(|n| Identifier::Dns(n.to_string()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .unwrap();
    assert_eq!(order.state().status, OrderStatus::Pending);
    authorize(lab, &mut order, kind).await;
    assert_eq!(
        order.poll_ready(&retries()).await.unwrap(),
        OrderStatus::Ready
    );
    order
}

async fn issue(lab: &Lab, account: &Account, names: &[&str], kind: ChallengeType) -> String {
    let mut order = ready_order(lab, account, names, kind).await;
    order.finalize().await.unwrap();
    // The built-in CA signs well within `acme.finalize_wait_ms`: the finalize answers with
    // the certificate ready.
    assert_eq!(order.state().status, OrderStatus::Valid);
    order.poll_certificate(&retries()).await.unwrap()
}

fn serial_of(pem_chain: &str) -> String {
    use der::Decode;
    let leaf = rampart::pkix::pem::decode_certificates(pem_chain)
        .unwrap()
        .remove(0);
    let cert = x509_cert::Certificate::from_der(&leaf).unwrap();
    let serial = hex::encode(cert.tbs_certificate.serial_number.as_bytes());
    serial
        .strip_prefix("00")
        .map(str::to_string)
        .unwrap_or(serial)
}

#[tokio::test]
async fn http01_dns01_and_tlsalpn01_orders_are_issued_through_the_pipeline() {
    let (lab, _dir) = lab().await;
    let (account, _) = lab.account().await;

    for (names, kind) in [
        (vec!["www.example", "api.example"], ChallengeType::Http01),
        (vec!["*.wild.example"], ChallengeType::Dns01),
        (vec!["alpn.example"], ChallengeType::TlsAlpn01),
    ] {
        let chain = issue(&lab, &account, &names, kind.clone()).await;
        let certs = rampart::pkix::pem::decode_certificates(&chain).unwrap();
        assert_eq!(certs.len(), 2, "leaf and issuing CA");
        let record = lab.recorded(&chain);
        assert_eq!(record.protocol, Protocol::Acme);
        assert!(record.owner.starts_with("acme:"), "{}", record.owner);
        let sans: Vec<String> = record.sans.iter().map(|s| s.value()).collect();
        assert_eq!(sans.len(), names.len(), "{kind:?}");
        for name in &names {
            assert!(sans.contains(&name.to_string()), "{kind:?}: {sans:?}");
        }
    }
    lab.d.daemon.shutdown().await;
}

#[tokio::test]
async fn refusals_are_problem_documents_and_issue_nothing() {
    let (lab, _dir) = lab().await;
    let (account, _) = lab.account().await;

    // A name outside the demo role: rejectedIdentifier at newOrder.
    let Err(error) = account
        .new_order(&NewOrder::new(&[Identifier::Dns("www.google.com".into())]))
        .await
    else {
        panic!("an order for a name outside the policy was accepted");
    };
    let text = error.to_string();
    assert!(text.contains("rejectedIdentifier"), "{text}");
    // The decision is audited though no request exists yet.
    let denials = lab.d.denied_decisions().await;
    assert_eq!(denials.len(), 1, "{denials:?}");
    let denial = &denials[0];
    assert_eq!(denial["layer"], "names", "{denial}");
    assert!(denial["request_id"].is_null(), "{denial}");
    assert!(
        denial["actor"].as_str().unwrap().starts_with("acme:"),
        "{denial}"
    );
    assert!(
        denial["reason"]
            .as_str()
            .unwrap()
            .contains("`www.google.com`"),
        "{denial}"
    );
    assert_eq!(denial["details"]["protocol"], "acme", "{denial}");
    assert_eq!(denial["details"]["client"], "127.0.0.1", "{denial}");
    assert_eq!(
        denial["details"]["refused"][0]["identifier"], "www.google.com",
        "{denial}"
    );

    // A wrong key authorization: the challenge and the order become invalid.
    let mut order = account
        .new_order(&NewOrder::new(&[Identifier::Dns("bad.example".into())]))
        .await
        .unwrap();
    {
        let mut authorizations = order.authorizations();
        let mut authz = authorizations.next().await.unwrap().unwrap();
        let mut challenge = authz.challenge(ChallengeType::Http01).unwrap();
        lab.tokens
            .lock()
            .unwrap()
            .push((challenge.token.clone(), "not-the-key-authorization".into()));
        // The server may answer with the settled (failed) validation right away.
        if let Err(error) = challenge.set_ready().await {
            assert!(error.to_string().contains("unauthorized"), "{error}");
        }
    }
    let status = order.poll_ready(&retries()).await;
    assert!(
        matches!(status, Ok(OrderStatus::Invalid)) || status.is_err(),
        "{status:?}"
    );
    let mut authorizations = order.authorizations();
    let authz = authorizations.next().await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Invalid);
    let error = authz
        .challenges
        .iter()
        .find_map(|c| c.error.clone())
        .expect("challenge error");
    assert!(format!("{error:?}").contains("unauthorized"), "{error:?}");

    let listed = lab
        .d
        .daemon
        .pipeline
        .store()
        .list_certificates(
            &rampart::store::CertificateQuery {
                limit: 100,
                ..Default::default()
            },
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert!(
        listed.items.iter().all(|c| c.protocol != Protocol::Acme),
        "nothing issued over ACME"
    );
    lab.d.daemon.shutdown().await;
}

/// RFC 8555 §8.2: a validation whose first query fails is tried again after
/// `acme.validation_retry_ms`; an http-01 responder that serves the token only after the
/// client said "ready" is validated on a retry, and without retries the challenge fails.
#[tokio::test]
async fn a_response_set_up_late_is_validated_on_a_retry() {
    for (retry_ms, expected) in [
        (vec![400, 400], OrderStatus::Ready),
        (vec![], OrderStatus::Invalid),
    ] {
        let (lab, _dir) = lab_with(|config| config.acme.validation_retry_ms = retry_ms).await;
        let (account, _) = lab.account().await;
        let mut order = account
            .new_order(&NewOrder::new(&[Identifier::Dns("late.example".into())]))
            .await
            .unwrap();
        {
            let mut authorizations = order.authorizations();
            let mut authz = authorizations.next().await.unwrap().unwrap();
            let mut challenge = authz.challenge(ChallengeType::Http01).unwrap();
            let token = (
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            let tokens = lab.tokens.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tokens.lock().unwrap().push(token);
            });
            // The first query finds no token (404): answered as processing or, with no
            // retry left, as the failure.
            let _ = challenge.set_ready().await;
        }
        let status = order.poll_ready(&retries()).await;
        match expected {
            OrderStatus::Ready => assert_eq!(status.unwrap(), OrderStatus::Ready),
            _ => assert!(
                matches!(status, Ok(OrderStatus::Invalid)) || status.is_err(),
                "{status:?}"
            ),
        }
        lab.d.daemon.shutdown().await;
    }
}

#[tokio::test]
async fn revocation_key_rollover_and_deactivation() {
    let (lab, _dir) = lab().await;
    let (mut account, _) = lab.account().await;
    let chain = issue(&lab, &account, &["www.example"], ChallengeType::Http01).await;
    let leaf = rampart::pkix::pem::decode_certificates(&chain)
        .unwrap()
        .remove(0);

    // Key rollover, then the account still works with its new key.
    let _new_credentials = account.update_key().await.unwrap();
    let second = issue(&lab, &account, &["api.example"], ChallengeType::Http01).await;

    // Revocation by the account.
    account
        .revoke(&RevocationRequest {
            certificate: &CertificateDer::from(leaf.clone()),
            reason: Some(instant_acme::RevocationReason::KeyCompromise),
        })
        .await
        .unwrap();
    let record = lab.recorded(&chain);
    assert_eq!(record.status, StoredStatus::Revoked);
    let again = account
        .revoke(&RevocationRequest {
            certificate: &CertificateDer::from(leaf),
            reason: None,
        })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("alreadyRevoked"), "{again}");

    // Another account may not revoke what it neither owns nor is authorized for.
    let (stranger, _) = lab.account().await;
    let second_leaf = rampart::pkix::pem::decode_certificates(&second)
        .unwrap()
        .remove(0);
    let refused = stranger
        .revoke(&RevocationRequest {
            certificate: &CertificateDer::from(second_leaf),
            reason: None,
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unauthorized"), "{refused}");

    // Deactivation: the account can no longer order.
    let (doomed, credentials) = lab.account().await;
    doomed.deactivate().await.unwrap();
    let restored = Account::builder_with_root(&lab.d.daemon.ca_bundle)
        .unwrap()
        .from_credentials(credentials)
        .await
        .unwrap();
    let Err(error) = restored
        .new_order(&NewOrder::new(&[Identifier::Dns("www.example".into())]))
        .await
    else {
        panic!("a deactivated account could still order");
    };
    assert!(error.to_string().contains("unauthorized"), "{error}");
    lab.d.daemon.shutdown().await;
}

#[tokio::test]
async fn renewal_info_replaces_and_certificate_profiles() {
    let (lab, _dir) = lab_with(|config| {
        config
            .acme
            .profiles
            .get_mut("default")
            .unwrap()
            .certificate_profiles = vec!["client".into()];
        config
            .roles
            .get_mut("acme-demo")
            .unwrap()
            .templates
            .push("client".into());
    })
    .await;
    let (account, _) = lab.account().await;
    let chain = issue(&lab, &account, &["www.example"], ChallengeType::Http01).await;
    let leaf = rampart::pkix::pem::decode_certificates(&chain)
        .unwrap()
        .remove(0);

    // RFC 9773: the suggested window lies inside the certificate's life.
    let aki = rampart_acme::ari::authority_key_id(&leaf).expect("leaf has an AKI");
    let serial = {
        use der::Decode;
        x509_cert::Certificate::from_der(&leaf)
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes()
            .to_vec()
    };
    let id =
        instant_acme::CertificateIdentifier::new(aki.as_slice().into(), serial.as_slice().into());
    let (info, retry) = account.renewal_info(&id).await.unwrap();
    assert!(retry > Duration::from_secs(3600), "{retry:?}");
    let record = lab.recorded(&chain);
    let (start, end) = (info.suggested_window.start, info.suggested_window.end);
    assert!(
        record.not_before < start && start < end && end < record.not_after,
        "{start} {end}"
    );
    // The same window the renewal scheduler acts on.
    assert_eq!(
        start,
        rampart::lifecycle::renewal::window(&lab.d.daemon.pipeline.config(), &record)
    );

    // A renewal order that names what it replaces; the same certificate cannot be replaced twice.
    let identifiers = [Identifier::Dns("www.example".into())];
    let mut renewal = account
        .new_order(&NewOrder::new(&identifiers).replaces(id.clone()))
        .await
        .unwrap();
    authorize(&lab, &mut renewal, ChallengeType::Http01).await;
    assert_eq!(
        renewal.poll_ready(&retries()).await.unwrap(),
        OrderStatus::Ready
    );
    let Err(error) = account
        .new_order(&NewOrder::new(&identifiers).replaces(id))
        .await
    else {
        panic!("a certificate was replaced twice");
    };
    assert!(error.to_string().contains("alreadyReplaced"), "{error}");
    // Finalized, the replacement is recorded as the old certificate's renewal.
    renewal.finalize().await.unwrap();
    let renewed_chain = renewal.poll_certificate(&retries()).await.unwrap();
    let renewed = lab.recorded(&renewed_chain);
    assert_eq!(renewed.metadata["renews"], serial_of(&chain));

    // Certificate profiles: `client` is offered and issues a clientAuth certificate.
    let mut order = account
        .new_order(&NewOrder::new(&identifiers).profile("client"))
        .await
        .unwrap();
    authorize(&lab, &mut order, ChallengeType::Http01).await;
    assert_eq!(
        order.poll_ready(&retries()).await.unwrap(),
        OrderStatus::Ready
    );
    order.finalize().await.unwrap();
    let client_chain = order.poll_certificate(&retries()).await.unwrap();
    let record = lab.recorded(&client_chain);
    assert_eq!(record.template, "client");
    let Err(error) = account
        .new_order(&NewOrder::new(&identifiers).profile("gold"))
        .await
    else {
        panic!("an unknown certificate profile was accepted");
    };
    assert!(error.to_string().contains("invalidProfile"), "{error}");
    lab.d.daemon.shutdown().await;
}

#[tokio::test]
async fn external_account_binding_maps_an_account_to_an_identity() {
    // A profile without anonymous registration: EAB is required.
    let (lab, _dir) = lab_with(|config| {
        config
            .acme
            .profiles
            .get_mut("default")
            .unwrap()
            .anonymous_role = String::new();
    })
    .await;
    let new_account = NewAccount {
        contact: &[],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let builder = || Account::builder_with_root(&lab.d.daemon.ca_bundle).unwrap();
    let Err(error) = builder()
        .create(&new_account, lab.directory.clone(), None)
        .await
    else {
        panic!("an account without EAB was created on an EAB-only profile");
    };
    assert!(
        error.to_string().contains("externalAccountRequired"),
        "{error}"
    );

    let (status, key) = lab
        .d
        .post(
            "/api/v1/acme/eab-keys",
            serde_json::json!({"identity": "team-web", "roles": ["acme-demo"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let mac = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key["hmac_key"].as_str().unwrap())
            .unwrap()
    };
    let eab =
        instant_acme::ExternalAccountKey::new(key["key_id"].as_str().unwrap().to_string(), &mac);
    let (account, _) = builder()
        .create(&new_account, lab.directory.clone(), Some(&eab))
        .await
        .unwrap();
    let chain = issue(&lab, &account, &["www.example"], ChallengeType::Http01).await;
    let record = lab.recorded(&chain);
    assert_eq!(record.owner, "team-web");

    // A key binds one account; a wrong MAC key is refused.
    let Err(error) = builder()
        .create(&new_account, lab.directory.clone(), Some(&eab))
        .await
    else {
        panic!("an EAB key bound two accounts");
    };
    assert!(error.to_string().contains("unauthorized"), "{error}");
    let (_, other) = lab
        .d
        .post(
            "/api/v1/acme/eab-keys",
            serde_json::json!({"identity": "team-db", "roles": ["acme-demo"]}),
        )
        .await;
    let forged = instant_acme::ExternalAccountKey::new(
        other["key_id"].as_str().unwrap().to_string(),
        b"not the key",
    );
    let Err(error) = builder()
        .create(&new_account, lab.directory.clone(), Some(&forged))
        .await
    else {
        panic!("a forged EAB MAC was accepted");
    };
    assert!(error.to_string().contains("unauthorized"), "{error}");
    // Both refused bindings are audited under the identity their key id belongs to.
    let refused = lab.d.refused_credentials().await;
    let seen: Vec<(&str, &str)> = refused
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap(),
                entry["details"]["eab_key_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("team-web", key["key_id"].as_str().unwrap()),
            ("team-db", other["key_id"].as_str().unwrap()),
        ],
        "{refused:?}"
    );
    assert!(refused[1]["reason"]
        .as_str()
        .unwrap()
        .contains("does not verify"));
    for entry in &refused {
        assert_eq!(entry["details"]["client"], "127.0.0.1", "{entry}");
    }
    let (status, _) = lab
        .d
        .post(
            "/api/v1/acme/eab-keys",
            serde_json::json!({"identity": "x", "roles": ["nope"]}),
        )
        .await;
    assert_eq!(status, 400);
    lab.d.daemon.shutdown().await;
}

#[tokio::test]
async fn caa_records_allow_or_forbid_issuance() {
    let (lab, _dir) = lab_with(|config| {
        config
            .acme
            .profiles
            .get_mut("default")
            .unwrap()
            .caa_identities = vec!["rampart.test".into()];
    })
    .await;
    let mut records = base_records();
    records.push(caa_record("caa-allow.example", 0, "issue", "rampart.test"));
    records.push(caa_record(
        "caa-deny.example",
        0,
        "issue",
        "letsencrypt.org",
    ));
    lab.dns.set_records(records);
    let (account, _) = lab.account().await;

    issue(
        &lab,
        &account,
        &["caa-allow.example"],
        ChallengeType::Http01,
    )
    .await;

    let mut order = account
        .new_order(&NewOrder::new(&[Identifier::Dns(
            "caa-deny.example".into(),
        )]))
        .await
        .unwrap();
    {
        let mut authorizations = order.authorizations();
        let mut authz = authorizations.next().await.unwrap().unwrap();
        let mut challenge = authz.challenge(ChallengeType::Http01).unwrap();
        let key_authorization = challenge.key_authorization().as_str().to_string();
        lab.tokens
            .lock()
            .unwrap()
            .push((challenge.token.clone(), key_authorization));
        if let Err(error) = challenge.set_ready().await {
            assert!(error.to_string().contains("caa"), "{error}");
        }
    }
    let _ = order.poll_ready(&retries()).await;
    let mut authorizations = order.authorizations();
    let authz = authorizations.next().await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Invalid);
    let error = authz
        .challenges
        .iter()
        .find_map(|c| c.error.clone())
        .expect("challenge error");
    assert!(
        format!("{error:?}").contains("urn:ietf:params:acme:error:caa"),
        "{error:?}"
    );
    // The refusal is audited (CA/B Forum BR 5.4.1 has CAs log their CAA decisions).
    let denials = lab.d.denied_decisions().await;
    assert_eq!(denials.len(), 1, "{denials:?}");
    let denial = &denials[0];
    assert_eq!(denial["rule"], "caa", "{denial}");
    assert_eq!(denial["layer"], "names", "{denial}");
    assert_eq!(denial["details"]["name"], "caa-deny.example", "{denial}");
    assert_eq!(denial["details"]["stage"], "validation", "{denial}");
    assert_eq!(denial["details"]["method"], "http-01", "{denial}");
    assert_eq!(denial["details"]["problem_type"], "caa", "{denial}");
    // From the challenge response that started the validation.
    assert_eq!(denial["details"]["client"], "127.0.0.1", "{denial}");
    lab.d.daemon.shutdown().await;
}

/// An issuance that outlasts `acme.finalize_wait_ms` (0 here: every one does) is answered
/// `processing` with Retry-After and goes on; polling the order brings its certificate. The
/// wait bounds the CA's time only: a refusal is answered by the finalize itself.
#[tokio::test]
async fn a_finalize_outlasting_the_wait_answers_processing_and_the_order_is_polled() {
    let blocked = common::p256();
    let fingerprint = rampart::pkix::sha256_hex(&blocked.subject_public_key_info());
    let (lab, _dir) = lab_with(|config| {
        config.acme.finalize_wait_ms = 0;
        config.policy.blocked_spki_sha256 = vec![fingerprint.clone()];
    })
    .await;
    let (account, _) = lab.account().await;
    // An order for `name`, ready, and a CSR for it with `key`.
    let ready = |key: rcgen::KeyPair, name: &'static str| {
        let (lab, account) = (&lab, &account);
        async move {
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr_der = params.serialize_request(&key).unwrap().der().to_vec();
            let order = ready_order(lab, account, &[name], ChallengeType::Http01).await;
            (order, csr_der)
        }
    };

    let (mut order, csr_der) = ready(common::p256(), "www.example").await;
    order.finalize_csr(&csr_der).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Processing);
    let chain = order.poll_certificate(&retries()).await.unwrap();
    let record = lab.recorded(&chain);
    assert_eq!(record.protocol, Protocol::Acme);
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Valid);

    let (mut order, csr_der) = ready(blocked, "api.example").await;
    let error = order.finalize_csr(&csr_der).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("badCSR") && text.contains(&fingerprint),
        "{text}"
    );
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Invalid);
    lab.d.daemon.shutdown().await;
}

#[tokio::test]
async fn orders_past_their_retention_are_removed_at_start_and_their_certificates_stay() {
    let (lab, _dir) = lab().await;
    let (account, _) = lab.account().await;
    let chain = issue(&lab, &account, &["www.example"], ChallengeType::Http01).await;
    let serial = serial_of(&chain);
    let entries = |store: &Arc<dyn rampart::store::Store>, namespace: &str| {
        store.protocol_scan(namespace, "").unwrap().len()
    };
    let store = lab.d.daemon.pipeline.store().clone();
    assert_eq!(
        (
            entries(&store, "acme.orders"),
            entries(&store, "acme.authzs")
        ),
        (1, 1)
    );
    let config = rampart::config::Config::clone(&lab.d.daemon.pipeline.config());
    drop(store);
    let Lab { d, .. } = lab;
    d.daemon.shutdown().await;

    // Started again once the order has been expired (7 days) for longer than
    // `server.retain_protocol_state_days` (30): the order goes at start, its authorization
    // (valid for 30 days) stays 7 days longer, and the certificate stays in the inventory.
    let later =
        time::OffsetDateTime::now_utc() + time::Duration::days(37) + time::Duration::hours(1);
    let d = start_with(
        config,
        Arc::new(rampart::clock::ManualClock::new(later)),
        Some(d.key.clone()),
    )
    .await;
    let store = d.daemon.pipeline.store().clone();
    let mut waited = 0;
    while entries(&store, "acme.orders") > 0 {
        waited += 1;
        assert!(waited < 100, "the expired order is still there after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entries(&store, "acme.account_orders"), 0);
    assert_eq!(entries(&store, "acme.authzs"), 1);
    assert_eq!(entries(&store, "acme.accounts"), 1);
    assert!(store.certificate(&serial).unwrap().is_some());
    // The metrics are counted once the pass is over.
    let mut waited = 0;
    let removed = r#"rampart_lifecycle_operations_total{task="retention",target="acme_order",outcome="removed"} 1"#;
    loop {
        let (_, metrics) = d.get("/metrics").await;
        if metrics.as_str().unwrap().contains(removed) {
            break;
        }
        waited += 1;
        assert!(waited < 100, "{removed} not in {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(store);
    d.daemon.shutdown().await;
}
