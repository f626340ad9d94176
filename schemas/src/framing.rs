//! Avro single-object framing: `C3 01`, then the 8-byte little-endian
//! CRC-64-AVRO fingerprint of the writer schema, then the body.

use crate::EventError;

/// The two marker bytes of the Avro single-object encoding.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Marker plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// Split framed bytes into (fingerprint, body).
pub fn split(bytes: &[u8]) -> Result<([u8; 8], &[u8]), EventError> {
    if bytes.len() < HEADER_LEN {
        return Err(EventError::Framing(format!(
            "{} bytes, shorter than the 10-byte header",
            bytes.len()
        )));
    }
    if bytes[..2] != MAGIC {
        return Err(EventError::Framing(format!(
            "marker {:02X} {:02X}, expected C3 01",
            bytes[0], bytes[1]
        )));
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok((fp, &bytes[HEADER_LEN..]))
}

/// Start a framed buffer for a schema with this fingerprint.
pub fn header(fingerprint: &[u8; 8], body_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body_hint);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(fingerprint);
    out
}

/// The CRC-64-AVRO (Rabin) fingerprint of some bytes, little-endian, as the
/// Avro specification defines it.
pub fn crc64_avro(bytes: &[u8]) -> [u8; 8] {
    const EMPTY: u64 = 0xC15D_213A_A4D7_A795;
    let table: [u64; 256] = std::array::from_fn(|i| {
        (0..8).fold(i as u64, |fp, _| {
            (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg())
        })
    });
    let fp = bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]
    });
    fp.to_le_bytes()
}

/// Hex form of a fingerprint, as the Avro tools print it.
pub fn fingerprint_hex(fp: &[u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_wrong_marker_are_named() {
        let err = split(&[0xC3]).unwrap_err().to_string();
        assert!(err.contains("1 bytes"), "{err}");
        let err = split(&[0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("marker 00 01"), "{err}");
    }

    #[test]
    fn crc64_matches_apache_avro_where_its_canonical_form_is_right() {
        use apache_avro::{rabin::Rabin, Schema};
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"}]}"#,
        )
        .unwrap();
        let theirs = schema.fingerprint::<Rabin>().bytes;
        assert_eq!(
            crc64_avro(schema.canonical_form().as_bytes()).to_vec(),
            theirs
        );
    }

    #[test]
    fn splits_header_from_body() {
        let mut bytes = header(&[1, 2, 3, 4, 5, 6, 7, 8], 1);
        bytes.push(42);
        let (fp, body) = split(&bytes).unwrap();
        assert_eq!(fp, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(body, &[42]);
        assert_eq!(fingerprint_hex(&fp), "0102030405060708");
    }
}
