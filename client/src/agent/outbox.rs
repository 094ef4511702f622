//! The agent's outbox: leaks handed over and not yet finished, on disk.
//!
//! ```text
//! STATE_DIR/outbox/            mode 0700
//!   ID.json                    what the agent needs to (re)send the leak:
//!                              message id, exit, stamp, hops, when it may
//!                              leave next (no text, no recipient)
//!   ID.secret                  the recipient's address and the text,
//!                              sealed under the outbox key, written once
//!                              (mode 0600)
//!   key-id                     which outbox key seals them
//! ```
//!
//! The outbox key lives in memory only ([`super::outbox_key`]): a waiting
//! leak's text is never readable on the disk, survives a restart of the
//! agent, and is lost when the machine stops before the leak has left (the
//! agent then ends it as [`Finished::Lost`](crate::state::Finished::Lost)).
//!
//! A leak is written here (synced) before `leak send` hears that the agent
//! has it, so a crash or a restart never loses it; its message id is drawn
//! once, here, so every packet ever built for it carries that id and the
//! exit delivers it once however often it arrives. The secret file lives
//! until the leak is finished (a receipt came, or every attempt went
//! unanswered): a retransmission seals the text again over a fresh route.
//! Then it is overwritten with zeros, synced and removed ([`Outbox::remove`]).

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use leak_net::durable::{self, Access};
use leak_protocol::{MessageId, NodeId, payload::Stamp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::outbox_key::{OutboxKey, UnsealError};
use crate::state::{create_private_dir, parse_message_id};

/// Why the outbox could not be read or written. (It names the kind of
/// file, never its path: a leak's file name is its message id.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A file could not be read, written or removed.
    #[error("outbox ({file}): {source}")]
    Io {
        /// Which file: "the directory", "a leak's entry", "a leak's secret".
        file: &'static str,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file does not decode (or a field is not what it should be).
    #[error("outbox ({file}) is corrupt: {reason}")]
    Corrupt {
        /// Which file.
        file: &'static str,
        /// Why.
        reason: String,
    },
    /// The leak's secret was sealed under a key that is gone: the machine
    /// (or an agent without a memory file system) restarted before the
    /// leak finished. Its text cannot be recovered.
    #[error("the leak's text is gone: this machine restarted before it finished")]
    Lost,
    /// This outbox was opened to be listed, not to send.
    #[error("the outbox was opened without its key")]
    NoKey,
}

const DIRECTORY: &str = "the directory";
const ENTRY: &str = "a leak's entry";
const SECRET: &str = "a leak's secret";

/// One waiting leak, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEntry {
    /// The message id, in hex.
    pub message_id: String,
    /// Who the sender is to the recipient.
    pub relationship: String,
    /// The policy version the text was checked against.
    pub policy_version: u32,
    /// The anti-abuse stamp's epoch and nonce.
    pub stamp_epoch: u64,
    /// See [`Self::stamp_epoch`].
    pub stamp_nonce: u64,
    /// The exit every attempt goes to (its node id, hex).
    pub exit_node: String,
    /// Hops of each forward path.
    pub hops: usize,
    /// When the next attempt may leave (Unix ms): the release time first,
    /// then the retransmission time drawn after each attempt.
    pub next_at_ms: u64,
    /// Attempts handed to the guard so far.
    pub attempts_sent: u32,
    /// The conversation it belongs to (its label; `None`: it cannot be
    /// answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// An exit refused it as not responsible for its recipient: it goes
    /// (or went) to the responsible one, once ([`super::run`]'s redirect).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirected: bool,
    /// While it waits for a directory that names another exit (parked:
    /// `next_at_ms` is `u64::MAX`): until when (Unix ms), then it ends
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_until_ms: Option<u64>,
}

/// The secret half of a waiting leak.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSecret {
    /// The recipient's full address.
    pub recipient: String,
    /// The text.
    pub text: String,
}

impl Drop for OutboxSecret {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.recipient.zeroize();
        self.text.zeroize();
    }
}

impl std::fmt::Debug for OutboxSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxSecret([redacted])")
    }
}

impl OutboxEntry {
    /// The message id.
    pub fn id(&self) -> Option<MessageId> {
        parse_message_id(&self.message_id).ok()
    }

    /// The stamp.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            epoch: self.stamp_epoch,
            nonce: self.stamp_nonce,
        }
    }

    /// The exit's node id.
    pub fn exit(&self) -> Option<NodeId> {
        let bytes = hex::decode(&self.exit_node).ok()?;
        Some(NodeId(bytes.try_into().ok()?))
    }
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    key: Option<Arc<OutboxKey>>,
}

