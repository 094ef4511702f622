//! The node library's errors: what went wrong, typed, for the binary (and
//! the tests) to show. `anyhow` lives only in the binary (`main.rs`, `policy_cli.rs`).

use std::path::PathBuf;

use crate::{config::ConfigError, exit::ExitError, policy::PolicyFileError, store::StoreError};

/// Why a node could not start, or a running node could not do what it was
/// asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity key is missing, unreadable or unsafe.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The database or the mix keys.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The moderation policy in force cannot be loaded.
    #[error("the moderation policy: {0}")]
    Policy(#[from] PolicyFileError),
    /// The exit role could not start.
    #[error(transparent)]
    Exit(#[from] ExitError),
    /// libp2p could not be set up, or a listener failed.
    #[error("{0}")]
    Network(String),
    /// A file or socket of the node.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// This node's own descriptor cannot be signed or does not verify.
    #[error("this node's descriptor: {0}")]
    Descriptor(String),
    /// The node is stopping and takes no more requests.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Why the identity key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file cannot be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// There is no key file yet.
    #[error("cannot read the identity key {path} (run `leak-node init` first?): {source}")]
    Missing {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others can read the key file.
    #[error(
        "the identity key {path} has mode {mode:o}; it must be readable by its owner only (chmod 600)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold an Ed25519 libp2p key.
    #[error("{0} is not a valid identity key (an Ed25519 libp2p key)")]
    NotAKey(PathBuf),
}
