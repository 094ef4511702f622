//! The node's own libp2p protocols, as small async functions over a stream.
//!
//! | protocol | shape |
//! |---|---|
//! | `/leak/packet/1` | one long-lived stream per neighbour and direction; the opener writes [`PACKET_LEN`]-byte packets back to back, nothing comes back |
//! | `/leak/directory/2` | the requester writes one version byte (2) and the u64 serial of the roster it holds (0: none); the server answers a u32 length and its signed roster if that is newer (length 0 otherwise, or when it holds none), then a u32 count and, per descriptor, a u16 length and the signed descriptor |
//! | `/leak/opt-outs/3` | between exits only: the sender writes a u32 length and a batch of signed opt-out records with their evidence (at most [`MAX_OPT_OUT_BATCH_LEN`] bytes); the receiver answers one byte (1) once it has checked and kept what it takes |
//! | `/leak/mailbox/2` | the requester writes a version byte (2) and a 32-byte mailbox capability; the server answers exactly [`MAILBOX_ANSWER_SLOTS`] entries of [`PAYLOAD_LEN`] bytes, the sealed replies it holds first (oldest first), random bytes in the slots left; the requester acknowledges with one byte (1); only then does the server delete the replies it sent, and it confirms with one byte (1), whether it deleted any or not; the stream then carries the requester's next request, or ends (a sender's agent keeps one stream to its guard) |
//!
//! All integers are big-endian. Every read is bounded: counts and lengths
//! are checked against limits before anything is allocated.
//!
//! Why a mailbox answer has one size: the connection between a sender and
//! its entry relay is encrypted, but its sizes and times are not. When an
//! empty answer was 2 bytes and a receipt 3.5 KB (`/leak/mailbox/1`),
//! anyone watching the sender's link saw when a receipt (hence a leak) came
//! back. Now every answer, empty or full, is the same bytes in the same
//! shape, and the node does not say which entries are real: the requester
//! tries its reply keys on each, and a random filler never opens (its
//! authentication tag fails). A mailbox holding more replies than the
//! slots hands them over one answer at a time, oldest first.
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
pub const DIRECTORY_PROTOCOL: StreamProtocol = StreamProtocol::new("/leak/directory/2");
/// Opt-out records from exit to exit.
pub const OPT_OUT_PROTOCOL: StreamProtocol = StreamProtocol::new("/leak/opt-outs/3");
/// The most bytes of one opt-out batch: its magic, count and
/// [`leak_protocol::policy::optout::MAX_OPT_OUTS`] records.
pub const MAX_OPT_OUT_BATCH_LEN: usize = leak_protocol::policy::optout::MAX_BATCH_LEN;
/// Mailbox fetches, fixed-size answers.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/leak/mailbox/2");

/// The version byte a directory request starts with.
const DIRECTORY_WIRE_VERSION: u8 = 2;
/// The most bytes of a signed roster on the wire: its text and 32
/// signatures.
pub const MAX_SIGNED_ROSTER_LEN: usize =
    leak_protocol::roster::MAX_ROSTER_LEN + 8 + 4 + 1 + 32 * 96;
/// The version byte a mailbox request starts with.
const MAILBOX_WIRE_VERSION: u8 = 2;
/// Most descriptors in one directory answer.
pub const MAX_DIRECTORY_ENTRIES: u32 = 10_000;
/// Entries in every mailbox answer, real or filler. One: the agent polls
/// often (every 20 s on average) and expects about one reply per loop slot,
/// so a larger answer would cost every poll bandwidth for nothing.
pub const MAILBOX_ANSWER_SLOTS: usize = 1;
/// The bytes of every mailbox answer.
pub const MAILBOX_ANSWER_LEN: usize = MAILBOX_ANSWER_SLOTS * PAYLOAD_LEN;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Writes one packet.
pub async fn write_packet<W: AsyncWrite + Unpin>(io: &mut W, packet: &Packet) -> io::Result<()> {
    io.write_all(packet.as_bytes()).await
}

/// Reads one packet; `None` at a clean end of stream.
pub async fn read_packet<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Option<Packet>> {
    read_packet_with(io, &mut [0u8; PACKET_LEN]).await
}

