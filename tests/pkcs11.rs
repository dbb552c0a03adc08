//! The issuing CA key in a PKCS#11 token — SoftHSM2, with tokens this test initialises in a
//! temporary directory: the key pair is generated in the token (or found there), the
//! daemon issues over the admin API and EST, signs CRLs and OCSP responses, and `openssl`
//! verifies all of it against the root; no key file for the issuing CA exists. A token that
//! logs the daemon out is recovered from, a PIN the token refuses shows in `/healthz` until
//! the PIN file is fixed, and a PIN in the configuration itself is refused.
//!
//! SoftHSM2 is required (CI installs it): these tests fail, not skip, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use common::{config_for, csr, p256, start_with, TestDaemon};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use der::{Decode, Encode};
use rampart::clock::SystemClock;
use rampart::config::{Config, EstUserConfig, KeyAlgorithm};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-user";
const SO_PIN: &str = "0815-so";
/// One token per test, so that tests running at once never share a login.
const TOKENS: &[&str] = &["p256", "p384", "rsa", "recover", "startup"];
const EST_USER: &str = "device-1";
const EST_PASSWORD: &str = "est-secret";

/// SoftHSM2 with its own token directory and [`TOKENS`] initialised, set up once per test
/// process before any test loads the module (SoftHSM reads `SOFTHSM2_CONF` when initialised).
fn softhsm() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            Path::new(MODULE).is_file(),
            "{MODULE} is missing: the PKCS#11 tests need SoftHSM2 (apt-get install softhsm2)"
        );
        // A token directory per test process, under cargo's temporary directory; those of
        // earlier runs whose process is gone are removed.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("pkcs11-softhsm-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("pkcs11-softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        for label in TOKENS {
            let output = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--pin", PIN, "--so-pin", SO_PIN])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util runs (apt-get install softhsm2)");
            assert!(
                output.status.success(),
                "softhsm2-util --init-token {label}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Before any thread of this process has loaded the module.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        dir
    })
}

fn write_pin(path: &Path, pin: &str) {
    rampart::files::write_secret(path, format!("{pin}\n").as_bytes()).unwrap();
}

/// A daemon configuration whose issuing key is `object` in `token`, PIN from a file in `dir`,
/// with an EST user.
fn token_config(dir: &Path, token: &str, algorithm: KeyAlgorithm) -> Config {
    softhsm();
    let mut config = config_for(dir);
    config.ca.key_algorithm = algorithm;
    config.ca.key = format!("pkcs11:token={token};object=issuing-ca;id=%ca%01");
    config.ca.pkcs11_module = MODULE.into();
    let pin_file = dir.join("token.pin");
    if !pin_file.exists() {
        write_pin(&pin_file, PIN);
    }
    config.ca.pin_file = pin_file.to_str().unwrap().into();
    let hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2::Argon2::default()
            .hash_password(EST_PASSWORD.as_bytes(), &salt)
            .unwrap()
            .to_string()
    };
    config.est.users.insert(
        EST_USER.into(),
        EstUserConfig {
            password_hash: hash,
            roles: vec!["admin".into()],
        },
    );
    config
}

fn pem(der: &[u8]) -> String {
    rampart::pkix::pem::encode("CERTIFICATE", der)
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The files `openssl` checks against: the root and the issuing CA of the running daemon.
struct Chain {
    root: PathBuf,
    issuing: PathBuf,
    both: PathBuf,
}

fn chain_files(d: &TestDaemon, work: &Path) -> Chain {
    let ca = d.data_dir().join("ca");
    let chain = Chain {
        root: ca.join("root.cert.pem"),
        issuing: ca.join("issuing.cert.pem"),
        both: work.join("root-and-issuing.pem"),
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&chain.root).unwrap(),
        std::fs::read_to_string(&chain.issuing).unwrap()
    );
    std::fs::write(&chain.both, text).unwrap();
    chain
}

/// `openssl verify -CAfile root -untrusted issuing leaf`.
fn openssl_verify(chain: &Chain, leaf_pem: &str, work: &Path, name: &str) {
    let leaf = work.join(format!("{name}.pem"));
    std::fs::write(&leaf, leaf_pem).unwrap();
    let (ok, text) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            chain.root.to_str().unwrap(),
            "-untrusted",
            chain.issuing.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ],
    );
    assert!(ok && text.contains(": OK"), "openssl verify {name}: {text}");
}

async fn enroll_api(d: &TestDaemon, name: &str) -> (u16, serde_json::Value) {
    d.enroll(&csr(&p256(), Some(name), &[name]), "server").await
}

