//! PKIX building blocks shared by the pipeline, the CA adapters and the API: PKCS#10 parsing
//! with signature verification, weak-key checks, PEM, PKCS#7 certs-only bundles and
//! fingerprints.
//!
//! Wire formats come from RustCrypto (`x509-cert`, `der`, `cms`), signature verification
//! from aws-lc-rs. Imports only `model`.

pub mod csr;
pub mod goodkey;
pub mod keygen;
pub mod pem;
pub mod pkcs7;

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}
