//! The outbox key: the key a waiting leak's recipient and text are sealed
//! under on disk, kept only in memory.
//!
//! A leak waits in the agent's outbox until its receipt comes (minutes, or
//! days when sent "later within …"), and a restarted agent must still send
//! it. Its text must not be readable on the disk meanwhile: a laptop taken
//! while it is off must show nothing of what was written. So the outbox
//! holds the secret half of a leak sealed (ChaCha20-Poly1305) under a key
//! that lives in a memory-backed file system: `$XDG_RUNTIME_DIR` (systemd's
//! per-user tmpfs) or else `/dev/shm`, checked to be tmpfs. The
//! key survives a restart of the agent and is gone when the machine stops,
//! and with it every secret it sealed (the agent then reports those leaks
//! as lost). A log-out can empty both places too: systemd unmounts
//! `$XDG_RUNTIME_DIR` and, with `RemoveIPC=yes` (its default), deletes the
//! user's files in `/dev/shm` when the user's last session ends, unless
//! the user lingers (`loginctl enable-linger`, which also keeps the agent's
//! user service running). Without such a file system the key lives in the agent's memory
//! only and a restart of the agent loses the leaks still waiting: the
//! agent says so when it starts.
//!
//! ```text
//! MEMDIR/leak-outbox-keys/      (under $XDG_RUNTIME_DIR) or
//! /dev/shm/leak-outbox-keys-UID/  mode 0700, owned by the user
//!   KEYID.key                   32 random bytes (mode 0600)
//! STATE_DIR/outbox/key-id       KEYID: which key seals this outbox (public)
//! ```
//!
//! (Swap can still hold tmpfs pages; an encrypted swap, or none, closes that.)

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use leak_net::durable::{self, Access};
use leak_protocol::crypto::{self, SymmetricKey};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};
use rand::RngExt as _;
use zeroize::Zeroizing;

/// The length of a key id, in bytes (hex in file names).
const KEY_ID_LEN: usize = 16;

/// The context of a leak's sealing key ([`crypto::derive_key`]).
const SECRET_CONTEXT: &str = "leak agent outbox secret v1";

/// Where the key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlace {
    /// A file in a memory-backed file system: the key survives a restart
    /// of the agent, not of the machine.
    Memory(PathBuf),
    /// The agent's own memory: a restart of the agent loses it.
    ProcessOnly,
}

/// The key that seals an outbox's secrets.
pub struct OutboxKey {
    id: [u8; KEY_ID_LEN],
    key: SymmetricKey,
    place: KeyPlace,
}

impl std::fmt::Debug for OutboxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxKey")
            .field("id", &hex::encode(self.id))
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// Why a sealed secret could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    /// Sealed under a key that is gone (the machine restarted, or the agent
    /// kept its key in its own memory): the text cannot be recovered.
    #[error("sealed under a key that is gone (the machine or the agent restarted)")]
    KeyGone,
    /// Not a sealed secret, or altered.
    #[error("not a sealed secret of this outbox, or altered")]
    Corrupt,
}

/// The memory-backed directories the key may live in, best first:
/// `$XDG_RUNTIME_DIR`, then `/dev/shm`.
pub fn default_memory_dirs() -> Vec<PathBuf> {
    let uid = nix::unistd::getuid();
    let mut dirs = Vec::new();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(runtime).join("leak-outbox-keys"));
    }
    dirs.push(PathBuf::from(format!("/dev/shm/leak-outbox-keys-{uid}")));
    dirs
}

