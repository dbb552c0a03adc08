//! Pre-issuance lint, the way boulder does it: before the built-in CA signs for real, the
//! very same certificate parameters are encoded under a stand-in *lint issuer* of the CA's
//! algorithm (see [`Linter`]), the result is parsed with x509-cert and checked against the
//! RFC 5280 profile of an end-entity certificate ([`lint_tbs`]). A failure names its rule and
//! nothing is signed with the CA's key: the pipeline records the request as failed with that
//! reason. The lint certificate carries an empty signature: the rules read the TBS part
//! only, so signing it (boulder uses a throwaway key) would cost a signature per issuance
//! and prove nothing more.
//!
//! The rules (the name in parentheses is what a failure reports):
//!
//! - (`version`) the certificate is v3: it carries extensions (§4.1.2.1).
//! - (`serial_number`) positive, non-zero, at most 20 octets as encoded (§4.1.2.2).
//! - (`signature_algorithm`) the TBS `signature` equals the outer `signatureAlgorithm`
//!   (§4.1.1.2).
//! - (`validity`) notBefore is before notAfter (§4.1.2.5).
//! - (`duplicate_extension`) no extension appears twice (§4.2).
//! - (`basic_constraints`) present, cA false, no pathLenConstraint: a leaf (§4.2.1.9).
//! - (`authority_key_identifier`) present with a keyIdentifier, not critical (§4.2.1.1).
//! - (`subject_key_identifier`) present, not empty, not critical (§4.2.1.2).
//! - (`key_usage`) present with at least one bit; no keyCertSign or cRLSign (a leaf);
//!   consistent with the key type: keyEncipherment and dataEncipherment only for RSA,
//!   keyAgreement only for EC, Ed25519 only digitalSignature and nonRepudiation (§4.2.1.3,
//!   RFC 8410 §5, RFC 5480 §3).
//! - (`extended_key_usage`) no anyExtendedKeyUsage; serverAuth and clientAuth need a key usage
//!   TLS can use with the key (digitalSignature, or keyEncipherment for RSA, keyAgreement for
//!   EC) (§4.2.1.12).
//! - (`subject_alt_name`) when present: not empty, every name well formed (a dNSName in
//!   preferred name syntax, at most a leading `*.` label; an iPAddress of 4 or 16 octets; an
//!   rfc822Name `local@domain`; an absolute URI; rampart issues no other name types). Required on serverAuth certificates and whenever the
//!   subject is empty. Only rampart's SCEP RA certificate (a named subject, no serverAuth)
//!   goes without (§4.2.1.6).
//! - (`empty_subject`) an empty subject needs a critical subjectAltName (§4.1.2.6).
//! - (`common_name_not_in_san`) a subject CN is one of the subjectAltNames (CA/Browser Forum
//!   BR §7.1.4.3).

use std::net::IpAddr;

use const_oid::db::{rfc4519, rfc5280, rfc5912, rfc8410};
use der::Decode;
use rcgen::{CertificateParams, Issuer, KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::{Certificate, TbsCertificate};

use super::CaError;
use crate::model::Identifier;

/// A profile rule the to-be-signed certificate breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LintError {
    /// The lint certificate could not be produced or parsed.
    #[error("unparsable: {0}")]
    Unparsable(String),
    /// Not a v3 certificate.
    #[error("version: the certificate is not v3")]
    Version,
    /// The serial number is negative, zero or too long.
    #[error("serial_number: {0}")]
    SerialNumber(String),
    /// The TBS signature algorithm differs from the certificate's.
    #[error("signature_algorithm: the TBS signature field differs from signatureAlgorithm")]
    SignatureAlgorithm,
    /// notBefore is not before notAfter.
    #[error("validity: notBefore is not before notAfter")]
    Validity,
    /// An extension appears more than once (its OID).
    #[error("duplicate_extension: {0} appears more than once")]
    DuplicateExtension(String),
    /// basicConstraints missing or not a leaf's.
    #[error("basic_constraints: {0}")]
    BasicConstraints(String),
    /// authorityKeyIdentifier missing or wrong.
    #[error("authority_key_identifier: {0}")]
    AuthorityKeyIdentifier(String),
    /// subjectKeyIdentifier missing or wrong.
    #[error("subject_key_identifier: {0}")]
    SubjectKeyIdentifier(String),
    /// keyUsage missing or inconsistent with the key type.
    #[error("key_usage: {0}")]
    KeyUsage(String),
    /// extendedKeyUsage inconsistent with the key usage.
    #[error("extended_key_usage: {0}")]
    ExtendedKeyUsage(String),
    /// subjectAltName missing, empty or ill-formed.
    #[error("subject_alt_name: {0}")]
    SubjectAltName(String),
    /// The subject is empty and no critical subjectAltName names the subject.
    #[error("empty_subject: an empty subject needs a critical subjectAltName")]
    EmptySubject,
    /// The subject CN is not one of the subjectAltNames.
    #[error("common_name_not_in_san: `{0}` is not one of the subjectAltNames")]
    CommonNameNotInSan(String),
}

