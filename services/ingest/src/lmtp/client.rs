//! A small LMTP client: what the demo and the benchmarks deliver with.
//! It pipelines MAIL, the RCPTs and DATA, as Postfix's LMTP client does.

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
};

/// One connection to an LMTP server, after LHLO.
pub struct LmtpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// The server's answers to one transaction.
#[derive(Debug)]
pub struct Delivery {
    /// The RCPT replies, one per recipient.
    pub rcpt: Vec<String>,
    /// The replies after DATA, one per accepted recipient (empty when no
    /// recipient was accepted or DATA was refused).
    pub data: Vec<String>,
}

impl Delivery {
    /// Recipients the server took responsibility for (2xx after DATA).
    pub fn accepted(&self) -> usize {
        self.data.iter().filter(|r| r.starts_with('2')).count()
    }
}

impl LmtpClient {
    /// Connect to `address` and say LHLO as `name`.
    pub async fn connect(address: &str, name: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
        };
        client.expect('2', "greeting").await?;
        client
            .writer
            .write_all(format!("LHLO {name}\r\n").as_bytes())
            .await?;
        client.expect('2', "LHLO").await?;
        Ok(client)
    }

    /// Deliver `message` (raw RFC 5322 bytes, CRLF line ends) from `from`
    /// to `to`, pipelined.
    pub async fn deliver(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> std::io::Result<Delivery> {
        let mut head = format!("MAIL FROM:<{from}> SIZE={}\r\n", message.len());
        for rcpt in to {
            head.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
        }
        head.push_str("DATA\r\n");
        self.writer.write_all(head.as_bytes()).await?;
        let mail = self.reply().await?;
        let mut rcpt = Vec::with_capacity(to.len());
        for _ in to {
            rcpt.push(self.reply().await?);
        }
        let go = self.reply().await?;
        if !mail.starts_with('2') || !go.starts_with("354") {
            if go.starts_with("354") {
                // DATA was accepted after all; end it empty-handed.
                self.writer.write_all(b".\r\n").await?;
                self.reply().await?;
            }
            self.writer.write_all(b"RSET\r\n").await?;
            self.reply().await?;
            return Ok(Delivery {
                rcpt,
                data: Vec::new(),
            });
        }
        self.writer.write_all(&dot_stuff(message)).await?;
        let accepted = rcpt.iter().filter(|r| r.starts_with('2')).count();
        let mut data = Vec::with_capacity(accepted);
        for _ in 0..accepted {
            data.push(self.reply().await?);
        }
        Ok(Delivery { rcpt, data })
    }

    /// Say QUIT.
    pub async fn quit(mut self) -> std::io::Result<()> {
        self.writer.write_all(b"QUIT\r\n").await?;
        self.reply().await.map(|_| ())
    }

    async fn expect(&mut self, class: char, what: &str) -> std::io::Result<String> {
        let reply = self.reply().await?;
        if reply.starts_with(class) {
            Ok(reply)
        } else {
            Err(std::io::Error::other(format!("{what}: {reply}")))
        }
    }

    /// The last line of the next reply.
    async fn reply(&mut self) -> std::io::Result<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line.trim_end().to_string());
            }
        }
    }
}

/// The message as sent after DATA: leading dots doubled, the final dot.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    // A line starts after CRLF only, as the server reads it (a bare LF
    // does not end a line for the terminator either).
    let mut line_start = true;
    let mut previous = 0u8;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && previous == b'\r';
        previous = b;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_round_trips_through_the_reader() {
        let message = b"Subject: x\r\n\r\n.one\r\n..two\n.bare\r\nend";
        let stuffed = dot_stuff(message);
        let want = b"Subject: x\r\n\r\n..one\r\n...two\n.bare\r\nend\r\n.\r\n";
        assert_eq!(stuffed, want);
    }
}
