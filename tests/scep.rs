//! SCEP (RFC 8894) against the in-process daemon: GetCACaps and GetCACert, PKCSReq with the
//! static and one-time challenges over every content cipher and both transports, the
//! failInfos a message earns, idempotent re-sends, RenewalReq, PENDING and CertPoll after
//! an approval, GetCert and GetCRL, and RA rotation over the admin API.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use common::{config_for, start_with, TestDaemon};
use der::{Decode, Encode};
use rampart::clock::SystemClock;
use rampart::config::Config;
use rampart::model::{Credential, Identity};
use rampart_scep::client::{self, CertRep, Outgoing, Requester};
use rampart_scep::crypto::{ContentCipher, Digest};
use rampart_scep::wire::{FailInfo, MessageType, PkiStatus};
use reqwest::Method;
use serde_json::{json, Value};
use x509_cert::crl::CertificateList;
use x509_cert::request::CertReq;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;

/// The static challenge of the `default` profile in every test daemon.
const CHALLENGE: &str = "static scep secret";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

// ---------------------------------------------------------------------------------------
// The daemon and its SCEP endpoint
// ---------------------------------------------------------------------------------------

/// Argon2 is slow in debug builds: hash the static challenge once for all tests.
fn challenge_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"rampart-scep-tst").unwrap();
        argon2::Argon2::default()
            .hash_password(CHALLENGE.as_bytes(), &salt)
            .unwrap()
            .to_string()
    })
    .clone()
}

/// A daemon in its own directory whose `default` profile has the static [`CHALLENGE`],
/// after `configure` had its say.
async fn daemon(configure: impl FnOnce(&mut Config)) -> (tempfile::TempDir, TestDaemon) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config
        .scep
        .profiles
        .get_mut("default")
        .unwrap()
        .challenge_hash = Some(challenge_hash());
    configure(&mut config);
    let d = start_with(config, Arc::new(SystemClock), None).await;
    (dir, d)
}

/// `/scep` for `default`, `/scep/<profile>` otherwise.
fn endpoint(d: &TestDaemon, profile: &str) -> String {
    let base = d.daemon.scep_url.clone().expect("SCEP is enabled");
    match profile {
        "default" => base,
        other => format!("{base}/{other}"),
    }
}

/// Query parameters of a SCEP request.
type Query<'a> = &'a [(&'a str, &'a str)];

/// One HTTP exchange with the SCEP listener: status, content type, body.
async fn scep_http(
    d: &TestDaemon,
    profile: &str,
    method: Method,
    query: Query<'_>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let response = d
        .http
        .request(method, endpoint(d, profile))
        .query(query)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

/// GetCACert: the certificates it serves.
async fn ca_certificates(d: &TestDaemon, profile: &str) -> Vec<Certificate> {
    let (status, content_type, body) = scep_http(
        d,
        profile,
        Method::GET,
        &[("operation", "GetCACert")],
        vec![],
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-x509-ca-ra-cert")
    );
    let bundle = rampart_scep::pkimessage::certificates_of(&body).unwrap();
    assert!(bundle.crls.is_empty());
    bundle
        .certificates
        .iter()
        .map(|der| Certificate::from_der(der).unwrap())
        .collect()
}

fn is_rsa(certificate: &Certificate) -> bool {
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    spki.algorithm.oid.to_string() == RSA_ENCRYPTION
}

/// The RA among the GetCACert certificates: the one with an RSA key.
fn ra_of(certificates: &[Certificate]) -> Certificate {
    let mut ras = certificates.iter().filter(|c| is_rsa(c));
    let ra = ras.next().expect("an RSA RA certificate").clone();
    assert!(ras.next().is_none(), "exactly one RSA certificate");
    ra
}

/// The certificate whose subject is `certificate`'s issuer.
fn issuer_of<'a>(certificate: &Certificate, among: &'a [Certificate]) -> &'a Certificate {
    among
        .iter()
        .find(|c| c.tbs_certificate.subject == certificate.tbs_certificate.issuer)
        .expect("the issuer is served")
}

/// The RA GetCACert serves now.
async fn current_ra(d: &TestDaemon, profile: &str) -> Certificate {
    ra_of(&ca_certificates(d, profile).await)
}

/// The issuing CA (the RA's issuer).
async fn issuing_ca(d: &TestDaemon) -> Certificate {
    let certificates = ca_certificates(d, "default").await;
    issuer_of(&ra_of(&certificates), &certificates).clone()
}

fn assert_signed_by(certificate: &Certificate, issuer: &Certificate) {
    common::assert_certificate_signed_by(certificate, issuer);
}

fn assert_crl_signed_by(crl: &CertificateList, issuer: &Certificate) {
    common::assert_crl_signed_by(crl, issuer);
}

/// Serial as rampart writes it in the inventory.
fn serial(certificate: &Certificate) -> String {
    rampart_acme::ari::serial_hex(certificate.tbs_certificate.serial_number.as_bytes())
}

/// The inventory entries that came through SCEP.
async fn scep_inventory(d: &TestDaemon) -> Vec<Value> {
    let (status, page) = d.get("/api/v1/certificates?limit=500").await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["protocol"] == "scep")
        .cloned()
        .collect()
}

