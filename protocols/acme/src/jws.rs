//! JWS as ACME uses it (RFC 8555 §6.2): flattened JSON serialization, a protected header
//! with `alg`, `nonce`, `url` and exactly one of `jwk` / `kid`. Signatures are verified
//! with josekit; this module only frames, decodes and checks headers. Also: JWK
//! thumbprints (RFC 7638) and matching a JWK against a certificate's public key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jws::{JwsVerifier, HS256, HS384, HS512};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::problem::{Problem, ProblemType};

/// Signature algorithms accepted for account keys.
pub const ALGORITHMS: [&str; 4] = ["ES256", "ES384", "RS256", "EdDSA"];

/// Smallest RSA account key accepted.
const MIN_RSA_BITS: usize = 2048;

/// Verifiers of recently seen account keys, by (algorithm, thumbprint).
#[derive(Debug, Default)]
pub struct VerifierCache(Mutex<HashMap<(String, String), Arc<AccountKey>>>);

/// An account (or certificate) public key from a JWK, parsed once and ready to verify JWS
/// signatures of its algorithm (ES256 and ES384 with fixed-length r‖s signatures, RFC 7518
/// §3.4; RS256, PKCS#1 v1.5 with SHA-256; EdDSA with Ed25519, RFC 8037). Signatures are
/// checked with aws-lc-rs: several per ACME order, and it is markedly faster than going
/// through OpenSSL's EVP layer per call; the key is decoded and checked (EC points on
/// their curve) when the verifier is made, not at each signature.
pub struct AccountKey(aws_lc_rs::signature::ParsedPublicKey);

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKey({:?})", self.0.algorithm())
    }
}

impl AccountKey {
    /// Verify `signature` over `message`.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify_sig(message, signature).is_ok()
    }
}

impl VerifierCache {
    /// Keys kept before the cache starts over.
    const CAPACITY: usize = 10_000;
}

/// The flattened JSON serialization.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
    #[serde(default)]
    header: Option<Value>,
}

/// How the request names its key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRef {
    /// A public key (newAccount, revokeCert by certificate key).
    Jwk(Map<String, Value>),
    /// An account URL.
    Kid(String),
}

/// A parsed, not yet verified, JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    /// `alg`.
    pub alg: String,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `url`.
    pub url: String,
    /// `jwk` or `kid`.
    pub key: KeyRef,
    /// Decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| Problem::malformed(format!("JWS {field} is not base64url")))
}

