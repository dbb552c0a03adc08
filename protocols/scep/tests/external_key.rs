//! An RA key the embedder holds (an HSM, in the daemon): [`Ra::with_key`] checks it both
//! ways before accepting it, the server makes its blocking operations on a blocking
//! thread — never on the async runtime — and a key that cannot be reached answers HTTP 503,
//! not a CertRep nobody could sign.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rampart_scep::client::{self, Requester};
use rampart_scep::crypto::{ContentCipher, CryptoError, Digest, RsaKey, RsaPrivateKey};
use rampart_scep::wire::{MessageType, PkiStatus};
use rampart_scep::{Answer, CertificateId, Enrollment, Profile, Ra, ScepBackend};
use tower::ServiceExt;

fn rsa_identity(cn: &str) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

/// What the device key does once the RA holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each operation waits for the test's go-ahead, which a task on the same
    /// single-threaded runtime gives: it only arrives if the operation runs elsewhere.
    Gated,
    /// Every operation fails as an unreachable device does.
    Gone,
}

/// A key "in a device": an in-memory key behind a blocking gate.
#[derive(Debug)]
struct DeviceKey {
    inner: RsaKey,
    armed: AtomicBool,
    mode: Mode,
    gate: Mutex<Receiver<()>>,
    operations: AtomicUsize,
}

impl DeviceKey {
    fn new(pkcs8: &[u8], mode: Mode) -> (Arc<Self>, SyncSender<()>) {
        let (go, gate) = sync_channel(0);
        let key = DeviceKey {
            inner: RsaKey::from_pkcs8(pkcs8).unwrap(),
            armed: AtomicBool::new(false),
            mode,
            gate: Mutex::new(gate),
            operations: AtomicUsize::new(0),
        };
        (Arc::new(key), go)
    }

    fn device(&self) -> Result<(), CryptoError> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.mode {
            Mode::Gone => Err(CryptoError::KeyUnavailable(
                "device 0815 is gone (secret detail)".into(),
            )),
            Mode::Gated => {
                self.gate
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(3))
                    .map_err(|_| {
                        CryptoError::KeyUnavailable("no go-ahead: the runtime was blocked".into())
                    })?;
                self.operations.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    }
}

impl RsaPrivateKey for DeviceKey {
    fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.device()?;
        self.inner.sign(digest, message)
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.device()?;
        self.inner.decrypt(ciphertext)
    }

    fn blocks(&self) -> bool {
        true
    }
}

/// Answers every enrollment with the requester's own certificate.
struct Backend {
    ra: Arc<Ra>,
}

