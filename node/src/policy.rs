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