/// Reads one packet through `buf`, a buffer the caller keeps for the
/// stream's packets (a relay reads many on one stream; a fresh zeroed
/// buffer for each costs an allocation and a clearing); `None` at a clean
/// end of stream.
pub async fn read_packet_with<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut [u8; PACKET_LEN],
) -> io::Result<Option<Packet>> {
    let mut filled = 0;
    while filled < PACKET_LEN {
        match io.read(&mut buf[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Packet::from_bytes(&buf[..])
        .map(Some)
        .ok_or_else(|| invalid("packet length"))
}

/// What a node answers a directory request with (unverified: the
/// receiver verifies the roster, then the descriptors against it).
#[derive(Debug, Clone, Default)]
pub struct DirectoryAnswer {
    /// Its signed roster, if newer than the one the requester holds.
    pub roster: Option<Vec<u8>>,
    /// The signed descriptors it holds.
    pub descriptors: Vec<SignedDescriptor>,
}

/// Asks for a node's directory (client side), saying which roster serial
/// the requester already holds (0: none).
pub async fn request_directory<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    held_roster_serial: u64,
) -> io::Result<DirectoryAnswer> {
    let mut request = [0u8; 9];
    request[0] = DIRECTORY_WIRE_VERSION;
    request[1..].copy_from_slice(&held_roster_serial.to_be_bytes());
    io.write_all(&request).await?;
    io.flush().await?;
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_SIGNED_ROSTER_LEN {
        return Err(invalid("roster too long"));
    }
    let roster = if len == 0 {
        None
    } else {
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Some(buf)
    };
    let mut count = [0u8; 4];
    io.read_exact(&mut count).await?;
    let count = u32::from_be_bytes(count);
    if count > MAX_DIRECTORY_ENTRIES {
        return Err(invalid("too many descriptors"));
    }
    let mut descriptors = Vec::with_capacity(count.min(256) as usize);
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
            descriptors.push(signed);
        }
    }
    Ok(DirectoryAnswer {
        roster,
        descriptors,
    })
}

/// Reads a directory request (server side): the roster serial the
/// requester holds.
pub async fn read_directory_request<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<u64> {
    let mut request = [0u8; 9];
    io.read_exact(&mut request[..1]).await?;
    if request[0] != DIRECTORY_WIRE_VERSION {
        return Err(invalid("unknown directory protocol version"));
    }
    io.read_exact(&mut request[1..]).await?;
    let mut serial = [0u8; 8];
    serial.copy_from_slice(&request[1..]);
    Ok(u64::from_be_bytes(serial))
}

/// Answers a directory request read by [`read_directory_request`] (server
/// side): `roster` as the server decided (`None` when the requester's is
/// as new), then the descriptors.
pub async fn write_directory<S: AsyncWrite + Unpin>(
    io: &mut S,
    roster: Option<&[u8]>,
    descriptors: &[SignedDescriptor],
) -> io::Result<()> {
    let roster = roster
        .filter(|r| r.len() <= MAX_SIGNED_ROSTER_LEN)
        .unwrap_or(&[]);
    let encoded: Vec<Vec<u8>> = descriptors
        .iter()
        .map(SignedDescriptor::to_bytes)
        .filter(|b| b.len() <= MAX_SIGNED_DESCRIPTOR_LEN)
        .take(MAX_DIRECTORY_ENTRIES as usize)
        .collect();
    let mut out =
        Vec::with_capacity(8 + roster.len() + encoded.iter().map(|b| 2 + b.len()).sum::<usize>());
    out.extend_from_slice(&(roster.len() as u32).to_be_bytes());
    out.extend_from_slice(roster);
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    for bytes in &encoded {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    io.write_all(&out).await?;
    io.flush().await?;
    io.close().await
}

/// Sends a batch of opt-out records to another exit and waits for its
/// acknowledgement (sender side).
pub async fn send_opt_outs<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    batch: &[u8],
) -> io::Result<()> {
    if batch.len() > MAX_OPT_OUT_BATCH_LEN {
        return Err(invalid("opt-out batch too long"));
    }
    let mut out = Vec::with_capacity(4 + batch.len());
    out.extend_from_slice(&(batch.len() as u32).to_be_bytes());
    out.extend_from_slice(batch);
    io.write_all(&out).await?;
    io.flush().await?;
    let mut ack = [0u8; 1];
    io.read_exact(&mut ack).await?;
    io.close().await
}