impl LintError {
    /// The rule's name.
    pub fn rule(&self) -> &'static str {
        match self {
            LintError::Unparsable(_) => "unparsable",
            LintError::Version => "version",
            LintError::SerialNumber(_) => "serial_number",
            LintError::SignatureAlgorithm => "signature_algorithm",
            LintError::Validity => "validity",
            LintError::DuplicateExtension(_) => "duplicate_extension",
            LintError::BasicConstraints(_) => "basic_constraints",
            LintError::AuthorityKeyIdentifier(_) => "authority_key_identifier",
            LintError::SubjectKeyIdentifier(_) => "subject_key_identifier",
            LintError::KeyUsage(_) => "key_usage",
            LintError::ExtendedKeyUsage(_) => "extended_key_usage",
            LintError::SubjectAltName(_) => "subject_alt_name",
            LintError::EmptySubject => "empty_subject",
            LintError::CommonNameNotInSan(_) => "common_name_not_in_san",
        }
    }
}

impl From<LintError> for CaError {
    fn from(error: LintError) -> Self {
        CaError::Lint(error.to_string())
    }
}

/// Encodes certificate parameters under the CA's name with a stand-in issuer key of the
/// CA's algorithm and an empty signature, and lints the result. Nothing is signed: the lint
/// certificate is the TBS the CA will sign, and it is dropped once linted.
pub struct Linter {
    issuer: Issuer<'static, LintIssuerKey>,
}

impl std::fmt::Debug for Linter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linter").finish_non_exhaustive()
    }
}

/// The lint issuer's key: the public half of a key of the CA's algorithm (the authority key
/// identifier is derived from it) and a signature that is always empty.
struct LintIssuerKey {
    public_key: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for LintIssuerKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl SigningKey for LintIssuerKey {
    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(Vec::new())
    }
}

impl Linter {
    /// A linter for the issuer described by `issuer_params` (its name and key identifier
    /// method) whose key is of `algorithm` (RSA stand-in keys are 2048 bits: the signature
    /// algorithm is what matters). The stand-in key's private half is dropped at once.
    pub fn new(
        issuer_params: CertificateParams,
        algorithm: &'static SignatureAlgorithm,
    ) -> Result<Self, rcgen::Error> {
        let key = if algorithm == &rcgen::PKCS_RSA_SHA256 {
            KeyPair::generate_rsa_for(algorithm, rcgen::RsaKeySize::_2048)?
        } else {
            KeyPair::generate_for(algorithm)?
        };
        let key = LintIssuerKey {
            public_key: key.der_bytes().to_vec(),
            algorithm,
        };
        Ok(Linter {
            issuer: Issuer::new(issuer_params, key),
        })
    }

    /// Encode `params` for `public_key` under the lint issuer (unsigned) and lint the result.
    pub fn check(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<(), CaError> {
        let certificate = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Refused(e.to_string()))?;
        Ok(lint_der(certificate.der())?)
    }
}

/// Lint a whole certificate (DER): its TBS part, and that both signature algorithm fields
/// agree.
pub fn lint_der(der: &[u8]) -> Result<(), LintError> {
    let certificate =
        Certificate::from_der(der).map_err(|e| LintError::Unparsable(e.to_string()))?;
    if certificate.signature_algorithm != certificate.tbs_certificate.signature {
        return Err(LintError::SignatureAlgorithm);
    }
    lint_tbs(&certificate.tbs_certificate)
}

/// The key types the rules distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ec,
    Ed25519,
}

