//! The CMS layers of a pkiMessage (RFC 8894 §3), used by both ends: a SignedData whose
//! signer attributes carry SCEP's fields ([`sign`], [`SignedMessage`]), wrapping an
//! EnvelopedData for one RSA recipient ([`seal`], [`open`]), and the degenerate
//! certificates-only SignedData that carries certificates and CRLs ([`certs_only`],
//! [`certificates_of`]).
//!
//! Types come from the `cms`, `x509-cert` and `der` crates; algorithms from [`crate::crypto`].

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, RecipientIdentifier, RecipientInfo,
};
use cms::revocation::RevocationInfoChoice;
use cms::signed_data::{DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignedData};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, PrintableStringRef, SetOfVec};
use der::{Any, AnyRef, Decode, Encode, Sequence, Tag, Tagged};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::certificate::{CertificateInner, Profile};

use crate::crypto::{ContentCipher, CryptoError, Digest, RsaPrivateKey};
use crate::loose::{IssuerAndSerial, RequesterCertificate, SignerId};
use crate::wire::oid;

/// A pkiMessage layer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not the DER structure expected.
    #[error("{0}")]
    Malformed(String),
    /// Well formed, but using something SCEP does not (another content type, no signer…).
    #[error("{0}")]
    Unsupported(String),
}

fn malformed(what: &'static str) -> impl Fn(der::Error) -> FormatError {
    move |e| FormatError::Malformed(format!("{what}: {e}"))
}