impl Jws {
    /// Parse a request body.
    pub fn parse(body: &[u8]) -> Result<Jws, Problem> {
        let Frame {
            header,
            payload,
            signing_input,
            signature,
        } = Frame::parse(body)?;
        let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_string);
        let alg = text("alg").ok_or_else(|| Problem::malformed("JWS header lacks `alg`"))?;
        if !ALGORITHMS.contains(&alg.as_str()) {
            let mut problem = Problem::new(
                ProblemType::BadSignatureAlgorithm,
                format!(
                    "JWS algorithm `{alg}` is not accepted (use one of {})",
                    ALGORITHMS.join(", ")
                ),
            );
            problem.algorithms = Some(ALGORITHMS.to_vec());
            return Err(problem);
        }
        if let Some(crit) = header.get("crit") {
            return Err(Problem::malformed(format!(
                "unsupported critical JWS header parameters: {crit}"
            )));
        }
        let url = text("url").ok_or_else(|| Problem::malformed("JWS header lacks `url`"))?;
        let key = match (header.get("jwk"), header.get("kid")) {
            (Some(Value::Object(jwk)), None) => KeyRef::Jwk(jwk.clone()),
            (None, Some(Value::String(kid))) => KeyRef::Kid(kid.clone()),
            (Some(_), Some(_)) => {
                return Err(Problem::malformed("JWS header has both `jwk` and `kid`"))
            }
            _ => {
                return Err(Problem::malformed(
                    "JWS header needs a `jwk` object or a `kid` string",
                ))
            }
        };
        Ok(Jws {
            alg,
            nonce: text("nonce"),
            url,
            key,
            payload,
            signing_input,
            signature,
        })
    }

    /// Verify the signature with `jwk`.
    pub fn verify(&self, jwk: &Map<String, Value>) -> Result<(), Problem> {
        self.verify_with(&account_key(&self.alg, jwk)?)
    }

    /// Verify the signature with `jwk`, whose RFC 7638 thumbprint is `thumbprint` (an
    /// account record keeps it: pass it to spare hashing the key again), reusing a verifier
    /// from `cache` when it holds one for this key and algorithm (building one means
    /// decoding the key, which costs more than the verification itself).
    pub fn verify_cached(
        &self,
        jwk: &Map<String, Value>,
        thumbprint: Option<&str>,
        cache: &VerifierCache,
    ) -> Result<(), Problem> {
        let thumbprint = match thumbprint {
            Some(known) => known.to_string(),
            None => self::thumbprint(jwk)?,
        };
        let key = (self.alg.clone(), thumbprint);
        let cached = cache
            .0
            .lock()
            .expect("verifier cache lock")
            .get(&key)
            .cloned();
        let verifier = match cached {
            Some(verifier) => verifier,
            None => {
                let verifier = Arc::new(account_key(&self.alg, jwk)?);
                let mut map = cache.0.lock().expect("verifier cache lock");
                if map.len() >= VerifierCache::CAPACITY {
                    map.clear();
                }
                map.insert(key, verifier.clone());
                verifier
            }
        };
        self.verify_with(&verifier)
    }

    fn verify_with(&self, key: &AccountKey) -> Result<(), Problem> {
        if key.verify(&self.signing_input, &self.signature) {
            Ok(())
        } else {
            Err(Problem::malformed("JWS signature does not verify"))
        }
    }

    /// The payload as JSON (`{}` is not the same as POST-as-GET's empty payload).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Problem::malformed(format!("invalid request payload: {e}")))
    }

    /// Whether this is POST-as-GET.
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }
}

/// A flattened JWS, decoded but not interpreted.
struct Frame {
    header: Map<String, Value>,
    payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl Frame {
    fn parse(body: &[u8]) -> Result<Frame, Problem> {
        let flat: Flattened = serde_json::from_slice(body)
            .map_err(|e| Problem::malformed(format!("the body is not a flattened JWS: {e}")))?;
        if flat.header.is_some() {
            return Err(Problem::malformed(
                "unprotected JWS headers are not allowed",
            ));
        }
        let header: Map<String, Value> =
            serde_json::from_slice(&b64("protected header", &flat.protected)?).map_err(|e| {
                Problem::malformed(format!("JWS protected header is not a JSON object: {e}"))
            })?;
        Ok(Frame {
            header,
            payload: b64("payload", &flat.payload)?,
            signature: b64("signature", &flat.signature)?,
            signing_input: format!("{}.{}", flat.protected, flat.payload).into_bytes(),
        })
    }
}

/// An external account binding (§7.3.4): a JWS made with a MAC key the CA handed out
/// of band, over the new account's public key.
#[derive(Debug, Clone)]
pub struct ExternalAccountBinding {
    /// The MAC key's id.
    pub key_id: String,
    alg: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl ExternalAccountBinding {
    /// Parse the `externalAccountBinding` member of a newAccount payload and check that it
    /// binds `account_jwk` for `url`.
    pub fn parse(
        value: &Value,
        account_jwk: &Map<String, Value>,
        url: &str,
    ) -> Result<Self, Problem> {
        let bytes = serde_json::to_vec(value).expect("JSON values serialize");
        let Frame {
            header,
            payload,
            signing_input,
            signature,
        } = Frame::parse(&bytes)?;
        let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_string);
        let alg =
            text("alg").ok_or_else(|| Problem::malformed("externalAccountBinding lacks `alg`"))?;
        if !["HS256", "HS384", "HS512"].contains(&alg.as_str()) {
            return Err(Problem::malformed(format!(
                "externalAccountBinding algorithm `{alg}`: use HS256"
            )));
        }
        if header.contains_key("nonce") {
            return Err(Problem::malformed(
                "externalAccountBinding must not carry a nonce",
            ));
        }
        if text("url").as_deref() != Some(url) {
            return Err(Problem::unauthorized(
                "externalAccountBinding `url` is not the newAccount URL",
            ));
        }
        let key_id =
            text("kid").ok_or_else(|| Problem::malformed("externalAccountBinding lacks `kid`"))?;
        let bound: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| Problem::malformed("externalAccountBinding payload is not a JWK"))?;
        if thumbprint(&bound)? != thumbprint(account_jwk)? {
            return Err(Problem::unauthorized(
                "externalAccountBinding binds another key",
            ));
        }
        Ok(ExternalAccountBinding {
            key_id,
            alg,
            signing_input,
            signature,
        })
    }