/// simpleenroll with HTTP Basic; the issued certificate, PEM.
async fn enroll_est(d: &TestDaemon, name: &str) -> String {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    let bundle = std::fs::read(&d.daemon.ca_bundle).unwrap();
    for cert in reqwest::Certificate::from_pem_bundle(&bundle).unwrap() {
        builder = builder.add_root_certificate(cert);
    }
    let csr_der =
        rampart::pkix::pem::decode(&csr(&p256(), Some(name), &[name]), &["CERTIFICATE REQUEST"])
            .unwrap();
    let url = format!(
        "https://localhost:{}/.well-known/est/simpleenroll",
        d.daemon.est_addr.unwrap().port()
    );
    let response = builder
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/pkcs10")
        .basic_auth(EST_USER, Some(EST_PASSWORD))
        .body(base64::engine::general_purpose::STANDARD.encode(csr_der))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "EST simpleenroll: {body}");
    let p7 = base64::engine::general_purpose::STANDARD
        .decode(body.split_whitespace().collect::<String>())
        .unwrap();
    let info = cms::content_info::ContentInfo::from_der(&p7).unwrap();
    let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    let certificates = signed.certificates.unwrap().0;
    assert_eq!(certificates.len(), 1, "EST returns the certificate alone");
    match certificates.iter().next().unwrap() {
        cms::cert::CertificateChoices::Certificate(c) => pem(&c.to_der().unwrap()),
        other => panic!("unexpected certificate choice {other:?}"),
    }
}

fn issuing_public_key(d: &TestDaemon) -> Vec<u8> {
    let text = std::fs::read_to_string(d.data_dir().join("ca/issuing.cert.pem")).unwrap();
    let der = rampart::pkix::pem::decode(&text, &["CERTIFICATE"]).unwrap();
    x509_cert::Certificate::from_der(&der)
        .unwrap()
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

/// A session of this test process on `token` (sharing the daemon's module context, as
/// PKCS#11 allows one per process), logged in as the user with `pin`.
fn test_session(token: &str, pin: &str) -> cryptoki::session::Session {
    let context = rampart::ca::pkcs11::module(Path::new(MODULE)).unwrap();
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label().trim_end() == token)
        .unwrap();
    let session = context.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login to {token}: {e}"),
    }
    session
}

/// Everything the issuing CA signs, signed in the token and verified by openssl.
async fn issues_with_a_token_key(token: &str, algorithm: KeyAlgorithm) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let data = dir.path().join("data");
    let config = token_config(&data_dir(&data), token, algorithm);
    let d = start_with(config.clone(), Arc::new(SystemClock), None).await;

    // The key is the token's: no file for it, ca.json says where it is.
    let ca = d.data_dir().join("ca");
    assert!(
        !ca.join("issuing.key.pem").exists(),
        "an issuing key file exists"
    );
    let metadata = std::fs::read_to_string(ca.join("ca.json")).unwrap();
    assert!(metadata.contains(&config.ca.key), "{metadata}");
    let (status, health) = d.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    let chain = chain_files(&d, &work);

    // Generated sensitive and never extractable.
    {
        let session = test_session(token, PIN);
        let keys = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"issuing-ca".to_vec()),
            ])
            .unwrap();
        assert_eq!(keys.len(), 1);
        let attributes = session
            .get_attributes(
                keys[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Decrypt,
                ],
            )
            .unwrap();
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(v) => assert!(v, "CKA_SENSITIVE"),
                Attribute::Extractable(v) => assert!(!v, "CKA_EXTRACTABLE"),
                Attribute::Decrypt(v) => assert!(!v, "CKA_DECRYPT"),
                other => panic!("{other:?}"),
            }
        }
    }

    // Over the admin API.
    let name = format!("api.{token}.test");
    let (status, body) = enroll_api(&d, &name).await;
    assert_eq!(status, 201, "{body}");
    let leaf = body["certificate"].as_str().unwrap().to_string();
    openssl_verify(&chain, &leaf, &work, "api");
    // Over EST.
    let est_leaf = enroll_est(&d, &format!("est.{token}.test")).await;
    openssl_verify(&chain, &est_leaf, &work, "est");

    // The CRL, signed in the token.
    let crl_url = d.daemon.crl_url.clone().unwrap();
    let crl = reqwest::get(&crl_url).await.unwrap().bytes().await.unwrap();
    let crl_file = work.join("crl.der");
    std::fs::write(&crl_file, &crl).unwrap();
    let (ok, text) = run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl_file.to_str().unwrap(),
            "-CAfile",
            chain.both.to_str().unwrap(),
            "-noout",
        ],
    );
    assert!(ok && text.contains("verify OK"), "openssl crl: {text}");

    // An OCSP response, signed in the token.
    let (ok, text) = run(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            chain.issuing.to_str().unwrap(),
            "-cert",
            work.join("api.pem").to_str().unwrap(),
            "-url",
            d.daemon.ocsp_url.as_deref().unwrap(),
            "-CAfile",
            chain.both.to_str().unwrap(),
        ],
    );
    assert!(
        ok && text.contains("Response verify OK"),
        "openssl ocsp: {text}"
    );
    assert!(text.contains(": good"), "openssl ocsp: {text}");

    // A restart loads the CA and finds the key in the token again.
    let key = d.key.clone();
    let public_key = issuing_public_key(&d);
    d.daemon.shutdown().await;
    let d = start_with(config.clone(), Arc::new(SystemClock), Some(key)).await;
    let (status, body) = enroll_api(&d, &format!("again.{token}.test")).await;
    assert_eq!(status, 201, "{body}");
    openssl_verify(
        &chain,
        body["certificate"].as_str().unwrap(),
        &work,
        "again",
    );
    d.daemon.shutdown().await;

    // A new CA pointed at the same URI uses the key the token already holds.
    let other = dir.path().join("other");
    let d = start_with(
        token_config(&data_dir(&other), token, algorithm),
        Arc::new(SystemClock),
        None,
    )
    .await;
    assert_eq!(
        issuing_public_key(&d),
        public_key,
        "the token key was not reused"
    );
    d.daemon.shutdown().await;
}

