//! Hot paths of every enrollment, per request: JWS verification (ACME), CSR parsing with
//! its signature check, and certificate signing by the built-in CA per CA key type.
//!
//! `cargo bench --bench crypto`; figures in docs/BENCHMARKS.md.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rampart::ca::local::LocalCa;
use rampart::ca::{CaAdapter, IssuanceOrder, Serial};
use rampart::config::{Config, ExtendedKeyUsage, KeyAlgorithm};
use rampart::model::{Identifier, KeyType};
use rampart::pkix::csr::VerifiedCsr;
use rampart::pkix::goodkey;
use rampart_acme::jws::{Jws, KeyRef, VerifierCache};
use rcgen::PublicKeyData;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A flattened JWS as an ACME client sends it (newOrder with its `jwk`), signed with `key`.
fn signed_request(alg: &str, jwk: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let protected = b64(json!({
        "alg": alg,
        "jwk": jwk,
        "nonce": "oFvnlFP1wIhRlYS2jTaXbA",
        "url": "https://localhost:8443/acme/default/new-order",
    })
    .to_string()
    .as_bytes());
    let payload = b64(
        json!({"identifiers": [{"type": "dns", "value": "app.bench.test"}]})
            .to_string()
            .as_bytes(),
    );
    let signature = sign(format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": b64(&signature)})
        .to_string()
        .into_bytes()
}

fn es256_request() -> Vec<u8> {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = key.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    signed_request("ES256", jwk, |message| {
        key.sign(&rng, message).unwrap().as_ref().to_vec()
    })
}

fn rs256_request() -> Vec<u8> {
    use der::Decode;
    let generated =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap();
    let public = pkcs1::RsaPublicKey::from_der(generated.der_bytes()).unwrap();
    let jwk = json!({
        "kty": "RSA",
        "n": b64(public.modulus.as_bytes()),
        "e": b64(public.public_exponent.as_bytes()),
    });
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&generated.serialize_der()).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    signed_request("RS256", jwk, |message| {
        let mut signature = vec![0; key.public_modulus_len()];
        key.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            message,
            &mut signature,
        )
        .unwrap();
        signature
    })
}

fn jwk_of(jws: &Jws) -> Map<String, Value> {
    match &jws.key {
        KeyRef::Jwk(jwk) => jwk.clone(),
        KeyRef::Kid(_) => unreachable!("the bench signs with a jwk"),
    }
}

fn jws(c: &mut Criterion) {
    let mut group = c.benchmark_group("jws");
    for (alg, body) in [("ES256", es256_request()), ("RS256", rs256_request())] {
        let parsed = Jws::parse(&body).unwrap();
        let jwk = jwk_of(&parsed);
        let cache = VerifierCache::default();
        parsed.verify_cached(&jwk, None, &cache).unwrap();
        // What the server does per request for a known account: the key's verifier is
        // cached, the signature checked.
        group.bench_function(format!("verify {alg} (cached key)"), |b| {
            b.iter(|| parsed.verify_cached(&jwk, None, &cache).unwrap())
        });
        // A request from a key not seen before: parse, decode the JWK, verify.
        group.bench_function(format!("parse + verify {alg} (new key)"), |b| {
            b.iter(|| {
                let parsed = Jws::parse(&body).unwrap();
                parsed.verify(&jwk_of(&parsed)).unwrap()
            })
        });
    }
    group.finish();
}

fn csr_der(key: &rcgen::KeyPair) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(vec![
        "app.bench.test".to_string(),
        "www.app.bench.test".to_string(),
    ])
    .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "app.bench.test");
    params.serialize_request(key).unwrap().der().to_vec()
}

fn csr(c: &mut Criterion) {
    let mut group = c.benchmark_group("csr");
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    for (name, key) in [("P-256", &p256), ("RSA-2048", &rsa)] {
        let der = csr_der(key);
        VerifiedCsr::parse(&der).unwrap();
        group.bench_function(format!("parse + verify {name}"), |b| {
            b.iter(|| VerifiedCsr::parse(&der).unwrap())
        });
    }
    group.finish();
}

/// The weak-key rules every RSA request passes (small factors, ROCA, Fermat's rounds).
fn weak_key_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("weak-key check");
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    for (name, key) in [("RSA-2048", &rsa), ("P-256", &p256)] {
        let spki = key.subject_public_key_info();
        goodkey::check(&spki, &[]).unwrap();
        group.bench_function(name, |b| b.iter(|| goodkey::check(&spki, &[]).unwrap()));
    }
    group.finish();
}

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign certificate");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let leaf = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let now = OffsetDateTime::now_utc();
    for (name, algorithm) in [
        ("CA P-256", KeyAlgorithm::EcdsaP256),
        ("CA P-384", KeyAlgorithm::EcdsaP384),
        ("CA RSA-3072", KeyAlgorithm::Rsa3072),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load_default().unwrap().ca;
        config.key_algorithm = algorithm;
        let (ca, _) = LocalCa::create_or_load(&dir.path().join("ca"), &config, now).unwrap();
        let order = |serial: Serial| IssuanceOrder {
            serial,
            public_key: leaf.der_bytes().to_vec(),
            key_type: KeyType::EcdsaP256,
            common_name: Some("app.bench.test".into()),
            sans: vec![
                Identifier::dns("app.bench.test").unwrap(),
                Identifier::dns("www.app.bench.test").unwrap(),
            ],
            not_before: now,
            not_after: now + time::Duration::days(90),
            extended_key_usages: vec![ExtendedKeyUsage::ServerAuth],
            key_encipherment: false,
            csr_der: Vec::new(),
        };
        // What the CA does per certificate: lint the unsigned certificate, then sign.
        group.bench_function(name, |b| {
            b.iter_batched(
                || order(Serial::generate()),
                |order| runtime.block_on(ca.issue(&order)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = jws, csr, weak_key_check, signing
}
criterion_main!(benches);
