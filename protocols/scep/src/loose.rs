//! CMS structures that name a requester's certificate, read and written without RFC 5280's
//! limit on serial numbers.
//!
//! A SCEP requester signs its first request with a self-signed certificate it makes itself,
//! and some give it a serial longer than the 20 octets RFC 5280 allows CAs: certmonger uses
//! the SHA-256 of the public key (32 octets). The `cms` crate's types hold certificates and
//! issuer-and-serial identifiers under the RFC 5280 profile, which refuses such a serial at
//! decoding, so a whole pkiMessage was unreadable. These types mirror the ASN.1 of the few
//! structures in which the requester's certificate appears (RFC 5652 §5.1, §5.3, §6.2.1),
//! with the certificate under `x509-cert`'s `Raw` profile and the serial as a plain INTEGER.
//! The reply must name the requester's certificate exactly as it came, or the requester
//! cannot find the key to open it.
//!
//! Everything else (the RA's own certificate, certificates rampart issued) stays under
//! RFC 5280 in the `cms` types. May import `cms`, `der`, `spki`, `x509-cert`.

use std::cmp::Ordering;

use cms::content_info::CmsVersion;
use cms::enveloped_data::EncryptedContentInfo;
use cms::signed_data::{
    DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignedAttributes, UnsignedAttributes,
};
use der::asn1::{Int, OctetString, SetOfVec};
use der::{Any, Choice, Encode, Sequence, ValueOrd};
use spki::AlgorithmIdentifierOwned;
use x509_cert::certificate::{CertificateInner, Profile, Raw};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::name::Name;

/// A requester's certificate: any serial length.
pub type RequesterCertificate = CertificateInner<Raw>;

/// DER order of two values by their encodings (what a SET OF is sorted by).
fn der_order(a: &impl Encode, b: &impl Encode) -> der::Result<Ordering> {
    Ok(a.to_der()?.cmp(&b.to_der()?))
}

/// `IssuerAndSerialNumber` (RFC 5652 §10.2.4) with the serial as any INTEGER.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct IssuerAndSerial {
    /// The certificate's issuer.
    pub issuer: Name,
    /// Its serial number, as encoded.
    pub serial_number: Int,
}

impl IssuerAndSerial {
    /// The identifier of `certificate`.
    pub fn of<P: Profile>(certificate: &CertificateInner<P>) -> der::Result<Self> {
        Ok(IssuerAndSerial {
            issuer: certificate.tbs_certificate.issuer.clone(),
            serial_number: Int::new(certificate.tbs_certificate.serial_number.as_bytes())?,
        })
    }

    /// Whether it names `certificate`.
    pub fn names<P: Profile>(&self, certificate: &CertificateInner<P>) -> bool {
        names(&self.issuer, self.serial_number.as_bytes(), certificate)
    }
}

/// Whether `issuer` and the serial number encoded as `serial` (an identifier of either
/// form) name `certificate`.
pub fn names<P: Profile>(issuer: &Name, serial: &[u8], certificate: &CertificateInner<P>) -> bool {
    *issuer == certificate.tbs_certificate.issuer
        && serial == certificate.tbs_certificate.serial_number.as_bytes()
}

/// `SignerIdentifier` (RFC 5652 §5.3).
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum SignerId {
    /// By issuer and serial number.
    IssuerAndSerialNumber(IssuerAndSerial),
    /// By subject key identifier.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    SubjectKeyIdentifier(SubjectKeyIdentifier),
}

/// `SignerInfo` (RFC 5652 §5.3).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SignerInfo {
    /// CMSVersion.
    pub version: CmsVersion,
    /// Who signed.
    pub sid: SignerId,
    /// The digest algorithm.
    pub digest_alg: AlgorithmIdentifierOwned,
    /// The signed attributes (SCEP's fields).
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub signed_attrs: Option<SignedAttributes>,
    /// The signature algorithm.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// The signature.
    pub signature: OctetString,
    /// Unsigned attributes.
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub unsigned_attrs: Option<UnsignedAttributes>,
}

impl ValueOrd for SignerInfo {
    fn value_cmp(&self, other: &Self) -> der::Result<Ordering> {
        der_order(self, other)
    }
}

/// `SignedData` (RFC 5652 §5.1) as received: the certificates left as they came, for the
/// reader to pick the signer's.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SignedData {
    /// CMSVersion.
    pub version: CmsVersion,
    /// The digest algorithms.
    pub digest_algorithms: DigestAlgorithmIdentifiers,
    /// The signed content.
    pub encap_content_info: EncapsulatedContentInfo,
    /// The certificates (CertificateChoices), undecoded.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub certificates: Option<SetOfVec<Any>>,
    /// The CRLs, undecoded.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub crls: Option<SetOfVec<Any>>,
    /// The signers.
    pub signer_infos: SetOfVec<SignerInfo>,
}

/// `KeyTransRecipientInfo` (RFC 5652 §6.2.1) naming its recipient by issuer and serial
/// number, version 0: the alternative of `RecipientInfo` without a tag, so it stands for
/// itself in a `RecipientInfos`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct KeyTransRecipientInfo {
    /// CMSVersion (0).
    pub version: CmsVersion,
    /// The recipient's certificate.
    pub rid: IssuerAndSerial,
    /// The key-encryption algorithm.
    pub key_enc_alg: AlgorithmIdentifierOwned,
    /// The encrypted content-encryption key.
    pub enc_key: OctetString,
}

impl ValueOrd for KeyTransRecipientInfo {
    fn value_cmp(&self, other: &Self) -> der::Result<Ordering> {
        der_order(self, other)
    }
}

/// `EnvelopedData` (RFC 5652 §6.1) for key-transport recipients, without originator info or
/// unprotected attributes.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct EnvelopedData {
    /// CMSVersion (0).
    pub version: CmsVersion,
    /// The recipients.
    pub recip_infos: SetOfVec<KeyTransRecipientInfo>,
    /// The encrypted content.
    pub encrypted_content: EncryptedContentInfo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn a_serial_longer_than_rfc_5280_allows_is_read_and_written_back_unchanged() {
        let serial = {
            let mut bytes = vec![0x00, 0x80];
            bytes.extend((0..31).map(|i| i as u8 + 1));
            Int::new(&bytes).unwrap()
        };
        let id = IssuerAndSerial {
            issuer: Name::default(),
            serial_number: serial.clone(),
        };
        let der = id.to_der().unwrap();
        let back = IssuerAndSerial::from_der(&der).unwrap();
        assert_eq!(back.serial_number.as_bytes(), serial.as_bytes());
        assert_eq!(back.to_der().unwrap(), der);
        // The cms crate's type refuses the same bytes.
        assert!(cms::cert::IssuerAndSerialNumber::from_der(&der).is_err());
    }
}
