//! BER → DER normalisation for incoming pkiMessages. SCEP clients in the field send BER:
//! indefinite lengths (Windows, BouncyCastle), constructed OCTET STRINGs, and Go's PKCS#7
//! library (micromdm's client) a constructed `[0] IMPLICIT OCTET STRING` for the
//! EnvelopedData's encrypted content. The `der` crate rightly refuses all three, so
//! messages are normalised first: definite minimal lengths everywhere, constructed
//! OCTET STRINGs joined into primitive ones ([`normalize`]); the context-tagged encrypted
//! content, whose type only the schema knows, is joined where the schema says so
//! ([`join_implicit_octets`]).
//!
//! This rewrites encodings only, never values.

/// Why the input is not BER.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not BER: {0}")]
pub struct BerError(&'static str);

/// Nesting deeper than this is refused (no real message comes close).
const MAX_DEPTH: usize = 48;

/// A tag-length-value read from BER: the identifier octets, whether it is constructed, and
/// its content (`None` length = indefinite).
struct Header {
    identifier: Vec<u8>,
    constructed: bool,
    length: Option<usize>,
}

fn read_header(input: &[u8], pos: &mut usize) -> Result<Header, BerError> {
    let first = *input.get(*pos).ok_or(BerError("truncated identifier"))?;
    let mut identifier = vec![first];
    *pos += 1;
    if first & 0x1f == 0x1f {
        loop {
            let byte = *input.get(*pos).ok_or(BerError("truncated tag number"))?;
            identifier.push(byte);
            *pos += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if identifier.len() > 6 {
                return Err(BerError("tag number too large"));
            }
        }
    }
    let constructed = first & 0x20 != 0;
    let byte = *input.get(*pos).ok_or(BerError("truncated length"))?;
    *pos += 1;
    let length = match byte {
        0x80 if constructed => None,
        0x80 => return Err(BerError("indefinite length on a primitive value")),
        0xff => return Err(BerError("reserved length octet")),
        short if short & 0x80 == 0 => Some(usize::from(short)),
        long => {
            let count = usize::from(long & 0x7f);
            if count > 4 {
                return Err(BerError("length too large"));
            }
            let bytes = input
                .get(*pos..*pos + count)
                .ok_or(BerError("truncated length"))?;
            *pos += count;
            Some(bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
        }
    };
    Ok(Header {
        identifier,
        constructed,
        length,
    })
}

fn push_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let bytes = length.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn push_tlv(out: &mut Vec<u8>, identifier: &[u8], content: &[u8]) {
    out.extend_from_slice(identifier);
    push_length(out, content.len());
    out.extend_from_slice(content);
}

/// The contents of consecutive primitive OCTET STRINGs (already normalised), joined.
fn joined_octets(children: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut joined = Vec::new();
    let mut pos = 0;
    while pos < children.len() {
        let header = read_header(children, &mut pos)?;
        let length = header.length.ok_or(BerError("indefinite segment"))?;
        if header.identifier != [0x04] {
            return Err(BerError(
                "a constructed string segment is not an OCTET STRING",
            ));
        }
        joined.extend_from_slice(
            children
                .get(pos..pos + length)
                .ok_or(BerError("truncated segment"))?,
        );
        pos += length;
    }
    Ok(joined)
}

fn element(input: &[u8], pos: &mut usize, out: &mut Vec<u8>, depth: usize) -> Result<(), BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError("nested too deeply"));
    }
    let header = read_header(input, pos)?;
    if !header.constructed {
        let length = header.length.ok_or(BerError("indefinite primitive"))?;
        let content = input
            .get(*pos..*pos + length)
            .ok_or(BerError("truncated value"))?;
        *pos += length;
        push_tlv(out, &header.identifier, content);
        return Ok(());
    }
    let mut children = Vec::new();
    match header.length {
        Some(length) => {
            let end = pos
                .checked_add(length)
                .filter(|end| *end <= input.len())
                .ok_or(BerError("truncated value"))?;
            while *pos < end {
                element(&input[..end], pos, &mut children, depth + 1)?;
            }
        }
        None => loop {
            if input.get(*pos..*pos + 2) == Some(&[0, 0]) {
                *pos += 2;
                break;
            }
            if *pos >= input.len() {
                return Err(BerError("missing end-of-contents"));
            }
            element(input, pos, &mut children, depth + 1)?;
        },
    }
    if header.identifier == [0x24] {
        push_tlv(out, &[0x04], &joined_octets(&children)?);
    } else {
        push_tlv(out, &header.identifier, &children);
    }
    Ok(())
}

