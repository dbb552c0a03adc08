//! PKCS#10 certification requests (RFC 2986): parse, verify the self-signature, and extract
//! what policy and issuance need. A [`VerifiedCsr`] can only be made by [`VerifiedCsr::parse`],
//! so holding one proves the signature was checked.
//!
//! ```text
//! CertificationRequest ::= SEQUENCE {
//!   certificationRequestInfo CertificationRequestInfo,
//!   signatureAlgorithm AlgorithmIdentifier,
//!   signature BIT STRING }
//! ```

use std::net::IpAddr;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use const_oid::db::{rfc4519, rfc5912, rfc8410};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::{CertReq, ExtensionReq};

use crate::model::{Identifier, KeyType};

/// Why a CSR was refused before any policy looked at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not a DER PKCS#10 structure.
    #[error("not a valid PKCS#10 request: {0}")]
    Malformed(String),
    /// The signature algorithm is not one rampart verifies.
    #[error("unsupported CSR signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// The public key type is not one rampart issues for.
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    /// The self-signature does not verify: the requester does not hold the key.
    #[error("CSR signature does not verify")]
    BadSignature,
    /// A requested subject alternative name is not valid or not supported.
    #[error("invalid subject alternative name: {0}")]
    BadName(String),
    /// The public key is weak ([`goodkey`](super::goodkey)).
    #[error("weak public key: {0}")]
    WeakKey(#[from] super::goodkey::WeakKey),
}

/// A PKCS#10 request whose signature verified, with what rampart reads from it.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The whole request, DER.
    pub der: Vec<u8>,
    /// Subject DN as RFC 4514 text.
    pub subject: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// SANs from the extensionRequest attribute, in order, de-duplicated.
    pub identifiers: Vec<Identifier>,
    /// Public key type and size.
    pub key_type: KeyType,
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents.
    pub public_key: Vec<u8>,
    /// The PKCS#9 challengePassword attribute, if present.
    pub challenge_password: Option<String>,
}

impl VerifiedCsr {
    /// Parse `der` and verify its signature.
    pub fn parse(der: &[u8]) -> Result<Self, CsrError> {
        let request = CertReq::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
        let info = &request.info;
        let spki = &info.public_key;
        let public_key = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| {
                CsrError::UnsupportedKey("public key is not a whole number of bytes".into())
            })?
            .to_vec();
        let key_type = key_type(spki)?;
        // Before the signature: a point off its curve is a weak key, not a bad signature.
        super::goodkey::check_ec_point(key_type, &public_key)?;
        let algorithm = verification_algorithm(&request.algorithm.oid, key_type)?;
        let signed = info
            .to_der()
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        let signature_bytes = request.signature.as_bytes().ok_or_else(|| {
            CsrError::Malformed("signature is not a whole number of bytes".into())
        })?;
        UnparsedPublicKey::new(algorithm, &public_key)
            .verify(&signed, signature_bytes)
            .map_err(|_| CsrError::BadSignature)?;

        let mut identifiers = Vec::new();
        let mut challenge_password = None;
        for attribute in info.attributes.iter() {
            if attribute.oid == CHALLENGE_PASSWORD {
                challenge_password = attribute.values.iter().next().and_then(directory_string);
                continue;
            }
            if attribute.oid != rfc5912::ID_EXTENSION_REQ {
                continue;
            }
            for value in attribute.values.iter() {
                let extensions: ExtensionReq = value
                    .decode_as()
                    .map_err(|e| CsrError::Malformed(format!("extensionRequest: {e}")))?;
                for extension in extensions.0 {
                    if extension.extn_id != rfc5912::ID_CE_SUBJECT_ALT_NAME {
                        continue;
                    }
                    let san = SubjectAltName::from_der(extension.extn_value.as_bytes())
                        .map_err(|e| CsrError::Malformed(format!("subjectAltName: {e}")))?;
                    for name in san.0 {
                        let identifier = general_name(&name)?;
                        if !identifiers.contains(&identifier) {
                            identifiers.push(identifier);
                        }
                    }
                }
            }
        }
        let common_name = info
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find_map(|atv| {
                (atv.oid == rfc4519::CN)
                    .then(|| String::from_utf8_lossy(atv.value.value()).into_owned())
            });
        Ok(VerifiedCsr {
            der: der.to_vec(),
            subject: info.subject.to_string(),
            common_name,
            identifiers,
            key_type,
            spki_der: spki
                .to_der()
                .map_err(|e| CsrError::Malformed(e.to_string()))?,
            public_key,
            challenge_password,
        })
    }
}

/// PKCS#9 challengePassword.
const CHALLENGE_PASSWORD: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");