/// Lint a to-be-signed end-entity certificate against the rules in the module docs.
pub fn lint_tbs(tbs: &TbsCertificate) -> Result<(), LintError> {
    if tbs.version != Version::V3 {
        return Err(LintError::Version);
    }
    serial_number(tbs.serial_number.as_bytes())?;
    let not_before = tbs.validity.not_before.to_unix_duration();
    let not_after = tbs.validity.not_after.to_unix_duration();
    if not_before >= not_after {
        return Err(LintError::Validity);
    }
    let extensions = tbs.extensions.as_deref().unwrap_or_default();
    for (i, extension) in extensions.iter().enumerate() {
        if extensions[..i]
            .iter()
            .any(|e| e.extn_id == extension.extn_id)
        {
            return Err(LintError::DuplicateExtension(extension.extn_id.to_string()));
        }
    }

    // Each extension is present at most once now, so `get` fails only on bad contents.
    let malformed = |e: der::Error| e.to_string();
    match tbs.get::<BasicConstraints>() {
        Err(e) => return Err(LintError::BasicConstraints(malformed(e))),
        Ok(None) => return Err(LintError::BasicConstraints("missing".into())),
        Ok(Some((_, bc))) if bc.ca => {
            return Err(LintError::BasicConstraints("cA is true on a leaf".into()))
        }
        Ok(Some((_, bc))) if bc.path_len_constraint.is_some() => {
            return Err(LintError::BasicConstraints(
                "pathLenConstraint on a leaf".into(),
            ))
        }
        Ok(Some(_)) => {}
    }
    match tbs.get::<AuthorityKeyIdentifier>() {
        Err(e) => return Err(LintError::AuthorityKeyIdentifier(malformed(e))),
        Ok(None) => return Err(LintError::AuthorityKeyIdentifier("missing".into())),
        Ok(Some((true, _))) => {
            return Err(LintError::AuthorityKeyIdentifier(
                "must not be critical".into(),
            ))
        }
        Ok(Some((_, aki))) if aki.key_identifier.as_ref().is_none_or(|k| k.is_empty()) => {
            return Err(LintError::AuthorityKeyIdentifier("no keyIdentifier".into()))
        }
        Ok(Some(_)) => {}
    }
    match tbs.get::<SubjectKeyIdentifier>() {
        Err(e) => return Err(LintError::SubjectKeyIdentifier(malformed(e))),
        Ok(None) => return Err(LintError::SubjectKeyIdentifier("missing".into())),
        Ok(Some((true, _))) => {
            return Err(LintError::SubjectKeyIdentifier(
                "must not be critical".into(),
            ))
        }
        Ok(Some((_, ski))) if ski.0.is_empty() => {
            return Err(LintError::SubjectKeyIdentifier("empty".into()))
        }
        Ok(Some(_)) => {}
    }

    let key_oid = tbs.subject_public_key_info.algorithm.oid;
    let kind = match key_oid {
        oid if oid == rfc5912::RSA_ENCRYPTION => KeyKind::Rsa,
        oid if oid == rfc5912::ID_EC_PUBLIC_KEY => KeyKind::Ec,
        oid if oid == rfc8410::ID_ED_25519 => KeyKind::Ed25519,
        oid => {
            return Err(LintError::KeyUsage(format!(
                "no key usage rules for key algorithm {oid}"
            )))
        }
    };
    let key_usage = match tbs.get::<KeyUsage>() {
        Err(e) => return Err(LintError::KeyUsage(malformed(e))),
        Ok(None) => return Err(LintError::KeyUsage("missing".into())),
        Ok(Some((_, ku))) => ku,
    };
    key_usage_fits(&key_usage, kind).map_err(LintError::KeyUsage)?;

    let ekus = match tbs.get::<ExtendedKeyUsage>() {
        Err(e) => return Err(LintError::ExtendedKeyUsage(malformed(e))),
        Ok(found) => found.map(|(_, eku)| eku.0).unwrap_or_default(),
    };
    if ekus.contains(&rfc5280::ANY_EXTENDED_KEY_USAGE) {
        return Err(LintError::ExtendedKeyUsage(
            "anyExtendedKeyUsage is not issued".into(),
        ));
    }
    let server_auth = ekus.contains(&rfc5280::ID_KP_SERVER_AUTH);
    let tls = server_auth || ekus.contains(&rfc5280::ID_KP_CLIENT_AUTH);
    let tls_usable = key_usage.digital_signature()
        || (kind == KeyKind::Rsa && server_auth && key_usage.key_encipherment())
        || (kind == KeyKind::Ec && key_usage.key_agreement());
    if tls && !tls_usable {
        return Err(LintError::ExtendedKeyUsage(format!(
            "TLS usage with a key usage TLS cannot use with {kind:?} keys"
        )));
    }

    let subject_empty = tbs.subject.0.is_empty();
    let san = match tbs.get::<SubjectAltName>() {
        Err(e) => return Err(LintError::SubjectAltName(malformed(e))),
        Ok(found) => found,
    };
    let Some((critical, san)) = san else {
        if subject_empty {
            return Err(LintError::EmptySubject);
        }
        if server_auth {
            return Err(LintError::SubjectAltName(
                "missing on a serverAuth certificate".into(),
            ));
        }
        return Ok(());
    };
    if san.0.is_empty() {
        return Err(LintError::SubjectAltName("no names".into()));
    }
    for name in &san.0 {
        well_formed(name).map_err(LintError::SubjectAltName)?;
    }
    if subject_empty && !critical {
        return Err(LintError::EmptySubject);
    }
    if let Some(cn) = common_name(tbs) {
        if !san.0.iter().any(|name| names_the_same(name, &cn)) {
            return Err(LintError::CommonNameNotInSan(cn));
        }
    }
    Ok(())
}

