//! Reading one command line, bounded: the part of the server's loop that
//! touches client bytes before [`super::session`] sees them. Pure over any
//! `AsyncBufRead`, so the fuzz target (`fuzz/`) runs it as the server does.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest command line, bytes (RFC 5321 allows 512; be lenient).
pub const MAX_COMMAND: usize = 4096;

/// One command line read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Command,
    TooLong,
    Eof,
}

/// Read one line (through its LF) into `line`, keeping at most
/// [`MAX_COMMAND`] bytes: a longer line is read to its end and reported.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + used > MAX_COMMAND {
            too_long = true;
        } else {
            line.extend_from_slice(&buf[..used]);
        }
        reader.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Command
            });
        }
    }
}

/// The line without its LF or CRLF.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
