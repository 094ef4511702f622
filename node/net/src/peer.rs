//! A minimal libp2p peer that talks to Leak nodes: sends packets, fetches
//! directories and mailboxes. It listens on nothing and serves nothing.
//! Used by the sender's client, the tests and the benchmarks.
//!
//! Its outgoing connections can come from a chosen local address
//! ([`Peer::with_local_address`]): libp2p's TCP transport cannot bind a
//! dial to an address (with port reuse it binds the port of a listener, on
//! the unspecified address), so such a peer dials with [`BoundDialer`]
//! instead, a dial-only TCP transport that binds each socket to that
//! address before it connects.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, FutureExt as _, StreamExt as _};
use leak_protocol::Packet;
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport,
    core::{
        transport::{DialOpts, ListenerId, TransportError, TransportEvent},
        upgrade::Version,
    },
    identity::Keypair,
    multiaddr::Protocol,
    noise,
    swarm::NetworkBehaviour,
    tcp, yamux,
};

use crate::{
    address_book::{AddressBook, AddressBookBehaviour},
    wire,
};

/// Why a peer could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The Noise handshake's keys could not be derived from the identity.
    #[error("setting up Noise: {0}")]
    Noise(#[from] noise::Error),
    /// The transport or the behaviours could not be built.
    #[error("building the libp2p peer: {0}")]
    Build(String),
}

#[derive(NetworkBehaviour)]
struct ClientBehaviour {
    addresses: AddressBookBehaviour,
    stream: libp2p_stream::Behaviour,
}

/// A connection-making peer with an ephemeral identity.
///
/// Dropping it closes its connections at once, discarding whatever is still
/// buffered on them: keep it alive until what was written has arrived
/// ([`Peer::send_packets`] waits for that by itself).
pub struct Peer {
    control: libp2p_stream::Control,
    book: AddressBook,
    peer_id: PeerId,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TIMEOUT: Duration = Duration::from_secs(20);

fn timeout_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the node did not answer in time")
}

impl Peer {
    /// A new peer with a fresh identity.
    pub fn new() -> Result<Self, PeerError> {
        Self::with_keypair(Keypair::generate_ed25519())
    }

    /// A new peer with the given identity.
    pub fn with_keypair(keypair: Keypair) -> Result<Self, PeerError> {
        Self::with_local_address(keypair, None)
    }

    /// A new peer with the given identity whose outgoing connections come
    /// from `local` (an address of this host; port chosen by the system),
    /// or from the address the system chooses when `None`. A bound peer
    /// cannot reach nodes of the other IP family. Either way it listens on
    /// nothing and accepts no connection.
    pub fn with_local_address(keypair: Keypair, local: Option<IpAddr>) -> Result<Self, PeerError> {
        let book = AddressBook::default();
        let peer_id = keypair.public().to_peer_id();
        let behaviour = |_: &Keypair| ClientBehaviour {
            addresses: AddressBookBehaviour::new(book.clone()),
            stream: libp2p_stream::Behaviour::new(),
        };
        let config =
            |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
        let mut swarm: Swarm<ClientBehaviour> = match local {
            None => libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )?
                .with_behaviour(behaviour)
                .map_err(|e| PeerError::Build(e.to_string()))?
                .with_swarm_config(config)
                .build(),
            Some(local) => {
                let noise = noise::Config::new(&keypair)?;
                libp2p::SwarmBuilder::with_existing_identity(keypair)
                    .with_tokio()
                    .with_other_transport(move |_| {
                        BoundDialer::new(local)
                            .upgrade(Version::V1)
                            .authenticate(noise)
                            .multiplex(yamux::Config::default())
                    })
                    .map_err(|e| -> PeerError { match e {} })?
                    .with_behaviour(behaviour)
                    .map_err(|e| PeerError::Build(e.to_string()))?
                    .with_swarm_config(config)
                    .build()
            }
        };
        let control = swarm.behaviour().stream.new_control();
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        Ok(Self {
            control,
            book,
            peer_id,
            task,
        })
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Tells the peer where a node listens.
    pub fn add_node(&self, peer: PeerId, addresses: Vec<Multiaddr>) {
        self.book.set(peer, addresses);
    }