/// Reads a batch of opt-out records (receiver side); answer with
/// [`ack_opt_outs`] once it is handled.
pub async fn read_opt_outs<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_OPT_OUT_BATCH_LEN {
        return Err(invalid("opt-out batch too long"));
    }
    let mut batch = vec![0u8; len];
    io.read_exact(&mut batch).await?;
    Ok(batch)
}

/// Acknowledges a batch read by [`read_opt_outs`].
pub async fn ack_opt_outs<S: AsyncWrite + Unpin>(io: &mut S) -> io::Result<()> {
    io.write_all(&[1]).await?;
    io.flush().await?;
    io.close().await
}

/// Fetches one mailbox answer and acknowledges it (client side), then
/// closes the stream. Returns its [`MAILBOX_ANSWER_SLOTS`] entries, each
/// [`PAYLOAD_LEN`] bytes: the caller tries its reply keys on every one (a
/// filler never opens) and keeps those that open. Nothing in the answer
/// says which are real.
pub async fn fetch_mailbox<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    capability: &[u8; 32],
) -> io::Result<Vec<Vec<u8>>> {
    let fetched = exchange_mailbox(io, capability)
        .await
        .map_err(|e| e.error)?;
    if fetched.confirmed {
        let _ = io.close().await;
    }
    Ok(fetched.entries)
}

/// One mailbox exchange on a stream that may carry more (client side).
#[derive(Debug)]
pub struct MailboxFetch {
    /// The answer's entries (see [`fetch_mailbox`]).
    pub entries: Vec<Vec<u8>>,
    /// The server confirmed the deletion: the stream is ready for the next
    /// request. When `false` the entries are still the caller's, but the
    /// stream is not to be used again.
    pub confirmed: bool,
}

/// Where a failed [`exchange_mailbox`] stopped.
#[derive(Debug)]
pub struct MailboxExchangeError {
    /// The error.
    pub error: io::Error,
    /// `true` when it failed before the whole answer was read: the server
    /// deleted nothing (it deletes only after the acknowledgement), so the
    /// request may be repeated on another stream.
    pub retryable: bool,
}

/// Asks for one mailbox answer on `io`, acknowledges it and waits for the
/// deletion's confirmation, leaving the stream open for the next request
/// (a server of `/leak/mailbox/2` answers requests until the stream ends).
pub async fn exchange_mailbox<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    capability: &[u8; 32],
) -> Result<MailboxFetch, MailboxExchangeError> {
    let retryable = |error| MailboxExchangeError {
        error,
        retryable: true,
    };
    let mut request = [0u8; 33];
    request[0] = MAILBOX_WIRE_VERSION;
    request[1..].copy_from_slice(capability);
    io.write_all(&request).await.map_err(retryable)?;
    io.flush().await.map_err(retryable)?;
    let mut answer = vec![0u8; MAILBOX_ANSWER_LEN];
    io.read_exact(&mut answer).await.map_err(retryable)?;
    let entries = answer
        .chunks_exact(PAYLOAD_LEN)
        .map(<[u8]>::to_vec)
        .collect();
    // From here on the entries are ours whatever happens to the stream: the
    // server may already have deleted them. Acknowledge, wait for the
    // deletion to be confirmed (so a next fetch sees it done), but never
    // lose what was read because the confirmation did not arrive.
    let confirmed = async {
        io.write_all(&[1]).await?;
        io.flush().await?;
        let mut done = [0u8; 1];
        io.read_exact(&mut done).await?;
        Ok::<_, io::Error>(done[0] == 1)
    }
    .await
    .unwrap_or(false);
    Ok(MailboxFetch { entries, confirmed })
}

