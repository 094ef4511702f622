//! The signing keys of the federation's offline roles: policy maintainers
//! (`leak-node policy keygen`) and directory authorities (`leak-node
//! authority keygen`).
//!
//! | file | contents | mode |
//! | --- | --- | --- |
//! | the `--out` of `keygen` | the 32-byte Ed25519 seed, 64 hex digits and a newline | 0600, never overwritten |
//!
//! A key that others can read is refused when signing: a roster or a
//! policy signed with a leaked key is as good as a real one until the
//! federation removes the key from every node's config.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use anyhow::Context as _;
use zeroize::Zeroizing;

/// What `policy keygen` writes: a policy maintainer's key.
pub(crate) const MAINTAINER: &str = "maintainer key";
/// What `authority keygen` writes: a directory authority's key.
pub(crate) const AUTHORITY: &str = "authority key";

/// The command that writes a `what`, for the error that names it.
fn keygen_command(what: &str) -> &'static str {
    if what == AUTHORITY {
        "leak-node authority keygen"
    } else {
        "leak-node policy keygen"
    }
}

/// Writes a new key (a `what`, [`MAINTAINER`] or [`AUTHORITY`]) to `path`:
/// the 32-byte Ed25519 seed in hex and a newline, readable only by its
/// owner (0600). Refuses to overwrite an existing file. Returns the public
/// key.
pub(crate) fn create(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    use rand::TryRng as _;
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(seed.as_mut())
        .context("the operating system's random number generator failed")?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(seed.as_ref())));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} exists; not overwriting it", path.display())
            }
            _ => anyhow::Error::new(e)
                .context(format!("cannot create the {what} {}", path.display())),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the {what} {}", path.display()))?;
    Ok(leak_protocol::crypto::ed25519_public(&seed))
}

/// Reads a key written by [`create`] (a `what`). Refuses a file that others
/// can read.
pub(crate) fn read(path: &Path, what: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the {what} {} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
        path.display()
    );
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))?,
    );
    let bytes = Zeroizing::new(hex::decode(text.trim()).unwrap_or_default());
    let mut seed = Zeroizing::new([0u8; 32]);
    anyhow::ensure!(
        bytes.len() == 32,
        "{} is not {} {what} (64 hex digits; `{}` writes one)",
        path.display(),
        if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        },
        keygen_command(what)
    );
    seed.copy_from_slice(&bytes);
    Ok(seed)
}