    /// Opens a packet stream to `peer` (see [`wire::write_packet`]).
    pub async fn open_packet_stream(&self, peer: PeerId) -> io::Result<libp2p::Stream> {
        open(&self.control, peer, wire::PACKET_PROTOCOL).await
    }

    /// Sends packets to `peer` on a fresh stream and closes it. Returns once
    /// the node has read them all (it closes its side when it reaches the
    /// end of the stream), so dropping the peer right after loses nothing.
    /// An error means the node may not have read them: it refused the stream
    /// (a reset), or the connection failed.
    pub async fn send_packets(&self, peer: PeerId, packets: &[Packet]) -> io::Result<()> {
        let mut stream = self.open_packet_stream(peer).await?;
        for packet in packets {
            wire::write_packet(&mut stream, packet).await?;
        }
        stream.flush().await?;
        stream.close().await?;
        // The node never writes on a packet stream: wait for its end.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .map_err(|_| timeout_error())??
        {
            0 => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the node wrote on a packet stream",
            )),
        }
    }

    /// A long-lived packet stream to `peer` (see [`PacketLink`]), for a
    /// sender that writes to the same node again and again.
    pub fn packet_link(&self, peer: PeerId) -> PacketLink {
        PacketLink {
            control: self.control.clone(),
            peer,
            stream: tokio::sync::Mutex::new(None),
        }
    }

    /// A long-lived mailbox stream to `peer`, opened on first use (see
    /// [`MailboxLink`]).
    pub fn mailbox_link(&self, peer: PeerId) -> MailboxLink {
        MailboxLink {
            control: self.control.clone(),
            peer,
            stream: tokio::sync::Mutex::new(None),
        }
    }

    /// Opens a stream of `protocol` to `peer`, for a caller that speaks it
    /// itself (tests of the wire, tools).
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: libp2p::StreamProtocol,
    ) -> io::Result<libp2p::Stream> {
        open(&self.control, peer, protocol).await
    }

    /// The signed roster (if newer than `held_roster_serial`; 0 for any)
    /// and descriptors `peer` serves (unverified: verify them).
    pub async fn directory(
        &self,
        peer: PeerId,
        held_roster_serial: u64,
    ) -> io::Result<wire::DirectoryAnswer> {
        let mut control = self.control.clone();
        tokio::time::timeout(TIMEOUT, async {
            let mut stream = control
                .open_stream(peer, wire::DIRECTORY_PROTOCOL)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            wire::request_directory(&mut stream, held_roster_serial).await
        })
        .await
        .map_err(|_| timeout_error())?
    }

    /// Takes one answer from the mailbox of `capability` at `peer`: its
    /// [`wire::MAILBOX_ANSWER_SLOTS`] entries, real replies and random
    /// filler alike (see [`wire::fetch_mailbox`]). Try the reply keys on
    /// each entry and keep those that open; the node deletes the replies
    /// it handed over, so a mailbox holding more gives the next one on the
    /// next fetch.
    pub async fn fetch_mailbox(
        &self,
        peer: PeerId,
        capability: &[u8; 32],
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut control = self.control.clone();
        tokio::time::timeout(TIMEOUT, async {
            let mut stream = control
                .open_stream(peer, wire::MAILBOX_PROTOCOL)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            wire::fetch_mailbox(&mut stream, capability).await
        })
        .await
        .map_err(|_| timeout_error())?
    }
}

/// Packets to one node over one long-lived stream, opened on first use and
/// reopened once when a write fails (the connection dropped, the node reset
/// the stream). Writes are serialised: packets leave in the order of the
/// calls to [`PacketLink::send`].
///
/// Unlike [`Peer::send_packets`], a successful send means the packet was
/// handed to the connection, not that the node read it: a connection that
/// dies right after loses it without an error. A stream for each packet
/// would cost the node a stream's set-up, protocol negotiation and
/// tear-down per packet (and the sender a round trip); a sender whose
/// packets matter learns of their fate end to end (receipts, loops).
pub struct PacketLink {
    control: libp2p_stream::Control,
    peer: PeerId,
    stream: tokio::sync::Mutex<Option<libp2p::Stream>>,
}

