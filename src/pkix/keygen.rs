//! Keys rampart generates on a requester's behalf (EST serverkeygen, API enrollments
//! with `generate_key`, server-side renewals) and the PKCS#10 request that carries the
//! public half into the pipeline like any other CSR. Key generation is rcgen over aws-lc-rs.

use zeroize::Zeroizing;

use crate::model::{Identifier, KeyType};

/// A fresh key and a CSR signed by it.
pub struct Generated {
    /// The private key, PKCS#8 DER (wiped when dropped).
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("pkcs8", &"<redacted>")
            .field("csr_der", &format_args!("{} bytes", self.csr_der.len()))
            .finish()
    }
}

/// Parse a key type name as the API takes it: `ecdsa-p256`, `ecdsa-p384`, `ed25519`,
/// `rsa-2048`, `rsa-3072`, `rsa-4096`.
pub fn parse_key_type(text: &str) -> Result<KeyType, String> {
    match text {
        "ecdsa-p256" => Ok(KeyType::EcdsaP256),
        "ecdsa-p384" => Ok(KeyType::EcdsaP384),
        "ed25519" => Ok(KeyType::Ed25519),
        "rsa-2048" => Ok(KeyType::Rsa { bits: 2048 }),
        "rsa-3072" => Ok(KeyType::Rsa { bits: 3072 }),
        "rsa-4096" => Ok(KeyType::Rsa { bits: 4096 }),
        other => Err(format!(
            "unknown key type `{other}` (ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096)"
        )),
    }
}

/// Generate a key of `key_type` and a CSR for `common_name` and `identifiers`.
pub fn key_and_csr(
    key_type: KeyType,
    common_name: Option<&str>,
    identifiers: &[Identifier],
) -> Result<Generated, String> {
    let key = match key_type {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyType::Rsa { bits } => {
            let size = match bits {
                2048 => rcgen::RsaKeySize::_2048,
                3072 => rcgen::RsaKeySize::_3072,
                4096 => rcgen::RsaKeySize::_4096,
                other => return Err(format!("cannot generate RSA keys of {other} bits")),
            };
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
        }
    }
    .map_err(|e| format!("key generation failed: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    params.subject_alt_names = identifiers
        .iter()
        .map(|id| match id {
            Identifier::Dns(name) => name
                .as_str()
                .try_into()
                .map(rcgen::SanType::DnsName)
                .map_err(|_| format!("`{name}` cannot be put in a CSR")),
            Identifier::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
            Identifier::Email(address) => address
                .as_str()
                .try_into()
                .map(rcgen::SanType::Rfc822Name)
                .map_err(|_| format!("`{address}` cannot be put in a CSR")),
            Identifier::Uri(uri) => uri
                .as_str()
                .try_into()
                .map(rcgen::SanType::URI)
                .map_err(|_| format!("`{uri}` cannot be put in a CSR")),
        })
        .collect::<Result<_, _>>()?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    Ok(Generated {
        pkcs8: Zeroizing::new(key.serialize_der()),
        csr_der: csr.der().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkix::csr::VerifiedCsr;

    #[test]
    fn generated_csrs_verify_and_carry_the_names() {
        let names = [
            Identifier::Dns("gen.example.test".into()),
            Identifier::Ip("192.0.2.7".parse().unwrap()),
        ];
        for key_type in ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"] {
            let key_type = parse_key_type(key_type).unwrap();
            let generated = key_and_csr(key_type, Some("gen.example.test"), &names).unwrap();
            let csr = VerifiedCsr::parse(&generated.csr_der).unwrap();
            assert_eq!(csr.key_type, key_type);
            assert_eq!(csr.identifiers, names);
            assert_eq!(csr.common_name.as_deref(), Some("gen.example.test"));
            assert!(format!("{generated:?}").contains("redacted"));
        }
        assert!(parse_key_type("rsa-1024").is_err());
    }
}
