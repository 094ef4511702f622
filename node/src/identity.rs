//! The node's long-term Ed25519 identity, in a file only its owner can read.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use libp2p::identity::Keypair;
use zeroize::Zeroizing;

pub use crate::error::IdentityError;

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// The node's identity: its libp2p keypair (whose public key is its
/// `PeerId` and its Leak `NodeId`).
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
    seed: Zeroizing<[u8; 32]>,
}

impl Identity {
    /// Generates a new identity.
    pub fn generate() -> Self {
        Self::from_keypair(Keypair::generate_ed25519())
            .unwrap_or_else(|| unreachable!("a fresh ed25519 keypair is ed25519"))
    }

    fn from_keypair(keypair: Keypair) -> Option<Self> {
        let ed = keypair.clone().try_into_ed25519().ok()?;
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&ed.secret().as_ref()[..32]);
        Some(Self { keypair, seed })
    }

    /// Writes a new identity to `path`, readable only by its owner (0600).
    /// Refuses to overwrite an existing file.
    pub fn create(path: &Path) -> Result<Self, IdentityError> {
        let io = |what| {
            move |source| IdentityError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        let identity = Self::generate();
        let bytes = Zeroizing::new(
            identity
                .keypair
                .to_protobuf_encoding()
                .map_err(|_| IdentityError::NotAKey(path.to_path_buf()))?,
        );
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("creating the identity key"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("writing the identity key"))?;
        Ok(identity)
    }

    /// Reads the identity at `path`. Refuses a file that others can read.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |what| {
            move |source| IdentityError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        let meta = fs::metadata(path).map_err(|source| IdentityError::Missing {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(io("cannot read the identity key"))?);
        Keypair::from_protobuf_encoding(&bytes)
            .ok()
            .and_then(Self::from_keypair)
            .ok_or_else(|| IdentityError::NotAKey(path.to_path_buf()))
    }

    /// The libp2p keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The 32-byte Ed25519 secret seed, for signing descriptors.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The node id: the Ed25519 public key.
    pub fn node_id(&self) -> leak_protocol::NodeId {
        leak_protocol::NodeId(leak_protocol::crypto::ed25519_public(&self.seed))
    }

    /// The libp2p peer id.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.keypair.public().to_peer_id()
    }
}

// The client needs them too, without the node: they live in `leak-net` and
// keep their old path here.
pub use leak_net::peer_id::{node_id_of, peer_id_of};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let created = Identity::create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(created.peer_id(), loaded.peer_id());
        assert_eq!(created.node_id(), loaded.node_id());
        assert_eq!(peer_id_of(&loaded.node_id()), Some(loaded.peer_id()));
        assert_eq!(node_id_of(&loaded.peer_id()), Some(loaded.node_id()));
        // No overwrite.
        assert!(Identity::create(&path).is_err());
        // Refused when others can read it.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        // Garbage is refused with a clear message.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"garbage").unwrap();
        let err = format!("{:#}", Identity::load(&path).err().unwrap());
        assert!(err.contains("not a valid identity key"), "{err}");
    }
}