/// Reads a mailbox request (server side): the capability asked for.
pub async fn read_mailbox_request<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<[u8; 32]> {
    next_mailbox_request(io)
        .await?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

/// Reads the next mailbox request on a stream (server side), or `None`
/// when the client ended the stream between requests.
pub async fn next_mailbox_request<S: AsyncRead + Unpin>(
    io: &mut S,
) -> io::Result<Option<[u8; 32]>> {
    let mut request = [0u8; 33];
    // The first byte alone tells a clean end from a request.
    if io.read(&mut request[..1]).await? == 0 {
        return Ok(None);
    }
    io.read_exact(&mut request[1..]).await?;
    if request[0] != MAILBOX_WIRE_VERSION {
        return Err(invalid("unknown mailbox protocol version"));
    }
    let mut capability = [0u8; 32];
    capability.copy_from_slice(&request[1..]);
    Ok(Some(capability))
}

/// The bytes of a mailbox answer: the first [`MAILBOX_ANSWER_SLOTS`] of
/// `replies` (each must be [`PAYLOAD_LEN`] bytes: one of another length
/// takes a slot as filler), then filler from `fill` (random bytes: the
/// caller's randomness) in the slots left. Returns the answer and how many
/// of `replies` it carries (delete those once acknowledged).
pub fn mailbox_answer(replies: &[Vec<u8>], mut fill: impl FnMut(&mut [u8])) -> (Vec<u8>, usize) {
    let mut out = vec![0u8; MAILBOX_ANSWER_LEN];
    let mut carried = 0;
    for (slot, entry) in out.chunks_exact_mut(PAYLOAD_LEN).enumerate() {
        match replies.get(slot) {
            Some(reply) => {
                carried += 1;
                if reply.len() == PAYLOAD_LEN {
                    entry.copy_from_slice(reply);
                } else {
                    fill(entry);
                }
            }
            None => fill(entry),
        }
    }
    (out, carried)
}

/// Sends a mailbox answer (see [`mailbox_answer`]) and waits for the
/// acknowledgement (server side). `Ok(true)` means the client has it:
/// delete the replies it carried, then call [`confirm_mailbox_deletion`]
/// (also when it carried none, so every exchange has one shape).
pub async fn answer_mailbox<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    answer: &[u8],
) -> io::Result<bool> {
    if answer.len() != MAILBOX_ANSWER_LEN {
        return Err(invalid("a mailbox answer has a fixed length"));
    }
    io.write_all(answer).await?;
    io.flush().await?;
    let mut ack = [0u8; 1];
    io.read_exact(&mut ack).await?;
    Ok(ack[0] == 1)
}

