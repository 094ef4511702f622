//! The node's own libp2p protocols, as small async functions over a stream.
//!
//! | protocol | shape |
//! |---|---|
//! | `/leak/packet/1` | one long-lived stream per neighbour and direction; the opener writes [`PACKET_LEN`]-byte packets back to back, nothing comes back |
//! | `/leak/directory/1` | the requester writes one version byte (1); the server answers a u32 count and, per descriptor, a u16 length and the signed descriptor |
//! | `/leak/mailbox/1` | the requester writes a version byte (1) and a 32-byte mailbox capability; the server answers a u16 count and that many sealed replies of [`PAYLOAD_LEN`] bytes; the requester acknowledges with one byte (1); only then does the server delete them, and it confirms with one byte (1) |
//!
//! All integers are big-endian. Every read is bounded: counts and lengths
//! are checked against limits before anything is allocated.
//!
//! Why a long-lived stream for packets rather than request-response: a
//! packet needs no answer (drops are silent by design), and opening a Yamux
//! substream per packet costs a round of stream negotiation each time. A
//! stream per neighbour carries packets at the rate of the link.

use std::io;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use leak_protocol::{
    PACKET_LEN, Packet,
    directory::{MAX_SIGNED_DESCRIPTOR_LEN, SignedDescriptor},
    sphinx::PAYLOAD_LEN,
};
use libp2p::StreamProtocol;

/// Packet forwarding.
pub const PACKET_PROTOCOL: StreamProtocol = StreamProtocol::new("/leak/packet/1");
/// Directory requests.
pub const DIRECTORY_PROTOCOL: StreamProtocol = StreamProtocol::new("/leak/directory/1");
/// Mailbox fetches.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/leak/mailbox/1");

const WIRE_VERSION: u8 = 1;
/// Most descriptors in one directory answer.
pub const MAX_DIRECTORY_ENTRIES: u32 = 10_000;
/// Most replies in one mailbox answer.
pub const MAX_MAILBOX_REPLIES: u16 = 64;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Writes one packet.
pub async fn write_packet<W: AsyncWrite + Unpin>(io: &mut W, packet: &Packet) -> io::Result<()> {
    io.write_all(packet.as_bytes()).await
}

/// Reads one packet; `None` at a clean end of stream.
pub async fn read_packet<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Option<Packet>> {
    let mut buf = vec![0u8; PACKET_LEN];
    let mut filled = 0;
    while filled < PACKET_LEN {
        match io.read(&mut buf[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Packet::from_bytes(&buf)
        .map(Some)
        .ok_or_else(|| invalid("packet length"))
}

/// Asks for a node's directory (client side).
pub async fn request_directory<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
) -> io::Result<Vec<SignedDescriptor>> {
    io.write_all(&[WIRE_VERSION]).await?;
    io.flush().await?;
    let mut count = [0u8; 4];
    io.read_exact(&mut count).await?;
    let count = u32::from_be_bytes(count);
    if count > MAX_DIRECTORY_ENTRIES {
        return Err(invalid("too many descriptors"));
    }
    let mut out = Vec::with_capacity(count.min(256) as usize);
    for _ in 0..count {
        let mut len = [0u8; 2];
        io.read_exact(&mut len).await?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_SIGNED_DESCRIPTOR_LEN {
            return Err(invalid("descriptor too long"));
        }
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        // Unparseable entries are skipped, not fatal: the caller verifies.
        if let Ok(signed) = SignedDescriptor::from_bytes(&buf) {
            out.push(signed);
        }
    }
    Ok(out)
}

/// Answers a directory request (server side).
pub async fn serve_directory<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    descriptors: &[SignedDescriptor],
) -> io::Result<()> {
    let mut version = [0u8; 1];
    io.read_exact(&mut version).await?;
    if version[0] != WIRE_VERSION {
        return Err(invalid("unknown directory protocol version"));
    }
    let encoded: Vec<Vec<u8>> = descriptors
        .iter()
        .map(SignedDescriptor::to_bytes)
        .filter(|b| b.len() <= MAX_SIGNED_DESCRIPTOR_LEN)
        .take(MAX_DIRECTORY_ENTRIES as usize)
        .collect();
    let mut out = Vec::with_capacity(4 + encoded.iter().map(|b| 2 + b.len()).sum::<usize>());
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    for bytes in &encoded {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    io.write_all(&out).await?;
    io.flush().await?;
    io.close().await
}

/// Fetches and acknowledges the replies held for a mailbox (client side).
pub async fn fetch_mailbox<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    capability: &[u8; 32],
) -> io::Result<Vec<Vec<u8>>> {
    let mut request = [0u8; 33];
    request[0] = WIRE_VERSION;
    request[1..].copy_from_slice(capability);
    io.write_all(&request).await?;
    io.flush().await?;
    let mut count = [0u8; 2];
    io.read_exact(&mut count).await?;
    let count = u16::from_be_bytes(count);
    if count > MAX_MAILBOX_REPLIES {
        return Err(invalid("too many replies"));
    }
    let mut replies = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let mut reply = vec![0u8; PAYLOAD_LEN];
        io.read_exact(&mut reply).await?;
        replies.push(reply);
    }
    // From here on the replies are ours whatever happens to the stream: the
    // server may already have deleted them. Acknowledge, wait for the
    // deletion to be confirmed (so a next fetch sees it done), but never
    // lose what was read because the confirmation did not arrive.
    let _ = async {
        io.write_all(&[1]).await?;
        io.flush().await?;
        let mut done = [0u8; 1];
        io.read_exact(&mut done).await?;
        io.close().await
    }
    .await;
    Ok(replies)
}

