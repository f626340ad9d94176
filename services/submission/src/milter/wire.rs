//! Packets over a byte stream: read whole packets (bounded by the codec's
//! limit), write replies or commands. Used by the server and by the MTA
//! side in [`super::client`].

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{split, CodecError, Packet, MAX_PACKET_BYTES};

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("reading from the peer")]
    Read(#[source] std::io::Error),
    #[error("writing to the peer")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer closed the connection in the middle of a packet.
    #[error("connection closed in the middle of a packet ({0} bytes of it read)")]
    Truncated(usize),
}

/// One connection's buffered packet stream.
pub struct Wire<S> {
    stream: S,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(256),
        }
    }

    /// The next packet, decoded by `decode`; `None` when the peer closed
    /// the connection between packets.
    pub async fn read<T>(
        &mut self,
        decode: impl Fn(Packet<'_>) -> Result<T, CodecError>,
    ) -> Result<Option<T>, WireError> {
        loop {
            if let Some((packet, used)) = split(&self.buf, MAX_PACKET_BYTES)? {
                let decoded = decode(packet);
                self.buf.drain(..used);
                return Ok(Some(decoded?));
            }
            // At most one packet ahead: a body chunk is 64 KiB.
            self.buf.reserve(64 * 1024);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(WireError::Read)?;
            if n == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    partial => Err(WireError::Truncated(partial)),
                };
            }
        }
    }

    /// Encode with `encode` and send at once.
    pub async fn send(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), WireError> {
        self.out.clear();
        encode(&mut self.out);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(WireError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{command::Command, reply::Reply};
    use super::*;

    #[tokio::test]
    async fn packets_cross_a_stream_whole_and_a_cut_one_is_named() {
        let (a, b) = tokio::io::duplex(8);
        let mut mta = Wire::new(a);
        let mut milter = Wire::new(b);
        let body = Command::Body(vec![7; 1000]);
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            mta.send(|out| sent.encode(out)).await.unwrap();
            mta.send(|out| Command::Quit.encode(out)).await.unwrap();
            mta
        });
        assert_eq!(milter.read(Command::decode).await.unwrap(), Some(body));
        assert_eq!(
            milter.read(Command::decode).await.unwrap(),
            Some(Command::Quit)
        );
        let mut mta = writer.await.unwrap();
        milter
            .send(|out| Reply::Continue.encode(out))
            .await
            .unwrap();
        assert_eq!(
            mta.read(Reply::decode).await.unwrap(),
            Some(Reply::Continue)
        );
        drop(mta);
        assert!(milter.read(Command::decode).await.unwrap().is_none());

        let (mut a, b) = tokio::io::duplex(64);
        let mut milter = Wire::new(b);
        a.write_all(&[0, 0, 0, 9, b'B', 1, 2]).await.unwrap();
        drop(a);
        let err = milter.read(Command::decode).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection closed in the middle of a packet (7 bytes of it read)"
        );
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_without_reading_it() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut milter = Wire::new(b);
        a.write_all(&0x7fff_ffffu32.to_be_bytes()).await.unwrap();
        let err = milter.read(Command::decode).await.unwrap_err();
        assert!(matches!(
            err,
            WireError::Codec(CodecError::PacketTooLong {
                len: 0x7fff_ffff,
                ..
            })
        ));
    }
}
