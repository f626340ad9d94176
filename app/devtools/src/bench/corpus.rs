//! The scan benchmark's corpus, generated in code and deterministic: the
//! same count and seed always give the same bytes. Every message is unique
//! (seed and index are in its headers and seed its content), so a content-
//! addressed store keeps one blob per message, and clamd's cache of clean
//! files (kept for its lifetime) has seen nothing of a corpus with a new seed.

use std::fmt::Write as _;

/// What a message is, and so which verdict it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ~20 KB of plain text.
    Plain,
    /// Text and a ~200 KB base64 PDF-like binary attachment.
    Pdf,
    /// Text and a zip of 20 text members.
    Zip,
    /// Text and the EICAR test file: clamd says infected.
    Eicar,
    /// Text and an attachment with a banned name: the policy bans it.
    Banned,
}

impl Kind {
    /// The mix, in twentieths: 40% plain, 30% pdf, 20% zip, 5% EICAR, 5% banned.
    fn of(index: usize) -> Kind {
        match index % 20 {
            0..=7 => Kind::Plain,
            8..=13 => Kind::Pdf,
            14..=17 => Kind::Zip,
            18 => Kind::Eicar,
            _ => Kind::Banned,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Pdf => "pdf",
            Kind::Zip => "zip",
            Kind::Eicar => "eicar",
            Kind::Banned => "banned",
        }
    }
}

/// One message of the corpus.
pub struct Mail {
    pub kind: Kind,
    /// The raw message, CRLF line ends.
    pub raw: Vec<u8>,
    /// For `Banned`: the file name the policy must report.
    pub banned_file: Option<String>,
    pub sender: String,
    pub recipient: String,
    pub message_id: String,
}

/// `n` messages in the fixed mix, their content drawn from `seed`.
pub fn corpus(n: usize, seed: u64) -> Vec<Mail> {
    (0..n).map(|i| mail(i, seed)).collect()
}

fn mail(i: usize, seed: u64) -> Mail {
    let kind = Kind::of(i);
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let sender = format!("sender{i}@example.net");
    let recipient = format!("user{}@example.test", i % 50);
    let message_id = format!("bench-{seed:x}-{i}@example.net");
    let mut banned_file = None;
    let attachment = match kind {
        Kind::Plain => None,
        Kind::Pdf => {
            let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
            pdf.extend(rng.bytes(150 * 1024));
            Some(("application/pdf", format!("report-{i}.pdf"), pdf))
        }
        Kind::Zip => Some((
            "application/zip",
            format!("notes-{i}.zip"),
            stored_zip(i, &mut rng),
        )),
        Kind::Eicar => Some((
            "application/octet-stream",
            format!("eicar-{i}.txt"),
            eicar().into_bytes(),
        )),
        Kind::Banned => {
            let name = match i % 3 {
                0 => format!("invoice-{i}.pdf.exe"),
                1 => format!("setup-{i}.exe"),
                _ => format!("update-{i}.js"),
            };
            banned_file = Some(name.clone());
            let mut exe = b"MZ\x90\x00".to_vec();
            exe.extend(rng.bytes(8 * 1024));
            Some(("application/octet-stream", name, exe))
        }
    };
    let text_len = if kind == Kind::Plain {
        20 * 1024
    } else {
        2 * 1024
    };
    let text = rng.text(text_len);
    let mut raw = format!(
        "From: Sender {i} <{sender}>\r\nTo: <{recipient}>\r\nSubject: bench {} {i}\r\n\
         Message-ID: <{message_id}>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n",
        kind.label()
    );
    match attachment {
        None => {
            raw += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
            raw += &text;
        }
        Some((mime, name, bytes)) => {
            let b = format!("b-{i}-boundary");
            let _ = write!(
                raw,
                "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n{text}--{b}\r\n\
                 Content-Type: {mime}; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}--{b}--\r\n",
                base64_lines(&bytes)
            );
        }
    }
    Mail {
        kind,
        raw: raw.into_bytes(),
        banned_file,
        sender,
        recipient,
        message_id,
    }
}

/// About `n` bytes of base64 lines of random data (seeded): attachment-
/// like content that zstd cannot shrink much below 3/4.
pub fn base64_noise(seed: u64, n: usize) -> Vec<u8> {
    let mut text = base64_lines(&Rng(seed).bytes(n * 3 / 4)).into_bytes();
    text.truncate(n);
    text
}

