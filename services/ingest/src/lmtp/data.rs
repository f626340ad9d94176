//! Reading the message after `354`: up to the line `.` alone, with the
//! leading dot of every other line removed (RFC 5321 4.5.2), bounded in
//! memory however much the client sends.
//!
//! The terminator is only `CRLF . CRLF`: a bare LF does not end a line for
//! it (the SMTP smuggling class of bugs comes from disagreeing on this).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How the data phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataEnd {
    /// The whole message, dots unstuffed.
    Complete(Vec<u8>),
    /// The message ended properly but was longer than the limit; its bytes
    /// were read and dropped.
    TooBig { size: u64 },
    /// The connection closed before the terminator: announce nothing.
    Eof,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// After CRLF (or at the start).
    LineStart,
    /// Inside a line, after a CR.
    Cr,
    /// Inside a line.
    Mid,
    /// A dot at the start of a line.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
}

/// Read one message body from `reader`, keeping at most `max` bytes.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: u64,
) -> std::io::Result<DataEnd> {
    let mut body = Body {
        bytes: Vec::new(),
        size: 0,
        max,
    };
    let mut state = State::LineStart;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(DataEnd::Eof);
        }
        let (used, done) = scan(chunk, &mut state, &mut body);
        reader.consume(used);
        if done {
            return Ok(if body.size > max {
                DataEnd::TooBig { size: body.size }
            } else {
                DataEnd::Complete(body.bytes)
            });
        }
    }
}

struct Body {
    bytes: Vec<u8>,
    size: u64,
    max: u64,
}

impl Body {
    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size <= self.max {
            self.bytes.extend_from_slice(bytes);
        } else if !self.bytes.is_empty() {
            self.bytes = Vec::new(); // too big: stop holding it
        }
    }
}

/// Feed one chunk; returns the bytes consumed and whether the terminator
/// was seen (bytes after it stay in the reader: pipelined commands).
fn scan(chunk: &[u8], state: &mut State, body: &mut Body) -> (usize, bool) {
    let mut i = 0;
    while i < chunk.len() {
        let b = chunk[i];
        match *state {
            State::LineStart if b == b'.' => *state = State::Dot,
            State::Dot if b == b'\r' => *state = State::DotCr,
            State::DotCr if b == b'\n' => return (i + 1, true),
            State::DotCr => {
                // `.` CR then something else: the dot was stuffing.
                body.push(b"\r");
                *state = State::Mid;
                continue; // look at `b` again in Mid
            }
            State::Cr if b == b'\n' => {
                body.push(b"\n");
                *state = State::LineStart;
            }
            State::LineStart | State::Dot | State::Cr | State::Mid => {
                // Copy the run up to the next CR in one go.
                let run = chunk[i..]
                    .iter()
                    .position(|&c| c == b'\r')
                    .unwrap_or(chunk.len() - i);
                if run == 0 {
                    body.push(b"\r");
                    *state = State::Cr;
                    i += 1;
                    continue;
                }
                body.push(&chunk[i..i + run]);
                *state = State::Mid;
                i += run;
                continue;
            }
        }
        i += 1;
    }
    (chunk.len(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn read(input: &[u8], max: u64) -> (DataEnd, Vec<u8>) {
        // A tiny buffer, so every state crosses chunk boundaries.
        let mut reader = BufReader::with_capacity(3, input);
        let end = read_data(&mut reader, max).await.unwrap();
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest)
            .await
            .unwrap();
        (end, rest)
    }

    #[tokio::test]
    async fn unstuffs_dots_and_stops_at_the_terminator() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nRSET\r\n";
        let (end, rest) = read(input, 1000).await;
        assert_eq!(
            end,
            DataEnd::Complete(b"Subject: x\r\n\r\n.leading dot\r\n".to_vec())
        );
        assert_eq!(rest, b"RSET\r\n", "pipelined commands stay unread");
    }

    #[tokio::test]
    async fn empty_message() {
        assert_eq!(read(b".\r\n", 10).await.0, DataEnd::Complete(Vec::new()));
    }

    #[tokio::test]
    async fn bare_lf_neither_ends_a_line_nor_the_message() {
        let input = b"a\n.\nb\n.\r\n.\r\n";
        let want = b"a\n.\nb\n.\r\n".to_vec();
        assert_eq!(read(input, 100).await.0, DataEnd::Complete(want));
    }

    #[tokio::test]
    async fn dots_inside_lines_and_dot_cr_text_are_kept() {
        let input = b"x.y\r\n.\rz\r\n...\r\n.\r\n";
        assert_eq!(
            read(input, 100).await.0,
            DataEnd::Complete(b"x.y\r\n\rz\r\n..\r\n".to_vec())
        );
    }

    #[tokio::test]
    async fn too_big_is_read_to_the_end_and_dropped() {
        let mut input = b"0123456789\r\n".repeat(10);
        input.extend_from_slice(b".\r\nQUIT\r\n");
        let (end, rest) = read(&input, 50).await;
        assert_eq!(end, DataEnd::TooBig { size: 120 });
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[tokio::test]
    async fn a_cut_connection_announces_nothing() {
        assert_eq!(
            read(b"Subject: x\r\n\r\nhalf a mess", 100).await.0,
            DataEnd::Eof
        );
        assert_eq!(read(b"x\r\n.\r", 100).await.0, DataEnd::Eof);
    }
}