    /// Verify the MAC with the key the CA issued.
    pub fn verify(&self, mac_key: &[u8]) -> Result<(), Problem> {
        let verifier: Box<dyn JwsVerifier> = match self.alg.as_str() {
            "HS256" => Box::new(
                HS256
                    .verifier_from_bytes(mac_key)
                    .map_err(Problem::internal)?,
            ),
            "HS384" => Box::new(
                HS384
                    .verifier_from_bytes(mac_key)
                    .map_err(Problem::internal)?,
            ),
            _ => Box::new(
                HS512
                    .verifier_from_bytes(mac_key)
                    .map_err(Problem::internal)?,
            ),
        };
        verifier
            .verify(&self.signing_input, &self.signature)
            .map_err(|_| Problem::unauthorized("externalAccountBinding signature does not verify"))
    }
}

/// The key of `jwk` for `alg`, checking that the key type and curve fit the algorithm.
fn account_key(alg: &str, jwk: &Map<String, Value>) -> Result<AccountKey, Problem> {
    use aws_lc_rs::signature::{
        ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519,
        RSA_PKCS1_2048_8192_SHA256,
    };
    check_public_key(jwk)?;
    let misfit = |why: &str| {
        Problem::new(
            ProblemType::BadPublicKey,
            format!("the JWK does not fit algorithm {alg}: {why}"),
        )
    };
    let kty = member(jwk, "kty")?;
    let coordinate = |name: &str, len: usize| -> Result<Vec<u8>, Problem> {
        let bytes = b64(name, member(jwk, name)?)?;
        if bytes.len() == len {
            Ok(bytes)
        } else {
            Err(misfit(&format!("`{name}` is not {len} bytes")))
        }
    };
    let ec_point = |len: usize| -> Result<Vec<u8>, Problem> {
        let mut point = vec![0x04];
        point.extend(coordinate("x", len)?);
        point.extend(coordinate("y", len)?);
        Ok(point)
    };
    let (algorithm, key): (&'static dyn aws_lc_rs::signature::VerificationAlgorithm, _) =
        match (alg, kty) {
            ("ES256", "EC") if member(jwk, "crv")? == "P-256" => {
                (&ECDSA_P256_SHA256_FIXED, ec_point(32)?)
            }
            ("ES384", "EC") if member(jwk, "crv")? == "P-384" => {
                (&ECDSA_P384_SHA384_FIXED, ec_point(48)?)
            }
            ("RS256", "RSA") => (&RSA_PKCS1_2048_8192_SHA256, rsa_public_key(jwk)?),
            ("EdDSA", "OKP") if member(jwk, "crv")? == "Ed25519" => {
                (&ED25519, coordinate("x", 32)?)
            }
            ("ES256" | "ES384" | "RS256" | "EdDSA", _) => {
                return Err(misfit(&format!("key type {kty} or its curve")))
            }
            (other, _) => {
                return Err(Problem::new(
                    ProblemType::BadSignatureAlgorithm,
                    format!("algorithm {other}"),
                ))
            }
        };
    ParsedPublicKey::new(algorithm, key)
        .map(AccountKey)
        .map_err(|e| misfit(&format!("not a usable public key ({e})")))
}

/// An RSA JWK's modulus and exponent as a DER RSAPublicKey (RFC 8017 §A.1.1).
fn rsa_public_key(jwk: &Map<String, Value>) -> Result<Vec<u8>, Problem> {
    use der::Encode;
    let n = b64("RSA modulus", member(jwk, "n")?)?;
    let e = b64("RSA exponent", member(jwk, "e")?)?;
    let bad = || Problem::new(ProblemType::BadPublicKey, "malformed RSA public key");
    let strip = |b: &[u8]| -> Vec<u8> {
        b.iter()
            .position(|x| *x != 0)
            .map_or(vec![0], |i| b[i..].to_vec())
    };
    let (n, e) = (strip(&n), strip(&e));
    pkcs1::RsaPublicKey {
        modulus: pkcs1::UintRef::new(&n).map_err(|_| bad())?,
        public_exponent: pkcs1::UintRef::new(&e).map_err(|_| bad())?,
    }
    .to_der()
    .map_err(|_| bad())
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, Problem> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::new(ProblemType::BadPublicKey, format!("JWK lacks `{name}`")))
}

