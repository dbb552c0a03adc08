//! PKCS#10 requests as every front end receives them: DER into
//! `rampart::pkix::csr::VerifiedCsr::parse` (REST API, EST, SCEP, ACME finalize after the
//! protocol crate's own `rampart_acme::csr::read`), and PEM text into
//! `rampart::pkix::pem::decode` (the REST API's `csr` field) and
//! `pem::decode_certificates`.
//!
//! A mutated request almost never keeps a valid signature, so every input that parses as a
//! `CertReq` is also re-signed with a fixed key and parsed again: that reaches what is read
//! after the signature check (names, challengePassword, subject).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::pkix::csr::VerifiedCsr;
use rampart::pkix::pem;

fn der(bytes: &[u8]) {
    if let Ok(csr) = VerifiedCsr::parse(bytes) {
        // What callers print and compare.
        let _ = csr.identifiers.iter().map(ToString::to_string).count();
    }
    let _ = rampart_acme::csr::read(bytes);
}

fuzz_target!(|data: &[u8]| {
    der(data);
    if let Some(resigned) = rampart_fuzz::resign_csr(data) {
        der(&resigned);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = pem::decode(
            text,
            &[pem::CERTIFICATE_REQUEST, pem::NEW_CERTIFICATE_REQUEST],
        ) {
            der(&bytes);
        }
        let _ = pem::decode_certificates(text);
    }
});