/// Tells the client its replies are deleted (server side). The stream
/// stays open: the client may send its next request on it, or end it.
pub async fn confirm_mailbox_deletion<S: AsyncWrite + Unpin>(io: &mut S) -> io::Result<()> {
    io.write_all(&[1]).await?;
    io.flush().await
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
        // A roster longer than any roster can be.
        let mut huge_roster = Duplex(Cursor::new(u32::MAX.to_be_bytes().to_vec()));
        assert!(request_directory(&mut huge_roster, 0).await.is_err());
        let no_roster = 0u32.to_be_bytes().to_vec();
        let mut huge_count = no_roster.clone();
        huge_count.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut huge_count = Duplex(Cursor::new(huge_count));
        assert!(request_directory(&mut huge_count, 0).await.is_err());
        let mut answer = no_roster;
        answer.extend_from_slice(&1u32.to_be_bytes());
        answer.extend_from_slice(&u16::MAX.to_be_bytes());
        let mut huge_len = Duplex(Cursor::new(answer));
        assert!(request_directory(&mut huge_len, 0).await.is_err());
        // A mailbox answer shorter than its fixed length is an error.
        let mut short = Duplex(Cursor::new(vec![0; MAILBOX_ANSWER_LEN - 1]));
        assert!(fetch_mailbox(&mut short, &[0; 32]).await.is_err());
    }

    /// Serves one mailbox exchange over an in-memory stream with the real
    /// server functions; returns the bytes the server wrote, what the
    /// client got, and whether the server saw the acknowledgement.
    async fn exchange(held: Vec<Vec<u8>>) -> (usize, Vec<Vec<u8>>, bool) {
        use tokio_util::compat::TokioAsyncReadCompatExt as _;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut server = server.compat();
            let capability = read_mailbox_request(&mut server).await.unwrap();
            assert_eq!(capability, [5; 32]);
            let (answer, carried) = mailbox_answer(&held, |b| b.fill(0xA5));
            assert_eq!(carried, held.len().min(MAILBOX_ANSWER_SLOTS));
            let acked = answer_mailbox(&mut server, &answer).await.unwrap();
            if acked {
                confirm_mailbox_deletion(&mut server).await.unwrap();
            }
            (answer.len(), acked)
        });
        let mut client = client.compat();
        let entries = fetch_mailbox(&mut client, &[5; 32]).await.unwrap();
        let (written, acked) = server.await.unwrap();
        (written, entries, acked)
    }

    /// An empty mailbox and a full one answer with the same bytes count and
    /// the same shape; the real reply comes first, filler fills the rest.
    #[tokio::test]
    async fn mailbox_answers_have_one_size_empty_or_full() {
        let (empty_len, empty, empty_acked) = exchange(Vec::new()).await;
        let reply = vec![7u8; PAYLOAD_LEN];
        let (full_len, full, full_acked) =
            exchange(vec![reply.clone(), vec![8u8; PAYLOAD_LEN]]).await;
        assert_eq!(empty_len, MAILBOX_ANSWER_LEN);
        assert_eq!(full_len, empty_len);
        assert_eq!(empty.len(), MAILBOX_ANSWER_SLOTS);
        assert_eq!(full.len(), MAILBOX_ANSWER_SLOTS);
        assert!(empty.iter().chain(&full).all(|e| e.len() == PAYLOAD_LEN));
        assert_eq!(full[0], reply);
        assert!(empty[0].iter().all(|&b| b == 0xA5));
        assert!(empty_acked && full_acked);
    }

    /// One stream carries request after request until the client ends it;
    /// a server that ends the stream before answering leaves a retryable
    /// error (it deleted nothing).
    #[tokio::test]
    async fn a_mailbox_stream_carries_many_exchanges() {
        use tokio_util::compat::TokioAsyncReadCompatExt as _;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut server = server.compat();
            let mut served = 0u8;
            while let Some(capability) = next_mailbox_request(&mut server).await.unwrap() {
                served += 1;
                let (answer, _) = mailbox_answer(&[vec![served; PAYLOAD_LEN]], |b| b.fill(0));
                assert_eq!(capability, [served; 32]);
                assert!(answer_mailbox(&mut server, &answer).await.unwrap());
                confirm_mailbox_deletion(&mut server).await.unwrap();
            }
            served
        });
        let mut client = client.compat();
        for round in 1..=3u8 {
            let fetched = exchange_mailbox(&mut client, &[round; 32]).await.unwrap();
            assert!(fetched.confirmed);
            assert_eq!(fetched.entries[0], vec![round; PAYLOAD_LEN]);
        }
        client.close().await.unwrap();
        assert_eq!(server.await.unwrap(), 3);

        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        let mut client = client.compat();
        let failed = exchange_mailbox(&mut client, &[1; 32]).await.unwrap_err();
        assert!(failed.retryable);
    }

    /// A request of the old version is refused; an answer of the wrong
    /// length is never sent.
    #[tokio::test]
    async fn old_requests_and_odd_answers_are_refused() {
        let mut old = Cursor::new({
            let mut r = vec![1u8];
            r.extend_from_slice(&[0; 32]);
            r
        });
        assert!(read_mailbox_request(&mut old).await.is_err());
        let mut sink = Cursor::new(Vec::new());
        assert!(answer_mailbox(&mut sink, &[0; 10]).await.is_err());
        assert!(sink.into_inner().is_empty());
        let (answer, carried) = mailbox_answer(&[vec![1; 3]], |b| b.fill(9));
        assert_eq!((answer.len(), carried), (MAILBOX_ANSWER_LEN, 1));
        assert!(
            answer.iter().all(|&b| b == 9),
            "a malformed reply is not sent"
        );
    }
}