/// True when `dir`'s file system keeps its files in memory only.
fn memory_backed(dir: &Path) -> bool {
    statfs(dir).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

/// Creates `dir` (0700) if missing and checks it is a directory of ours
/// that only we can enter, on a memory-backed file system. `None` when it
/// cannot be used.
fn private_memory_dir(dir: &Path) -> Option<PathBuf> {
    let parent = dir.parent()?;
    if !memory_backed(parent) {
        return None;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    // Another user may have made it first (in /dev/shm): refuse a symlink,
    // a directory not ours, or one others can enter.
    let meta = fs::symlink_metadata(dir).ok()?;
    let ours = meta.uid() == nix::unistd::getuid().as_raw();
    (meta.is_dir() && ours && meta.mode() & 0o077 == 0).then(|| dir.to_owned())
}

impl OutboxKey {
    /// The key of the outbox directory `outbox`: the one its `key-id` names
    /// when that key is still in one of `memory_dirs`; else a new one, kept
    /// in the first usable memory directory (or, when none is usable, in
    /// this process only). Secrets sealed under an earlier key stay
    /// unreadable ([`UnsealError::KeyGone`]).
    pub fn open(outbox: &Path, memory_dirs: &[PathBuf]) -> std::io::Result<Self> {
        let dirs: Vec<PathBuf> = memory_dirs
            .iter()
            .filter_map(|d| private_memory_dir(d))
            .collect();
        let id_path = outbox.join("key-id");
        if let Some(id) = read_key_id(&id_path) {
            for dir in &dirs {
                let path = dir.join(format!("{}.key", hex::encode(id)));
                if let Some(key) = read_key(&path) {
                    return Ok(Self {
                        id,
                        key,
                        place: KeyPlace::Memory(path),
                    });
                }
            }
        }
        let mut rng = rand::rng();
        let id: [u8; KEY_ID_LEN] = rng.random();
        let key = SymmetricKey(rng.random());
        let place = match dirs.first() {
            Some(dir) => {
                let path = dir.join(format!("{}.key", hex::encode(id)));
                write_key(&path, &key)?;
                KeyPlace::Memory(path)
            }
            None => KeyPlace::ProcessOnly,
        };
        durable::write(&id_path, hex::encode(id).as_bytes(), Access::Private)?;
        Ok(Self { id, key, place })
    }

    /// Where the key lives.
    pub fn place(&self) -> &KeyPlace {
        &self.place
    }

    /// Seals `plain` for the leak `message_id`: the key id, then the
    /// ciphertext and its tag. Each leak has a key of its own (derived from
    /// this one and its message id), and its secret is sealed once.
    pub fn seal(&self, message_id: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_ID_LEN + plain.len() + crypto::TAG_LEN);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(plain);
        out.extend_from_slice(&[0; crypto::TAG_LEN]);
        let key = crypto::derive_key(SECRET_CONTEXT, &[&self.key.0, message_id]);
        // The buffer is at least a tag long: sealing cannot fail.
        let _ = crypto::aead_seal(&key, message_id, &mut out[KEY_ID_LEN..]);
        out
    }

    /// Opens what [`Self::seal`] made for `message_id`.
    pub fn open_sealed(
        &self,
        message_id: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        if sealed.len() < KEY_ID_LEN + crypto::TAG_LEN {
            return Err(UnsealError::Corrupt);
        }
        let (id, body) = sealed.split_at(KEY_ID_LEN);
        if id != self.id {
            return Err(UnsealError::KeyGone);
        }
        let mut buf = Zeroizing::new(body.to_vec());
        let key = crypto::derive_key(SECRET_CONTEXT, &[&self.key.0, message_id]);
        crypto::aead_open(&key, message_id, &mut buf).map_err(|_| UnsealError::Corrupt)?;
        let len = buf.len() - crypto::TAG_LEN;
        buf.truncate(len);
        Ok(buf)
    }

    /// Forgets the key (an empty outbox at a clean stop): its file is
    /// removed, so whatever it sealed can never be read again.
    pub fn discard(&self) -> std::io::Result<()> {
        match &self.place {
            KeyPlace::Memory(path) => match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            KeyPlace::ProcessOnly => Ok(()),
        }
    }
}

fn read_key_id(path: &Path) -> Option<[u8; KEY_ID_LEN]> {
    let text = fs::read_to_string(path).ok()?;
    hex::decode(text.trim()).ok()?.try_into().ok()
}

fn read_key(path: &Path) -> Option<SymmetricKey> {
    let bytes = Zeroizing::new(fs::read(path).ok()?);
    let key: [u8; crypto::KEY_LEN] = bytes.as_slice().try_into().ok()?;
    Some(SymmetricKey(key))
}

fn write_key(path: &Path, key: &SymmetricKey) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&key.0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn shm_dir(tag: &str) -> PathBuf {
        let dir = PathBuf::from(format!(
            "/dev/shm/leak-outbox-key-test-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_key_outlives_the_agent_not_the_machine() {
        let state = tempfile::tempdir().unwrap();
        let mem = shm_dir("restart");
        let dirs = [mem.clone()];
        let key = OutboxKey::open(state.path(), &dirs).unwrap();
        let KeyPlace::Memory(path) = key.place().clone() else {
            panic!("/dev/shm is tmpfs here: {:?}", key.place());
        };
        assert!(path.starts_with(&mem));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&mem), mode(&path)), (0o700, 0o600));

        let sealed = key.seal(b"leak one", b"alice@example.com: a secret text");
        let on_disk = String::from_utf8_lossy(&sealed);
        assert!(!on_disk.contains("alice") && !on_disk.contains("secret"));

        // The agent restarts: the same key, the secret opens.
        drop(key);
        let again = OutboxKey::open(state.path(), &dirs).unwrap();
        assert_eq!(
            again.open_sealed(b"leak one", &sealed).unwrap().as_slice(),
            b"alice@example.com: a secret text"
        );
        // Another leak's id, or a flipped bit, does not open it.
        assert_eq!(
            again.open_sealed(b"leak two", &sealed),
            Err(UnsealError::Corrupt)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            again.open_sealed(b"leak one", &flipped),
            Err(UnsealError::Corrupt)
        );
        assert_eq!(
            again.open_sealed(b"leak one", &sealed[..20]),
            Err(UnsealError::Corrupt)
        );

        // The machine restarts (the memory file system is empty): a new
        // key, and the old secret is gone for good.
        fs::remove_dir_all(&mem).unwrap();
        let after_boot = OutboxKey::open(state.path(), &dirs).unwrap();
        assert_eq!(
            after_boot.open_sealed(b"leak one", &sealed),
            Err(UnsealError::KeyGone)
        );
        let resealed = after_boot.seal(b"leak three", b"t");
        after_boot.discard().unwrap();
        let fresh = OutboxKey::open(state.path(), &dirs).unwrap();
        assert_eq!(
            fresh.open_sealed(b"leak three", &resealed),
            Err(UnsealError::KeyGone)
        );
        fs::remove_dir_all(&mem).unwrap();
    }

    #[test]
    fn a_disk_directory_or_a_foreign_one_is_not_used() {
        let state = tempfile::tempdir().unwrap();
        // A directory on the disk (the temp dir is not tmpfs here, or is
        // skipped when it is).
        let disk = state.path().join("keys");
        if !memory_backed(state.path()) {
            let key = OutboxKey::open(state.path(), std::slice::from_ref(&disk)).unwrap();
            assert_eq!(key.place(), &KeyPlace::ProcessOnly);
            assert!(!disk.exists());
            // Kept in memory only: a restart of the agent loses it.
            let sealed = key.seal(b"id", b"text");
            drop(key);
            let again = OutboxKey::open(state.path(), &[disk]).unwrap();
            assert_eq!(again.open_sealed(b"id", &sealed), Err(UnsealError::KeyGone));
        }
        // A directory others can enter, or a symlink, is refused.
        let open = shm_dir("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let link = shm_dir("link");
        std::os::unix::fs::symlink(state.path(), &link).unwrap();
        let key = OutboxKey::open(state.path(), &[open.clone(), link.clone()]).unwrap();
        assert_eq!(key.place(), &KeyPlace::ProcessOnly);
        fs::remove_dir_all(&open).unwrap();
        fs::remove_file(&link).unwrap();
    }
}
