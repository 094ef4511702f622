//! Which moderation policy this node enforces: the one built into the
//! release, or a newer signed one named in `[policy]`.

use leak_net::durable::{self, Access};
use leak_protocol::policy::{self, Policy, PolicyError};

use crate::config::PolicyConfig;

/// Why the policy a node is configured with cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyFileError {
    /// A file cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `policy.trusted_keys` holds something that is not a key.
    #[error("policy.trusted_keys: {0}")]
    TrustedKeys(PolicyError),
    /// The signed policy does not verify, compile or is too old.
    #[error("{what}: {source}")]
    Invalid {
        /// Which document.
        what: String,
        /// Why.
        source: PolicyError,
    },
}

/// The maintainers' keys of `config`, decoded.
pub fn trusted_keys(config: &PolicyConfig) -> Result<Vec<[u8; 32]>, PolicyFileError> {
    policy::parse_public_keys(&config.trusted_keys).map_err(PolicyFileError::TrustedKeys)
}

/// Verifies a signed policy against `config`'s trusted keys.
pub fn verify(config: &PolicyConfig, bytes: &[u8]) -> Result<Policy, PolicyFileError> {
    let keys = trusted_keys(config)?;
    policy::verify_signed(bytes, &keys, config.threshold).map_err(|source| {
        PolicyFileError::Invalid {
            what: "the signed policy".into(),
            source,
        }
    })
}

/// The policy to enforce: the signed file if one is configured (it must
/// verify and be at least as new as the built-in one), else the built-in.
pub fn load(config: &PolicyConfig) -> Result<Policy, PolicyFileError> {
    let path = config.file.trim();
    if path.is_empty() {
        return Ok(Policy::builtin());
    }
    let bytes = read_policy_file(path)?;
    let keys = trusted_keys(config)?;
    policy::verify_replacement(&bytes, &keys, config.threshold).map_err(|source| {
        PolicyFileError::Invalid {
            what: format!("policy.file {path}"),
            source,
        }
    })
}

fn read_policy_file(path: &str) -> Result<Vec<u8>, PolicyFileError> {
    std::fs::read(path).map_err(|source| PolicyFileError::Read {
        what: "policy.file",
        path: path.to_owned(),
        source,
    })
}

/// The file where a policy adopted from the network is kept.
pub const ADOPTED_FILE: &str = "policy.signed";

/// What became of a policy offered by the network.
#[derive(Debug)]
pub enum Offered {
    /// Newer than the one in force: now in force.
    Adopted(u32),
    /// Valid but not newer.
    NotNewer,
    /// Forged, signed by untrusted keys, or malformed.
    Invalid(PolicyFileError),
}

/// The policy in force, and the signed document it came from (to pass on).
pub struct PolicyState {
    current: std::sync::RwLock<(std::sync::Arc<Policy>, Option<Vec<u8>>)>,
    config: PolicyConfig,
    adopted_path: std::path::PathBuf,
}

impl PolicyState {
    /// The newest of: the built-in policy, `config.file`, and a policy
    /// adopted earlier from the network (`DATA_DIR/policy.signed`).
    pub fn load(
        config: &PolicyConfig,
        data_dir: &std::path::Path,
    ) -> Result<Self, PolicyFileError> {
        let mut current = (Policy::builtin(), None);
        if !config.file.trim().is_empty() {
            let path = config.file.trim();
            let bytes = read_policy_file(path)?;
            current = (load(config)?, Some(bytes));
        }
        let adopted_path = data_dir.join(ADOPTED_FILE);
        if let Ok(bytes) = std::fs::read(&adopted_path) {
            match verify(config, &bytes) {
                Ok(policy) if policy.version() > current.0.version() => {
                    current = (policy, Some(bytes));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring the adopted policy file"),
            }
        }
        Ok(Self {
            current: std::sync::RwLock::new((std::sync::Arc::new(current.0), current.1)),
            config: config.clone(),
            adopted_path,
        })
    }

    /// The policy in force (shared: a compiled policy is large to copy).
    pub fn current(&self) -> std::sync::Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Its version.
    pub fn version(&self) -> u32 {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .version()
    }

    /// The signed document in force, if it is not the built-in policy.
    pub fn signed(&self) -> Option<Vec<u8>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// A signed policy from the network: adopted (and kept on disk) if it
    /// verifies against the trusted keys and is newer.
    pub fn offer(&self, bytes: &[u8]) -> Offered {
        let policy = match verify(&self.config, bytes) {
            Ok(policy) => policy,
            Err(e) => return Offered::Invalid(e),
        };
        let version = policy.version();
        {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            if version <= current.0.version() {
                return Offered::NotNewer;
            }
            *current = (std::sync::Arc::new(policy), Some(bytes.to_vec()));
        }
        let written = durable::write(&self.adopted_path, bytes, Access::Shared);
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot keep the adopted policy on disk");
        }
        tracing::info!(version, "adopted a newer moderation policy");
        Offered::Adopted(version)
    }
}

// ---------------------------------------------------------------------------
/// Where the policy in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The policy built into this release.
    Builtin,
    /// The signed file named by `policy.file`.
    File(std::path::PathBuf),
    /// A newer policy adopted from the network (`DATA_DIR/policy.signed`).
    Adopted(std::path::PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin => write!(f, "built into leak-node {}", env!("CARGO_PKG_VERSION")),
            Self::File(p) => write!(f, "policy.file {}", p.display()),
            Self::Adopted(p) => write!(f, "adopted from the network, kept in {}", p.display()),
        }
    }
}

impl PolicyState {
    /// Where the policy in force came from.
    pub fn origin(&self) -> Origin {
        let Some(bytes) = self.signed() else {
            return Origin::Builtin;
        };
        let file = self.config.file.trim();
        if !file.is_empty() && std::fs::read(file).is_ok_and(|b| b == bytes) {
            Origin::File(file.into())
        } else {
            Origin::Adopted(self.adopted_path.clone())
        }
    }
}