/// RFC 5280 §4.1.2.2 on the DER INTEGER content octets.
fn serial_number(octets: &[u8]) -> Result<(), LintError> {
    let Some(first) = octets.first() else {
        return Err(LintError::SerialNumber("empty".into()));
    };
    if first & 0x80 != 0 {
        return Err(LintError::SerialNumber("negative".into()));
    }
    if octets.iter().all(|b| *b == 0) {
        return Err(LintError::SerialNumber("zero".into()));
    }
    if octets.len() > 20 {
        return Err(LintError::SerialNumber(format!(
            "{} octets (at most 20)",
            octets.len()
        )));
    }
    Ok(())
}

/// The key usage bits allowed for a leaf with this kind of key.
fn key_usage_fits(key_usage: &KeyUsage, kind: KeyKind) -> Result<(), String> {
    if key_usage.0.is_empty() {
        return Err("no bit set".into());
    }
    if key_usage.key_cert_sign() || key_usage.crl_sign() {
        return Err("keyCertSign or cRLSign on a leaf".into());
    }
    let refused = match kind {
        KeyKind::Rsa => [
            (key_usage.key_agreement(), "keyAgreement"),
            (key_usage.encipher_only(), "encipherOnly"),
            (key_usage.decipher_only(), "decipherOnly"),
        ]
        .into_iter()
        .find(|(set, _)| *set),
        KeyKind::Ec => [
            (key_usage.key_encipherment(), "keyEncipherment"),
            (key_usage.data_encipherment(), "dataEncipherment"),
        ]
        .into_iter()
        .find(|(set, _)| *set),
        KeyKind::Ed25519 => [
            (key_usage.key_encipherment(), "keyEncipherment"),
            (key_usage.data_encipherment(), "dataEncipherment"),
            (key_usage.key_agreement(), "keyAgreement"),
            (key_usage.encipher_only(), "encipherOnly"),
            (key_usage.decipher_only(), "decipherOnly"),
        ]
        .into_iter()
        .find(|(set, _)| *set),
    };
    match refused {
        Some((_, bit)) => Err(format!("{bit} is not for {kind:?} keys")),
        None => Ok(()),
    }
}

/// A subjectAltName entry rampart may issue, well formed.
fn well_formed(name: &GeneralName) -> Result<(), String> {
    match name {
        GeneralName::DnsName(dns) => Identifier::dns(dns.as_str())
            .map(drop)
            .map_err(|e| format!("dNSName: {e}")),
        GeneralName::IpAddress(octets) => match octets.as_bytes().len() {
            4 | 16 => Ok(()),
            n => Err(format!("iPAddress of {n} octets")),
        },
        GeneralName::Rfc822Name(address) => Identifier::email(address.as_str())
            .map(drop)
            .map_err(|e| format!("rfc822Name: {e}")),
        GeneralName::UniformResourceIdentifier(uri) => Identifier::uri(uri.as_str())
            .map(drop)
            .map_err(|e| format!("uniformResourceIdentifier: {e}")),
        _ => Err("only dNSName, iPAddress, rfc822Name and URI names are issued".into()),
    }
}

