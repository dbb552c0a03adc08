//! The algorithms a pkiMessage uses, all from aws-lc-rs: digests, RSA PKCS#1 v1.5
//! signatures and key transport, and the CBC content ciphers (AES, and DES / 3DES for the
//! legacy clients that still send them). Nothing here is hand-written crypto; this module
//! maps SCEP's algorithm identifiers to the library's algorithms.
//!
//! The RA's private-key operations go through one trait, [`RsaPrivateKey`]: [`RsaKey`] holds
//! the key in memory, and an embedder implements the trait for a key it keeps elsewhere (the
//! daemon's PKCS#11 token), so the protocol code never knows where the key is.

// DES and 3DES are deprecated in aws-lc-rs, rightly; SCEP clients in the field still send
// them, and a profile refuses single DES with `legacy_algorithms = false`.
#![allow(deprecated)]

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_128, AES_192, AES_256, DES_EDE3_FOR_LEGACY_USE_ONLY,
    DES_FOR_LEGACY_USE_ONLY,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeyPair as RsaKeyPair, Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use const_oid::ObjectIdentifier;

use crate::wire::oid;

/// A crypto operation failed or an algorithm is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The algorithm identifier is not one SCEP clients use.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// A key could not be used.
    #[error("unusable key: {0}")]
    BadKey(String),
    /// Decryption failed (wrong key, corrupt data, bad padding).
    #[error("decryption failed")]
    Decrypt,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Signing or encryption failed.
    #[error("{0} failed")]
    Operation(&'static str),
    /// The key is held elsewhere (an HSM) and that holder could not be reached or failed;
    /// the request itself may be fine. The text says why.
    #[error("the RA key is unavailable: {0}")]
    KeyUnavailable(String),
}

/// A message digest algorithm (SignerInfo `digestAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// SHA-1: legacy clients only.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    /// From a digest or RSA signature algorithm identifier.
    pub fn from_oid(id: &ObjectIdentifier) -> Result<Self, CryptoError> {
        Ok(match *id {
            oid::SHA1 | oid::SHA1_WITH_RSA => Digest::Sha1,
            oid::SHA256 | oid::SHA256_WITH_RSA => Digest::Sha256,
            oid::SHA384 | oid::SHA384_WITH_RSA => Digest::Sha384,
            oid::SHA512 | oid::SHA512_WITH_RSA => Digest::Sha512,
            other => return Err(CryptoError::UnsupportedAlgorithm(other.to_string())),
        })
    }

    /// Its identifier.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Digest::Sha1 => oid::SHA1,
            Digest::Sha256 => oid::SHA256,
            Digest::Sha384 => oid::SHA384,
            Digest::Sha512 => oid::SHA512,
        }
    }

    /// Whether only legacy clients use it.
    pub fn is_legacy(self) -> bool {
        self == Digest::Sha1
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Digest::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &aws_lc_rs::digest::SHA256,
            Digest::Sha384 => &aws_lc_rs::digest::SHA384,
            Digest::Sha512 => &aws_lc_rs::digest::SHA512,
        };
        aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec()
    }

    /// The digest rampart signs its own messages with when answering a client that used
    /// `self`: the same, except SHA-1, which rampart does not sign with (SHA-256 instead;
    /// every client that sends SHA-1 verifies SHA-256).
    pub fn for_reply(self) -> Self {
        match self {
            Digest::Sha1 => Digest::Sha256,
            other => other,
        }
    }

    /// The matching `shaXWithRSAEncryption` identifier.
    pub fn rsa_signature_oid(self) -> ObjectIdentifier {
        match self {
            Digest::Sha1 => oid::SHA1_WITH_RSA,
            Digest::Sha256 => oid::SHA256_WITH_RSA,
            Digest::Sha384 => oid::SHA384_WITH_RSA,
            Digest::Sha512 => oid::SHA512_WITH_RSA,
        }
    }

    /// Verify an RSA PKCS#1 v1.5 signature by the key in `spki_der`.
    pub fn verify_rsa(
        self,
        spki_der: &[u8],
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        let algorithm: &'static signature::RsaParameters = match self {
            Digest::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Digest::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Digest::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        };
        let public_key = rsa_public_key(spki_der)?;
        UnparsedPublicKey::new(algorithm, public_key)
            .verify(message, sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    fn rsa_encoding(self) -> Result<&'static signature::RsaSignatureEncoding, CryptoError> {
        Ok(match self {
            Digest::Sha1 => return Err(CryptoError::UnsupportedAlgorithm("SHA-1 signing".into())),
            Digest::Sha256 => &signature::RSA_PKCS1_SHA256,
            Digest::Sha384 => &signature::RSA_PKCS1_SHA384,
            Digest::Sha512 => &signature::RSA_PKCS1_SHA512,
        })
    }
}

