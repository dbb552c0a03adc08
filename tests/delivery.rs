//! Filesystem delivery targets: files, modes, atomic replacement, the reload command and
//! rollback when it fails, PKCS#12 bundles (read back with p12-keystore and with openssl).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart::config::{DeliveryKind, DeliveryTargetConfig};
use rampart::lifecycle::delivery::{
    deliver, DeliveryError, DeliveryMaterial, ReloadFailure, SECRET_FILE_MODE,
};
use rampart::pkix::pem;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use zeroize::Zeroizing;

/// A CA and a way to issue leaves from it.
struct TestCa {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "delivery test CA");
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self {
            der,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `name` with its key, as rampart would deliver it.
    fn leaf(&self, name: &str) -> DeliveryMaterial {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        DeliveryMaterial {
            certificate_der: cert.der().to_vec(),
            chain_der: vec![self.der.clone()],
            private_key_pkcs8: Some(Zeroizing::new(key.serialize_der())),
        }
    }
}

fn target(directory: &Path, reload_command: &[&str]) -> DeliveryTargetConfig {
    DeliveryTargetConfig {
        kind: DeliveryKind::Filesystem,
        directory: directory.to_path_buf(),
        cert_file: "cert.pem".into(),
        chain_file: "chain.pem".into(),
        fullchain_file: "fullchain.pem".into(),
        key_file: "key.pem".into(),
        pkcs12_file: None,
        pkcs12_password_env: None,
        reload_command: reload_command.iter().map(|s| s.to_string()).collect(),
        reload_timeout_seconds: 30,
        file_mode: 0o644,
    }
}

/// Every entry of `dir`: name → (contents, mode).
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                (
                    std::fs::read(entry.path()).unwrap(),
                    meta.permissions().mode() & 0o7777,
                ),
            )
        })
        .collect()
}