/// One BER element (and nothing after it) as DER-shaped bytes: definite minimal lengths,
/// constructed OCTET STRINGs joined.
pub fn normalize(input: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut out = Vec::with_capacity(input.len());
    let mut pos = 0;
    element(input, &mut pos, &mut out, 0)?;
    if pos != input.len() {
        return Err(BerError("trailing bytes"));
    }
    Ok(out)
}

/// One child of a normalised SEQUENCE.
struct Child {
    identifier: Vec<u8>,
    constructed: bool,
    /// The whole tag-length-value.
    tlv: Vec<u8>,
}

/// A normalised SEQUENCE's children.
fn children(sequence: &[u8]) -> Result<Vec<Child>, BerError> {
    let mut pos = 0;
    let header = read_header(sequence, &mut pos)?;
    let length = header.length.ok_or(BerError("indefinite"))?;
    let body = sequence
        .get(pos..pos + length)
        .ok_or(BerError("truncated"))?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let start = at;
        let child = read_header(body, &mut at)?;
        let child_length = child.length.ok_or(BerError("indefinite"))?;
        at += child_length;
        let tlv = body.get(start..at).ok_or(BerError("truncated"))?;
        out.push(Child {
            identifier: child.identifier,
            constructed: child.constructed,
            tlv: tlv.to_vec(),
        });
    }
    Ok(out)
}

/// In a normalised EnvelopedData, turn a constructed `[0]` encrypted content (a series of
/// OCTET STRING segments) into the primitive `[0] IMPLICIT OCTET STRING` DER requires.
/// Anything else is returned unchanged.
pub fn join_implicit_octets(enveloped_data: &[u8]) -> Result<Vec<u8>, BerError> {
    let fields = children(enveloped_data)?;
    let mut body = Vec::new();
    for field in &fields {
        // EncryptedContentInfo is the only SEQUENCE directly inside EnvelopedData.
        if field.identifier == [0x30] {
            let mut info_body = Vec::new();
            for inner in children(&field.tlv)? {
                if inner.identifier == [0xa0] && inner.constructed {
                    let mut pos = 0;
                    let header = read_header(&inner.tlv, &mut pos)?;
                    let length = header.length.ok_or(BerError("indefinite"))?;
                    let joined = joined_octets(&inner.tlv[pos..pos + length])?;
                    push_tlv(&mut info_body, &[0x80], &joined);
                } else {
                    info_body.extend_from_slice(&inner.tlv);
                }
            }
            push_tlv(&mut body, &[0x30], &info_body);
        } else {
            body.extend_from_slice(&field.tlv);
        }
    }
    let mut out = Vec::new();
    push_tlv(&mut out, &[0x30], &body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_and_constructed_octet_strings_become_der() {
        // SEQUENCE (indefinite) { OCTET STRING (constructed: "ab" "c"), INTEGER 5 }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x02,
            0x01, 0x05, 0x00, 0x00,
        ];
        assert_eq!(
            normalize(&ber).unwrap(),
            [0x30, 0x08, 0x04, 0x03, b'a', b'b', b'c', 0x02, 0x01, 0x05]
        );
        // Non-minimal long-form length.
        assert_eq!(
            normalize(&[0x04, 0x81, 0x01, 0x07]).unwrap(),
            [0x04, 0x01, 0x07]
        );
    }

    #[test]
    fn broken_input_is_refused_not_panicked_on() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0x02, 0x01, 0x05],
            &[0x04, 0x80, 0x00, 0x00],
            &[0x30, 0x05, 0x02, 0x01],
            &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x02, 0x01, 0x05, 0x00],
        ] {
            assert!(normalize(bad).is_err(), "{bad:02x?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 100).flatten().collect();
        assert!(normalize(&deep).is_err());
    }

    #[test]
    fn constructed_encrypted_content_is_joined() {
        // EnvelopedData { INTEGER 0, SET {}, SEQUENCE { OID, [0] { OCTET STRING "xy" } } }
        let input = [
            0x30, 0x10, 0x02, 0x01, 0x00, 0x31, 0x00, 0x30, 0x09, 0x06, 0x01, 0x2a, 0xa0, 0x04,
            0x04, 0x02, b'x', b'y',
        ];
        assert_eq!(
            join_implicit_octets(&input).unwrap(),
            [
                0x30, 0x0e, 0x02, 0x01, 0x00, 0x31, 0x00, 0x30, 0x07, 0x06, 0x01, 0x2a, 0x80, 0x02,
                b'x', b'y'
            ]
        );
    }
}
