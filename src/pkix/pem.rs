//! PEM (RFC 7468) encoding and decoding of the objects rampart exchanges.

use der::pem::LineEnding;

/// PEM label of a certificate.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// PKCS#10 label.
pub const CERTIFICATE_REQUEST: &str = "CERTIFICATE REQUEST";
/// Legacy PKCS#10 label (Netscape, some Windows tools).
pub const NEW_CERTIFICATE_REQUEST: &str = "NEW CERTIFICATE REQUEST";

/// A PEM document that is not what was expected.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// Not PEM at all, or broken base64.
    #[error("not a valid PEM document: {0}")]
    Malformed(String),
    /// A PEM document with another label.
    #[error("expected PEM label {expected}, found `{found}`")]
    WrongLabel {
        /// Accepted labels.
        expected: String,
        /// The label found.
        found: String,
    },
}

/// Decode one PEM document whose label is one of `labels`.
pub fn decode(text: &str, labels: &[&str]) -> Result<Vec<u8>, PemError> {
    let (label, der) = der::pem::decode_vec(text.trim().as_bytes())
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if !labels.contains(&label) {
        return Err(PemError::WrongLabel {
            expected: labels.join(" or "),
            found: label.to_string(),
        });
    }
    Ok(der)
}

/// Encode DER as one PEM document.
pub fn encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, LineEnding::LF, der)
        .expect("PEM encoding of a byte string cannot fail")
}

/// Encode certificates (leaf first) as concatenated PEM.
pub fn encode_certificates<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    ders.into_iter()
        .map(|der| encode(CERTIFICATE, der))
        .collect()
}

/// Split concatenated PEM certificates into DER (other PEM blocks are skipped).
pub fn decode_certificates(text: &str) -> Result<Vec<Vec<u8>>, PemError> {
    let out = rustls_pemfile::certs(&mut text.as_bytes())
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if out.is_empty() {
        return Err(PemError::Malformed("no PEM certificate found".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_round_trip() {
        let a = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let b = vec![0x30, 0x03, 0x02, 0x01, 0x02];
        let text = encode_certificates([a.as_slice(), b.as_slice()]);
        assert_eq!(decode_certificates(&text).unwrap(), vec![a, b]);
        let no_trailing_newline = text.trim_end();
        assert_eq!(decode_certificates(no_trailing_newline).unwrap().len(), 2);
    }

    #[test]
    fn wrong_label_is_named() {
        let text = encode("PRIVATE KEY", &[1, 2, 3]);
        let err = decode(&text, &["CERTIFICATE REQUEST"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PRIVATE KEY"), "{err}");
        assert!(decode("garbage", &["X"]).is_err());
    }
}
