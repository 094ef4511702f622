//! Where nodes listen: the address book a node or a client dials from.
//!
//! Addresses come from verified descriptors only (and, for a client, the
//! bootstrap addresses it was given), never from whoever connects: so no
//! client's address is ever kept. [`AddressBookBehaviour`] hands the swarm
//! the addresses of a peer it is asked to dial by id (by `libp2p-stream`
//! when a packet, directory or mailbox stream is opened).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

/// Addresses of nodes, learned from verified descriptors only: never from
/// whoever connects to us, so no client's address is kept.
#[derive(Clone, Default)]
pub struct AddressBook {
    inner: Arc<RwLock<HashMap<PeerId, Vec<Multiaddr>>>>,
}

impl AddressBook {
    /// Replaces the addresses of `peer`.
    pub fn set(&self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(peer, addresses);
        }
    }

    /// Forgets `peer`.
    pub fn remove(&self, peer: &PeerId) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(peer);
        }
    }

    /// The addresses of `peer`.
    pub fn get(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.inner
            .read()
            .ok()
            .and_then(|map| map.get(peer).cloned())
            .unwrap_or_default()
    }

    /// Whether `peer` has addresses (is a known node), without copying them.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.inner
            .read()
            .is_ok_and(|map| map.get(peer).is_some_and(|a| !a.is_empty()))
    }

    /// Every peer with addresses.
    pub fn peers(&self) -> Vec<PeerId> {
        self.inner
            .read()
            .map(|map| map.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Keeps only the peers `keep` says yes to.
    pub fn retain(&self, mut keep: impl FnMut(&PeerId) -> bool) {
        if let Ok(mut map) = self.inner.write() {
            map.retain(|p, _| keep(p));
        }
    }
}

/// A behaviour with no protocol: it hands the swarm the addresses of a peer
/// it is asked to dial by id (by `libp2p-stream` when opening a packet stream).
pub struct AddressBookBehaviour {
    book: AddressBook,
}

impl AddressBookBehaviour {
    /// Serves addresses from `book`.
    pub fn new(book: AddressBook) -> Self {
        Self { book }
    }
}

impl NetworkBehaviour for AddressBookBehaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: libp2p::core::Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer.map(|p| self.book.get(&p)).unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: libp2p::core::Endpoint,
        _: libp2p::core::transport::PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
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
