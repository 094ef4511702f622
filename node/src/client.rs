//! A minimal libp2p peer that talks to Leak nodes: sends packets, fetches
//! directories and mailboxes. It listens on nothing and serves nothing.
//! Used by the tests, the benchmark and the sender's client.

use std::{io, time::Duration};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use leak_protocol::{Packet, directory::SignedDescriptor};
use libp2p::{Multiaddr, PeerId, identity::Keypair, noise, swarm::NetworkBehaviour, tcp, yamux};

use crate::{
    net::{AddressBook, AddressBookBehaviour},
    wire,
};

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
    pub fn new() -> anyhow::Result<Self> {
        Self::with_keypair(Keypair::generate_ed25519())
    }

    /// A new peer with the given identity.
    pub fn with_keypair(keypair: Keypair) -> anyhow::Result<Self> {
        let book = AddressBook::default();
        let peer_id = keypair.public().to_peer_id();
        let behaviour_book = book.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| ClientBehaviour {
                addresses: AddressBookBehaviour::new(behaviour_book),
                stream: libp2p_stream::Behaviour::new(),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
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
        let mut control = self.control.clone();
        tokio::time::timeout(TIMEOUT, control.open_stream(peer, wire::PACKET_PROTOCOL))
            .await
            .map_err(|_| timeout_error())?
            .map_err(|e| io::Error::other(e.to_string()))
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

    /// The signed descriptors `peer` serves (unverified: verify them).
    pub async fn directory(&self, peer: PeerId) -> io::Result<Vec<SignedDescriptor>> {
        let mut control = self.control.clone();
        tokio::time::timeout(TIMEOUT, async {
            let mut stream = control
                .open_stream(peer, wire::DIRECTORY_PROTOCOL)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            wire::request_directory(&mut stream).await
        })
        .await
        .map_err(|_| timeout_error())?
    }

    /// Takes the replies `peer` holds for the mailbox of `capability`.
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