impl Outbox {
    /// The outbox under the state directory `root`, created (0700) if
    /// missing, to be listed ([`Self::list`]); [`Self::keyed`] opens its key
    /// to store and read secrets.
    pub fn open(root: &Path) -> Result<Self, OutboxError> {
        let dir = root.join("outbox");
        create_private_dir(&dir).map_err(|e| OutboxError::Io {
            file: DIRECTORY,
            source: std::io::Error::other(format!("{e:#}")),
        })?;
        Ok(Self { dir, key: None })
    }

    /// Opens (or makes) the outbox key in the first usable memory-backed
    /// directory of `memory_dirs` ([`OutboxKey::open`]).
    pub fn keyed(self, memory_dirs: &[PathBuf]) -> Result<Self, OutboxError> {
        let key = OutboxKey::open(&self.dir, memory_dirs).map_err(|source| OutboxError::Io {
            file: "the outbox key",
            source,
        })?;
        Ok(Self {
            key: Some(Arc::new(key)),
            ..self
        })
    }

    /// The outbox key, once [`Self::keyed`].
    pub fn key(&self) -> Option<&OutboxKey> {
        self.key.as_deref()
    }

    fn path(&self, id: &str, ext: &str) -> Result<PathBuf, OutboxError> {
        // The id becomes a file name: it must be exactly hex.
        parse_message_id(id).map_err(|e| OutboxError::Corrupt {
            file: if ext == "json" { ENTRY } else { SECRET },
            reason: format!("{e:#}"),
        })?;
        Ok(self.dir.join(format!("{id}.{ext}")))
    }

    /// Stores a new leak: the secret first (sealed under the outbox key),
    /// then the entry, each synced. Once this returns, a restart of the
    /// agent finds the leak.
    pub fn put(&self, entry: &OutboxEntry, secret: &OutboxSecret) -> Result<(), OutboxError> {
        let key = self.key.as_ref().ok_or(OutboxError::NoKey)?;
        let path = self.path(&entry.message_id, "secret")?;
        let json =
            Zeroizing::new(
                serde_json::to_vec(secret).map_err(|e| OutboxError::Corrupt {
                    file: SECRET,
                    reason: e.to_string(),
                })?,
            );
        let sealed = key.seal(entry.message_id.as_bytes(), &json);
        durable::write(&path, &sealed, Access::Private).map_err(|source| OutboxError::Io {
            file: SECRET,
            source,
        })?;
        self.update(entry)
    }

    /// Rewrites a leak's entry (its next time, its attempt count).
    pub fn update(&self, entry: &OutboxEntry) -> Result<(), OutboxError> {
        let path = self.path(&entry.message_id, "json")?;
        let json = serde_json::to_vec_pretty(entry).map_err(|e| OutboxError::Corrupt {
            file: ENTRY,
            reason: e.to_string(),
        })?;
        durable::write(&path, &json, Access::Private).map_err(|source| OutboxError::Io {
            file: ENTRY,
            source,
        })
    }

    /// A leak's recipient and text; [`OutboxError::Lost`] when the key
    /// that sealed them is gone.
    pub fn secret(&self, id: &str) -> Result<OutboxSecret, OutboxError> {
        let key = self.key.as_ref().ok_or(OutboxError::NoKey)?;
        let path = self.path(id, "secret")?;
        let sealed = Zeroizing::new(fs::read(&path).map_err(|source| OutboxError::Io {
            file: SECRET,
            source,
        })?);
        // Written in the clear by an earlier version: replaced (atomically,
        // so nothing is lost) by its sealed copy. The clear file's blocks
        // are freed, not overwritten: the file system may keep them a while.
        if let Ok(plain) = serde_json::from_slice::<OutboxSecret>(&sealed) {
            let resealed = key.seal(id.as_bytes(), &sealed);
            durable::write(&path, &resealed, Access::Private).map_err(|source| {
                OutboxError::Io {
                    file: SECRET,
                    source,
                }
            })?;
            return Ok(plain);
        }
        let json = key
            .open_sealed(id.as_bytes(), &sealed)
            .map_err(|e| match e {
                UnsealError::KeyGone => OutboxError::Lost,
                UnsealError::Corrupt => OutboxError::Corrupt {
                    file: SECRET,
                    reason: e.to_string(),
                },
            })?;
        serde_json::from_slice(&json).map_err(|e| OutboxError::Corrupt {
            file: SECRET,
            reason: e.to_string(),
        })
    }