/// Refuse private keys, symmetric keys and weak RSA keys.
pub fn check_public_key(jwk: &Map<String, Value>) -> Result<(), Problem> {
    if jwk.contains_key("d") || jwk.contains_key("k") {
        return Err(Problem::new(
            ProblemType::BadPublicKey,
            "the JWK holds private or symmetric key material",
        ));
    }
    match member(jwk, "kty")? {
        "RSA" => {
            let n = b64("RSA modulus", member(jwk, "n")?)?;
            let bits = n
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| (n.len() - i) * 8);
            if bits < MIN_RSA_BITS {
                return Err(Problem::new(
                    ProblemType::BadPublicKey,
                    format!("RSA account keys need at least {MIN_RSA_BITS} bits"),
                ));
            }
            Ok(())
        }
        "EC" | "OKP" => Ok(()),
        other => Err(Problem::new(
            ProblemType::BadPublicKey,
            format!("key type `{other}` is not accepted"),
        )),
    }
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, base64url.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, Problem> {
    let required: &[&str] = match member(jwk, "kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => {
            return Err(Problem::new(
                ProblemType::BadPublicKey,
                format!("key type `{other}` is not accepted"),
            ))
        }
    };
    let mut canonical = Map::new();
    for name in required {
        canonical.insert(
            (*name).to_string(),
            Value::String(member(jwk, name)?.to_string()),
        );
    }
    // serde_json's Map is ordered by key (BTreeMap), and the values are plain strings:
    // this is exactly the RFC 7638 canonical form.
    let text = serde_json::to_string(&canonical).expect("strings serialize");
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

