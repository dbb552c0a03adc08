//! What the fuzz targets share: fixed test identities (made once with openssl, see
//! `keys/README.md`) so that the committed corpus stays valid across runs — a SCEP envelope
//! in the corpus decrypts with the RA key every process loads, a JWS verifies with the same
//! account key — and the SCEP profile and clock the targets read messages with.
//!
//! These keys protect nothing; they exist only for fuzzing.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rampart_scep::client::Requester;
use rampart_scep::{Profile, Ra};

/// The SCEP RA certificate (RSA-2048, self-signed), DER.
pub const RA_CERT: &[u8] = include_bytes!("../keys/ra.cert.der");
/// Its key, PKCS#8 DER.
pub const RA_KEY: &[u8] = include_bytes!("../keys/ra.key.der");
/// A SCEP requester's self-signed certificate (RSA-2048), DER.
pub const REQUESTER_CERT: &[u8] = include_bytes!("../keys/requester.cert.der");
/// Its key, PKCS#8 DER.
pub const REQUESTER_KEY: &[u8] = include_bytes!("../keys/requester.key.der");
/// A P-256 key (ACME account key, CSR key), PKCS#8 DER.
pub const P256_KEY: &[u8] = include_bytes!("../keys/p256.key.der");

/// The clock SCEP messages are read at (and the corpus messages were signed at):
/// 2027-01-15T08:00:00Z.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The SCEP profiles a message is read under, chosen by the input.
pub const PROFILES: [Profile; 2] = [
    Profile {
        legacy_algorithms: true,
        max_clock_skew: None,
    },
    Profile {
        legacy_algorithms: false,
        max_clock_skew: Some(Duration::from_secs(3600)),
    },
];

/// The SCEP RA, loaded once per process.
pub fn ra() -> &'static Ra {
    static RA: OnceLock<Ra> = OnceLock::new();
    RA.get_or_init(|| Ra::new(RA_CERT.to_vec(), RA_KEY).expect("the fuzz RA identity loads"))
}

/// The SCEP requester, loaded once per process.
pub fn requester() -> &'static Requester {
    static REQUESTER: OnceLock<Requester> = OnceLock::new();
    REQUESTER.get_or_init(|| {
        Requester::new(REQUESTER_CERT, REQUESTER_KEY).expect("the fuzz requester loads")
    })
}

/// The P-256 key with fixed-length (JWS) signatures.
pub fn p256_jws() -> &'static EcdsaKeyPair {
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, P256_KEY)
            .expect("the fuzz P-256 key loads")
    })
}

/// The P-256 key with DER (X.509) signatures.
pub fn p256_x509() -> &'static EcdsaKeyPair {
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, P256_KEY)
            .expect("the fuzz P-256 key loads")
    })
}

/// The P-256 key's SubjectPublicKeyInfo, DER.
pub fn p256_spki() -> Vec<u8> {
    use der::Encode;
    let point = p256_jws().public_key().as_ref().to_vec();
    spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
            parameters: Some(der::Any::from(der::oid::ObjectIdentifier::new_unwrap(
                "1.2.840.10045.3.1.7",
            ))),
        },
        subject_public_key: der::asn1::BitString::from_bytes(&point)
            .expect("a point is a bit string"),
    }
    .to_der()
    .expect("an SPKI encodes")
}

/// The P-256 key as a JWK.
pub fn p256_jwk() -> serde_json::Map<String, serde_json::Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let point = p256_jws().public_key().as_ref();
    let mut jwk = serde_json::Map::new();
    jwk.insert("kty".into(), "EC".into());
    jwk.insert("crv".into(), "P-256".into());
    jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(&point[1..33]).into());
    jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(&point[33..]).into());
    jwk
}

/// `data` as a parsed PKCS#10 request re-signed with the P-256 key (its public key
/// replaced): lets the fuzzer reach what is read after the signature check, which a
/// mutated signature never passes.
pub fn resign_csr(data: &[u8]) -> Option<Vec<u8>> {
    use der::{Decode, Encode};
    use x509_cert::request::CertReq;
    let mut request = CertReq::from_der(data).ok()?;
    request.info.public_key = spki::SubjectPublicKeyInfoOwned::from_der(&p256_spki()).ok()?;
    request.algorithm = spki::AlgorithmIdentifierOwned {
        oid: der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
        parameters: None,
    };
    let tbs = request.info.to_der().ok()?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signature = p256_x509().sign(&rng, &tbs).ok()?;
    request.signature = der::asn1::BitString::from_bytes(signature.as_ref()).ok()?;
    request.to_der().ok()
}

/// Splits `data` at the first `separator`: (before, after); no separator = (data, []).
pub fn split(data: &[u8], separator: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == separator) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