    /// Every waiting leak (unreadable entries are returned as errors, not
    /// fatal: the others still leave).
    pub fn list(&self) -> Result<(Vec<OutboxEntry>, Vec<OutboxError>), OutboxError> {
        let io = |source| OutboxError::Io {
            file: DIRECTORY,
            source,
        };
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io)? {
            let path = item.map_err(io)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<OutboxEntry>(&bytes) {
                    Ok(entry) if entry.id().is_some() && entry.exit().is_some() => {
                        entries.push(entry);
                    }
                    Ok(_) => errors.push(OutboxError::Corrupt {
                        file: ENTRY,
                        reason: "a bad message id or exit".into(),
                    }),
                    Err(e) => errors.push(OutboxError::Corrupt {
                        file: ENTRY,
                        reason: e.to_string(),
                    }),
                },
                Err(source) => errors.push(OutboxError::Io {
                    file: ENTRY,
                    source,
                }),
            }
        }
        entries.sort_by_key(|a| a.next_at_ms);
        Ok((entries, errors))
    }

    /// Forgets a finished leak: the secret file is overwritten with zeros,
    /// synced and removed, then the entry is removed.
    pub fn remove(&self, id: &str) -> Result<(), OutboxError> {
        let secret = self.path(id, "secret")?;
        shred(&secret).map_err(|source| OutboxError::Io {
            file: SECRET,
            source,
        })?;
        let entry = self.path(id, "json")?;
        match fs::remove_file(&entry) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OutboxError::Io {
                    file: ENTRY,
                    source,
                });
            }
        }
        durable::sync_dir(&self.dir).map_err(|source| OutboxError::Io {
            file: DIRECTORY,
            source,
        })
    }

    /// At a clean stop: when no leak waits, the key is discarded (nothing
    /// it sealed remains) and the next start makes a new one.
    pub fn close(&self) -> Result<(), OutboxError> {
        // One look at the directory, nothing decoded: any leak's file
        // (entry or secret, readable or not) keeps the key.
        let waiting = fs::read_dir(&self.dir)
            .map_err(|source| OutboxError::Io {
                file: DIRECTORY,
                source,
            })?
            .filter_map(Result::ok)
            .any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "json" || x == "secret")
            });
        if waiting {
            return Ok(());
        }
        if let Some(key) = &self.key {
            key.discard().map_err(|source| OutboxError::Io {
                file: "the outbox key",
                source,
            })?;
        }
        Ok(())
    }
}

