//! What finalize needs to read from a CSR before handing it on: its names (to match the
//! order exactly) and its public key (which must not be the account key). The signature
//! is verified by the embedder's pipeline, which parses the CSR again in full.

use std::collections::BTreeSet;

use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::CertReq;

use crate::problem::{Problem, ProblemType};
use crate::wire::Identifier;

/// id-ExtensionReq (PKCS#9).
const EXTENSION_REQUEST: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
/// id-ce-subjectAltName.
const SUBJECT_ALT_NAME: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.5.29.17");
/// id-at-commonName.
const COMMON_NAME: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");

/// Names and key of a CSR.
#[derive(Debug, Clone)]
pub struct CsrFacts {
    /// SAN identifiers plus the subject CN, normalised.
    pub identifiers: BTreeSet<Identifier>,
    /// SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

fn bad_csr(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemType::BadCsr, detail)
}

/// Read the CSR's names and key.
pub fn read(der_bytes: &[u8]) -> Result<CsrFacts, Problem> {
    let request = CertReq::from_der(der_bytes).map_err(|e| {
        bad_csr(match declared_version(der_bytes) {
            // Made by some clients (Ruby's acme-client before 2.0.19); OpenSSL 3 refuses
            // them too. Say what is wrong instead of a DER error.
            Some(version) if version != 0 => format!(
                "PKCS#10 version {version} is not defined: RFC 2986 requests are version 0 (v1)"
            ),
            _ => format!("not a DER PKCS#10 request: {e}"),
        })
    })?;
    let mut identifiers = BTreeSet::new();
    for rdn in request.info.subject.0.iter() {
        for attribute in rdn.0.iter().filter(|a| a.oid == COMMON_NAME) {
            let cn = attribute_text(&attribute.value)
                .ok_or_else(|| bad_csr("unreadable subject common name"))?;
            identifiers.insert(name_identifier(&cn)?);
        }
    }
    for attribute in request
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == EXTENSION_REQUEST)
    {
        for value in attribute.values.iter() {
            let extensions: x509_cert::ext::Extensions = value
                .decode_as()
                .map_err(|e| bad_csr(format!("unreadable extension request: {e}")))?;
            for extension in extensions.iter().filter(|e| e.extn_id == SUBJECT_ALT_NAME) {
                let sans = SubjectAltName::from_der(extension.extn_value.as_bytes())
                    .map_err(|e| bad_csr(format!("unreadable subjectAltName: {e}")))?;
                for name in sans.0 {
                    identifiers.insert(general_name(&name)?);
                }
            }
        }
    }
    let spki_der = request
        .info
        .public_key
        .to_der()
        .map_err(|e| bad_csr(e.to_string()))?;
    Ok(CsrFacts {
        identifiers,
        spki_der,
    })
}

/// The version a CertificationRequestInfo declares, read without decoding the rest.
fn declared_version(der_bytes: &[u8]) -> Option<u64> {
    let mut reader = der::SliceReader::new(der_bytes).ok()?;
    der::Header::decode(&mut reader).ok()?; // CertificationRequest
    der::Header::decode(&mut reader).ok()?; // CertificationRequestInfo
    u64::decode(&mut reader).ok()
}

fn attribute_text(value: &der::Any) -> Option<String> {
    value
        .decode_as::<der::asn1::Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            value
                .decode_as::<der::asn1::PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .or_else(|_| {
            value
                .decode_as::<der::asn1::Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

fn name_identifier(text: &str) -> Result<Identifier, Problem> {
    let identifier = match text.parse() {
        Ok(ip) => Identifier::ip(ip),
        Err(_) => Identifier::dns(text),
    };
    identifier.normalize().map_err(|p| bad_csr(p.detail))
}

fn general_name(name: &GeneralName) -> Result<Identifier, Problem> {
    match name {
        GeneralName::DnsName(dns) => name_identifier(dns.as_str()),
        GeneralName::IpAddress(octets) => ip_from_octets(octets.as_bytes()),
        _ => Err(bad_csr(
            "the CSR asks for a subjectAltName type other than DNS name or IP address",
        )),
    }
}

fn ip_from_octets(bytes: &[u8]) -> Result<Identifier, Problem> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).expect("length checked")),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).expect("length checked")),
        _ => return Err(bad_csr("malformed IP address in subjectAltName")),
    };
    Ok(Identifier::ip(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_der() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["www.example.test".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_and_key_are_read() {
        let facts = read(&csr_der()).unwrap();
        assert_eq!(
            facts.identifiers.into_iter().collect::<Vec<_>>(),
            vec![Identifier::dns("www.example.test")]
        );
    }

    #[test]
    fn a_request_of_version_two_is_named_as_such() {
        let mut der_bytes = csr_der();
        // The version INTEGER (02 01 00) right after the two SEQUENCE headers.
        let at = der_bytes
            .windows(3)
            .position(|w| w == [0x02, 0x01, 0x00])
            .unwrap();
        der_bytes[at + 2] = 2;
        assert_eq!(declared_version(&der_bytes), Some(2));
        let problem = read(&der_bytes).unwrap_err();
        assert!(
            problem.detail.contains("PKCS#10 version 2"),
            "{}",
            problem.detail
        );
        assert_eq!(declared_version(b"garbage"), None);
        let problem = read(b"garbage").unwrap_err();
        assert!(problem.detail.starts_with("not a DER PKCS#10 request"));
    }
}