/// The PKCS#1 RSAPublicKey inside an RSA SubjectPublicKeyInfo.
fn rsa_public_key(spki_der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| CryptoError::BadKey(e.to_string()))?;
    if spki.algorithm.oid != oid::RSA_ENCRYPTION {
        return Err(CryptoError::BadKey(format!(
            "SCEP needs an RSA key, not {}",
            spki.algorithm.oid
        )));
    }
    spki.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| CryptoError::BadKey("unaligned public key".into()))
}

/// Encrypt a content-encryption key to the RSA key in `spki_der` (PKCS#1 v1.5).
pub fn rsa_encrypt(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    rsa_public_key(spki_der)?;
    let key = PublicEncryptingKey::from_der(spki_der)
        .map_err(|e| CryptoError::BadKey(e.to_string()))
        .and_then(|k| {
            Pkcs1PublicEncryptingKey::new(k)
                .map_err(|_| CryptoError::BadKey("not usable for PKCS#1 encryption".into()))
        })?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let written = key
        .encrypt(plaintext, &mut out)
        .map_err(|_| CryptoError::Operation("RSA encryption"))?
        .len();
    out.truncate(written);
    Ok(out)
}

/// The private half of an RSA key pair as SCEP uses it: PKCS#1 v1.5 signatures over
/// SignerInfo attributes, and PKCS#1 v1.5 decryption of the key-transport recipient's
/// encrypted content-encryption key (RFC 8894 §3.2, RFC 5652 §6.2.1).
///
/// [`RsaKey`] is the in-memory implementation. An embedder whose key lives in a device (a
/// PKCS#11 token) implements it there and says so with [`RsaPrivateKey::blocks`]: the server
/// then runs every operation with the key on a blocking thread.
pub trait RsaPrivateKey: Send + Sync + std::fmt::Debug {
    /// Sign `message` with `digest` (RSASSA-PKCS1-v1_5). SHA-1 may be refused
    /// ([`CryptoError::UnsupportedAlgorithm`]): replies use [`Digest::for_reply`].
    fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Decrypt a PKCS#1 v1.5 key-transport ciphertext (RSAES-PKCS1-v1_5). A ciphertext the
    /// key cannot decrypt is [`CryptoError::Decrypt`]; a key that cannot be reached is
    /// [`CryptoError::KeyUnavailable`].
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Whether an operation waits on something outside this process (a device round trip,
    /// a re-login): the server then calls it on a blocking thread, not on the async runtime.
    fn blocks(&self) -> bool {
        false
    }

    /// Whether the key can be used now, probing its holder when it has one (a health
    /// check). Blocks when [`RsaPrivateKey::blocks`] says so.
    fn check(&self) -> Result<(), CryptoError> {
        Ok(())
    }
}

/// A shared key is the key (the RA keeps its key behind an [`std::sync::Arc`]).
impl<K: RsaPrivateKey + ?Sized> RsaPrivateKey for std::sync::Arc<K> {
    fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        (**self).sign(digest, message)
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        (**self).decrypt(ciphertext)
    }

    fn blocks(&self) -> bool {
        (**self).blocks()
    }

    fn check(&self) -> Result<(), CryptoError> {
        (**self).check()
    }
}

