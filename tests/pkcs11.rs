//! The issuing CA key in a PKCS#11 token — SoftHSM2, with tokens this test initialises in a
//! temporary directory: the key pair is generated in the token (or found there), the
//! daemon issues over the admin API and EST, signs CRLs and OCSP responses, and `openssl`
//! verifies all of it against the root; no key file for the issuing CA exists. A token that
//! logs the daemon out is recovered from, a PIN the token refuses shows in `/healthz` until
//! the PIN file is fixed, and a PIN in the configuration itself is refused.
//!
//! The SCEP RA key in a token (`[scep] ra_key`), beside the CA key or alone: generated there
//! (sign + decrypt, sensitive, not extractable), PKCSReq with AES and DES answered SUCCESS
//! by CertReps the token signed for envelopes it decrypted, no RA key file, rotation to a
//! new token key, a restart that finds it, a bad envelope refused without harming the
//! token's health, and a token failure in `/healthz`.
//!
//! SoftHSM2 is required (CI installs it): these tests fail, not skip, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use common::{config_for, csr, p256, start_with, TestDaemon};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use der::{Decode, Encode};
use rampart::clock::{Clock, ManualClock, SystemClock};
use rampart::config::{Config, EstUserConfig, KeyAlgorithm, RsaSignature};
use rampart_scep::client::{self, CertRep, Requester};
use rampart_scep::crypto::{ContentCipher, Digest};
use rampart_scep::wire::{FailInfo, MessageType, PkiStatus};
use x509_cert::Certificate;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-user";
const SO_PIN: &str = "0815-so";
/// One token per test, so that tests running at once never share a login.
const TOKENS: &[&str] = &[
    "p256", "p384", "rsa", "rsa-pss", "recover", "startup", "scep", "scep-ra",
];
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

/// SoftHSM2 as `config`'s PKCS#11 module, the PIN in `dir/token.pin` (written once).
fn use_token(config: &mut Config, dir: &Path) {
    config.ca.pkcs11_module = MODULE.into();
    let pin_file = dir.join("token.pin");
    if !pin_file.exists() {
        write_pin(&pin_file, PIN);
    }
    config.ca.pin_file = pin_file.to_str().unwrap().into();
}