/// The subject's common name, if any.
fn common_name(tbs: &TbsCertificate) -> Option<String> {
    tbs.subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == rfc4519::CN)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned())
}

/// Whether a SAN entry names what `cn` says (DNS names case-insensitively, addresses by
/// value).
fn names_the_same(name: &GeneralName, cn: &str) -> bool {
    match name {
        GeneralName::DnsName(dns) => dns.as_str().eq_ignore_ascii_case(cn),
        GeneralName::Rfc822Name(address) => address.as_str().eq_ignore_ascii_case(cn),
        GeneralName::UniformResourceIdentifier(uri) => uri.as_str() == cn,
        GeneralName::IpAddress(octets) => match (cn.parse::<IpAddr>(), octets.as_bytes()) {
            (Ok(IpAddr::V4(ip)), bytes) => ip.octets() == bytes,
            (Ok(IpAddr::V6(ip)), bytes) => ip.octets() == bytes,
            (Err(_), _) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::local::LocalCa;
    use crate::ca::{CaAdapter, IssuanceOrder, Serial};
    use crate::config::{Config, ExtendedKeyUsage as Eku};
    use crate::model::KeyType;
    use der::asn1::OctetString;
    use der::Encode;
    use rcgen::{
        DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
        SerialNumber,
    };
    use time::{Duration, OffsetDateTime};
    use x509_cert::ext::Extension;

    /// The issuer every test certificate is signed by (a P-256 CA).
    fn issuer() -> Issuer<'static, KeyPair> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "lint test CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        Issuer::new(
            params,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        )
    }

    /// What the built-in CA signs for a TLS server (see `LocalCa::sign`).
    fn leaf() -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "a.test");
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(Serial::generate().as_bytes()));
        let now = OffsetDateTime::now_utc();
        params.not_before = now;
        params.not_after = now + Duration::days(90);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = vec![
            SanType::DnsName("a.test".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params
    }

    fn p256() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn rsa() -> KeyPair {
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap()
    }

    fn signed(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
        params.signed_by(key, &issuer()).unwrap().der().to_vec()
    }

    fn tbs(params: &CertificateParams, key: &KeyPair) -> TbsCertificate {
        Certificate::from_der(&signed(params, key))
            .unwrap()
            .tbs_certificate
    }

    fn rule(result: Result<(), LintError>) -> &'static str {
        result.map(|()| "ok").unwrap_or_else(|e| e.rule())
    }

    /// `tbs` with the extension `oid` changed by `edit` (or removed when it returns None).
    fn edit_extension(
        mut tbs: TbsCertificate,
        oid: const_oid::ObjectIdentifier,
        edit: impl Fn(Extension) -> Option<Extension>,
    ) -> TbsCertificate {
        let extensions = tbs.extensions.take().unwrap();
        tbs.extensions = Some(
            extensions
                .into_iter()
                .filter_map(|e| if e.extn_id == oid { edit(e) } else { Some(e) })
                .collect(),
        );
        tbs
    }

    #[test]
    fn what_the_ca_signs_passes() {
        let key = p256();
        assert_eq!(lint_der(&signed(&leaf(), &key)), Ok(()));
        // RSA server: keyEncipherment is fine.
        let mut params = leaf();
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        assert_eq!(lint_tbs(&tbs(&params, &rsa())), Ok(()));
        // No CN: an empty subject with the critical SAN rcgen writes then.
        let mut params = leaf();
        params.distinguished_name = DistinguishedName::new();
        assert_eq!(lint_tbs(&tbs(&params, &key)), Ok(()));
        // The SCEP RA: a named subject, no SAN, no EKU.
        let mut params = leaf();
        params.subject_alt_names.clear();
        params.extended_key_usages.clear();
        assert_eq!(lint_tbs(&tbs(&params, &key)), Ok(()));
    }

    #[test]
    fn serial_numbers_must_be_positive_and_short() {
        let good = tbs(&leaf(), &p256());
        let with_serial = |content: &[u8]| {
            let mut der = vec![0x02, content.len() as u8];
            der.extend_from_slice(content);
            let mut tbs = good.clone();
            tbs.serial_number = x509_cert::serial_number::SerialNumber::from_der(&der).unwrap();
            rule(lint_tbs(&tbs))
        };
        assert_eq!(with_serial(&[0x01]), "ok");
        assert_eq!(with_serial(&[0xff]), "serial_number"); // -1
        assert_eq!(with_serial(&[0x00]), "serial_number"); // 0
        let mut long = vec![0x00];
        long.extend([0x80; 20]); // a positive 20-octet magnitude, 21 octets encoded
        assert_eq!(with_serial(&long), "serial_number");
        assert_eq!(with_serial(&[0x7f; 20]), "ok");
    }

    #[test]
    fn validity_must_not_be_empty_or_inverted() {
        let mut tbs = tbs(&leaf(), &p256());
        tbs.validity.not_after = tbs.validity.not_before;
        assert_eq!(rule(lint_tbs(&tbs)), "validity");
        let mut params = leaf();
        params.not_after = params.not_before - Duration::days(1);
        assert_eq!(rule(lint_tbs(&self::tbs(&params, &p256()))), "validity");
    }

    #[test]
    fn only_v3_certificates() {
        let mut tbs = tbs(&leaf(), &p256());
        tbs.version = Version::V1;
        assert_eq!(rule(lint_tbs(&tbs)), "version");
    }

    #[test]
    fn signature_algorithm_fields_must_agree() {
        let mut certificate = Certificate::from_der(&signed(&leaf(), &p256())).unwrap();
        certificate.tbs_certificate.signature.oid = rfc5912::ECDSA_WITH_SHA_384;
        let der = certificate.to_der().unwrap();
        assert_eq!(rule(lint_der(&der)), "signature_algorithm");
        assert_eq!(rule(lint_der(b"junk")), "unparsable");
    }

    #[test]
    fn extensions_appear_once() {
        let tbs = tbs(&leaf(), &p256());
        let mut doubled = tbs.clone();
        let san = tbs
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.extn_id == rfc5280::ID_CE_SUBJECT_ALT_NAME)
            .unwrap()
            .clone();
        doubled.extensions.as_mut().unwrap().push(san);
        assert_eq!(rule(lint_tbs(&doubled)), "duplicate_extension");
    }

    #[test]
    fn leaves_carry_basic_constraints_without_ca() {
        let key = p256();
        let mut params = leaf();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        assert_eq!(rule(lint_tbs(&tbs(&params, &key))), "basic_constraints");
        let missing = edit_extension(tbs(&leaf(), &key), rfc5280::ID_CE_BASIC_CONSTRAINTS, |_| {
            None
        });
        assert_eq!(rule(lint_tbs(&missing)), "basic_constraints");
        let path_len = edit_extension(tbs(&leaf(), &key), rfc5280::ID_CE_BASIC_CONSTRAINTS, |e| {
            let value = BasicConstraints {
                ca: false,
                path_len_constraint: Some(0),
            };
            Some(Extension {
                extn_value: OctetString::new(value.to_der().unwrap()).unwrap(),
                ..e
            })
        });
        assert_eq!(rule(lint_tbs(&path_len)), "basic_constraints");
    }

    #[test]
    fn key_identifiers_are_present_and_not_critical() {
        let key = p256();
        let mut params = leaf();
        params.use_authority_key_identifier_extension = false;
        assert_eq!(
            rule(lint_tbs(&tbs(&params, &key))),
            "authority_key_identifier"
        );
        let critical = edit_extension(
            tbs(&leaf(), &key),
            rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
            |e| {
                Some(Extension {
                    critical: true,
                    ..e
                })
            },
        );
        assert_eq!(rule(lint_tbs(&critical)), "authority_key_identifier");
        let no_ski = edit_extension(
            tbs(&leaf(), &key),
            rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
            |_| None,
        );
        assert_eq!(rule(lint_tbs(&no_ski)), "subject_key_identifier");
        let empty_ski = edit_extension(
            tbs(&leaf(), &key),
            rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
            |e| {
                let empty = SubjectKeyIdentifier(OctetString::new(Vec::new()).unwrap());
                Some(Extension {
                    extn_value: OctetString::new(empty.to_der().unwrap()).unwrap(),
                    ..e
                })
            },
        );
        assert_eq!(rule(lint_tbs(&empty_ski)), "subject_key_identifier");
    }

    #[test]
    fn key_usage_fits_the_key_type() {
        let with_usages = |key: &KeyPair, usages: &[KeyUsagePurpose]| {
            let mut params = leaf();
            params.key_usages = usages.to_vec();
            rule(lint_tbs(&tbs(&params, key)))
        };
        use KeyUsagePurpose::*;
        let ec = p256();
        let rsa = rsa();
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(with_usages(&ec, &[DigitalSignature]), "ok");
        assert_eq!(with_usages(&ec, &[DigitalSignature, KeyAgreement]), "ok");
        assert_eq!(
            with_usages(&ec, &[DigitalSignature, KeyEncipherment]),
            "key_usage"
        );
        assert_eq!(
            with_usages(&ec, &[DigitalSignature, DataEncipherment]),
            "key_usage"
        );
        assert_eq!(
            with_usages(&rsa, &[DigitalSignature, KeyEncipherment]),
            "ok"
        );
        assert_eq!(
            with_usages(&rsa, &[DigitalSignature, KeyAgreement]),
            "key_usage"
        );
        assert_eq!(with_usages(&ed, &[DigitalSignature]), "ok");
        assert_eq!(
            with_usages(&ed, &[DigitalSignature, KeyAgreement]),
            "key_usage"
        );
        assert_eq!(
            with_usages(&ec, &[DigitalSignature, KeyCertSign]),
            "key_usage"
        );
        assert_eq!(with_usages(&ec, &[DigitalSignature, CrlSign]), "key_usage");
        // No keyUsage at all.
        assert_eq!(with_usages(&ec, &[]), "key_usage");
    }

    #[test]
    fn extended_key_usage_needs_a_usable_key_usage() {
        use KeyUsagePurpose::*;
        let with = |key: &KeyPair, usages: &[KeyUsagePurpose], ekus: &[ExtendedKeyUsagePurpose]| {
            let mut params = leaf();
            params.key_usages = usages.to_vec();
            params.extended_key_usages = ekus.to_vec();
            rule(lint_tbs(&tbs(&params, key)))
        };
        let server = [ExtendedKeyUsagePurpose::ServerAuth];
        let client = [ExtendedKeyUsagePurpose::ClientAuth];
        let rsa = rsa();
        let ec = p256();
        // RSA key exchange only: fine for a server, not for a client.
        assert_eq!(with(&rsa, &[KeyEncipherment], &server), "ok");
        assert_eq!(
            with(&rsa, &[KeyEncipherment], &client),
            "extended_key_usage"
        );
        assert_eq!(with(&ec, &[KeyAgreement], &server), "ok");
        assert_eq!(
            with(&ec, &[ContentCommitment], &server),
            "extended_key_usage"
        );
        assert_eq!(
            with(&ec, &[DigitalSignature], &[ExtendedKeyUsagePurpose::Any]),
            "extended_key_usage"
        );
    }

    #[test]
    fn subject_alt_names_are_present_and_well_formed() {
        let key = p256();
        // serverAuth without names.
        let mut params = leaf();
        params.subject_alt_names.clear();
        assert_eq!(rule(lint_tbs(&tbs(&params, &key))), "subject_alt_name");
        // A dNSName outside the preferred name syntax.
        for bad in [
            "bad_name.test",
            "-a.test",
            "a..test",
            "a.*.test",
            "10.0.0.1",
        ] {
            let mut params = leaf();
            params.distinguished_name = DistinguishedName::new();
            params.subject_alt_names = vec![SanType::DnsName(bad.try_into().unwrap())];
            assert_eq!(
                rule(lint_tbs(&tbs(&params, &key))),
                "subject_alt_name",
                "{bad}"
            );
        }
        let set_san = |names: Vec<GeneralName>| {
            edit_extension(tbs(&leaf(), &key), rfc5280::ID_CE_SUBJECT_ALT_NAME, |e| {
                Some(Extension {
                    extn_value: OctetString::new(SubjectAltName(names.clone()).to_der().unwrap())
                        .unwrap(),
                    ..e
                })
            })
        };
        // An iPAddress of 3 octets.
        let short_ip = set_san(vec![GeneralName::IpAddress(
            OctetString::new(vec![10, 0, 0]).unwrap(),
        )]);
        assert_eq!(rule(lint_tbs(&short_ip)), "subject_alt_name");
        // An email address without a domain.
        let email = set_san(vec![GeneralName::Rfc822Name(
            der::asn1::Ia5String::new("nobody").unwrap(),
        )]);
        assert_eq!(rule(lint_tbs(&email)), "subject_alt_name");
        // A relative URI.
        let uri = set_san(vec![GeneralName::UniformResourceIdentifier(
            der::asn1::Ia5String::new("/relative").unwrap(),
        )]);
        assert_eq!(rule(lint_tbs(&uri)), "subject_alt_name");
        // An empty GeneralNames.
        assert_eq!(rule(lint_tbs(&set_san(vec![]))), "subject_alt_name");
    }

    #[test]
    fn an_empty_subject_needs_a_critical_san() {
        let key = p256();
        let mut params = leaf();
        params.distinguished_name = DistinguishedName::new();
        let not_critical =
            edit_extension(tbs(&params, &key), rfc5280::ID_CE_SUBJECT_ALT_NAME, |e| {
                Some(Extension {
                    critical: false,
                    ..e
                })
            });
        assert_eq!(rule(lint_tbs(&not_critical)), "empty_subject");
        // No SAN and no subject, even without serverAuth.
        params.subject_alt_names.clear();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        assert_eq!(rule(lint_tbs(&tbs(&params, &key))), "empty_subject");
    }

    #[test]
    fn the_common_name_is_one_of_the_names() {
        let key = p256();
        let mut params = leaf();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "b.test");
        assert_eq!(
            lint_tbs(&tbs(&params, &key)),
            Err(LintError::CommonNameNotInSan("b.test".into()))
        );
        // An address CN matches its iPAddress SAN; case does not matter for DNS names.
        for cn in ["127.0.0.1", "A.TEST"] {
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            assert_eq!(lint_tbs(&tbs(&params, &key)), Ok(()), "{cn}");
        }
    }

    #[test]
    fn linter_signs_nothing_and_names_the_rule() {
        let mut issuer_params = CertificateParams::default();
        issuer_params
            .distinguished_name
            .push(DnType::CommonName, "lint test CA");
        for algorithm in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_RSA_SHA256] {
            let linter = Linter::new(issuer_params.clone(), algorithm).unwrap();
            let key = p256();
            assert!(linter.check(&leaf(), &key).is_ok());
            // What is linted: the TBS under the CA's name and algorithm, with no signature.
            let linted = leaf().signed_by(&key, &linter.issuer).unwrap();
            let linted = Certificate::from_der(linted.der()).unwrap();
            assert!(linted.signature.raw_bytes().is_empty());
            assert_eq!(linted.signature_algorithm, linted.tbs_certificate.signature);
            assert_eq!(linted.tbs_certificate.issuer.to_string(), "CN=lint test CA");
            let mut params = leaf();
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
            match linter.check(&params, &key) {
                Err(CaError::Lint(message)) => {
                    assert!(message.starts_with("key_usage:"), "{message}")
                }
                other => panic!("expected a lint failure, got {other:?}"),
            }
        }
        assert!(format!(
            "{:?}",
            Linter::new(issuer_params, &rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
        )
        .contains("Linter"));
    }

    #[tokio::test]
    async fn the_local_ca_lints_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load_default().unwrap().ca;
        let now = OffsetDateTime::now_utc();
        let (ca, _) = LocalCa::create_or_load(&dir.path().join("ca"), &config, now).unwrap();
        let key = p256();
        let order = |key_encipherment: bool, common_name: &str| IssuanceOrder {
            serial: Serial::generate(),
            public_key: key.der_bytes().to_vec(),
            key_type: KeyType::EcdsaP256,
            common_name: Some(common_name.into()),
            sans: vec![Identifier::dns("a.test").unwrap()],
            not_before: now,
            not_after: now + Duration::days(30),
            extended_key_usages: vec![Eku::ServerAuth],
            key_encipherment,
            csr_der: Vec::new(),
        };
        let issued = ca.issue(&order(false, "a.test")).await.unwrap();
        assert_eq!(lint_der(&issued.der), Ok(()));
        // keyEncipherment on an EC key: refused before the CA's key signs anything.
        match ca.issue(&order(true, "a.test")).await {
            Err(CaError::Lint(message)) => assert!(message.starts_with("key_usage:"), "{message}"),
            other => panic!("expected a lint failure, got {other:?}"),
        }
        match ca.issue(&order(false, "b.test")).await {
            Err(CaError::Lint(message)) => {
                assert!(message.starts_with("common_name_not_in_san:"), "{message}")
            }
            other => panic!("expected a lint failure, got {other:?}"),
        }
    }
}