/// An RSA private key in memory that signs (PKCS#1 v1.5) and decrypts key transport: the
/// RA's from a key file, or a requester's on the client side.
pub struct RsaKey {
    signing: RsaKeyPair,
    decrypting: Pkcs1PrivateDecryptingKey,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({} bits)", self.signing.public_modulus_len() * 8)
    }
}

impl RsaKey {
    /// From a PKCS#8 DER private key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let bad = |e: aws_lc_rs::error::KeyRejected| CryptoError::BadKey(e.to_string());
        let signing = RsaKeyPair::from_pkcs8(pkcs8).map_err(bad)?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(pkcs8)
            .map_err(bad)
            .and_then(|k| {
                Pkcs1PrivateDecryptingKey::new(k)
                    .map_err(|_| CryptoError::BadKey("not usable for PKCS#1 decryption".into()))
            })?;
        Ok(RsaKey {
            signing,
            decrypting,
        })
    }

    /// Sign `message` with `digest` (PKCS#1 v1.5).
    pub fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign(
                digest.rsa_encoding()?,
                &aws_lc_rs::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|_| CryptoError::Operation("RSA signing"))?;
        Ok(sig)
    }

    /// Decrypt a PKCS#1 v1.5 key-transport ciphertext.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; self.decrypting.min_output_size()];
        let plain = self
            .decrypting
            .decrypt(ciphertext, &mut out)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

impl RsaPrivateKey for RsaKey {
    fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        RsaKey::sign(self, digest, message)
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        RsaKey::decrypt(self, ciphertext)
    }
}

/// A content-encryption algorithm of EnvelopedData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    /// Single DES-CBC: legacy clients only.
    DesCbc,
    /// Three-key triple DES-CBC.
    DesEde3Cbc,
    /// AES-128-CBC.
    Aes128Cbc,
    /// AES-192-CBC.
    Aes192Cbc,
    /// AES-256-CBC.
    Aes256Cbc,
}

impl ContentCipher {
    /// From its identifier.
    pub fn from_oid(id: &ObjectIdentifier) -> Result<Self, CryptoError> {
        Ok(match *id {
            oid::DES_CBC => ContentCipher::DesCbc,
            oid::DES_EDE3_CBC => ContentCipher::DesEde3Cbc,
            oid::AES128_CBC => ContentCipher::Aes128Cbc,
            oid::AES192_CBC => ContentCipher::Aes192Cbc,
            oid::AES256_CBC => ContentCipher::Aes256Cbc,
            other => return Err(CryptoError::UnsupportedAlgorithm(other.to_string())),
        })
    }