/// A DirectoryString's text (UTF8String, PrintableString or IA5String).
fn directory_string(value: &der::Any) -> Option<String> {
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
        .or_else(|| {
            // Devices put characters outside its alphabet (`_`, `@`…) into a
            // PrintableString; the text is still what the user typed.
            (value.tag() == der::Tag::PrintableString)
                .then(|| std::str::from_utf8(value.value()).ok().map(str::to_string))
                .flatten()
        })
}

fn key_type(spki: &spki::SubjectPublicKeyInfoOwned) -> Result<KeyType, CsrError> {
    let oid = spki.algorithm.oid;
    if oid == rfc5912::RSA_ENCRYPTION {
        let bytes = spki.subject_public_key.raw_bytes();
        let key = pkcs1::RsaPublicKey::from_der(bytes)
            .map_err(|e| CsrError::UnsupportedKey(format!("bad RSA public key: {e}")))?;
        let modulus = key.modulus.as_bytes();
        let bits = (modulus.len() * 8) as u32 - modulus.first().map_or(8, |b| b.leading_zeros());
        return Ok(KeyType::Rsa { bits });
    }
    if oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok())
            .ok_or_else(|| CsrError::UnsupportedKey("EC key without a named curve".into()))?;
        return match curve {
            c if c == rfc5912::SECP_256_R_1 => Ok(KeyType::EcdsaP256),
            c if c == rfc5912::SECP_384_R_1 => Ok(KeyType::EcdsaP384),
            other => Err(CsrError::UnsupportedKey(format!("EC curve {other}"))),
        };
    }
    if oid == rfc8410::ID_ED_25519 {
        return Ok(KeyType::Ed25519);
    }
    Err(CsrError::UnsupportedKey(format!("key algorithm {oid}")))
}

fn verification_algorithm(
    signature_oid: &ObjectIdentifier,
    key: KeyType,
) -> Result<&'static dyn VerificationAlgorithm, CsrError> {
    use KeyType::*;
    let oid = *signature_oid;
    // RSA keys below 2048 bits still verify here, so that policy can refuse them by size
    // with a precise reason rather than as a "bad signature".
    let algorithm: Option<&'static dyn VerificationAlgorithm> = match key {
        Rsa { .. } if oid == rfc5912::SHA_256_WITH_RSA_ENCRYPTION => {
            Some(&signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY)
        }
        Rsa { .. } if oid == rfc5912::SHA_384_WITH_RSA_ENCRYPTION => {
            Some(&signature::RSA_PKCS1_2048_8192_SHA384)
        }
        Rsa { .. } if oid == rfc5912::SHA_512_WITH_RSA_ENCRYPTION => {
            Some(&signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY)
        }
        EcdsaP256 if oid == rfc5912::ECDSA_WITH_SHA_256 => Some(&signature::ECDSA_P256_SHA256_ASN1),
        EcdsaP256 if oid == rfc5912::ECDSA_WITH_SHA_384 => Some(&signature::ECDSA_P256_SHA384_ASN1),
        EcdsaP384 if oid == rfc5912::ECDSA_WITH_SHA_256 => Some(&signature::ECDSA_P384_SHA256_ASN1),
        EcdsaP384 if oid == rfc5912::ECDSA_WITH_SHA_384 => Some(&signature::ECDSA_P384_SHA384_ASN1),
        Ed25519 if oid == rfc8410::ID_ED_25519 => Some(&signature::ED25519),
        _ => None,
    };
    algorithm
        .ok_or_else(|| CsrError::UnsupportedSignatureAlgorithm(format!("{oid} with a {key} key")))
}

fn general_name(name: &GeneralName) -> Result<Identifier, CsrError> {
    match name {
        GeneralName::DnsName(dns) => Identifier::dns(dns.as_str()).map_err(CsrError::BadName),
        GeneralName::IpAddress(octets) => {
            let bytes = octets.as_bytes();
            let ip = match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(bytes).expect("length checked")),
                16 => IpAddr::from(<[u8; 16]>::try_from(bytes).expect("length checked")),
                n => return Err(CsrError::BadName(format!("IP address of {n} bytes"))),
            };
            Ok(Identifier::Ip(ip))
        }
        GeneralName::Rfc822Name(address) => {
            Identifier::email(address.as_str()).map_err(CsrError::BadName)
        }
        GeneralName::UniformResourceIdentifier(uri) => {
            Identifier::uri(uri.as_str()).map_err(CsrError::BadName)
        }
        _ => Err(CsrError::BadName(
            "only dNSName, iPAddress, rfc822Name and uniformResourceIdentifier names are supported"
                .into(),
        )),
    }
}