/// An authenticated attribute whose value is a PrintableString.
pub fn printable_attribute(id: ObjectIdentifier, text: &str) -> Result<Attribute, der::Error> {
    let value = Any::encode_from(&PrintableStringRef::new(text)?)?;
    Ok(Attribute {
        oid: id,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// An authenticated attribute whose value is an OCTET STRING.
pub fn octets_attribute(id: ObjectIdentifier, bytes: &[u8]) -> Result<Attribute, der::Error> {
    let value = Any::encode_from(&OctetString::new(bytes)?)?;
    Ok(Attribute {
        oid: id,
        values: SetOfVec::try_from(vec![value])?,
    })
}

fn rsa_encryption() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oid::RSA_ENCRYPTION,
        parameters: Some(Any::null()),
    }
}

fn content_info(
    content_type: ObjectIdentifier,
    content: &(impl der::EncodeValue + der::Tagged),
) -> Result<Vec<u8>, der::Error> {
    ContentInfo {
        content_type,
        content: Any::encode_from(content)?,
    }
    .to_der()
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Encoding.
    #[error("encoding: {0}")]
    Encoding(#[from] der::Error),
    /// Crypto.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A SignedData (as ContentInfo DER) over `content` (absent for replies without one),
/// signed by `key` whose certificate is `signer` at `signed_at`, with `attributes` besides
/// the CMS contentType, messageDigest and signingTime.
pub fn sign<P: Profile>(
    content: Option<&[u8]>,
    signer: &CertificateInner<P>,
    key: &dyn RsaPrivateKey,
    digest: Digest,
    mut attributes: Vec<Attribute>,
    signed_at: std::time::SystemTime,
) -> Result<Vec<u8>, BuildError> {
    // RFC 5652 §11.3: UTCTime through 2049, GeneralizedTime after, as x509-cert chooses.
    let signing_time = x509_cert::time::Time::try_from(signed_at)?;
    attributes.push(Attribute {
        oid: oid::SIGNING_TIME,
        values: SetOfVec::try_from(vec![Any::encode_from(&signing_time)?])?,
    });
    let content_type = Attribute {
        oid: oid::CONTENT_TYPE,
        values: SetOfVec::try_from(vec![Any::encode_from(&oid::DATA)?])?,
    };
    let message_digest = octets_attribute(
        oid::MESSAGE_DIGEST,
        &digest.digest(content.unwrap_or_default()),
    )?;
    attributes.extend([content_type, message_digest]);
    let signed_attrs = SetOfVec::try_from(attributes)?;
    let signature = key.sign(digest, &signed_attrs.to_der()?)?;
    let digest_alg = AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    };
    let signer_info = crate::loose::SignerInfo {
        version: CmsVersion::V1,
        sid: SignerId::IssuerAndSerialNumber(IssuerAndSerial::of(signer)?),
        digest_alg: digest_alg.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: rsa_encryption(),
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    // The signer named as it is, whatever its serial's length (a requester's own).
    let signed = crate::loose::SignedData {
        version: CmsVersion::V1,
        digest_algorithms: DigestAlgorithmIdentifiers::try_from(vec![digest_alg])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid::DATA,
            econtent: content
                .map(|c| Any::new(Tag::OctetString, c.to_vec()))
                .transpose()?,
        },
        certificates: Some(SetOfVec::try_from(vec![Any::from_der(&signer.to_der()?)?])?),
        crls: None,
        signer_infos: SetOfVec::try_from(vec![signer_info])?,
    };
    Ok(content_info(oid::SIGNED_DATA, &signed)?)
}

/// A SignedData as read, before its signature is checked: SCEP's attributes are readable
/// (a reply to a message whose signature fails still echoes its transactionID).
#[derive(Debug, Clone)]
pub struct SignedMessage {
    /// The signer's certificate, from the message's certificate set (any serial length).
    pub signer: RequesterCertificate,
    /// The digest algorithm the signer used, if rampart knows it.
    pub digest: Result<Digest, CryptoError>,
    /// The encapsulated content's octets, if any.
    pub content: Option<Vec<u8>>,
    signer_info: crate::loose::SignerInfo,
}

impl SignedMessage {
    /// Read a ContentInfo holding a SignedData with exactly one signer whose certificate
    /// is included.
    pub fn parse(der_bytes: &[u8]) -> Result<Self, FormatError> {
        let normalized = crate::ber::normalize(der_bytes)
            .map_err(|e| FormatError::Malformed(format!("pkiMessage: {e}")))?;
        let info = ContentInfo::from_der(&normalized).map_err(malformed("ContentInfo"))?;
        if info.content_type != oid::SIGNED_DATA {
            return Err(FormatError::Unsupported(format!(
                "a pkiMessage is a SignedData, not {}",
                info.content_type
            )));
        }
        let signed: crate::loose::SignedData =
            info.content.decode_as().map_err(malformed("SignedData"))?;
        let signer_info = match signed.signer_infos.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(FormatError::Unsupported(
                    "a pkiMessage has exactly one signer".into(),
                ))
            }
        };
        // CertificateChoices other than a certificate (attribute certificates…) are skipped.
        let mut certificates = signed
            .certificates
            .iter()
            .flat_map(|set| set.iter())
            .filter_map(|choice| choice.decode_as::<RequesterCertificate>().ok());
        let signer = match &signer_info.sid {
            SignerId::IssuerAndSerialNumber(id) => certificates.find(|c| id.names(c)),
            SignerId::SubjectKeyIdentifier(ski) => {
                certificates.find(|c| subject_key_identifier(c).as_ref() == Some(&ski.0))
            }
        }
        .ok_or_else(|| {
            FormatError::Unsupported("the signer's certificate is not in the message".into())
        })?;
        let digest = Digest::from_oid(&signer_info.digest_alg.oid);
        let content = match &signed.encap_content_info.econtent {
            None => None,
            Some(any) => Some(
                any.decode_as::<OctetString>()
                    .map_err(malformed("eContent"))?
                    .into_bytes(),
            ),
        };
        Ok(SignedMessage {
            signer,
            digest,
            content,
            signer_info,
        })
    }

    /// The first value of the signed attribute `id`.
    fn attribute(&self, id: ObjectIdentifier) -> Option<&Any> {
        self.signer_info
            .signed_attrs
            .as_ref()?
            .iter()
            .find(|a| a.oid == id)?
            .values
            .iter()
            .next()
    }

    /// A text attribute (PrintableString, or the UTF8String / IA5String some clients send).
    pub fn text(&self, id: ObjectIdentifier) -> Option<String> {
        let value = self.attribute(id)?;
        match value.tag() {
            Tag::PrintableString | Tag::Utf8String | Tag::Ia5String => {
                std::str::from_utf8(value.value()).ok().map(str::to_string)
            }
            _ => None,
        }
    }

    /// The signingTime attribute (UTCTime or GeneralizedTime), if present and readable.
    pub fn signing_time(&self) -> Option<std::time::SystemTime> {
        let value = self.attribute(oid::SIGNING_TIME)?;
        let time = x509_cert::time::Time::from_der(&value.to_der().ok()?).ok()?;
        Some(time.to_system_time())
    }

    /// An OCTET STRING attribute.
    pub fn octets(&self, id: ObjectIdentifier) -> Option<Vec<u8>> {
        let value = self.attribute(id)?;
        (value.tag() == Tag::OctetString).then(|| value.value().to_vec())
    }

    /// Check the signature over the signed attributes with the signer certificate's RSA key,
    /// and that the messageDigest attribute is the content's digest.
    pub fn verify(&self) -> Result<(), CryptoError> {
        let attributes = self
            .signer_info
            .signed_attrs
            .as_ref()
            .ok_or(CryptoError::BadSignature)?;
        let digest = self.digest.clone()?;
        let expected = digest.digest(self.content.as_deref().unwrap_or_default());
        if self.octets(oid::MESSAGE_DIGEST).as_deref() != Some(&expected[..]) {
            return Err(CryptoError::BadSignature);
        }
        let signed_bytes = attributes.to_der().map_err(|_| CryptoError::BadSignature)?;
        let spki = self
            .signer
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| CryptoError::BadSignature)?;
        digest.verify_rsa(&spki, &signed_bytes, self.signer_info.signature.as_bytes())
    }
}