    /// Its identifier.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            ContentCipher::DesCbc => oid::DES_CBC,
            ContentCipher::DesEde3Cbc => oid::DES_EDE3_CBC,
            ContentCipher::Aes128Cbc => oid::AES128_CBC,
            ContentCipher::Aes192Cbc => oid::AES192_CBC,
            ContentCipher::Aes256Cbc => oid::AES256_CBC,
        }
    }

    /// Whether only legacy clients use it (single DES).
    pub fn is_legacy(self) -> bool {
        self == ContentCipher::DesCbc
    }

    fn algorithm(self) -> &'static aws_lc_rs::cipher::Algorithm {
        match self {
            ContentCipher::DesCbc => &DES_FOR_LEGACY_USE_ONLY,
            ContentCipher::DesEde3Cbc => &DES_EDE3_FOR_LEGACY_USE_ONLY,
            ContentCipher::Aes128Cbc => &AES_128,
            ContentCipher::Aes192Cbc => &AES_192,
            ContentCipher::Aes256Cbc => &AES_256,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            ContentCipher::DesCbc => 8,
            ContentCipher::Aes128Cbc => 16,
            ContentCipher::DesEde3Cbc | ContentCipher::Aes192Cbc => 24,
            ContentCipher::Aes256Cbc => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            ContentCipher::DesCbc | ContentCipher::DesEde3Cbc => 8,
            _ => 16,
        }
    }

    /// Encrypt under a fresh random key and IV.
    pub fn encrypt(self, plaintext: &[u8]) -> Result<Encrypted, CryptoError> {
        let failed = |_| CryptoError::Operation("content encryption");
        // Random keys are retried in the astronomically rare case DES calls one weak.
        for _ in 0..4 {
            let mut key = vec![0u8; self.key_len()];
            aws_lc_rs::rand::fill(&mut key).map_err(failed)?;
            let Ok(unbound) = UnboundCipherKey::new(self.algorithm(), &key) else {
                continue;
            };
            let Ok(encrypting) = PaddedBlockEncryptingKey::cbc_pkcs7(unbound) else {
                continue;
            };
            let mut iv = vec![0u8; self.iv_len()];
            aws_lc_rs::rand::fill(&mut iv).map_err(failed)?;
            let context = match iv.len() {
                8 => EncryptionContext::Iv64(FixedLength::from(
                    <[u8; 8]>::try_from(&iv[..])
                        .map_err(|_| CryptoError::Operation("content encryption"))?,
                )),
                _ => EncryptionContext::Iv128(FixedLength::from(
                    <[u8; 16]>::try_from(&iv[..])
                        .map_err(|_| CryptoError::Operation("content encryption"))?,
                )),
            };
            let mut data = plaintext.to_vec();
            encrypting
                .less_safe_encrypt(&mut data, context)
                .map_err(failed)?;
            return Ok(Encrypted {
                key,
                iv,
                ciphertext: data,
            });
        }
        Err(CryptoError::Operation("content encryption"))
    }

    /// Decrypt with `key` and `iv` (the AlgorithmIdentifier's parameters).
    pub fn decrypt(self, key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if key.len() != self.key_len() || iv.len() != self.iv_len() {
            return Err(CryptoError::Decrypt);
        }
        let unbound =
            UnboundCipherKey::new(self.algorithm(), key).map_err(|_| CryptoError::Decrypt)?;
        let decrypting =
            PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| CryptoError::Decrypt)?;
        let context = iv_context(iv).ok_or(CryptoError::Decrypt)?;
        let mut data = ciphertext.to_vec();
        let plain = decrypting
            .decrypt(&mut data, context)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

/// Content encrypted under a fresh key.
#[derive(Debug)]
pub struct Encrypted {
    /// The content-encryption key (to be sent by key transport).
    pub key: Vec<u8>,
    /// The CBC IV (the algorithm's parameters).
    pub iv: Vec<u8>,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
}

/// The 8- or 16-byte CBC IV as the library's decryption context.
fn iv_context(iv: &[u8]) -> Option<DecryptionContext> {
    Some(match iv.len() {
        8 => DecryptionContext::Iv64(FixedLength::from(<[u8; 8]>::try_from(iv).ok()?)),
        16 => DecryptionContext::Iv128(FixedLength::from(<[u8; 16]>::try_from(iv).ok()?)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cipher_round_trips_and_rejects_a_wrong_key() {
        for cipher in [
            ContentCipher::DesCbc,
            ContentCipher::DesEde3Cbc,
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes192Cbc,
            ContentCipher::Aes256Cbc,
        ] {
            let plain = b"a PKCS#10 request, more or less".to_vec();
            let Encrypted {
                key,
                iv,
                ciphertext: ct,
            } = cipher.encrypt(&plain).unwrap();
            assert_ne!(ct, plain);
            assert_eq!(cipher.decrypt(&key, &iv, &ct).unwrap(), plain, "{cipher:?}");
            assert_eq!(ContentCipher::from_oid(&cipher.oid()).unwrap(), cipher);
            let mut wrong = key.clone();
            wrong[0] ^= 0x80;
            assert_ne!(cipher.decrypt(&wrong, &iv, &ct).ok(), Some(plain.clone()));
            assert_eq!(
                cipher.decrypt(&key[1..], &iv, &ct),
                Err(CryptoError::Decrypt)
            );
        }
    }
}