impl std::fmt::Debug for PacketLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketLink")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl PacketLink {
    /// The node this link writes to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Writes `packet` on the stream, opening it if needed; when the write
    /// fails on a stream opened earlier, tries once more on a fresh one.
    pub async fn send(&self, packet: &Packet) -> io::Result<()> {
        let mut slot = self.stream.lock().await;
        let reused = slot.is_some();
        match self.write(&mut slot, packet).await {
            Err(_) if reused => self.write(&mut slot, packet).await,
            result => result,
        }
    }

    async fn write(&self, slot: &mut Option<libp2p::Stream>, packet: &Packet) -> io::Result<()> {
        let mut stream = match slot.take() {
            Some(stream) => stream,
            None => open(&self.control, self.peer, wire::PACKET_PROTOCOL).await?,
        };
        tokio::time::timeout(TIMEOUT, async {
            wire::write_packet(&mut stream, packet).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| timeout_error())??;
        *slot = Some(stream);
        Ok(())
    }
}

/// Opens a stream of `protocol` to `peer` within [`TIMEOUT`].
async fn open(
    control: &libp2p_stream::Control,
    peer: PeerId,
    protocol: libp2p::StreamProtocol,
) -> io::Result<libp2p::Stream> {
    let mut control = control.clone();
    tokio::time::timeout(TIMEOUT, control.open_stream(peer, protocol))
        .await
        .map_err(|_| timeout_error())?
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Mailbox answers from one node over one long-lived stream, opened on
/// first use and kept while the node confirms each exchange: a poll costs
/// the node a request and an answer, not a stream's set-up, protocol
/// negotiation and tear-down. When a request on a stream opened earlier
/// fails before its answer was read (the node ended the stream, the
/// connection dropped), it is repeated once on a fresh stream: the node
/// deletes nothing it has not been told arrived.
pub struct MailboxLink {
    control: libp2p_stream::Control,
    peer: PeerId,
    stream: tokio::sync::Mutex<Option<libp2p::Stream>>,
}

impl std::fmt::Debug for MailboxLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxLink")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl MailboxLink {
    /// The node this link asks.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Takes one answer from the mailbox of `capability` (see
    /// [`Peer::fetch_mailbox`]).
    pub async fn fetch(&self, capability: &[u8; 32]) -> io::Result<Vec<Vec<u8>>> {
        let mut slot = self.stream.lock().await;
        let reused = slot.is_some();
        match self.exchange(&mut slot, capability).await {
            Err(e) if reused && e.retryable => self
                .exchange(&mut slot, capability)
                .await
                .map_err(|e| e.error),
            result => result.map_err(|e| e.error),
        }
    }

    async fn exchange(
        &self,
        slot: &mut Option<libp2p::Stream>,
        capability: &[u8; 32],
    ) -> Result<Vec<Vec<u8>>, wire::MailboxExchangeError> {
        let fatal = |error| wire::MailboxExchangeError {
            error,
            retryable: false,
        };
        let mut stream = match slot.take() {
            Some(stream) => stream,
            None => open(&self.control, self.peer, wire::MAILBOX_PROTOCOL)
                .await
                .map_err(fatal)?,
        };
        let fetched =
            tokio::time::timeout(TIMEOUT, wire::exchange_mailbox(&mut stream, capability))
                .await
                .map_err(|_| fatal(timeout_error()))??;
        if fetched.confirmed {
            *slot = Some(stream);
        }
        Ok(fetched.entries)
    }
}

/// A dial-only TCP transport whose sockets are bound to one local address
/// (port 0: the system chooses the port) before they connect, with
/// `TCP_NODELAY`. It refuses to listen, and refuses addresses of the other
/// IP family than its own.
#[derive(Debug, Clone, Copy)]
pub struct BoundDialer {
    local: IpAddr,
}

impl BoundDialer {
    /// Dials from `local`.
    pub fn new(local: IpAddr) -> Self {
        Self { local }
    }
}