/// The subjectKeyIdentifier extension's value.
fn subject_key_identifier<P: Profile>(cert: &CertificateInner<P>) -> Option<OctetString> {
    use x509_cert::ext::pkix::SubjectKeyIdentifier;
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
        .map(|ski| ski.0)
}

/// An EnvelopedData (as ContentInfo DER) of `content` for the RSA key of `recipient`.
pub fn seal<P: Profile>(
    content: &[u8],
    recipient: &CertificateInner<P>,
    cipher: ContentCipher,
) -> Result<Vec<u8>, BuildError> {
    let crate::crypto::Encrypted {
        key,
        iv,
        ciphertext,
    } = cipher.encrypt(content)?;
    let spki = recipient.tbs_certificate.subject_public_key_info.to_der()?;
    let encrypted_key = crate::crypto::rsa_encrypt(&spki, &key)?;
    // Named exactly as it came (a requester's serial may be longer than RFC 5280 allows).
    let recipient_info = crate::loose::KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: IssuerAndSerial::of(recipient)?,
        key_enc_alg: rsa_encryption(),
        enc_key: OctetString::new(encrypted_key)?,
    };
    let enveloped = crate::loose::EnvelopedData {
        version: CmsVersion::V0,
        recip_infos: SetOfVec::try_from(vec![recipient_info])?,
        encrypted_content: EncryptedContentInfo {
            content_type: oid::DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(Any::encode_from(&OctetString::new(iv)?)?),
            },
            encrypted_content: Some(OctetString::new(ciphertext)?),
        },
    };
    Ok(content_info(oid::ENVELOPED_DATA, &enveloped)?)
}

/// A key-transport recipient of an EnvelopedData, as read.
struct KeyTransport {
    /// Whether it names the certificate opening the envelope.
    names_me: bool,
    key_enc_alg: AlgorithmIdentifierOwned,
    enc_key: OctetString,
}