/// The inventory entry of `certificate`, which must have come through SCEP.
async fn inventory_entry(d: &TestDaemon, certificate: &Certificate) -> Value {
    let serial = serial(certificate);
    scep_inventory(d)
        .await
        .into_iter()
        .find(|item| item["serial"] == serial.as_str())
        .unwrap_or_else(|| panic!("{serial} is in the inventory with protocol scep"))
}

/// Revoke `certificate` over the admin API.
async fn revoke(d: &TestDaemon, certificate: &Certificate) {
    let path = format!("/api/v1/certificates/{}/revoke", serial(certificate));
    let (status, answer) = d.post(&path, json!({"reason": "keyCompromise"})).await;
    assert_eq!(status, 200, "{answer}");
}

/// A one-time challenge for `identity`, valid for exactly `names`.
async fn one_time_challenge(d: &TestDaemon, identity: &str, names: &[&str]) -> String {
    let (status, answer) = d
        .post(
            "/api/v1/scep/challenges",
            json!({"profile": "default", "identity": identity, "names": names, "valid_for_seconds": 600}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["challenge"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// Devices, CSRs and pkiMessages
// ---------------------------------------------------------------------------------------

/// A device: an RSA key and the self-signed certificate it signs its first request with.
struct Device {
    key: Vec<u8>,
    requester: Requester,
}

impl Device {
    fn new() -> Self {
        Self::with_serial(None)
    }

    /// A device whose self-signed certificate has `serial` (rcgen's own when `None`).
    fn with_serial(serial: Option<&[u8]>) -> Self {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = serial.map(rcgen::SerialNumber::from_slice);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scep test device");
        let certificate = params.self_signed(&key).unwrap();
        Device {
            requester: Requester::new(certificate.der(), &key.serialize_der()).unwrap(),
            key: key.serialize_der(),
        }
    }

    /// The same device run again (sscep from its key and CSR files): the same key, a new
    /// self-signed certificate.
    fn run_again(&self) -> Device {
        let key = rcgen::KeyPair::try_from(self.key.as_slice()).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            uuid::Uuid::new_v4().as_bytes(),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scep test device");
        let certificate = params.self_signed(&key).unwrap();
        Device {
            requester: Requester::new(certificate.der(), &self.key).unwrap(),
            key: self.key.clone(),
        }
    }

    /// The conventional transactionID: a hash of this device's public key.
    fn transaction_id(&self) -> String {
        self.requester.transaction_id()
    }

    /// A CSR for `names` (the first is also the CN), with `challenge` as challengePassword.
    fn csr(&self, names: &[&str], challenge: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::try_from(self.key.as_slice()).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let attributes = challenge
            .map(|password| {
                // SET OF { UTF8String }: one-time challenges are URL-safe base64, and `_`
                // is not a PrintableString character.
                let mut values = vec![0x31, (password.len() + 2) as u8, 0x0c, password.len() as u8];
                values.extend_from_slice(password.as_bytes());
                rcgen::Attribute {
                    oid: &[1, 2, 840, 113549, 1, 9, 7],
                    values,
                }
            })
            .into_iter()
            .collect();
        params
            .serialize_request_with_attributes(&key, attributes)
            .unwrap()
            .der()
            .to_vec()
    }

    /// This device signing with `certificate` (issued for its key), as for RenewalReq.
    fn holding(&self, certificate: &Certificate) -> Requester {
        Requester::new(&certificate.to_der().unwrap(), &self.key).unwrap()
    }
}

fn csr_spki(csr: &[u8]) -> Vec<u8> {
    CertReq::from_der(csr)
        .unwrap()
        .info
        .public_key
        .to_der()
        .unwrap()
}

/// How a pkiMessage is built and sent.
#[derive(Debug, Clone, Copy)]
struct Via {
    profile: &'static str,
    cipher: ContentCipher,
    signed_at: SystemTime,
    by_get: bool,
}

impl Default for Via {
    fn default() -> Self {
        Via {
            profile: "default",
            cipher: ContentCipher::Aes256Cbc,
            signed_at: SystemTime::now(),
            by_get: false,
        }
    }
}

/// A built pkiMessage and what its CertRep must echo.
struct Sent {
    outgoing: Outgoing,
    transaction_id: String,
    ra: Certificate,
    via: Via,
}

/// Build a pkiMessage sealed for the RA GetCACert serves now.
async fn build(
    d: &TestDaemon,
    via: Via,
    requester: &Requester,
    message_type: MessageType,
    transaction_id: &str,
    content: &[u8],
) -> Sent {
    let ra = current_ra(d, via.profile).await;
    let outgoing = client::request(
        requester,
        &ra,
        message_type,
        transaction_id,
        content,
        via.cipher,
        Digest::Sha256,
        via.signed_at,
    )
    .unwrap();
    Sent {
        outgoing,
        transaction_id: transaction_id.to_string(),
        ra,
        via,
    }
}

/// Send a built message; read the CertRep and check what every CertRep must carry: our
/// transactionID, our senderNonce as recipientNonce, the RA's signature.
async fn deliver(d: &TestDaemon, sent: &Sent, requester: &Requester) -> CertRep {
    let encoded;
    let (method, query, body) = if sent.via.by_get {
        use base64::Engine;
        encoded = base64::engine::general_purpose::STANDARD.encode(&sent.outgoing.message);
        let query = vec![("operation", "PKIOperation"), ("message", encoded.as_str())];
        (Method::GET, query, vec![])
    } else {
        let query = vec![("operation", "PKIOperation")];
        (Method::POST, query, sent.outgoing.message.clone())
    };
    let (status, content_type, reply) = scep_http(d, sent.via.profile, method, &query, body).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-pki-message"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let rep = client::read_reply(&reply, requester).unwrap();
    openssl_reads_the_signature(&reply);
    assert_eq!(rep.transaction_id, sent.transaction_id);
    assert_eq!(rep.recipient_nonce, sent.outgoing.sender_nonce);
    assert_eq!(rep.signer, sent.ra, "the CertRep is signed by the RA");
    rep
}

/// OpenSSL's PKCS#7 verifier, which certmonger and sscep read CertReps with, accepts the
/// reply's signature (the certificate chain aside): a SignedData without encapsulated
/// content is "no content" to it, so PENDING and FAILURE carry an empty one.
fn openssl_reads_the_signature(reply: &[u8]) {
    use std::io::Write;
    let mut openssl = std::process::Command::new("openssl")
        .args([
            "smime",
            "-verify",
            "-inform",
            "DER",
            "-noverify",
            "-out",
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    openssl.stdin.take().unwrap().write_all(reply).unwrap();
    let out = openssl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl smime -verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build, send, read.
async fn pki(
    d: &TestDaemon,
    via: Via,
    requester: &Requester,
    message_type: MessageType,
    transaction_id: &str,
    content: &[u8],
) -> CertRep {
    let sent = build(d, via, requester, message_type, transaction_id, content).await;
    deliver(d, &sent, requester).await
}

/// PKCSReq for `csr` by `device` with its conventional transactionID.
async fn enroll(d: &TestDaemon, via: Via, device: &Device, csr: &[u8]) -> CertRep {
    let tid = device.transaction_id();
    pki(d, via, &device.requester, MessageType::PkcsReq, &tid, csr).await
}

/// A transactionID no other message used.
fn fresh_tid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// RenewalReq for `csr` signed by `holder`.
async fn renew(d: &TestDaemon, holder: &Requester, tid: &str, csr: &[u8]) -> CertRep {
    pki(d, Via::default(), holder, MessageType::RenewalReq, tid, csr).await
}

/// A name outside the profile's role: FAILURE at once, nothing issued.
async fn refuses_an_outsider(d: &TestDaemon) {
    let outsider = Device::new();
    let refused = enroll(
        d,
        Via::default(),
        &outsider,
        &outsider.csr(&["www.google.com"], Some(CHALLENGE)),
    )
    .await;
    assert_eq!(failure(&refused), FailInfo::BadRequest);
    assert!(scep_inventory(d).await.is_empty());
}

/// Wildcards wait for an approver on the default profile's template; other names do not.
fn wildcards_wait_for_approval(config: &mut Config) {
    let template = &config.scep.profiles["default"].template;
    config
        .templates
        .get_mut(template)
        .unwrap()
        .approval_for_wildcards = true;
}

/// Enroll `csr`, expecting PENDING: its transaction id and the CertPoll id.
async fn enroll_pending(d: &TestDaemon, device: &Device, csr: &[u8]) -> (String, Vec<u8>) {
    let tid = device.transaction_id();
    let rep = enroll(d, Via::default(), device, csr).await;
    assert_eq!(rep.status, PkiStatus::Pending, "{rep:?}");
    assert!(rep.certificates.is_empty());
    let poll = client::issuer_and_subject(
        &issuing_ca(d).await.tbs_certificate.subject,
        &CertReq::from_der(csr).unwrap().info.subject,
    )
    .unwrap();
    (tid, poll)
}

/// CertPoll for the transaction `tid` that `device` started.
async fn cert_poll(d: &TestDaemon, device: &Device, tid: &str, poll: &[u8]) -> CertRep {
    let requester = &device.requester;
    pki(
        d,
        Via::default(),
        requester,
        MessageType::CertPoll,
        tid,
        poll,
    )
    .await
}

/// GetCert or GetCRL for `certificate`'s issuer and serial, asked by `asker`.
async fn by_serial(
    d: &TestDaemon,
    asker: &Device,
    message_type: MessageType,
    certificate: &Certificate,
) -> CertRep {
    let content = client::issuer_and_serial(certificate).unwrap();
    let tid = fresh_tid();
    pki(
        d,
        Via::default(),
        &asker.requester,
        message_type,
        &tid,
        &content,
    )
    .await
}

/// A SUCCESS carrying exactly one certificate, for `csr`'s key.
fn issued(rep: &CertRep, csr: &[u8]) -> Certificate {
    assert_eq!(rep.status, PkiStatus::Success, "{rep:?}");
    assert_eq!(rep.certificates.len(), 1, "exactly one certificate");
    assert!(rep.crls.is_empty());
    let certificate = Certificate::from_der(&rep.certificates[0]).unwrap();
    assert_eq!(
        certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap(),
        csr_spki(csr),
        "the certificate is for the CSR's key"
    );
    certificate
}

/// A FAILURE's failInfo.
fn failure(rep: &CertRep) -> FailInfo {
    assert_eq!(rep.status, PkiStatus::Failure, "{rep:?}");
    assert!(rep.certificates.is_empty());
    rep.fail_info.expect("FAILURE carries a failInfo")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_ca_certificates_and_http_errors() {
    let (_dir, d) = daemon(|_| {}).await;

    let (status, content_type, caps) = scep_http(
        &d,
        "default",
        Method::GET,
        &[("operation", "GetCACaps")],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let caps = String::from_utf8(caps).unwrap();
    let caps: Vec<&str> = caps.lines().map(str::trim).collect();
    for capability in [
        "POSTPKIOperation",
        "SHA-256",
        "AES",
        "DES3",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(caps.contains(&capability), "{capability} in {caps:?}");
    }

    // RA, issuing CA and root (the content type is checked by `ca_certificates`).
    let certificates = ca_certificates(&d, "default").await;
    assert_eq!(certificates.len(), 3, "RA, issuing CA, root");
    let ra = ra_of(&certificates);
    let issuing = issuer_of(&ra, &certificates);
    let root = issuer_of(issuing, &certificates);
    assert_ne!(issuing, root);
    assert_eq!(
        root.tbs_certificate.issuer, root.tbs_certificate.subject,
        "the root is self-signed"
    );
    assert!(!is_rsa(issuing), "the CA is ECDSA by default");
    assert_signed_by(&ra, issuing);
    assert_signed_by(issuing, root);

    // A real pkiMessage cut in half.
    let device = Device::new();
    let csr = device.csr(&["cut.test"], Some(CHALLENGE));
    let tid = device.transaction_id();
    let sent = build(
        &d,
        Via::default(),
        &device.requester,
        MessageType::PkcsReq,
        &tid,
        &csr,
    )
    .await;
    let truncated = &sent.outgoing.message[..sent.outgoing.message.len() / 2];
    // Nothing a CertRep could answer is 400 (or 404, 405), never 500.
    let caps: Query = &[("operation", "GetCACaps")];
    let post: Query = &[("operation", "PKIOperation")];
    let cases: [(&str, Method, Query, &[u8], u16); 9] = [
        ("nope", Method::GET, caps, b"", 404),
        (
            "default",
            Method::GET,
            &[("operation", "Frobnicate")],
            b"",
            400,
        ),
        ("default", Method::GET, &[], b"", 400),
        (
            "default",
            Method::POST,
            &[("operation", "GetCACert")],
            b"",
            405,
        ),
        ("default", Method::POST, post, b"not a pkiMessage", 400),
        ("default", Method::POST, post, b"\x30\x03\x02\x01\x00", 400),
        ("default", Method::POST, post, b"", 400),
        ("default", Method::POST, post, truncated, 400),
        (
            "default",
            Method::GET,
            &[
                ("operation", "PKIOperation"),
                ("message", "bm90IGEgcGtpTWVzc2FnZQ=="),
            ],
            b"",
            400,
        ),
    ];
    for (profile, method, query, body, expected) in cases {
        let what = format!("{method} /scep/{profile} {query:?}");
        let (status, _, _) = scep_http(&d, profile, method, query, body.to_vec()).await;
        assert_eq!(status, expected, "{what}");
    }
    assert!(scep_inventory(&d).await.is_empty());
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn static_challenge_enrolls_with_every_cipher_and_both_transports() {
    let (_dir, d) = daemon(|_| {}).await;
    let ways = [
        ("aes.test", ContentCipher::Aes256Cbc, false),
        ("des3.test", ContentCipher::DesEde3Cbc, false),
        ("des-by-get.test", ContentCipher::DesCbc, true),
    ];
    for (name, cipher, by_get) in ways {
        let device = Device::new();
        let csr = device.csr(&[name], Some(CHALLENGE));
        let via = Via {
            cipher,
            by_get,
            ..Via::default()
        };
        let certificate = issued(&enroll(&d, via, &device, &csr).await, &csr);
        assert_signed_by(&certificate, &issuing_ca(&d).await);
        let entry = inventory_entry(&d, &certificate).await;
        assert_eq!(entry["owner"], "scep-default", "{entry}");
        assert_eq!(entry["template"], "client", "{entry}");
        assert_eq!(entry["sans"][0]["value"], name, "{entry}");
    }
    assert_eq!(scep_inventory(&d).await.len(), ways.len());
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_transaction_gets_the_same_certificate() {
    let (_dir, d) = daemon(|_| {}).await;
    let device = Device::new();
    let csr = device.csr(&["again.test"], Some(CHALLENGE));
    let tid = device.transaction_id();
    let sent = build(
        &d,
        Via::default(),
        &device.requester,
        MessageType::PkcsReq,
        &tid,
        &csr,
    )
    .await;
    let first = issued(&deliver(&d, &sent, &device.requester).await, &csr);
    assert_eq!(scep_inventory(&d).await.len(), 1);

    // The very same bytes, then a fresh message (new nonce) in the same transaction.
    let resent = issued(&deliver(&d, &sent, &device.requester).await, &csr);
    let rebuilt = issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    assert_eq!(serial(&resent), serial(&first));
    assert_eq!(serial(&rebuilt), serial(&first));
    assert_eq!(resent, first);
    assert_eq!(scep_inventory(&d).await.len(), 1, "no second certificate");
    d.daemon.shutdown().await;
}

/// Only a re-send from the same requester certificate gets the earlier answer. A device run
/// again with its key and CSR files (sscep from cron: the same transactionID, the very same
/// CSR) signs with a new self-signed certificate, or with the one it was issued: each is
/// a new enrollment, or it would get its old certificate back until that expired.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_csr_from_another_requester_certificate_is_a_new_enrollment() {
    let (_dir, d) = daemon(|_| {}).await;
    let device = Device::new();
    let csr = device.csr(&["cron.test"], Some(CHALLENGE));
    let first = issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    let again = device.run_again();
    assert_eq!(again.transaction_id(), device.transaction_id());
    assert_ne!(again.requester.certificate, device.requester.certificate);
    let second = issued(&enroll(&d, Via::default(), &again, &csr).await, &csr);
    assert_ne!(serial(&second), serial(&first));
    // Which a re-send from the same certificate is answered with.
    let resent = issued(&enroll(&d, Via::default(), &again, &csr).await, &csr);
    assert_eq!(serial(&resent), serial(&second));
    let holder = device.holding(&first);
    let tid = device.transaction_id();
    let third = pki(
        &d,
        Via::default(),
        &holder,
        MessageType::PkcsReq,
        &tid,
        &csr,
    )
    .await;
    let third = issued(&third, &csr);
    assert_ne!(serial(&third), serial(&first));
    assert_ne!(serial(&third), serial(&second));
    assert_eq!(scep_inventory(&d).await.len(), 3);
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requester_certificate_with_a_serial_longer_than_rfc_5280_allows_enrolls() {
    // certmonger's self-signed certificate: its serial is the key's SHA-256, 32 octets (33
    // encoded), beyond the 20 RFC 5280 allows a CA.
    let (_dir, d) = daemon(|_| {}).await;
    let serial: Vec<u8> = (0..32u8).map(|i| 0x80 | i).collect();
    let device = Device::with_serial(Some(&serial));
    let signer = device
        .requester
        .certificate
        .tbs_certificate
        .serial_number
        .as_bytes();
    assert!(signer.len() > 21, "the test certificate's serial is long");
    let csr = device.csr(&["long-serial.test"], Some(CHALLENGE));
    // The reply names that certificate as its envelope's recipient, or it could not be read.
    let rep = enroll(&d, Via::default(), &device, &csr).await;
    issued(&rep, &csr);
    assert_eq!(scep_inventory(&d).await.len(), 1);
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_challenge_is_refused() {
    let (_dir, d) = daemon(|_| {}).await;
    let device = Device::new();
    for challenge in [Some("not the secret"), None] {
        let csr = device.csr(&["nope.test"], challenge);
        let rep = enroll(&d, Via::default(), &device, &csr).await;
        assert_eq!(failure(&rep), FailInfo::BadRequest, "{challenge:?}");
    }
    assert!(scep_inventory(&d).await.is_empty());
    // Each refusal is audited with its reason and the attempt, never the challenge itself.
    let refused = d.refused_credentials().await;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|entry| entry["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "wrong challenge password",
            "the CSR carries no challengePassword"
        ]
    );
    for entry in &refused {
        assert_eq!(entry["actor"], "scep-default", "{entry}");
        assert_eq!(entry["outcome"], "denied", "{entry}");
        assert_eq!(entry["layer"], "identity", "{entry}");
        assert_eq!(entry["details"]["protocol"], "scep", "{entry}");
        assert_eq!(entry["details"]["client"], "127.0.0.1", "{entry}");
        assert_eq!(entry["details"]["profile"], "default", "{entry}");
        assert_eq!(
            entry["details"]["names"],
            json!(["dns:nope.test"]),
            "{entry}"
        );
        assert!(!entry.to_string().contains("not the secret"), "{entry}");
    }
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_time_challenge_enrolls_once_and_only_for_its_names() {
    let (_dir, d) = daemon(|_| {}).await;
    let challenge = one_time_challenge(&d, "device-42", &["dev42.test"]).await;

    let device = Device::new();
    let csr = device.csr(&["dev42.test"], Some(&challenge));
    let certificate = issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    let entry = inventory_entry(&d, &certificate).await;
    assert_eq!(entry["owner"], "device-42", "{entry}");

    // Used up: another key cannot enroll with it.
    let other = Device::new();
    let csr = other.csr(&["dev42.test"], Some(&challenge));
    let rep = enroll(&d, Via::default(), &other, &csr).await;
    assert_eq!(failure(&rep), FailInfo::BadRequest);

    // A name the challenge does not list.
    let challenge = one_time_challenge(&d, "device-43", &["dev43.test"]).await;
    let greedy = Device::new();
    let csr = greedy.csr(&["dev43.test", "other.test"], Some(&challenge));
    let rep = enroll(&d, Via::default(), &greedy, &csr).await;
    assert_eq!(failure(&rep), FailInfo::BadRequest);

    assert_eq!(scep_inventory(&d).await.len(), 1, "only the first enrolled");
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_infos_follow_from_the_message() {
    let (_dir, d) = daemon(|config| {
        let mut strict = config.scep.profiles["default"].clone();
        strict.legacy_algorithms = false;
        config.scep.profiles.insert("strict".into(), strict);
    })
    .await;
    let device = Device::new();
    let csr = device.csr(&["fail.test"], Some(CHALLENGE));
    let tid = device.transaction_id();

    // A flipped bit in the signature (the last field of the message).
    let mut sent = build(
        &d,
        Via::default(),
        &device.requester,
        MessageType::PkcsReq,
        &tid,
        &csr,
    )
    .await;
    let at = sent.outgoing.message.len() - 10;
    sent.outgoing.message[at] ^= 1;
    let rep = deliver(&d, &sent, &device.requester).await;
    assert_eq!(failure(&rep), FailInfo::BadMessageCheck);

    // Single DES where legacy algorithms are off.
    let strict_des = Via {
        profile: "strict",
        cipher: ContentCipher::DesCbc,
        ..Via::default()
    };
    let rep = enroll(&d, strict_des, &device, &csr).await;
    assert_eq!(failure(&rep), FailInfo::BadAlg);

    // Signed two days ago; the profile allows one day of skew.
    let stale = Via {
        signed_at: SystemTime::now() - Duration::from_secs(2 * 86_400),
        ..Via::default()
    };
    let rep = enroll(&d, stale, &device, &csr).await;
    assert_eq!(failure(&rep), FailInfo::BadTime);

    // RenewalReq signed by a certificate rampart never issued.
    let renewal = device.csr(&["fail.test"], None);
    let rep = renew(&d, &device.requester, &fresh_tid(), &renewal).await;
    assert_eq!(failure(&rep), FailInfo::BadCertId);

    assert!(scep_inventory(&d).await.is_empty());
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_is_signed_by_the_current_certificate_and_keeps_its_names() {
    let (_dir, d) = daemon(|_| {}).await;
    let device = Device::new();
    let csr = device.csr(&["renew.test"], Some(CHALLENGE));
    let current = issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    let holder = device.holding(&current);

    // A new key, the same names, no challenge.
    let successor = Device::new();
    let csr = successor.csr(&["renew.test"], None);
    let renewed = issued(
        &renew(&d, &holder, &successor.transaction_id(), &csr).await,
        &csr,
    );
    assert_ne!(serial(&renewed), serial(&current));
    assert_eq!(inventory_entry(&d, &renewed).await["owner"], "scep-default");

    // Other names.
    let elsewhere = Device::new();
    let csr = elsewhere.csr(&["elsewhere.test"], None);
    let rep = renew(&d, &holder, &elsewhere.transaction_id(), &csr).await;
    assert_eq!(failure(&rep), FailInfo::BadRequest);

    // A revoked certificate renews nothing.
    revoke(&d, &current).await;
    let late = Device::new();
    let csr = late.csr(&["renew.test"], None);
    let rep = renew(&d, &holder, &late.transaction_id(), &csr).await;
    assert_eq!(failure(&rep), FailInfo::BadCertId);

    // Both refusals are audited under the certificate that signed them.
    let refused = d.refused_credentials().await;
    let seen: Vec<(&str, &str)> = refused
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap(),
                entry["details"]["message_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("CN=renew.test", "RenewalReq"),
            ("CN=renew.test", "RenewalReq")
        ],
        "{refused:?}"
    );
    assert!(refused[1]["reason"].as_str().unwrap().contains("revoked"));

    assert_eq!(scep_inventory(&d).await.len(), 2);
    d.daemon.shutdown().await;
}

/// A RenewalReq whose transactionID is the finished PKCSReq's (what a client hashing an
/// unchanged key produces) is a new request, never answered with the old certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_is_never_answered_with_the_certificate_it_renews() {
    let (_dir, d) = daemon(|_| {}).await;
    let device = Device::new();
    let csr = device.csr(&["rekey.test"], Some(CHALLENGE));
    let current = issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    let holder = device.holding(&current);
    let tid = holder.transaction_id();
    assert_eq!(tid, device.transaction_id(), "the same key hashes alike");

    // A new key: whatever the answer, never a certificate for another key.
    let successor = Device::new();
    let csr = successor.csr(&["rekey.test"], None);
    let rep = renew(&d, &holder, &tid, &csr).await;
    if rep.status == PkiStatus::Success {
        issued(&rep, &csr);
    }
    // The same key (renewal without re-keying): a new certificate.
    let csr = device.csr(&["rekey.test"], None);
    let rep = renew(&d, &holder, &tid, &csr).await;
    assert_ne!(serial(&issued(&rep, &csr)), serial(&current));
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_request_is_pending_until_approved_then_polled() {
    let (_dir, d) = daemon(wildcards_wait_for_approval).await;
    // A name outside the profile's role: FAILURE, nothing issued.
    refuses_an_outsider(&d).await;

    let device = Device::new();
    let csr = device.csr(&["*.held.test"], Some(CHALLENGE));
    let (tid, poll) = enroll_pending(&d, &device, &csr).await;
    let rep = cert_poll(&d, &device, &tid, &poll).await;
    assert_eq!(rep.status, PkiStatus::Pending, "{rep:?}");

    let pending = d.daemon.pipeline.store().pending_requests().unwrap();
    assert_eq!(pending.len(), 1);
    let approver = Identity {
        name: "bob".into(),
        roles: vec!["admin".into()],
        credential: Credential::System,
    };
    d.daemon
        .pipeline
        .approve(pending[0].request_id, &approver)
        .await
        .unwrap();
    let certificate = issued(&cert_poll(&d, &device, &tid, &poll).await, &csr);
    assert_eq!(
        inventory_entry(&d, &certificate).await["owner"],
        "scep-default"
    );

    let rep = cert_poll(&d, &device, "no-such-transaction", &poll).await;
    assert_eq!(failure(&rep), FailInfo::BadCertId);
    d.daemon.shutdown().await;
}

/// Past `server.retain_protocol_state_days` (here: none) a decided transaction goes: a
/// CertPoll for it is `badCertId`, and the same PKCSReq again a new enrollment. A
/// transaction whose request still waits for approval stays.
#[tokio::test(flavor = "multi_thread")]
async fn decided_transactions_go_after_their_retention_and_waiting_ones_stay() {
    let (_dir, d) = daemon(wildcards_wait_for_approval).await;
    let decided = Device::new();
    let decided_csr = decided.csr(&["decided.test"], Some(CHALLENGE));
    let first = issued(
        &enroll(&d, Via::default(), &decided, &decided_csr).await,
        &decided_csr,
    );
    let waiting = Device::new();
    let waiting_csr = waiting.csr(&["*.waiting.test"], Some(CHALLENGE));
    let (tid, poll) = enroll_pending(&d, &waiting, &waiting_csr).await;

    let removed =
        rampart::gateway::retention::prune(&d.daemon.pipeline, None, time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!(removed.scep_transactions, 1);
    let transactions = d.daemon.pipeline.store().protocol_scan("scep.tx", "");
    assert_eq!(transactions.unwrap().len(), 1, "the waiting one stays");
    let rep = cert_poll(&d, &waiting, &tid, &poll).await;
    assert_eq!(rep.status, PkiStatus::Pending, "{rep:?}");

    let decided_poll = client::issuer_and_subject(
        &issuing_ca(&d).await.tbs_certificate.subject,
        &CertReq::from_der(&decided_csr).unwrap().info.subject,
    )
    .unwrap();
    let rep = cert_poll(&d, &decided, &decided.transaction_id(), &decided_poll).await;
    assert_eq!(failure(&rep), FailInfo::BadCertId);
    let again = issued(
        &enroll(&d, Via::default(), &decided, &decided_csr).await,
        &decided_csr,
    );
    assert_ne!(serial(&again), serial(&first), "a new enrollment");
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_cert_and_get_crl_answer_for_this_ca() {
    let (_dir, d) = daemon(|_| {}).await;
    let device = Device::new();
    let csr = device.csr(&["fetch.test"], Some(CHALLENGE));
    let certificate = issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    let issuing = issuing_ca(&d).await;

    let asker = Device::new();
    let rep = by_serial(&d, &asker, MessageType::GetCert, &certificate).await;
    assert_eq!(rep.status, PkiStatus::Success, "{rep:?}");
    assert_eq!(rep.certificates, vec![certificate.to_der().unwrap()]);
    assert!(rep.crls.is_empty());

    let mut unknown = certificate.clone();
    unknown.tbs_certificate.serial_number = SerialNumber::new(&[0x7e, 0x57, 0x00, 0x01]).unwrap();
    let rep = by_serial(&d, &asker, MessageType::GetCert, &unknown).await;
    assert_eq!(failure(&rep), FailInfo::BadCertId);
    // Another CA's certificate (the asker's self-signed one).
    let foreign = Certificate::from_der(&asker.requester.certificate.to_der().unwrap()).unwrap();
    for message_type in [MessageType::GetCert, MessageType::GetCrl] {
        let rep = by_serial(&d, &asker, message_type, &foreign).await;
        assert_eq!(failure(&rep), FailInfo::BadCertId, "{message_type}");
    }

    // GetCRL: the issuing CA's current CRL, alone; after a revocation it lists the serial.
    let crl = |rep: &CertRep| {
        assert_eq!(rep.status, PkiStatus::Success, "{rep:?}");
        assert!(rep.certificates.is_empty());
        assert_eq!(rep.crls.len(), 1, "exactly one CRL");
        let crl = CertificateList::from_der(&rep.crls[0]).unwrap();
        assert_crl_signed_by(&crl, &issuing);
        let revoked = crl.tbs_cert_list.revoked_certificates.unwrap_or_default();
        revoked
            .iter()
            .map(|entry| rampart_acme::ari::serial_hex(entry.serial_number.as_bytes()))
            .collect::<Vec<_>>()
    };
    let before = crl(&by_serial(&d, &asker, MessageType::GetCrl, &certificate).await);
    assert!(before.is_empty(), "{before:?}");
    revoke(&d, &certificate).await;
    let after = crl(&by_serial(&d, &asker, MessageType::GetCrl, &certificate).await);
    assert_eq!(after, vec![serial(&certificate)]);
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_ra_is_served_and_used() {
    let (_dir, d) = daemon(|_| {}).await;
    let old = current_ra(&d, "default").await;
    let (status, answer) = d
        .call(Method::POST, "/api/v1/scep/ra/rotate", Some(json!({})))
        .await;
    assert_eq!(status, 201, "{answer}");

    let certificates = ca_certificates(&d, "default").await;
    let new = ra_of(&certificates);
    assert_eq!(answer["serial"], serial(&new).as_str());
    assert_ne!(serial(&new), serial(&old));
    assert_ne!(
        new.tbs_certificate.subject_public_key_info, old.tbs_certificate.subject_public_key_info,
        "a new key"
    );
    assert_signed_by(&new, issuer_of(&new, &certificates));

    // `enroll` seals for the RA GetCACert serves and checks the reply is signed by it.
    let device = Device::new();
    let csr = device.csr(&["rotated.test"], Some(CHALLENGE));
    issued(&enroll(&d, Via::default(), &device, &csr).await, &csr);
    d.daemon.shutdown().await;
}

/// A tiny MDM: allows the challenge "mdm-ok" (naming the device's owner), refuses others.
async fn mdm_webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::{routing::post, Json};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/check",
        post(move |Json(body): Json<Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body.clone());
                Json(if body["challenge"] == "mdm-ok" {
                    serde_json::json!({"allow": true, "identity": "mdm-device-9"})
                } else {
                    serde_json::json!({"allow": false, "reason": "not enrolled in the MDM"})
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mdm_webhook_decides_on_other_challenges() {
    let (url, seen) = mdm_webhook().await;
    let (_dir, d) = daemon(|config| {
        config
            .scep
            .profiles
            .get_mut("default")
            .unwrap()
            .challenge_webhook = Some(url);
    })
    .await;
    let device = Device::new();
    let csr = device.csr(&["mdm9.test"], Some("mdm-ok"));
    let rep = enroll(&d, Via::default(), &device, &csr).await;
    assert_eq!(rep.status, PkiStatus::Success);
    let issued = Certificate::from_der(&rep.certificates[0]).unwrap();
    assert_eq!(inventory_entry(&d, &issued).await["owner"], "mdm-device-9");
    let asked = seen.lock().unwrap()[0].clone();
    assert_eq!(asked["names"], serde_json::json!(["mdm9.test"]));
    assert_eq!(asked["profile"], "default");

    // Refused by the MDM; the static challenge still works beside the webhook.
    let other = Device::new();
    let refused = enroll(
        &d,
        Via::default(),
        &other,
        &other.csr(&["x.test"], Some("guess")),
    )
    .await;
    assert_eq!(failure(&refused), FailInfo::BadRequest);
    // Audited with the MDM's reason, never the challenge tried.
    let audited = d.refused_credentials().await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not enrolled in the MDM"),
        "{}",
        audited[0]
    );
    assert!(!audited[0].to_string().contains("guess"), "{}", audited[0]);
    let static_ok = enroll(
        &d,
        Via::default(),
        &other,
        &other.csr(&["y.test"], Some(CHALLENGE)),
    )
    .await;
    assert_eq!(static_ok.status, PkiStatus::Success);
    assert_eq!(scep_inventory(&d).await.len(), 2);
    d.daemon.shutdown().await;
}

/// An enrollment whose certificate outlasts `scep.issue_wait_ms` (0 here: every one does) is
/// answered PENDING while the issuance goes on; the device's CertPoll gets the certificate.
/// The wait bounds the CA's time only: a refusal is answered FAILURE at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_enrollment_outlasting_the_wait_is_pending_then_polled() {
    let (_dir, d) = daemon(|config| config.scep.issue_wait_ms = 0).await;
    refuses_an_outsider(&d).await;

    let device = Device::new();
    let csr = device.csr(&["slow-ca.test"], Some(CHALLENGE));
    let (tid, poll) = enroll_pending(&d, &device, &csr).await;
    let mut rep = cert_poll(&d, &device, &tid, &poll).await;
    for _ in 0..250 {
        if rep.status != PkiStatus::Pending {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        rep = cert_poll(&d, &device, &tid, &poll).await;
    }
    let certificate = issued(&rep, &csr);
    assert_eq!(
        inventory_entry(&d, &certificate).await["owner"],
        "scep-default"
    );
    assert_eq!(scep_inventory(&d).await.len(), 1);
    d.daemon.shutdown().await;
}
