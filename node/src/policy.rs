//! Which moderation policy this node enforces: the one built into the
//! release, or a newer signed one named in `[policy]`.

use anyhow::Context as _;
use leak_net::durable::{self, Access};
use leak_protocol::policy::{self, Policy, PolicyError, SignedPolicy};

use crate::config::PolicyConfig;

/// The maintainers' keys of `config`, decoded.
pub fn trusted_keys(config: &PolicyConfig) -> anyhow::Result<Vec<[u8; 32]>> {
    policy::parse_public_keys(&config.trusted_keys).context("policy.trusted_keys")
}

/// Verifies a signed policy against `config`'s trusted keys.
pub fn verify(config: &PolicyConfig, bytes: &[u8]) -> anyhow::Result<Policy> {
    let keys = trusted_keys(config)?;
    Ok(policy::verify_signed(bytes, &keys, config.threshold)?)
}

/// The policy to enforce: the signed file if one is configured (it must
/// verify and be at least as new as the built-in one), else the built-in.
pub fn load(config: &PolicyConfig) -> anyhow::Result<Policy> {
    let path = config.file.trim();
    if path.is_empty() {
        return Ok(Policy::builtin());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read policy.file {path}"))?;
    let keys = trusted_keys(config)?;
    policy::verify_replacement(&bytes, &keys, config.threshold)
        .with_context(|| format!("policy.file {path}"))
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
    current: std::sync::RwLock<(std::sync::Arc<Policy>, Option<Vec<u8>>)>,
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
// For `leak-node policy`: maintainer keys, signature checks, where the policy
// in force comes from, and the evaluation's data.

/// Decodes a maintainer's public key: 64 hex digits.
pub fn parse_public_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    Ok(policy::parse_public_key(hex_key)?)
}

/// Writes a new maintainer key to `path`: the 32-byte Ed25519 seed in hex
/// and a newline, readable only by its owner (0600). Refuses to overwrite an
/// existing file. Returns the public key.
pub fn create_maintainer_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use rand::TryRng as _;
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(seed.as_mut())
        .context("the operating system's random number generator failed")?;
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(seed.as_ref())));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} exists; not overwriting it", path.display())
            }
            _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(leak_protocol::crypto::ed25519_public(&seed))
}

/// Reads a maintainer key written by [`create_maintainer_key`]. Refuses a
/// file that others can read.
pub fn read_maintainer_key(path: &std::path::Path) -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the maintainer key {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the maintainer key {} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
        path.display()
    );
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the maintainer key {}", path.display()))?,
    );
    let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).unwrap_or_default());
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    anyhow::ensure!(
        bytes.len() == 32,
        "{} is not a maintainer key (64 hex digits; `leak-node policy keygen` writes one)",
        path.display()
    );
    seed.copy_from_slice(&bytes);
    Ok(seed)
}

/// The keys of `trusted` whose signature on `signed` verifies (and whose
/// policy compiles), in the order they signed.
pub fn valid_signers(signed: &SignedPolicy, trusted: &[[u8; 32]]) -> Vec<[u8; 32]> {
    signed
        .signers()
        .filter(|k| trusted.contains(k) && signed.verify(&[**k], 1).is_ok())
        .copied()
        .collect()
}

/// Verifies a signed policy as a node would before using it: enough valid
/// signatures by `trusted` keys, a policy that compiles, and a version no
/// older than the built-in policy's.
pub fn verify_usable(
    bytes: &[u8],
    trusted: &[[u8; 32]],
    threshold: usize,
) -> anyhow::Result<(SignedPolicy, Policy)> {
    let signed = SignedPolicy::from_bytes(bytes)?;
    let policy = signed.verify(trusted, threshold).map_err(|e| {
        let untrusted: Vec<String> = signed
            .signers()
            .filter(|k| !trusted.contains(k))
            .map(hex::encode)
            .collect();
        match e {
            PolicyError::NotEnoughSignatures { .. } if !untrusted.is_empty() => anyhow::anyhow!(
                "{e}; signatures by keys not trusted do not count: {}",
                untrusted.join(", ")
            ),
            e => e.into(),
        }
    })?;
    let builtin = Policy::builtin().version();
    if policy.version() < builtin {
        return Err(PolicyError::OlderThanBuiltin {
            version: policy.version(),
            builtin,
        }
        .into());
    }
    Ok((signed, policy))
}

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

/// The measurement-only sets of the moderation training data in `dir`
/// (`shared/moderation-train`): their licences keep them out of the shipped
/// model, so they measure it on texts it never saw.
pub fn measurement_samples(
    dir: &std::path::Path,
) -> anyhow::Result<Vec<leak_protocol::policy::eval::Sample>> {
    let mut samples = Vec::new();
    for set in [
        "cyberagression_fr",
        "dailydialog",
        "gab_hate_corpus",
        "enron_spam",
    ] {
        let path = dir.join(format!("{set}.tsv"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        samples.extend(
            leak_protocol::policy::eval::labelled_samples(set, &text)
                .with_context(|| path.display().to_string())?,
        );
    }
    Ok(samples)
}

/// The evaluation's samples (`leak-node policy eval`): the public data sets
/// in `data` ([`eval::HATECHECK_FILE`] and [`eval::SMS_FILE`], both
/// required), if given, and every `*.tsv` fixture file in `fixtures`.
///
/// [`eval::HATECHECK_FILE`]: leak_protocol::policy::eval::HATECHECK_FILE
/// [`eval::SMS_FILE`]: leak_protocol::policy::eval::SMS_FILE
pub fn eval_samples(
    data: Option<&std::path::Path>,
    fixtures: &std::path::Path,
) -> anyhow::Result<Vec<leak_protocol::policy::eval::Sample>> {
    use leak_protocol::policy::eval;
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut samples = Vec::new();
    if let Some(dir) = data {
        for (file, parse) in [
            (
                eval::HATECHECK_FILE,
                eval::hatecheck_samples as fn(&str) -> _,
            ),
            (eval::SMS_FILE, eval::sms_samples),
        ] {
            let path = dir.join(file);
            samples.extend(parse(&read(&path)?).with_context(|| path.display().to_string())?);
        }
    }
    let mut tsv = Vec::new();
    for entry in std::fs::read_dir(fixtures)
        .with_context(|| format!("cannot read the fixtures directory {}", fixtures.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            tsv.push(path);
        }
    }
    anyhow::ensure!(
        !tsv.is_empty(),
        "{} has no fixture (*.tsv) files",
        fixtures.display()
    );
    tsv.sort();
    for path in tsv {
        samples.extend(eval::fixture_samples(
            &path.display().to_string(),
            &read(&path)?,
        )?);
    }
    Ok(samples)
}