/// The key-transport recipients and the encrypted content of an EnvelopedData: as the `cms`
/// crate reads it (every recipient kind, a constructed encrypted content joined first), or
/// else with recipients named by serials of any length (a reply to a requester whose own
/// certificate has one, see [`crate::loose`]).
fn key_transports_of<P: Profile>(
    content: &Any,
    me: &CertificateInner<P>,
) -> Result<(Vec<KeyTransport>, EncryptedContentInfo), FormatError> {
    let strict = content.decode_as::<EnvelopedData>().or_else(|first| {
        // A constructed encrypted content (Go's PKCS#7 library sends one): join it.
        content
            .to_der()
            .ok()
            .and_then(|bytes| crate::ber::join_implicit_octets(&bytes).ok())
            .and_then(|bytes| EnvelopedData::from_der(&bytes).ok())
            .ok_or(first)
    });
    match strict {
        Ok(enveloped) => {
            let transports = enveloped
                .recip_infos
                .0
                .iter()
                .filter_map(|r| match r {
                    RecipientInfo::Ktri(k) => Some(KeyTransport {
                        names_me: match &k.rid {
                            RecipientIdentifier::IssuerAndSerialNumber(id) => {
                                crate::loose::names(&id.issuer, id.serial_number.as_bytes(), me)
                            }
                            RecipientIdentifier::SubjectKeyIdentifier(ski) => {
                                subject_key_identifier(me).as_ref() == Some(&ski.0)
                            }
                        },
                        key_enc_alg: k.key_enc_alg.clone(),
                        enc_key: k.enc_key.clone(),
                    }),
                    _ => None,
                })
                .collect();
            Ok((transports, enveloped.encrypted_content))
        }
        Err(first) => {
            let loose: crate::loose::EnvelopedData = content
                .decode_as()
                .map_err(|_| FormatError::Malformed(format!("EnvelopedData: {first}")))?;
            let transports = loose
                .recip_infos
                .iter()
                .map(|k| KeyTransport {
                    names_me: k.rid.names(me),
                    key_enc_alg: k.key_enc_alg.clone(),
                    enc_key: k.enc_key.clone(),
                })
                .collect();
            Ok((transports, loose.encrypted_content))
        }
    }
}

/// Why an EnvelopedData could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Structure.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// An algorithm rampart does not use.
    #[error("{0}")]
    Algorithm(String),
    /// Not for this key, or corrupt.
    #[error("{0}")]
    Decrypt(String),
    /// The key is held elsewhere and could not be used (not the message's fault).
    #[error("{0}")]
    KeyUnavailable(String),
}

/// Decrypt an EnvelopedData (ContentInfo DER) addressed to `me` (whose key is `key`):
/// the content and the cipher the sender chose.
pub fn open<P: Profile>(
    der_bytes: &[u8],
    me: &CertificateInner<P>,
    key: &dyn RsaPrivateKey,
) -> Result<(Vec<u8>, ContentCipher), OpenError> {
    let normalized = crate::ber::normalize(der_bytes)
        .map_err(|e| FormatError::Malformed(format!("pkcsPKIEnvelope: {e}")))?;
    let info = ContentInfo::from_der(&normalized).map_err(malformed("pkcsPKIEnvelope"))?;
    if info.content_type != oid::ENVELOPED_DATA {
        return Err(FormatError::Unsupported(format!(
            "pkcsPKIEnvelope is an EnvelopedData, not {}",
            info.content_type
        ))
        .into());
    }
    let (key_transports, encrypted) = key_transports_of(&info.content, me)?;
    let mine = key_transports.iter().find(|k| k.names_me);
    let recipient = match (mine, key_transports.as_slice()) {
        (Some(k), _) => k,
        // Some clients name the recipient by another certificate of the chain; try the key.
        (None, [only]) => only,
        (None, []) => {
            return Err(OpenError::Algorithm(
                "no RSA key-transport recipient in the envelope".into(),
            ))
        }
        (None, _) => {
            return Err(OpenError::Decrypt(
                "the envelope is not addressed to this server's certificate".into(),
            ))
        }
    };
    if recipient.key_enc_alg.oid != oid::RSA_ENCRYPTION {
        return Err(OpenError::Algorithm(format!(
            "key transport {} is not rsaEncryption",
            recipient.key_enc_alg.oid
        )));
    }
    let cipher = ContentCipher::from_oid(&encrypted.content_enc_alg.oid)
        .map_err(|e| OpenError::Algorithm(e.to_string()))?;
    let iv = encrypted
        .content_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<OctetString>().ok())
        .ok_or_else(|| FormatError::Malformed("the content cipher has no IV".into()))?;
    let ciphertext = encrypted
        .encrypted_content
        .as_ref()
        .ok_or_else(|| FormatError::Malformed("the envelope has no encrypted content".into()))?;
    let content_key = key
        .decrypt(recipient.enc_key.as_bytes())
        .map_err(|e| match e {
            CryptoError::KeyUnavailable(_) => OpenError::KeyUnavailable(e.to_string()),
            e => OpenError::Decrypt(e.to_string()),
        })?;
    let content = cipher
        .decrypt(&content_key, iv.as_bytes(), ciphertext.as_bytes())
        .map_err(|e| OpenError::Decrypt(e.to_string()))?;
    Ok((content, cipher))
}