/// The EICAR test string, built from two halves so that this source file
/// itself does not trip a scanner (as in `tests/src/ingest.rs`).
fn eicar() -> String {
    let head = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$";
    let tail = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    format!("{head}{tail}")
}

/// splitmix64: deterministic, and no dependency on a rand version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// About `n` bytes of words in CRLF lines of at most 76 characters.
    fn text(&mut self, n: usize) -> String {
        const WORDS: &[&str] = &[
            "the",
            "mail",
            "queue",
            "server",
            "report",
            "meeting",
            "invoice",
            "quarterly",
            "delivery",
            "please",
            "find",
            "attached",
            "regards",
            "schedule",
            "update",
            "budget",
            "review",
            "project",
            "customer",
            "account",
            "thanks",
            "tomorrow",
            "office",
            "draft",
        ];
        let mut out = String::with_capacity(n + 80);
        let mut line = 0;
        while out.len() < n {
            let word = WORDS[(self.next() % WORDS.len() as u64) as usize];
            if line + word.len() + 1 > 76 {
                out += "\r\n";
                line = 0;
            } else if line > 0 {
                out.push(' ');
                line += 1;
            }
            out += word;
            line += word.len();
        }
        out += "\r\n";
        out
    }
}

/// Base64 (RFC 2045) in CRLF lines of 76 characters.
fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 38 + 8);
    for (n, chunk) in bytes.chunks(3).enumerate() {
        if n > 0 && n % 19 == 0 {
            out += "\r\n"; // 19 groups of 4 = 76 characters
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out += "\r\n";
    out
}

/// A zip of 20 text members, stored (method 0): the mailfleet binary has
/// no zip writer, and the policy reads member names, not contents.
fn stored_zip(i: usize, rng: &mut Rng) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for m in 0..20 {
        let name = format!("notes-{i}/part-{m:02}.txt");
        let data = rng.text(1500).into_bytes();
        let offset = out.len() as u32;
        let (crc, len) = (crc32(&data), data.len() as u32);
        // Local file header: version 1.0, no flags, stored, 1980-01-01.
        out.extend(le(&[0x0403_4b50]));
        out.extend(le16(&[10, 0, 0, 0, 0x21]));
        out.extend(le(&[crc, len, len]));
        out.extend(le16(&[name.len() as u16, 0]));
        out.extend(name.as_bytes());
        out.extend(&data);
        // Its central directory entry.
        central.extend(le(&[0x0201_4b50]));
        central.extend(le16(&[20, 10, 0, 0, 0, 0x21]));
        central.extend(le(&[crc, len, len]));
        central.extend(le16(&[name.len() as u16, 0, 0, 0, 0]));
        central.extend(le(&[0, offset]));
        central.extend(name.as_bytes());
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(le(&[0x0605_4b50]));
    out.extend(le16(&[0, 0, 20, 20]));
    out.extend(le(&[cd_len, cd_offset]));
    out.extend(le16(&[0]));
    out
}

fn le(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le16(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// CRC-32 (IEEE), bitwise: the corpus is built once per run.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use mailfleet_scan::{policy, Verdict};

    use super::*;

    #[test]
    fn helpers_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(base64_lines(b"Man"), "TWFu\r\n");
        assert_eq!(base64_lines(b"Ma"), "TWE=\r\n");
        assert_eq!(base64_lines(b"M"), "TQ==\r\n");
    }

    #[test]
    fn the_policy_sees_what_the_corpus_means() {
        let cfg = policy::PolicyConfig::default();
        for mail in corpus(40, 7) {
            let report = policy::check(&mail.raw, &cfg);
            let banned = report.banned.map(Verdict::from);
            match mail.kind {
                Kind::Banned => assert!(
                    matches!(&banned, Some(Verdict::Banned { file, .. }) if Some(file) == mail.banned_file.as_ref()),
                    "{banned:?}"
                ),
                _ => assert_eq!(banned, None, "{:?}: {:?}", mail.kind, report.notes),
            }
            if mail.kind == Kind::Zip {
                assert_eq!(report.archive_entries, 20, "{:?}", report.notes);
            }
        }
    }

    #[test]
    fn deterministic_and_unique() {
        let (a, b, c) = (corpus(40, 1), corpus(40, 1), corpus(40, 2));
        assert!(a.iter().zip(&b).all(|(x, y)| x.raw == y.raw));
        let all: std::collections::HashSet<_> = a.iter().chain(&c).map(|m| m.raw.clone()).collect();
        assert_eq!(all.len(), 80);
    }
}