/// Reads a mailbox request (server side): the capability asked for.
pub async fn read_mailbox_request<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<[u8; 32]> {
    let mut request = [0u8; 33];
    io.read_exact(&mut request).await?;
    if request[0] != WIRE_VERSION {
        return Err(invalid("unknown mailbox protocol version"));
    }
    let mut capability = [0u8; 32];
    capability.copy_from_slice(&request[1..]);
    Ok(capability)
}

/// Sends the replies and waits for the acknowledgement (server side).
/// `Ok(true)` means the client has them: delete them, then call
/// [`confirm_mailbox_deletion`].
pub async fn answer_mailbox<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    replies: &[Vec<u8>],
) -> io::Result<bool> {
    let replies = &replies[..replies.len().min(usize::from(MAX_MAILBOX_REPLIES))];
    let mut out = Vec::with_capacity(2 + replies.len() * PAYLOAD_LEN);
    out.extend_from_slice(&(replies.len() as u16).to_be_bytes());
    for reply in replies {
        out.extend_from_slice(reply);
    }
    io.write_all(&out).await?;
    io.flush().await?;
    let mut ack = [0u8; 1];
    io.read_exact(&mut ack).await?;
    Ok(ack[0] == 1)
}

/// Tells the client its replies are deleted (server side).
pub async fn confirm_mailbox_deletion<S: AsyncWrite + Unpin>(io: &mut S) -> io::Result<()> {
    io.write_all(&[1]).await?;
    io.flush().await?;
    io.close().await
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    #[tokio::test]
    async fn packets_frame_and_end_cleanly() {
        let packet = Packet::from_bytes(&[7u8; PACKET_LEN]).unwrap();
        let mut buf = Cursor::new(Vec::new());
        write_packet(&mut buf, &packet).await.unwrap();
        write_packet(&mut buf, &packet).await.unwrap();
        let mut data = buf.into_inner();
        let mut reader = Cursor::new(data.clone());
        assert_eq!(
            read_packet(&mut reader).await.unwrap(),
            Some(packet.clone())
        );
        assert_eq!(read_packet(&mut reader).await.unwrap(), Some(packet));
        assert_eq!(read_packet(&mut reader).await.unwrap(), None);
        data.truncate(PACKET_LEN + 10);
        let mut reader = Cursor::new(data);
        read_packet(&mut reader).await.unwrap();
        assert!(read_packet(&mut reader).await.is_err());
    }

    /// A hostile directory answer claiming a huge count or length is refused
    /// before anything is allocated.
    #[tokio::test]
    async fn directory_answers_are_bounded() {
        struct Duplex(Cursor<Vec<u8>>);
        impl AsyncRead for Duplex {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }
        impl AsyncWrite for Duplex {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::task::Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut huge_count = Duplex(Cursor::new(u32::MAX.to_be_bytes().to_vec()));
        assert!(request_directory(&mut huge_count).await.is_err());
        let mut answer = 1u32.to_be_bytes().to_vec();
        answer.extend_from_slice(&u16::MAX.to_be_bytes());
        let mut huge_len = Duplex(Cursor::new(answer));
        assert!(request_directory(&mut huge_len).await.is_err());
        let mut answer = 1000u16.to_be_bytes().to_vec();
        answer.extend_from_slice(&[0; 8]);
        let mut many_replies = Duplex(Cursor::new(answer));
        assert!(fetch_mailbox(&mut many_replies, &[0; 32]).await.is_err());
    }
}