/// A degenerate certificates-only SignedData (ContentInfo DER, RFC 8894 §3.4) holding
/// `certificates` and `crls` (DER). DER sorts a SET OF, so the order is not kept: a reply
/// that must single out one certificate carries only that one.
///
/// The certificates and CRLs go in as the DER they are: each is read only as far as its
/// outer TLV (a well-formed DER value, or an error), not decoded into its fields and encoded
/// again, and the SET OF is sorted by those bytes, as DER orders it.
pub fn certs_only(certificates: &[Vec<u8>], crls: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    let signed = CertsOnlySignedData {
        version: CmsVersion::V1,
        digest_algorithms: DigestAlgorithmIdentifiers::try_from(vec![])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid::DATA,
            econtent: None,
        },
        certificates: der_set_of(certificates)?,
        crls: der_set_of(crls)?,
        signer_infos: SetOfVec::new(),
    };
    content_info(oid::SIGNED_DATA, &signed)
}

/// DER values as a SET OF, sorted; `None` when there are none (an absent OPTIONAL field).
fn der_set_of(values: &[Vec<u8>]) -> Result<Option<SetOfVec<AnyRef<'_>>>, der::Error> {
    if values.is_empty() {
        return Ok(None);
    }
    let values = values
        .iter()
        .map(|der| AnyRef::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    SetOfVec::try_from(values).map(Some)
}

/// SignedData (RFC 5652 §5.1) as a certificates-only message has it: version 1, no digest
/// algorithms, no content, no signers; `certificates` (`[0] IMPLICIT CertificateSet`) and
/// `crls` (`[1] IMPLICIT RevocationInfoChoices`) each a SET OF values kept as their DER.
#[derive(Sequence)]
struct CertsOnlySignedData<'a> {
    version: CmsVersion,
    digest_algorithms: DigestAlgorithmIdentifiers,
    encap_content_info: EncapsulatedContentInfo,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    certificates: Option<SetOfVec<AnyRef<'a>>>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    crls: Option<SetOfVec<AnyRef<'a>>>,
    /// Always empty.
    signer_infos: SetOfVec<AnyRef<'a>>,
}

/// What a certificates-only SignedData carries.
#[derive(Debug, Clone, Default)]
pub struct CertsOnly {
    /// Certificates, DER.
    pub certificates: Vec<Vec<u8>>,
    /// CRLs, DER.
    pub crls: Vec<Vec<u8>>,
}

