//! The libp2p side: transport, behaviours, the address book that lets the
//! node dial a next hop from its descriptor, and the queues that hand the
//! node the streams its peers open.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol, Swarm, connection_limits,
    core::upgrade::{DeniedUpgrade, InboundUpgrade, UpgradeInfo},
    gossipsub, identify,
    identity::Keypair,
    noise, ping,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound},
    },
    tcp, yamux,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::config::Config;

/// The gossipsub topic descriptors spread on.
pub const DESCRIPTOR_TOPIC: &str = "/leak/descriptors/1";
/// The gossip topic of signed moderation policies.
pub const POLICY_TOPIC: &str = "/leak/policy/1";
/// The identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/leak/1.0.0";

pub use leak_net::address_book::{AddressBook, AddressBookBehaviour};

/// The streams peers opened for one protocol, waiting for the node.
pub type Incoming = mpsc::Receiver<(PeerId, Stream)>;

/// Accepts inbound streams of the node's own protocols and queues them, per
/// protocol, for the node's tasks to take. A stream that finds its queue full
/// is reset and counted.
///
/// (libp2p-stream's `accept` holds a single waiting stream and resets every
/// other one that arrives before the node takes it: with a few peers opening
/// streams at once, a third of them were reset and their packets lost. The
/// node still opens its outbound streams with libp2p-stream.)
pub struct InboundStreams {
    queues: Arc<HashMap<StreamProtocol, mpsc::Sender<(PeerId, Stream)>>>,
    refused: Counter,
}

impl InboundStreams {
    /// Accepts `protocols`, holding up to `backlog` streams of each that
    /// the node has not taken yet; counts refused streams in `refused`.
    pub fn new(
        protocols: &[StreamProtocol],
        backlog: usize,
        refused: Counter,
    ) -> (Self, HashMap<StreamProtocol, Incoming>) {
        let mut queues = HashMap::new();
        let mut incoming = HashMap::new();
        for protocol in protocols {
            let (tx, rx) = mpsc::channel(backlog.max(1));
            queues.insert(protocol.clone(), tx);
            incoming.insert(protocol.clone(), rx);
        }
        let behaviour = Self {
            queues: Arc::new(queues),
            refused,
        };
        (behaviour, incoming)
    }

    fn handler(&self, remote: PeerId) -> InboundHandler {
        InboundHandler {
            remote,
            queues: self.queues.clone(),
            refused: self.refused.clone(),
        }
    }
}

impl NetworkBehaviour for InboundStreams {
    type ConnectionHandler = InboundHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: libp2p::core::Endpoint,
        _: libp2p::core::transport::PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// The per-connection side of [`InboundStreams`].
pub struct InboundHandler {
    remote: PeerId,
    queues: Arc<HashMap<StreamProtocol, mpsc::Sender<(PeerId, Stream)>>>,
    refused: Counter,
}

/// Negotiates any of the accepted protocols; the stream is the output.
pub struct AcceptedProtocols(Vec<StreamProtocol>);

impl UpgradeInfo for AcceptedProtocols {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for AcceptedProtocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}

impl ConnectionHandler for InboundHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = AcceptedProtocols;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(AcceptedProtocols(self.queues.keys().cloned().collect()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: (stream, protocol),
            ..
        }) = event
        {
            let queued = self
                .queues
                .get(&protocol)
                .is_some_and(|queue| queue.try_send((self.remote, stream)).is_ok());
            if !queued {
                // Dropping the stream resets it: the peer sees the refusal.
                self.refused.inc();
            }
        }
    }
}

pub use behaviour::{Behaviour, BehaviourEvent};

mod behaviour {
    // The derive generates an event enum whose variants cannot carry docs.
    #![allow(missing_docs)]
    use libp2p::{connection_limits, gossipsub, identify, ping, swarm::NetworkBehaviour};

    use super::{AddressBookBehaviour, InboundStreams};

    /// Every behaviour of a node.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Connection caps.
        pub limits: connection_limits::Behaviour,
        /// Addresses of next hops.
        pub addresses: AddressBookBehaviour,
        /// Peer identification (protocol version, supported protocols).
        pub identify: identify::Behaviour,
        /// Liveness.
        pub ping: ping::Behaviour,
        /// Descriptor spreading.
        pub gossipsub: gossipsub::Behaviour,
        /// Outbound streams of the node's own protocols.
        pub stream: libp2p_stream::Behaviour,
        /// Inbound streams of the node's own protocols.
        pub inbound: InboundStreams,
    }
}

/// Builds the swarm: TCP, Noise, Yamux, and the behaviours above.
pub fn build_swarm(
    keypair: &Keypair,
    config: &Config,
    book: AddressBook,
    inbound: InboundStreams,
) -> Result<Swarm<Behaviour>, crate::error::NodeError> {
    use crate::error::NodeError;
    let limits = connection_limits::ConnectionLimits::default()
        // Inbound connections get all but an eighth of the slots, so a crowd
        // of throwaway identities cannot stop the node dialling next hops.
        .with_max_established_incoming(Some(
            config.limits.max_connections - config.limits.max_connections / 8,
        ))
        .with_max_established(Some(config.limits.max_connections))
        .with_max_established_per_peer(Some(config.limits.max_connections_per_peer))
        .with_max_pending_incoming(Some(config.limits.max_connections.min(128)));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // A signed policy (tens of KiB) or a batch of 256 opt-outs.
        .max_transmit_size(256 * 1024)
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .map_err(|e| NodeError::Network(format!("gossipsub configuration: {e}")))?;
    let idle = Duration::from_secs(config.limits.idle_timeout_secs);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Network(format!("setting up TCP, Noise and Yamux: {e}")))?
        .with_behaviour(|key| {
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                addresses: AddressBookBehaviour::new(book),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_hide_listen_addrs(true)
                        // Dial next hops from signed descriptors only, and
                        // keep no record of the addresses peers report.
                        .with_cache_size(0),
                ),
                ping: ping::Behaviour::default(),
                gossipsub,
                stream: libp2p_stream::Behaviour::new(),
                inbound,
            })
        })
        .map_err(|e| NodeError::Network(format!("building the libp2p behaviours: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}