fn read_certificates(path: &Path) -> Vec<Vec<u8>> {
    pem::decode_certificates(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// An environment variable name no other test uses, set to `value`.
fn password_variable(test: &str, value: &str) -> String {
    let name = format!("RAMPART_TEST_DELIVERY_P12_{test}");
    std::env::set_var(&name, value);
    name
}

#[tokio::test]
async fn delivers_every_file_with_its_contents_and_mode() {
    let ca = TestCa::new();
    let material = ca.leaf("web.test");
    let dir = tempfile::tempdir().unwrap();
    let report = deliver("web", &target(dir.path(), &[]), &material)
        .await
        .unwrap();

    let path = |f: &str| dir.path().join(f);
    assert_eq!(
        report.written,
        ["cert.pem", "chain.pem", "fullchain.pem", "key.pem"].map(path)
    );
    assert!(report.skipped.is_empty() && !report.reloaded);
    assert_eq!(
        read_certificates(&path("cert.pem")),
        [material.certificate_der.as_slice()]
    );
    assert_eq!(read_certificates(&path("chain.pem")), [ca.der.as_slice()]);
    assert_eq!(
        read_certificates(&path("fullchain.pem")),
        [material.certificate_der.clone(), ca.der.clone()]
    );
    let key = pem::decode(
        &std::fs::read_to_string(path("key.pem")).unwrap(),
        &["PRIVATE KEY"],
    )
    .unwrap();
    assert_eq!(&key, material.private_key_pkcs8.as_deref().unwrap());
    KeyPair::try_from(key.as_slice()).expect("the key file holds a usable PKCS#8 key");
    assert_eq!(mode(&path("key.pem")), SECRET_FILE_MODE);
    for file in ["cert.pem", "chain.pem", "fullchain.pem"] {
        assert_eq!(mode(&path(file)), 0o644, "{file}");
    }
    // No temporary or backup file is left behind.
    assert_eq!(
        snapshot(dir.path()).len(),
        4,
        "{:?}",
        snapshot(dir.path()).keys()
    );
}

#[tokio::test]
async fn configured_names_and_mode_are_used() {
    let ca = TestCa::new();
    let material = ca.leaf("api.test");
    let dir = tempfile::tempdir().unwrap();
    let mut config = target(dir.path(), &[]);
    config.cert_file = "api.crt".into();
    config.chain_file = "api-ca.crt".into();
    config.fullchain_file = "api-full.crt".into();
    config.key_file = "api.key".into();
    config.file_mode = 0o640;
    deliver("api", &config, &material).await.unwrap();
    let files = snapshot(dir.path());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["api-ca.crt", "api-full.crt", "api.crt", "api.key"]
    );
    assert_eq!(files["api.crt"].1, 0o640);
    assert_eq!(files["api.key"].1, 0o600);
}

#[tokio::test]
async fn a_second_delivery_replaces_the_files_atomically() {
    let ca = TestCa::new();
    let first = ca.leaf("web.test");
    let second = ca.leaf("web.test");
    let dir = tempfile::tempdir().unwrap();
    let config = target(dir.path(), &[]);
    deliver("web", &config, &first).await.unwrap();
    let cert = dir.path().join("cert.pem");
    let first_inode = std::fs::metadata(&cert).unwrap().ino();

    // A reader that keeps opening the files while deliveries alternate must always find a
    // complete certificate, and key and certificate from the same delivery in sequence.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let cert = cert.clone();
        let expected = [
            first.certificate_der.clone(),
            second.certificate_der.clone(),
        ];
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&cert).expect("cert.pem always exists");
                let ders = pem::decode_certificates(&text).expect("cert.pem is always whole");
                assert!(expected.contains(&ders[0]));
                reads += 1;
            }
            reads
        })
    };
    for round in 0..20 {
        let material = if round % 2 == 0 { &second } else { &first };
        deliver("web", &config, material).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("the reader saw only whole files") > 0);

    deliver("web", &config, &second).await.unwrap();
    assert_eq!(
        read_certificates(&cert),
        [second.certificate_der.as_slice()]
    );
    assert_ne!(std::fs::metadata(&cert).unwrap().ino(), first_inode);
    let key = pem::decode(
        &std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
        &["PRIVATE KEY"],
    )
    .unwrap();
    assert_eq!(&key, second.private_key_pkcs8.as_deref().unwrap());
    assert_eq!(snapshot(dir.path()).len(), 4);
}

/// Deliver `first` without a command, then `second` with `command`, which must fail:
/// the directory must be exactly as after the first delivery.
async fn assert_rolled_back(command: &[&str], timeout: u64) -> DeliveryError {
    let ca = TestCa::new();
    let first = ca.leaf("web.test");
    let second = ca.leaf("web.test");
    let dir = tempfile::tempdir().unwrap();
    deliver("web", &target(dir.path(), &[]), &first)
        .await
        .unwrap();
    let before = snapshot(dir.path());
    let inode = std::fs::metadata(dir.path().join("key.pem")).unwrap().ino();

    let mut config = target(dir.path(), command);
    config.reload_timeout_seconds = timeout;
    let err = deliver("web", &config, &second).await.unwrap_err();
    assert!(err.previous_files_in_place(), "{err}");
    assert_eq!(snapshot(dir.path()), before, "{err}");
    // Restored means the very same files, not copies.
    assert_eq!(
        std::fs::metadata(dir.path().join("key.pem")).unwrap().ino(),
        inode
    );
    err
}

