//! Which moderation policy this node enforces: the one built into the
//! release, or a newer signed one named in `[policy]`.

use anyhow::Context as _;
use leak_protocol::policy::{Policy, SignedPolicy};

use crate::config::PolicyConfig;

/// The maintainers' keys of `config`, decoded.
pub fn trusted_keys(config: &PolicyConfig) -> anyhow::Result<Vec<[u8; 32]>> {
    config
        .trusted_keys
        .iter()
        .map(|k| {
            hex::decode(k.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .with_context(|| format!("policy.trusted_keys: {k:?} is not a 64-digit hex key"))
        })
        .collect()
}

/// Verifies a signed policy against `config`'s trusted keys.
pub fn verify(config: &PolicyConfig, bytes: &[u8]) -> anyhow::Result<Policy> {
    let keys = trusted_keys(config)?;
    let signed = SignedPolicy::from_bytes(bytes)?;
    Ok(signed.verify(&keys, config.threshold)?)
}

/// The policy to enforce: the signed file if one is configured (it must
/// verify and be at least as new as the built-in one), else the built-in.
pub fn load(config: &PolicyConfig) -> anyhow::Result<Policy> {
    let builtin = Policy::builtin();
    let path = config.file.trim();
    if path.is_empty() {
        return Ok(builtin);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read policy.file {path}"))?;
    let policy = verify(config, &bytes).with_context(|| format!("policy.file {path}"))?;
    anyhow::ensure!(
        policy.version() >= builtin.version(),
        "policy.file {path} is version {}, older than the built-in version {}",
        policy.version(),
        builtin.version()
    );
    Ok(policy)
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
    Invalid(anyhow::Error),
}

/// The policy in force, and the signed document it came from (to pass on).
pub struct PolicyState {
    current: std::sync::RwLock<(Policy, Option<Vec<u8>>)>,
    config: PolicyConfig,
    adopted_path: std::path::PathBuf,
}

impl PolicyState {
    /// The newest of: the built-in policy, `config.file`, and a policy
    /// adopted earlier from the network (`DATA_DIR/policy.signed`).
    pub fn load(config: &PolicyConfig, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut current = (Policy::builtin(), None);
        if !config.file.trim().is_empty() {
            let path = config.file.trim();
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read policy.file {path}"))?;
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
            current: std::sync::RwLock::new(current),
            config: config.clone(),
            adopted_path,
        })
    }

    /// The policy in force.
    pub fn current(&self) -> Policy {
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
            *current = (policy, Some(bytes.to_vec()));
        }
        let tmp = self.adopted_path.with_extension("tmp");
        let written = std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.adopted_path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot keep the adopted policy on disk");
        }
        tracing::info!(version, "adopted a newer moderation policy");
        Offered::Adopted(version)
    }
}