/// The certificates (DER) and CRLs of a certificates-only SignedData.
pub fn certificates_of(der_bytes: &[u8]) -> Result<CertsOnly, FormatError> {
    let info = ContentInfo::from_der(der_bytes).map_err(malformed("ContentInfo"))?;
    let signed: SignedData = info.content.decode_as().map_err(malformed("SignedData"))?;
    let certificates = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(cert) => cert.to_der().ok(),
            _ => None,
        })
        .collect();
    let crls = signed
        .crls
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            RevocationInfoChoice::Crl(crl) => crl.to_der().ok(),
            _ => None,
        })
        .collect();
    Ok(CertsOnly { certificates, crls })
}

#[cfg(test)]
mod tests {
    use cms::cert::CertificateChoices;
    use cms::revocation::RevocationInfoChoices;
    use cms::signed_data::{CertificateSet, SignerInfos};
    use x509_cert::crl::CertificateList;
    use x509_cert::Certificate;

    use super::*;

    /// What `certs_only` must produce, built from the `cms` crate's own types (every value
    /// decoded and encoded again): the oracle for the DER-as-is version.
    fn certs_only_by_cms_types(certificates: &[Vec<u8>], crls: &[Vec<u8>]) -> Vec<u8> {
        let certificates: Vec<_> = certificates
            .iter()
            .map(|der| CertificateChoices::Certificate(Certificate::from_der(der).unwrap()))
            .collect();
        let crls: Vec<_> = crls
            .iter()
            .map(|der| RevocationInfoChoice::Crl(CertificateList::from_der(der).unwrap()))
            .collect();
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: DigestAlgorithmIdentifiers::try_from(vec![]).unwrap(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: oid::DATA,
                econtent: None,
            },
            certificates: (!certificates.is_empty())
                .then(|| CertificateSet(SetOfVec::try_from(certificates).unwrap())),
            crls: (!crls.is_empty())
                .then(|| RevocationInfoChoices(SetOfVec::try_from(crls).unwrap())),
            signer_infos: SignerInfos(SetOfVec::new()),
        };
        content_info(oid::SIGNED_DATA, &signed).unwrap()
    }

    /// Certificates of different key types and name lengths (so of different lengths and
    /// contents to sort), all issued by the first, and a CRL of it.
    fn chain_and_crl() -> (Vec<Vec<u8>>, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "certs-only test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let mut certificates = vec![ca.der().to_vec()];
        let algorithms = [
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ];
        for (n, algorithm) in algorithms.into_iter().enumerate() {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            let names = vec![format!("{}.example.test", "a".repeat(1 + 40 * n))];
            let params = rcgen::CertificateParams::new(names).unwrap();
            certificates.push(params.signed_by(&key, &issuer).unwrap().der().to_vec());
        }
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2026, 2, 1),
            crl_number: rcgen::SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        (certificates, crl.der().to_vec())
    }

    #[test]
    fn certs_only_is_the_der_the_cms_types_give() {
        let (certificates, crl) = chain_and_crl();
        let crls = [crl];
        for (certs, crls) in [
            (&certificates[..], &crls[..0]),
            (&certificates[..1], &crls[..0]),
            (&certificates[..0], &crls[..]),
            (&certificates[..], &crls[..]),
        ] {
            assert_eq!(
                certs_only(certs, crls).unwrap(),
                certs_only_by_cms_types(certs, crls)
            );
        }
        // In any order given, the SET OF comes out sorted, the same.
        let reversed: Vec<_> = certificates.iter().rev().cloned().collect();
        assert_eq!(
            certs_only(&reversed, &[]).unwrap(),
            certs_only(&certificates, &[]).unwrap()
        );
        // And it reads back.
        let read = certificates_of(&certs_only(&certificates, &crls).unwrap()).unwrap();
        let mut expected = certificates.clone();
        expected.sort();
        let mut got = read.certificates;
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(read.crls, crls);
    }

    #[test]
    fn certs_only_refuses_what_is_not_der() {
        assert!(certs_only(&[vec![0x30, 0x05, 0x01]], &[]).is_err());
        assert!(certs_only(&[], &[vec![]]).is_err());
    }
}