#[tokio::test]
async fn a_failing_reload_command_restores_the_previous_files() {
    let err = assert_rolled_back(&["sh", "-c", "echo 'nginx: bad config' >&2; exit 3"], 30).await;
    match &err {
        DeliveryError::ReloadFailed {
            target,
            failure,
            stderr_tail,
            rolled_back,
        } => {
            assert_eq!(target, "web");
            assert_eq!(*failure, ReloadFailure::Exit { code: 3 });
            assert_eq!(stderr_tail, "nginx: bad config");
            assert!(rolled_back);
        }
        other => panic!("unexpected error: {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("exited with status 3") && message.contains("nginx: bad config"),
        "{message}"
    );

    let err = assert_rolled_back(&["false"], 30).await;
    assert!(
        matches!(
            err,
            DeliveryError::ReloadFailed {
                failure: ReloadFailure::Exit { code: 1 },
                rolled_back: true,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_reload_command_that_times_out_is_killed_and_rolled_back() {
    let started = Instant::now();
    let err = assert_rolled_back(&["sleep", "5"], 1).await;
    assert!(
        matches!(
            err,
            DeliveryError::ReloadFailed {
                failure: ReloadFailure::Timeout { seconds: 1 },
                rolled_back: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_reload_command_that_cannot_start_is_rolled_back() {
    let err = assert_rolled_back(&["/nonexistent/reload-nginx"], 30).await;
    match err {
        DeliveryError::ReloadFailed {
            failure: ReloadFailure::Spawn { program, .. },
            rolled_back: true,
            ..
        } => assert_eq!(program, "/nonexistent/reload-nginx"),
        other => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn a_failing_first_delivery_leaves_no_file() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let err = deliver("web", &target(dir.path(), &["false"]), &ca.leaf("web.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DeliveryError::ReloadFailed {
                rolled_back: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        snapshot(dir.path()).is_empty(),
        "{:?}",
        snapshot(dir.path()).keys()
    );
}

#[tokio::test]
async fn the_reload_command_runs_with_the_new_files_in_place() {
    let ca = TestCa::new();
    let material = ca.leaf("web.test");
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let seen = out.path().join("seen.pem");
    let script = r#"cp "$RAMPART_DELIVERY_DIRECTORY/fullchain.pem" "$1" && test "$RAMPART_DELIVERY_TARGET" = web"#;
    let config = target(
        dir.path(),
        &["sh", "-c", script, "sh", seen.to_str().unwrap()],
    );
    let report = deliver("web", &config, &material).await.unwrap();
    assert!(report.reloaded);
    assert_eq!(
        read_certificates(&seen),
        [material.certificate_der.clone(), ca.der.clone()]
    );
    assert_eq!(snapshot(dir.path()).len(), 4);
}

#[tokio::test]
async fn without_the_key_only_certificates_are_written() {
    let ca = TestCa::new();
    let mut material = ca.leaf("device.test");
    material.private_key_pkcs8 = None;
    let dir = tempfile::tempdir().unwrap();
    // The client's own key, which rampart never saw, stays as it is.
    std::fs::write(dir.path().join("key.pem"), b"the client's key").unwrap();
    let mut config = target(dir.path(), &[]);
    config.pkcs12_file = Some("device.p12".into());
    config.pkcs12_password_env = Some("RAMPART_TEST_DELIVERY_UNUSED".into());
    let report = deliver("device", &config, &material).await.unwrap();
    assert_eq!(report.written.len(), 3);
    assert_eq!(
        report.skipped,
        [dir.path().join("key.pem"), dir.path().join("device.p12")]
    );
    assert_eq!(
        std::fs::read(dir.path().join("key.pem")).unwrap(),
        b"the client's key"
    );
    assert!(!dir.path().join("device.p12").exists());
}

#[tokio::test]
async fn bad_material_or_directory_writes_nothing() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let config = target(dir.path(), &[]);

    // A key that is not the certificate's.
    let mut mismatched = ca.leaf("web.test");
    mismatched.private_key_pkcs8 = ca.leaf("web.test").private_key_pkcs8;
    let err = deliver("web", &config, &mismatched).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Material { .. })
            && err.to_string().contains("does not belong"),
        "{err}"
    );

    let mut garbage = ca.leaf("web.test");
    garbage.certificate_der = b"not a certificate".to_vec();
    let err = deliver("web", &config, &garbage).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Material { .. }), "{err}");
    assert!(snapshot(dir.path()).is_empty());

    let missing: PathBuf = dir.path().join("nope");
    let err = deliver("web", &target(&missing, &[]), &ca.leaf("web.test"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Directory { .. }), "{err}");
    assert!(!missing.exists());
}

#[tokio::test]
async fn a_pkcs12_bundle_round_trips() {
    let ca = TestCa::new();
    let material = ca.leaf("web.test");
    let dir = tempfile::tempdir().unwrap();
    let password = "correct horse battery staple";
    let variable = password_variable("ROUND_TRIP", password);
    let mut config = target(dir.path(), &[]);
    config.pkcs12_file = Some("web.p12".into());
    config.pkcs12_password_env = Some(variable.clone());
    // The reload command does not inherit the password.
    config.reload_command = vec![
        "sh".into(),
        "-c".into(),
        format!("test -z \"${{{variable}+set}}\""),
    ];
    let report = deliver("web", &config, &material).await.unwrap();
    let bundle_path = dir.path().join("web.p12");
    assert!(report.written.contains(&bundle_path) && report.reloaded);
    assert_eq!(mode(&bundle_path), SECRET_FILE_MODE);

    let bundle = std::fs::read(&bundle_path).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(&bundle, password).unwrap();
    let (alias, chain) = store.private_key_chain().expect("a key with its chain");
    assert_eq!(alias, "web");
    assert_eq!(
        chain.key(),
        material.private_key_pkcs8.as_deref().unwrap().as_slice()
    );
    let ders: Vec<&[u8]> = chain.chain().iter().map(|c| c.as_der()).collect();
    assert_eq!(
        ders,
        [material.certificate_der.as_slice(), ca.der.as_slice()]
    );
    assert!(p12_keystore::KeyStore::from_pkcs12(&bundle, "wrong password").is_err());

    // OpenSSL 3 reads it without -legacy: PBES2 with AES-256 and an HMAC-SHA256 MAC.
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not on PATH: skipping the openssl check");
        return;
    }
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .arg("pkcs12")
            .arg("-in")
            .arg(&bundle_path)
            .arg("-passin")
            .arg(format!("env:{variable}"))
            .args(args)
            .env(&variable, password)
            .output()
            .unwrap()
    };
    let certs = openssl(&["-nokeys"]);
    assert!(
        certs.status.success(),
        "{}",
        String::from_utf8_lossy(&certs.stderr)
    );
    let text = String::from_utf8(certs.stdout).unwrap();
    assert_eq!(
        pem::decode_certificates(&text).unwrap(),
        [material.certificate_der.clone(), ca.der.clone()]
    );
    let info = openssl(&["-info", "-noout"]);
    assert!(info.status.success());
    let info = String::from_utf8_lossy(&info.stderr);
    assert!(
        info.contains("MAC: sha256") && info.contains("AES-256-CBC"),
        "{info}"
    );
    let key = openssl(&["-nocerts", "-nodes"]);
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap();
    let der = pem::decode(&key[key.find("-----BEGIN").unwrap()..], &["PRIVATE KEY"]).unwrap();
    assert_eq!(&der, material.private_key_pkcs8.as_deref().unwrap());
}

#[tokio::test]
async fn an_unset_pkcs12_password_writes_nothing_and_is_not_leaked() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = target(dir.path(), &[]);
    config.pkcs12_file = Some("web.p12".into());
    config.pkcs12_password_env = Some("RAMPART_TEST_DELIVERY_P12_NEVER_SET".into());
    let err = deliver("web", &config, &ca.leaf("web.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Pkcs12Password { variable, .. } if variable == "RAMPART_TEST_DELIVERY_P12_NEVER_SET"),
        "{err}"
    );
    assert!(snapshot(dir.path()).is_empty());

    // A failing reload with a bundle: the error names neither the password nor the key.
    let password = "s3cret-pkcs12-password";
    let variable = password_variable("LEAK", password);
    config.pkcs12_password_env = Some(variable);
    config.reload_command = vec!["false".into()];
    let material = ca.leaf("web.test");
    let err = deliver("web", &config, &material).await.unwrap_err();
    let shown = format!("{err} {err:?} {material:?}");
    assert!(!shown.contains(password), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(snapshot(dir.path()).is_empty());
}