#[async_trait::async_trait]
impl ScepBackend for Backend {
    fn profile(&self, _: &str) -> Option<Profile> {
        Some(Profile {
            legacy_algorithms: true,
            max_clock_skew: None,
        })
    }
    fn ra(&self) -> Arc<Ra> {
        self.ra.clone()
    }
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn ca_certificates(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    async fn enroll(&self, _: &str, enrollment: Enrollment) -> Answer {
        Answer::Certificate(enrollment.signer_der)
    }
    async fn poll(&self, _: &str, _: &str, _: &[u8]) -> Answer {
        Answer::Pending("later".into())
    }
    async fn certificate(&self, _: &str, _: CertificateId) -> Answer {
        Answer::Pending("later".into())
    }
    async fn crl(&self, _: &str, _: CertificateId) -> Answer {
        Answer::Pending("later".into())
    }
}

/// An RA whose key is a [`DeviceKey`] in `mode`, armed once the RA accepted it.
fn device_ra(mode: Mode) -> (Arc<Ra>, Arc<DeviceKey>, SyncSender<()>) {
    let (cert, pkcs8) = rsa_identity("device RA");
    let (key, go) = DeviceKey::new(&pkcs8, mode);
    let ra = Ra::with_key(cert, key.clone()).unwrap();
    key.armed.store(true, Ordering::SeqCst);
    (Arc::new(ra), key, go)
}

/// A PKCSReq for `ra`, POSTed to the router: status and body.
async fn post_pkcs_req(ra: &Arc<Ra>, cipher: ContentCipher) -> (Requester, StatusCode, Vec<u8>) {
    let (cert, pkcs8) = rsa_identity("device");
    let requester = Requester::new(&cert, &pkcs8).unwrap();
    let csr = {
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let params = rcgen::CertificateParams::new(vec!["device.test".to_string()]).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    };
    let outgoing = client::request(
        &requester,
        &ra.certificate,
        MessageType::PkcsReq,
        &requester.transaction_id(),
        &csr,
        cipher,
        Digest::Sha512,
        SystemTime::now(),
    )
    .unwrap();
    let router = rampart_scep::router(Arc::new(Backend { ra: ra.clone() }));
    let response = router
        .oneshot(
            Request::post("/scep?operation=PKIOperation")
                .body(Body::from(outgoing.message))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    (requester, status, body)
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocking_key_works_off_the_runtime() {
    let (ra, key, go) = device_ra(Mode::Gated);
    // The go-ahead comes from a task on this one runtime thread: it runs only while the
    // request's key operations wait somewhere else.
    let stop = Arc::new(AtomicBool::new(false));
    let giver = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = go.try_send(());
                tokio::task::yield_now().await;
            }
        })
    };
    for cipher in [ContentCipher::Aes256Cbc, ContentCipher::DesCbc] {
        let (requester, status, body) = post_pkcs_req(&ra, cipher).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let rep = client::read_reply(&body, &requester).unwrap();
        assert_eq!(rep.status, PkiStatus::Success, "{rep:?}");
        assert_eq!(rep.signer, ra.certificate, "signed by the device RA");
    }
    stop.store(true, Ordering::SeqCst);
    giver.await.unwrap();
    // A decryption and a signature for each request, all made by the device.
    assert_eq!(key.operations.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_key_answers_503_without_details() {
    let (ra, _key, _go) = device_ra(Mode::Gone);
    let (_, status, body) = post_pkcs_req(&ra, ContentCipher::Aes128Cbc).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("RA key is unavailable"), "{text}");
    assert!(!text.contains("0815"), "{text}");
}

/// Decrypts to something else than what was encrypted.
#[derive(Debug)]
struct Garbling(RsaKey);

impl RsaPrivateKey for Garbling {
    fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.sign(digest, message)
    }
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut plain = self.0.decrypt(ciphertext)?;
        plain[0] ^= 1;
        Ok(plain)
    }
}

#[test]
fn the_ra_checks_an_external_key_both_ways() {
    let (cert, pkcs8) = rsa_identity("RA");
    let (_, other) = rsa_identity("other");
    // Another key's signature does not verify with the certificate.
    let error =
        Ra::with_key(cert.clone(), Arc::new(RsaKey::from_pkcs8(&other).unwrap())).unwrap_err();
    assert!(matches!(error, CryptoError::BadKey(_)), "{error}");
    // A key that signs right but does not decrypt what is encrypted to the certificate.
    let error = Ra::with_key(
        cert.clone(),
        Arc::new(Garbling(RsaKey::from_pkcs8(&pkcs8).unwrap())),
    )
    .unwrap_err();
    assert!(error.to_string().contains("does not decrypt"), "{error}");
    // An unreachable device stays that error, for the embedder to report.
    let (gone, _go) = DeviceKey::new(&pkcs8, Mode::Gone);
    gone.armed.store(true, Ordering::SeqCst);
    let error = Ra::with_key(cert.clone(), gone).unwrap_err();
    assert!(matches!(error, CryptoError::KeyUnavailable(_)), "{error}");
    Ra::with_key(cert, Arc::new(RsaKey::from_pkcs8(&pkcs8).unwrap())).unwrap();
}