/// Overwrites `path` with zeros in place, syncs it and removes it. (A file
/// system that copies on write, or a previous version of the file, may
/// still hold the old blocks: the README says so.)
fn shred(path: &Path) -> std::io::Result<()> {
    let len = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len());
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    drop(file);
    fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A memory directory of this test's own under /dev/shm.
    fn memory(tag: &str) -> Vec<PathBuf> {
        let dir = PathBuf::from(format!(
            "/dev/shm/leak-outbox-test-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        vec![dir]
    }

    fn entry(id: u8, next_at_ms: u64) -> OutboxEntry {
        OutboxEntry {
            message_id: MessageId([id; 16]).to_string(),
            relationship: "friend".into(),
            policy_version: 3,
            stamp_epoch: 20_000,
            stamp_nonce: 77,
            exit_node: hex::encode([9u8; 32]),
            hops: 3,
            next_at_ms,
            attempts_sent: 0,
            thread: None,
            redirected: false,
            redirect_until_ms: None,
        }
    }

    #[test]
    fn entries_survive_and_secrets_are_shredded() {
        let dir = tempfile::tempdir().unwrap();
        let mem = memory("survive");
        let outbox = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("outbox")), 0o700);
        let a = entry(1, 500);
        let secret = OutboxSecret {
            recipient: "alice@example.com".into(),
            text: "a secret text".into(),
        };
        outbox.put(&a, &secret).unwrap();
        outbox.put(&entry(2, 100), &secret).unwrap();
        let secret_path = outbox.path(&a.message_id, "secret").unwrap();
        assert_eq!(mode(&secret_path), 0o600);
        // Nothing of the recipient or the text is readable on the disk.
        for file in fs::read_dir(dir.path().join("outbox")).unwrap() {
            let bytes = fs::read(file.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("alice") && !text.contains("secret text"));
        }

        // Reopened (as after a restart of the agent): both, soonest first,
        // same ids; the secret opens.
        let again = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        let (list, errors) = again.list().unwrap();
        assert!(errors.is_empty());
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].next_at_ms, 100);
        assert_eq!(list[1], a);
        assert_eq!(list[1].exit(), Some(NodeId([9; 32])));
        assert_eq!(list[1].stamp().nonce, 77);
        assert_eq!(again.secret(&a.message_id).unwrap().text, "a secret text");

        let mut later = a.clone();
        later.next_at_ms = 9_000;
        later.attempts_sent = 1;
        again.update(&later).unwrap();
        assert_eq!(again.list().unwrap().0[1], later);

        again.remove(&a.message_id).unwrap();
        assert!(!secret_path.exists());
        assert!(again.secret(&a.message_id).is_err());
        assert_eq!(again.list().unwrap().0.len(), 1);
        // Removing twice is fine; a bad id is refused.
        again.remove(&a.message_id).unwrap();
        assert!(again.remove("../../x").is_err());
        // Listing needs no key; reading a secret does.
        let listing = Outbox::open(dir.path()).unwrap();
        assert_eq!(listing.list().unwrap().0.len(), 1);
        assert!(matches!(
            listing.secret(&entry(2, 0).message_id),
            Err(OutboxError::NoKey)
        ));
        fs::remove_dir_all(&mem[0]).unwrap();
    }

    #[test]
    fn after_the_machine_restarts_a_waiting_text_is_lost_not_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mem = memory("boot");
        let outbox = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        let secret = OutboxSecret {
            recipient: "a@b.example".into(),
            text: "t".into(),
        };
        outbox.put(&entry(1, 5), &secret).unwrap();
        // A clean stop with a leak waiting keeps the key.
        outbox.close().unwrap();
        let again = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        assert_eq!(again.secret(&entry(1, 5).message_id).unwrap().text, "t");

        // The memory file system empties (a reboot).
        fs::remove_dir_all(&mem[0]).unwrap();
        let booted = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        assert!(matches!(
            booted.secret(&entry(1, 5).message_id),
            Err(OutboxError::Lost)
        ));
        // An altered secret is corrupt, not lost.
        booted.put(&entry(2, 5), &secret).unwrap();
        let path = booted.path(&entry(2, 5).message_id, "secret").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            booted.secret(&entry(2, 5).message_id),
            Err(OutboxError::Corrupt { .. })
        ));
        // Once nothing waits, a clean stop discards the key.
        booted.remove(&entry(1, 5).message_id).unwrap();
        booted.remove(&entry(2, 5).message_id).unwrap();
        let Some(super::super::outbox_key::KeyPlace::Memory(key_file)) =
            booted.key().map(|k| k.place().clone())
        else {
            panic!("no memory key");
        };
        assert!(key_file.exists());
        booted.close().unwrap();
        assert!(!key_file.exists());
        fs::remove_dir_all(&mem[0]).unwrap();
    }

    #[test]
    fn a_secret_written_in_the_clear_by_an_earlier_version_is_sealed_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let mem = memory("upgrade");
        let outbox = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        let id = entry(4, 1).message_id;
        let path = outbox.path(&id, "secret").unwrap();
        fs::write(
            &path,
            br#"{"recipient":"old@example.com","text":"an older text"}"#,
        )
        .unwrap();
        assert_eq!(outbox.secret(&id).unwrap().text, "an older text");
        let on_disk = fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&on_disk).contains("older text"));
        assert_eq!(outbox.secret(&id).unwrap().recipient, "old@example.com");
        fs::remove_dir_all(&mem[0]).unwrap();
    }

    #[test]
    fn a_corrupt_entry_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mem = memory("corrupt");
        let outbox = Outbox::open(dir.path()).unwrap().keyed(&mem).unwrap();
        outbox
            .put(
                &entry(1, 5),
                &OutboxSecret {
                    recipient: "a@b.example".into(),
                    text: "t".into(),
                },
            )
            .unwrap();
        fs::write(dir.path().join("outbox").join("x.json"), b"{").unwrap();
        let (list, errors) = outbox.list().unwrap();
        assert_eq!((list.len(), errors.len()), (1, 1));
        // The error names the kind of file, never its path (a message id).
        let said = errors[0].to_string();
        assert!(
            said.contains("a leak's entry") && !said.contains("x.json"),
            "{said}"
        );
        fs::remove_dir_all(&mem[0]).unwrap();
    }
}
