//! ACME request bodies: the flattened JWS (`Jws::parse`, signature verification with the
//! header's JWK, thumbprints, key checks), every request payload type the handlers
//! deserialize with `Jws::json`, and what the handlers then read from the payloads
//! (identifiers, contacts, external account binding, `replaces`, finalize CSR,
//! revokeCert certificate, keyChange inner JWS).
//!
//! The input is tried both as a whole JWS body and as a bare payload.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rampart_acme::ari::{authority_key_id, CertId};
use rampart_acme::jws::{
    check_public_key, same_public_key, thumbprint, ExternalAccountBinding, Jws, KeyRef,
    VerifierCache,
};
use rampart_acme::wire::{
    validate_contacts, AccountUpdate, AuthzUpdate, ChallengeType, Finalize, Identifier, KeyChange,
    NewAccount, NewAuthz, NewOrder, RevokeCert,
};
use serde_json::{Map, Value};

fn cache() -> &'static VerifierCache {
    static CACHE: OnceLock<VerifierCache> = OnceLock::new();
    CACHE.get_or_init(VerifierCache::default)
}

fn key_checks(jwk: &Map<String, Value>) {
    let _ = check_public_key(jwk);
    let _ = thumbprint(jwk);
    let _ = same_public_key(jwk, &rampart_fuzz::p256_spki());
    let _ = same_public_key(jwk, &spki_of(rampart_fuzz::RA_CERT));
}

fn spki_of(certificate: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    x509_cert::Certificate::from_der(certificate)
        .ok()
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
        .unwrap_or_default()
}

fn identifier(identifier: &Identifier) {
    if let Ok(normalized) = identifier.normalize() {
        let wildcard = normalized.is_wildcard();
        let _ = ChallengeType::offered_for(&normalized.base(), wildcard);
    }
}

/// Everything a handler does with a payload, as far as it is parsing.
fn payload(bytes: &[u8], jwk: &Map<String, Value>, url: &str) {
    if let Ok(account) = serde_json::from_slice::<NewAccount>(bytes) {
        let _ = validate_contacts(&account.contact);
        if let Some(binding) = &account.external_account_binding {
            if let Ok(binding) = ExternalAccountBinding::parse(binding, jwk, url) {
                let _ = binding.verify(b"0123456789abcdef0123456789abcdef");
            }
        }
    }
    if let Ok(update) = serde_json::from_slice::<AccountUpdate>(bytes) {
        let _ = validate_contacts(update.contact.as_deref().unwrap_or_default());
    }
    if let Ok(order) = serde_json::from_slice::<NewOrder>(bytes) {
        order.identifiers.iter().for_each(identifier);
        if let Some(replaces) = &order.replaces {
            let _ = CertId::parse(replaces);
        }
    }
    if let Ok(authz) = serde_json::from_slice::<NewAuthz>(bytes) {
        identifier(&authz.identifier);
    }
    if let Ok(finalize) = serde_json::from_slice::<Finalize>(bytes) {
        if let Ok(der) = URL_SAFE_NO_PAD.decode(finalize.csr.trim_end_matches('=')) {
            if let Ok(facts) = rampart_acme::csr::read(&der) {
                let _ = same_public_key(jwk, &facts.spki_der);
            }
        }
    }
    let _ = serde_json::from_slice::<AuthzUpdate>(bytes);
    if let Ok(revoke) = serde_json::from_slice::<RevokeCert>(bytes) {
        if let Ok(der) = URL_SAFE_NO_PAD.decode(revoke.certificate.trim_end_matches('=')) {
            let _ = authority_key_id(&der);
        }
    }
    if let Ok(change) = serde_json::from_slice::<KeyChange>(bytes) {
        key_checks(&change.old_key);
    }
    let _ = serde_json::from_slice::<Identifier>(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = ChallengeType::parse(text);
        let _ = CertId::parse(text);
    }
}

/// A JWS body: parse, verify with its own key (newAccount-style) or the fixed account key
/// (`kid`-style), then its payload; keyChange nests one more JWS in the payload.
fn body(body: &[u8], depth: u8) {
    let Ok(jws) = Jws::parse(body) else {
        return;
    };
    let jwk = match &jws.key {
        KeyRef::Jwk(jwk) => {
            key_checks(jwk);
            jwk.clone()
        }
        KeyRef::Kid(_) => rampart_fuzz::p256_jwk(),
    };
    let _ = jws.verify(&jwk);
    let _ = jws.verify_cached(&jwk, None, cache());
    let _ = jws.is_post_as_get();
    let _ = jws.json::<Value>();
    payload(&jws.payload, &jwk, &jws.url);
    if depth == 0 {
        self::body(&jws.payload, 1);
    }
}

fuzz_target!(|data: &[u8]| {
    body(data, 0);
    payload(
        data,
        &rampart_fuzz::p256_jwk(),
        "https://acme.test/new-account",
    );
});