fn data_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    path.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_p256_key_in_the_token_issues_over_api_and_est() {
    issues_with_a_token_key("p256", KeyAlgorithm::EcdsaP256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_p384_key_in_the_token_issues_over_api_and_est() {
    issues_with_a_token_key("p384", KeyAlgorithm::EcdsaP384).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_in_the_token_issues_over_api_and_est() {
    issues_with_a_token_key("rsa", KeyAlgorithm::Rsa3072).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors_show_in_healthz_and_are_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let config = token_config(
        &data_dir(&dir.path().join("data")),
        "recover",
        KeyAlgorithm::EcdsaP256,
    );
    let pin_file = PathBuf::from(&config.ca.pin_file);
    let d = start_with(config, Arc::new(SystemClock), None).await;
    let chain = chain_files(&d, &work);
    let (status, body) = enroll_api(&d, "before.recover.test").await;
    assert_eq!(status, 201, "{body}");

    // Someone logs the application out of the token: the daemon logs in again and signs.
    test_session("recover", PIN).logout().unwrap();
    let (status, body) = enroll_api(&d, "relogin.recover.test").await;
    assert_eq!(status, 201, "{body}");
    openssl_verify(
        &chain,
        body["certificate"].as_str().unwrap(),
        &work,
        "relogin",
    );
    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, 200, "{health}");

    // The PIN is changed on the token, and the daemon is logged out: its PIN file is stale.
    let new_pin = "4712-user";
    {
        let session = test_session("recover", PIN);
        session
            .set_pin(&AuthPin::new(PIN.into()), &AuthPin::new(new_pin.into()))
            .unwrap();
        session.logout().unwrap();
    }
    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, 503, "{health}");
    let reason = health["ca"].as_str().unwrap();
    assert!(reason.contains("refused the PIN"), "{reason}");
    assert!(
        !reason.contains(PIN) && !reason.contains(new_pin),
        "{reason}"
    );
    let (status, body) = enroll_api(&d, "stale.recover.test").await;
    assert_ne!(status, 201, "issued with a refused PIN: {body}");
    // The refused PIN is not offered again (a real token would count it towards a lock).
    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["ca"]
            .as_str()
            .unwrap()
            .contains("refused this PIN before"),
        "{health}"
    );

    // The operator fixes the PIN file: healthy again without a restart.
    write_pin(&pin_file, new_pin);
    let (status, health) = d.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    let (status, body) = enroll_api(&d, "after.recover.test").await;
    assert_eq!(status, 201, "{body}");
    openssl_verify(
        &chain,
        body["certificate"].as_str().unwrap(),
        &work,
        "after",
    );
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pin_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir.path().join("data"));
    let mut config = token_config(&data, "startup", KeyAlgorithm::EcdsaP256);
    write_pin(Path::new(&config.ca.pin_file), "not-the-pin");
    let error = rampart::server::start(config.clone(), Arc::new(SystemClock))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused the PIN"), "{error}");
    assert!(!error.contains("not-the-pin"), "{error}");
    assert!(
        !data.join("ca/ca.json").exists(),
        "a CA was recorded without its key"
    );

    // A token that is not there.
    config.ca.key = "pkcs11:token=no-such-token;object=issuing-ca".into();
    let error = rampart::server::start(config, Arc::new(SystemClock))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no token present matches"), "{error}");
}

#[test]
fn a_pin_in_the_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (uri, attribute) in [
        (
            "pkcs11:token=rampart;object=issuing-ca?pin-value=123456",
            "pin-value",
        ),
        (
            "pkcs11:token=rampart;object=issuing-ca?pin-source=/etc/pin",
            "pin-source",
        ),
    ] {
        let file = dir.path().join("rampart.toml");
        std::fs::write(
            &file,
            format!("[ca]\nkey = \"{uri}\"\npkcs11_module = \"{MODULE}\"\n"),
        )
        .unwrap();
        let error = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(
            error.contains("ca.key") && error.contains(attribute),
            "{error}"
        );
        assert!(!error.contains("123456"), "{error}");
    }
    // Nor anything that is not a pkcs11: URI, nor a URI without its module.
    let mut config = Config::load_default().unwrap();
    config.ca.key = "/etc/rampart/issuing.key".into();
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("pkcs11:"));
    config.ca.key = "pkcs11:token=rampart;object=issuing-ca".into();
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("pkcs11_module"));
    config.ca.pkcs11_module = MODULE.into();
    config.validate().unwrap();
}