/// A daemon configuration whose issuing key is `object` in `token`, PIN from a file in `dir`,
/// with an EST user.
fn token_config(dir: &Path, token: &str, algorithm: KeyAlgorithm) -> Config {
    softhsm();
    let mut config = config_for(dir);
    config.ca.key_algorithm = algorithm;
    config.ca.key = format!("pkcs11:token={token};object=issuing-ca;id=%ca%01");
    use_token(&mut config, dir);
    let hash = common::argon2_hash(EST_PASSWORD);
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
async fn issues_with_a_token_key(token: &str, algorithm: KeyAlgorithm, signature: RsaSignature) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let data = dir.path().join("data");
    let config_in = |data: &Path| {
        let mut config = token_config(data, token, algorithm);
        config.ca.rsa_signature = signature;
        config
    };
    let config = config_in(&data_dir(&data));
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
    let (ok, text) = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-text",
            "-in",
            work.join("api.pem").to_str().unwrap(),
        ],
    );
    let expected = match (algorithm, signature) {
        (KeyAlgorithm::Rsa3072, RsaSignature::Pss) => "Signature Algorithm: rsassaPss",
        (KeyAlgorithm::Rsa3072, RsaSignature::Pkcs1v15) => {
            "Signature Algorithm: sha256WithRSAEncryption"
        }
        (KeyAlgorithm::EcdsaP256, _) => "Signature Algorithm: ecdsa-with-SHA256",
        (KeyAlgorithm::EcdsaP384, _) => "Signature Algorithm: ecdsa-with-SHA384",
    };
    assert!(ok && text.contains(expected), "{expected}: {text}");
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
    let d = start_with(config_in(&data_dir(&other)), Arc::new(SystemClock), None).await;
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
    issues_with_a_token_key("p256", KeyAlgorithm::EcdsaP256, RsaSignature::Pkcs1v15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_p384_key_in_the_token_issues_over_api_and_est() {
    issues_with_a_token_key("p384", KeyAlgorithm::EcdsaP384, RsaSignature::Pkcs1v15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_in_the_token_issues_over_api_and_est() {
    issues_with_a_token_key("rsa", KeyAlgorithm::Rsa3072, RsaSignature::Pkcs1v15).await;
}

/// RSASSA-PSS made in the token (`CKM_SHA256_RSA_PKCS_PSS`) on certificates, the CRL and
/// OCSP responses, which openssl verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_pss_key_in_the_token_issues_over_api_and_est() {
    issues_with_a_token_key("rsa-pss", KeyAlgorithm::Rsa3072, RsaSignature::Pss).await;
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

// ---------------------------------------------------------------------------------------
// The SCEP RA key in a token
// ---------------------------------------------------------------------------------------

/// The static challenge of the `default` SCEP profile in these tests.
const SCEP_CHALLENGE: &str = "scep in the token";

/// `config` with the SCEP RA key `object` in `token` (module and PIN file from `[ca]`,
/// which `token_config` set or this sets) and the static challenge on `default`.
fn with_token_ra(mut config: Config, dir: &Path, token: &str, object: &str) -> Config {
    softhsm();
    config.scep.ra_key = format!("pkcs11:token={token};object={object}");
    use_token(&mut config, dir);
    let hash = common::argon2_hash(SCEP_CHALLENGE);
    config
        .scep
        .profiles
        .get_mut("default")
        .unwrap()
        .challenge_hash = Some(hash);
    config
}

/// GetCACert: the RA certificate (the RSA one) among those served.
async fn scep_ra(d: &TestDaemon) -> Certificate {
    let url = d.daemon.scep_url.clone().unwrap();
    let body = reqwest::get(format!("{url}?operation=GetCACert"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let bundle = rampart_scep::pkimessage::certificates_of(&body).unwrap();
    let mut ras = bundle
        .certificates
        .iter()
        .map(|der| Certificate::from_der(der).unwrap())
        .filter(|c| {
            c.tbs_certificate.subject_public_key_info.algorithm.oid
                == const_oid::db::rfc5912::RSA_ENCRYPTION
        });
    let ra = ras.next().expect("an RSA RA certificate");
    assert!(ras.next().is_none(), "one RSA certificate");
    ra
}

/// A device: its RSA key (PKCS#8) and the self-signed certificate it signs requests with.
fn scep_device() -> (Vec<u8>, Requester) {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "token test device");
    let certificate = params.self_signed(&key).unwrap();
    let requester = Requester::new(certificate.der(), &key.serialize_der()).unwrap();
    (key.serialize_der(), requester)
}

/// A CSR for `name` by the device key, with the static challenge.
fn scep_csr(key: &[u8], name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::try_from(key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    // challengePassword: SET OF { UTF8String }.
    let mut values = vec![
        0x31,
        (SCEP_CHALLENGE.len() + 2) as u8,
        0x0c,
        SCEP_CHALLENGE.len() as u8,
    ];
    values.extend_from_slice(SCEP_CHALLENGE.as_bytes());
    let challenge = rcgen::Attribute {
        oid: &[1, 2, 840, 113549, 1, 9, 7],
        values,
    };
    params
        .serialize_request_with_attributes(&key, vec![challenge])
        .unwrap()
        .der()
        .to_vec()
}

/// PKCSReq for `name`, sealed for `recipient` with `cipher`, signed with `digest`: the
/// HTTP status and, on 200, the CertRep — whose signature `read_reply` verifies against the
/// signer certificate it carries.
async fn scep_pkcs_req<P: x509_cert::certificate::Profile>(
    d: &TestDaemon,
    recipient: &x509_cert::certificate::CertificateInner<P>,
    name: &str,
    cipher: ContentCipher,
    digest: Digest,
) -> (u16, Option<CertRep>) {
    let (key, requester) = scep_device();
    let csr = scep_csr(&key, name);
    let outgoing = client::request(
        &requester,
        recipient,
        MessageType::PkcsReq,
        &requester.transaction_id(),
        &csr,
        cipher,
        digest,
        std::time::SystemTime::now(),
    )
    .unwrap();
    let url = d.daemon.scep_url.clone().unwrap();
    let response = d
        .http
        .post(format!("{url}?operation=PKIOperation"))
        .header("content-type", "application/x-pki-message")
        .body(outgoing.message)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    if status != 200 {
        return (status, None);
    }
    let rep = client::read_reply(&body, &requester).unwrap();
    assert_eq!(rep.recipient_nonce, outgoing.sender_nonce);
    (status, Some(rep))
}

/// Enroll `name` over SCEP: SUCCESS, a CertRep signed by `ra`, a certificate that
/// `openssl verify` accepts.
async fn scep_enrolls(
    d: &TestDaemon,
    ra: &Certificate,
    chain: &Chain,
    work: &Path,
    name: &str,
    cipher: ContentCipher,
    digest: Digest,
) {
    let (status, rep) = scep_pkcs_req(d, ra, name, cipher, digest).await;
    assert_eq!(status, 200, "{name}");
    let rep = rep.unwrap();
    assert_eq!(rep.status, PkiStatus::Success, "{name}: {rep:?}");
    assert_eq!(&rep.signer, ra, "{name}: the CertRep is signed by the RA");
    assert_eq!(rep.certificates.len(), 1);
    openssl_verify(chain, &pem(&rep.certificates[0]), work, name);
}

/// The token's RSA private keys: label → (CKA_SIGN, CKA_DECRYPT, CKA_SENSITIVE,
/// CKA_EXTRACTABLE), and the public keys' moduli by label.
struct TokenRsaKeys {
    private: std::collections::BTreeMap<String, [bool; 4]>,
    modulus: std::collections::BTreeMap<String, Vec<u8>>,
}

fn token_rsa_keys(token: &str) -> TokenRsaKeys {
    let session = test_session(token, PIN);
    let mut keys = TokenRsaKeys {
        private: Default::default(),
        modulus: Default::default(),
    };
    let label = |attributes: &[Attribute]| {
        attributes
            .iter()
            .find_map(|a| match a {
                Attribute::Label(l) => Some(String::from_utf8(l.clone()).unwrap()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let rsa = |class| [Attribute::Class(class), Attribute::KeyType(KeyType::RSA)];
    for handle in session
        .find_objects(&rsa(ObjectClass::PRIVATE_KEY))
        .unwrap()
    {
        let attributes = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )
            .unwrap();
        let mut flags = [false; 4];
        for attribute in &attributes {
            match attribute {
                Attribute::Sign(v) => flags[0] = *v,
                Attribute::Decrypt(v) => flags[1] = *v,
                Attribute::Sensitive(v) => flags[2] = *v,
                Attribute::Extractable(v) => flags[3] = *v,
                _ => {}
            }
        }
        keys.private.insert(label(&attributes), flags);
    }
    for handle in session.find_objects(&rsa(ObjectClass::PUBLIC_KEY)).unwrap() {
        let attributes = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Modulus])
            .unwrap();
        let modulus = attributes
            .iter()
            .find_map(|a| match a {
                Attribute::Modulus(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap();
        keys.modulus.insert(label(&attributes), modulus);
    }
    keys
}

/// The modulus of an RSA certificate's key, without leading zeros.
fn certificate_modulus(certificate: &Certificate) -> Vec<u8> {
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    let key = pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()).unwrap();
    key.modulus.as_bytes().to_vec()
}

fn trimmed(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().skip_while(|b| *b == 0).collect()
}

/// `<data_dir>/ca/scep-ra.json`.
fn ra_record(d: &TestDaemon) -> serde_json::Value {
    let text = std::fs::read_to_string(d.data_dir().join("ca/scep-ra.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scep_ra_key_in_the_token_enrolls_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let data = data_dir(&dir.path().join("data"));
    let config = with_token_ra(
        token_config(&data, "scep", KeyAlgorithm::EcdsaP256),
        &data,
        "scep",
        "scep-ra",
    );
    let d = start_with(config.clone(), Arc::new(SystemClock), None).await;
    let chain = chain_files(&d, &work);
    let ca = d.data_dir().join("ca");
    let no_ra_key_file = || {
        assert!(
            !ca.join("scep-ra.key.pem").exists(),
            "an RA key file exists"
        );
    };
    no_ra_key_file();
    assert_eq!(ra_record(&d)["key"], config.scep.ra_key.as_str());

    // Generated in the token for signing and decrypting, sensitive, never extractable; the
    // RA certificate GetCACert serves is for that key.
    let ra = scep_ra(&d).await;
    let keys = token_rsa_keys("scep");
    assert_eq!(
        keys.private.get("scep-ra"),
        Some(&[true, true, true, false]),
        "CKA_SIGN, CKA_DECRYPT, CKA_SENSITIVE, !CKA_EXTRACTABLE"
    );
    assert_eq!(trimmed(&keys.modulus["scep-ra"]), certificate_modulus(&ra));
    assert_eq!(certificate_modulus(&ra).len(), 256, "RSA-2048");
    let (status, health) = d.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );

    // PKCSReq with AES and with single DES: decrypted and answered by the token key.
    scep_enrolls(
        &d,
        &ra,
        &chain,
        &work,
        "aes.scep.test",
        ContentCipher::Aes256Cbc,
        Digest::Sha256,
    )
    .await;
    scep_enrolls(
        &d,
        &ra,
        &chain,
        &work,
        "des.scep.test",
        ContentCipher::DesCbc,
        Digest::Sha512,
    )
    .await;
    scep_enrolls(
        &d,
        &ra,
        &chain,
        &work,
        "3des.scep.test",
        ContentCipher::DesEde3Cbc,
        Digest::Sha384,
    )
    .await;

    // An envelope for another key: the token cannot decrypt it. A signed FAILURE
    // badMessageCheck, and the token stays healthy.
    let (_, stranger) = scep_device();
    let (status, rep) = scep_pkcs_req(
        &d,
        &stranger.certificate,
        "stranger.scep.test",
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .await;
    assert_eq!(status, 200);
    let rep = rep.unwrap();
    assert_eq!(
        (rep.status, rep.fail_info),
        (PkiStatus::Failure, Some(FailInfo::BadMessageCheck))
    );
    assert_eq!(rep.signer, ra);
    let (status, health) = d.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );

    // Rotation: a new key in the token under <object>-<unix time>, the old one kept.
    let (status, answer) = d
        .post("/api/v1/scep/ra/rotate", serde_json::json!({}))
        .await;
    assert_eq!(status, 201, "{answer}");
    let rotated = scep_ra(&d).await;
    assert_ne!(
        certificate_modulus(&rotated),
        certificate_modulus(&ra),
        "a new key"
    );
    let record = ra_record(&d);
    let label = record["key"]
        .as_str()
        .unwrap()
        .strip_prefix("pkcs11:token=scep;object=")
        .unwrap()
        .to_string();
    let suffix = label.strip_prefix("scep-ra-").unwrap();
    assert!(suffix.bytes().all(|b| b.is_ascii_digit()), "{label}");
    assert_eq!(record["configured"], config.scep.ra_key.as_str());
    let keys = token_rsa_keys("scep");
    assert_eq!(keys.private.get(&label), Some(&[true, true, true, false]));
    assert_eq!(
        trimmed(&keys.modulus[&label]),
        certificate_modulus(&rotated)
    );
    assert!(keys.private.contains_key("scep-ra"), "the old key is kept");
    scep_enrolls(
        &d,
        &rotated,
        &chain,
        &work,
        "rotated.scep.test",
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .await;
    // A second rotation in the same second takes a label of its own.
    let (status, answer) = d
        .post("/api/v1/scep/ra/rotate", serde_json::json!({}))
        .await;
    assert_eq!(status, 201, "{answer}");
    let again = scep_ra(&d).await;
    assert_ne!(certificate_modulus(&again), certificate_modulus(&rotated));
    assert_eq!(token_rsa_keys("scep").private.len(), 3, "three RA keys");
    no_ra_key_file();

    // A restart finds the current key in the token and serves the same RA.
    let key = d.key.clone();
    d.daemon.shutdown().await;
    let d = start_with(config, Arc::new(SystemClock), Some(key)).await;
    assert_eq!(scep_ra(&d).await, again);
    scep_enrolls(
        &d,
        &again,
        &chain,
        &work,
        "restart.scep.test",
        ContentCipher::Aes256Cbc,
        Digest::Sha256,
    )
    .await;
    no_ra_key_file();
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scep_ra_token_failure_shows_in_healthz_and_an_aging_ra_is_rotated() {
    // Only the RA key in the token; the CA keeps its key files.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let data = data_dir(&dir.path().join("data"));
    let mut config = with_token_ra(config_for(&data), &data, "scep-ra", "ra");
    // An RA certificate of three days, and a clock the test moves past two thirds of it
    // (requests' signingTime is not checked against that clock).
    config.scep.ra_validity_days = 3;
    config
        .scep
        .profiles
        .get_mut("default")
        .unwrap()
        .max_clock_skew_seconds = 0;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let pin_file = PathBuf::from(&config.ca.pin_file);
    let d = start_with(config.clone(), Arc::new(clock.clone()), None).await;
    let chain = chain_files(&d, &work);
    assert!(
        d.data_dir().join("ca/issuing.key.pem").exists(),
        "the CA key is a file"
    );
    assert!(!d.data_dir().join("ca/scep-ra.key.pem").exists());
    let ra = scep_ra(&d).await;
    scep_enrolls(
        &d,
        &ra,
        &chain,
        &work,
        "before.ra.test",
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .await;

    // The PIN is changed on the token and the daemon logged out: its PIN file is stale.
    let new_pin = "4713-user";
    {
        let session = test_session("scep-ra", PIN);
        session
            .set_pin(&AuthPin::new(PIN.into()), &AuthPin::new(new_pin.into()))
            .unwrap();
        session.logout().unwrap();
    }
    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, 503, "{health}");
    assert!(health.get("ca").is_none(), "the CA is fine: {health}");
    let reason = health["scep_ra"].as_str().unwrap();
    assert!(reason.contains("refused the PIN"), "{reason}");
    assert!(
        !reason.contains(PIN) && !reason.contains(new_pin),
        "{reason}"
    );
    // SCEP cannot decrypt nor sign: 503, nothing issued.
    let (status, _) = scep_pkcs_req(
        &d,
        &ra,
        "stale.ra.test",
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .await;
    assert_eq!(status, 503);

    // The operator fixes the PIN file: healthy again without a restart.
    write_pin(&pin_file, new_pin);
    let (status, health) = d.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    scep_enrolls(
        &d,
        &ra,
        &chain,
        &work,
        "after.ra.test",
        ContentCipher::DesCbc,
        Digest::Sha256,
    )
    .await;

    // Two and a half days later the RA certificate has less than a third of its life
    // left: the next start generates a new token key, certifies it and keeps the old key.
    let key = d.key.clone();
    d.daemon.shutdown().await;
    clock.advance(time::Duration::hours(60));
    let d = start_with(config.clone(), Arc::new(clock.clone()), Some(key)).await;
    let renewed = scep_ra(&d).await;
    assert_ne!(certificate_modulus(&renewed), certificate_modulus(&ra));
    let current = ra_record(&d)["key"].as_str().unwrap().to_string();
    let label = current
        .strip_prefix("pkcs11:token=scep-ra;object=")
        .unwrap();
    assert_eq!(
        label,
        format!("ra-{}", clock.now().unix_timestamp()),
        "{current}"
    );
    let keys = token_rsa_keys("scep-ra");
    assert!(keys.private.contains_key("ra"), "the old key is kept");
    assert_eq!(trimmed(&keys.modulus[label]), certificate_modulus(&renewed));
    let (status, audit) = d.get("/api/v1/audit?action=ra_rotated").await;
    assert_eq!(status, 200, "{audit}");
    let last = audit["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .to_string();
    assert!(
        last.contains(r#""previous_key":"pkcs11:token=scep-ra;object=ra""#),
        "{last}"
    );
    assert!(last.contains(&format!(r#""key":"{current}""#)), "{last}");
    // Served at once (the certificate it issues starts at the moved clock: not checked
    // with openssl here).
    let (status, rep) = scep_pkcs_req(
        &d,
        &renewed,
        "renewed.ra.test",
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .await;
    assert_eq!(status, 200);
    let rep = rep.unwrap();
    assert_eq!((rep.status, &rep.signer), (PkiStatus::Success, &renewed));
    assert!(!d.data_dir().join("ca/scep-ra.key.pem").exists());

    // Someone deletes the current key from the token: the start stops and says how to
    // begin again; without scep-ra.json the configured key (still there) is the RA's again.
    let key = d.key.clone();
    d.daemon.shutdown().await;
    {
        let session = test_session("scep-ra", new_pin);
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for handle in session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap()
            {
                session.destroy_object(handle).unwrap();
            }
        }
    }
    let error = rampart::server::start(config.clone(), Arc::new(clock.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no private key")
            && error.contains("delete")
            && error.contains("scep-ra.json"),
        "{error}"
    );
    std::fs::remove_file(data.join("ca/scep-ra.json")).unwrap();
    let d = start_with(config.clone(), Arc::new(clock.clone()), Some(key)).await;
    let back = scep_ra(&d).await;
    assert_eq!(
        certificate_modulus(&back),
        certificate_modulus(&ra),
        "the configured key"
    );
    assert_eq!(ra_record(&d)["key"], config.scep.ra_key.as_str());

    // `ra_key` emptied again: the RA moves back to a key file, with a new certificate.
    let key = d.key.clone();
    d.daemon.shutdown().await;
    config.scep.ra_key = String::new();
    let d = start_with(config, Arc::new(clock.clone()), Some(key)).await;
    let ca = d.data_dir().join("ca");
    assert!(ca.join("scep-ra.key.pem").exists());
    assert!(!ca.join("scep-ra.json").exists());
    let from_file = scep_ra(&d).await;
    assert_ne!(
        certificate_modulus(&from_file),
        certificate_modulus(&renewed)
    );
    let (status, rep) = scep_pkcs_req(
        &d,
        &from_file,
        "file.ra.test",
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .await;
    assert_eq!(status, 200);
    let rep = rep.unwrap();
    assert_eq!((rep.status, &rep.signer), (PkiStatus::Success, &from_file));
    d.daemon.shutdown().await;
}

#[test]
fn a_token_ra_key_needs_the_module() {
    let mut config = Config::load_default().unwrap();
    config.scep.ra_key = "pkcs11:token=rampart;object=scep-ra".into();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("scep.ra_key") && error.contains("pkcs11_module"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
    config.scep.ra_key = "pkcs11:token=rampart;object=scep-ra?pin-value=1234".into();
    config.ca.pkcs11_module = MODULE.into();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("scep.ra_key") && !error.contains("1234"),
        "{error}"
    );
    config.scep.ra_key = "pkcs11:token=rampart;object=scep-ra".into();
    config.validate().unwrap();
}