/// The public key of a JWK in the form a certificate or CSR carries it: the
/// subjectPublicKey BIT STRING contents and, for RSA, via its modulus and exponent.
pub fn same_public_key(jwk: &Map<String, Value>, spki_der: &[u8]) -> bool {
    use der::Decode;
    let Ok(spki) = spki::SubjectPublicKeyInfoRef::from_der(spki_der) else {
        return false;
    };
    let key = spki.subject_public_key.raw_bytes();
    let decoded = |name: &str| member(jwk, name).ok().and_then(|v| b64(name, v).ok());
    match member(jwk, "kty") {
        Ok("EC") => match (decoded("x"), decoded("y")) {
            (Some(x), Some(y)) => {
                key.len() == 1 + x.len() + y.len()
                    && key[0] == 4
                    && key[1..=x.len()] == x[..]
                    && key[1 + x.len()..] == y[..]
            }
            _ => false,
        },
        Ok("OKP") => decoded("x").is_some_and(|x| x == key),
        Ok("RSA") => {
            let Ok(rsa) = pkcs1::RsaPublicKey::from_der(key) else {
                return false;
            };
            let strip = |b: &[u8]| {
                b.iter()
                    .position(|x| *x != 0)
                    .map_or(Vec::new(), |i| b[i..].to_vec())
            };
            match (decoded("n"), decoded("e")) {
                (Some(n), Some(e)) => {
                    strip(rsa.modulus.as_bytes()) == strip(&n)
                        && strip(rsa.public_exponent.as_bytes()) == strip(&e)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk: Map<String, Value> = serde_json::from_str(r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn each_algorithm_verifies_with_its_own_key_type_only() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{
            EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
            ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let rng = SystemRandom::new();
        let message = b"protected.payload";
        let jwk = |value: Value| -> Map<String, Value> { serde_json::from_value(value).unwrap() };
        let ec = |alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm, crv: &str| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
            let point = pair.public_key().as_ref();
            let half = (point.len() - 1) / 2;
            let key = jwk(serde_json::json!({
                "kty": "EC", "crv": crv,
                "x": URL_SAFE_NO_PAD.encode(&point[1..=half]),
                "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
            }));
            (key, pair.sign(&rng, message).unwrap().as_ref().to_vec())
        };
        let (p256, p256_sig) = ec(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256");
        let (p384, p384_sig) = ec(&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384");
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let ed_key = jwk(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref()),
        }));
        let ed_sig = ed.sign(message).as_ref().to_vec();
        let rsa =
            aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let components =
            aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
        let rsa_key = jwk(serde_json::json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(&components.n),
            "e": URL_SAFE_NO_PAD.encode(&components.e),
        }));
        let mut rsa_sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            message,
            &mut rsa_sig,
        )
        .unwrap();
        for (alg, key, sig) in [
            ("ES256", &p256, &p256_sig),
            ("ES384", &p384, &p384_sig),
            ("EdDSA", &ed_key, &ed_sig),
            ("RS256", &rsa_key, &rsa_sig),
        ] {
            let verifier = account_key(alg, key).unwrap();
            assert!(verifier.verify(message, sig), "{alg}");
            assert!(!verifier.verify(b"protected.other", sig), "{alg}");
        }
        // A key of another type or curve than the algorithm names is refused.
        for (alg, key) in [
            ("ES256", &p384),
            ("ES384", &p256),
            ("RS256", &p256),
            ("EdDSA", &p256),
        ] {
            let problem = account_key(alg, key).unwrap_err();
            assert_eq!(problem.kind, ProblemType::BadPublicKey, "{alg}");
        }
        assert_eq!(
            account_key("HS256", &p256).unwrap_err().kind,
            ProblemType::BadSignatureAlgorithm
        );
        // A point off the curve is refused when the key is read.
        let mut off_curve = p256.clone();
        off_curve.insert("y".into(), Value::String(URL_SAFE_NO_PAD.encode([7u8; 32])));
        assert_eq!(
            account_key("ES256", &off_curve).unwrap_err().kind,
            ProblemType::BadPublicKey
        );
    }

    #[test]
    fn headers_are_checked() {
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let body = |header: Value| {
            serde_json::json!({"protected": encode(&header), "payload": "", "signature": "AA"})
                .to_string()
        };
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
        let ok = Jws::parse(
            body(serde_json::json!({"alg": "ES256", "url": "u", "jwk": jwk})).as_bytes(),
        )
        .unwrap();
        assert!(ok.is_post_as_get());
        let none =
            Jws::parse(body(serde_json::json!({"alg": "none", "url": "u", "jwk": jwk})).as_bytes());
        assert_eq!(none.unwrap_err().kind, ProblemType::BadSignatureAlgorithm);
        let hmac = Jws::parse(
            body(serde_json::json!({"alg": "HS256", "url": "u", "kid": "k"})).as_bytes(),
        );
        assert_eq!(hmac.unwrap_err().kind, ProblemType::BadSignatureAlgorithm);
        let both = Jws::parse(
            body(serde_json::json!({"alg": "ES256", "url": "u", "kid": "k", "jwk": jwk}))
                .as_bytes(),
        );
        assert_eq!(both.unwrap_err().kind, ProblemType::Malformed);
        let crit = Jws::parse(
            body(serde_json::json!({"alg": "ES256", "url": "u", "kid": "k", "crit": ["b64"]}))
                .as_bytes(),
        );
        assert_eq!(crit.unwrap_err().kind, ProblemType::Malformed);
        assert_eq!(Jws::parse(b"{}").unwrap_err().kind, ProblemType::Malformed);
        let private =
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"});
        assert_eq!(
            check_public_key(private.as_object().unwrap())
                .unwrap_err()
                .kind,
            ProblemType::BadPublicKey
        );
    }
}