/// The TCP socket address of `/ip4|ip6/ADDR/tcp/PORT[/p2p/PEER]`.
fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut iter = addr.iter();
    let ip = match iter.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Tcp(port) = iter.next()? else {
        return None;
    };
    match iter.next() {
        None | Some(Protocol::P2p(_)) if iter.next().is_none() => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

impl Transport for BoundDialer {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Pending<io::Result<Self::Output>>;
    type Dial = futures::future::BoxFuture<'static, io::Result<Self::Output>>;

    fn listen_on(
        &mut self,
        _id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _id: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(remote) = tcp_socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if remote.port() == 0
            || remote.ip().is_unspecified()
            || remote.is_ipv4() != self.local.is_ipv4()
        {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let local = SocketAddr::new(self.local, 0);
        Ok(async move {
            let socket = if remote.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_nodelay(true)?;
            socket.bind(local)?;
            let stream = socket.connect(remote).await?;
            Ok(tcp::tokio::TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use leak_protocol::PACKET_LEN;
    use libp2p::swarm::SwarmEvent;

    use super::*;

    /// A peer bound to 127.0.0.77 reaches a libp2p node on 127.0.0.1 from
    /// that address (the node sees it as the connection's remote address),
    /// and its packets arrive.
    #[tokio::test]
    async fn a_bound_peer_connects_from_its_address() {
        let mut node = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .build();
        let mut incoming = node
            .behaviour()
            .new_control()
            .accept(wire::PACKET_PROTOCOL)
            .unwrap();
        node.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let listen = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = node.select_next_some().await {
                break address;
            }
        };
        let node_id = *node.local_peer_id();
        let (remote_tx, remote_rx) = tokio::sync::oneshot::channel();
        let (packet_tx, packet_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut remote_tx = Some(remote_tx);
            let mut packet_tx = Some(packet_tx);
            loop {
                tokio::select! {
                    event = node.select_next_some() => {
                        if let SwarmEvent::ConnectionEstablished { endpoint, .. } = event
                            && let Some(tx) = remote_tx.take()
                        {
                            let _ = tx.send(endpoint.get_remote_address().clone());
                        }
                    }
                    Some((_, mut stream)) = incoming.next() => {
                        let packet = wire::read_packet(&mut stream).await.unwrap();
                        assert_eq!(wire::read_packet(&mut stream).await.unwrap(), None);
                        stream.close().await.unwrap();
                        if let Some(tx) = packet_tx.take() {
                            let _ = tx.send(packet);
                        }
                    }
                }
            }
        });

        let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
        let peer = Peer::with_local_address(Keypair::generate_ed25519(), Some(local)).unwrap();
        peer.add_node(node_id, vec![listen]);
        let packet = Packet::from_bytes(&[7u8; PACKET_LEN]).unwrap();
        peer.send_packets(node_id, std::slice::from_ref(&packet))
            .await
            .unwrap();
        let remote = remote_rx.await.unwrap();
        assert_eq!(
            tcp_socket_addr(&remote).map(|a| a.ip()),
            Some(local),
            "the node saw {remote}"
        );
        assert_eq!(packet_rx.await.unwrap(), Some(packet));
        server.abort();
    }

    #[test]
    fn a_bound_dialer_refuses_to_listen_and_the_other_family() {
        let mut dialer = BoundDialer::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(
            dialer
                .listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .is_err()
        );
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::New,
        };
        assert!(
            dialer
                .dial("/ip6/::1/tcp/4000".parse().unwrap(), opts)
                .is_err()
        );
        assert!(
            dialer
                .dial("/ip4/127.0.0.1/tcp/0".parse().unwrap(), opts)
                .is_err()
        );
        assert_eq!(
            tcp_socket_addr(
                &"/ip4/10.1.2.3/tcp/7/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
                    .parse()
                    .unwrap()
            ),
            Some("10.1.2.3:7".parse().unwrap())
        );
        assert_eq!(
            tcp_socket_addr(&"/ip4/10.1.2.3/udp/7".parse().unwrap()),
            None
        );
    }
}
