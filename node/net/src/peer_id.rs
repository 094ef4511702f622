//! A Leak node id and a libp2p peer id name the same key.
//!
//! A node's long-term identity is one Ed25519 key: its public key is the
//! [`NodeId`] in its signed descriptor and, wrapped as libp2p does, the
//! [`PeerId`] its connections authenticate (Noise). Converting between the
//! two is how a node or a client dials the node a descriptor describes, and
//! how a node knows which descriptor a connected peer published.

use leak_protocol::NodeId;
use libp2p::PeerId;

/// The libp2p peer id of a Leak node id, or `None` if the bytes are not an
/// Ed25519 public key.
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(&node.0).ok()?;
    Some(libp2p::identity::PublicKey::from(public).to_peer_id())
}

/// The Leak node id of a libp2p peer id, if it is an inline Ed25519 key.
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let public = libp2p::identity::PublicKey::try_decode_protobuf(
        libp2p::multihash::Multihash::<64>::from_bytes(&peer.to_bytes())
            .ok()?
            .digest(),
    )
    .ok()?;
    Some(NodeId(public.try_into_ed25519().ok()?.to_bytes()))
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn node_ids_and_peer_ids_name_the_same_key() {
        let keypair = Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let node = node_id_of(&peer).expect("an Ed25519 peer id has a node id");
        assert_eq!(peer_id_of(&node), Some(peer));
        let ed = keypair.try_into_ed25519().expect("generated as Ed25519");
        assert_eq!(node.0, ed.public().to_bytes());
        // Not every 32 bytes are an Ed25519 point.
        let not_a_point = (0u8..=255)
            .map(|b| NodeId([b; 32]))
            .find(|n| peer_id_of(n).is_none());
        assert!(not_a_point.is_some());
    }
}
