//! The agent's outbox: leaks handed over and not yet finished, on disk.
//!
//! ```text
//! STATE_DIR/outbox/            mode 0700
//!   ID.json                    what the agent needs to (re)send the leak:
//!                              message id, exit, stamp, hops, when it may
//!                              leave next (no text, no recipient)
//!   ID.secret                  the recipient's address and the text,
//!                              written once (mode 0600)
//! ```
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
};

use leak_net::durable::{self, Access};
use leak_protocol::{MessageId, NodeId, payload::Stamp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::state::{create_private_dir, parse_message_id};

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A file could not be read, written or removed.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file does not decode (or a field is not what it should be).
    #[error("outbox {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

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
}

impl Outbox {
    /// The outbox under the state directory `root`, created (0700) if missing.
    pub fn open(root: &Path) -> Result<Self, OutboxError> {
        let dir = root.join("outbox");
        create_private_dir(&dir).map_err(|e| OutboxError::Io {
            path: dir.clone(),
            source: std::io::Error::other(format!("{e:#}")),
        })?;
        Ok(Self { dir })
    }

    fn path(&self, id: &str, ext: &str) -> Result<PathBuf, OutboxError> {
        // The id becomes a file name: it must be exactly hex.
        parse_message_id(id).map_err(|e| OutboxError::Corrupt {
            path: self.dir.clone(),
            reason: format!("{e:#}"),
        })?;
        Ok(self.dir.join(format!("{id}.{ext}")))
    }

    /// Stores a new leak: the secret first, then the entry, each synced.
    /// Once this returns, a restart finds the leak.
    pub fn put(&self, entry: &OutboxEntry, secret: &OutboxSecret) -> Result<(), OutboxError> {
        let path = self.path(&entry.message_id, "secret")?;
        let json =
            Zeroizing::new(
                serde_json::to_vec(secret).map_err(|e| OutboxError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            );
        durable::write(&path, &json, Access::Private).map_err(|source| OutboxError::Io {
            path: path.clone(),
            source,
        })?;
        self.update(entry)
    }

    /// Rewrites a leak's entry (its next time, its attempt count).
    pub fn update(&self, entry: &OutboxEntry) -> Result<(), OutboxError> {
        let path = self.path(&entry.message_id, "json")?;
        let json = serde_json::to_vec_pretty(entry).map_err(|e| OutboxError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable::write(&path, &json, Access::Private).map_err(|source| OutboxError::Io {
            path: path.clone(),
            source,
        })
    }

    /// A leak's recipient and text.
    pub fn secret(&self, id: &str) -> Result<OutboxSecret, OutboxError> {
        let path = self.path(id, "secret")?;
        let bytes = Zeroizing::new(fs::read(&path).map_err(|source| OutboxError::Io {
            path: path.clone(),
            source,
        })?);
        serde_json::from_slice(&bytes).map_err(|e| OutboxError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Every waiting leak (unreadable entries are returned as errors, not
    /// fatal: the others still leave).
    pub fn list(&self) -> Result<(Vec<OutboxEntry>, Vec<OutboxError>), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.dir.clone(),
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
                        path,
                        reason: "a bad message id or exit".into(),
                    }),
                    Err(e) => errors.push(OutboxError::Corrupt {
                        path,
                        reason: e.to_string(),
                    }),
                },
                Err(source) => errors.push(OutboxError::Io { path, source }),
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
            path: secret.clone(),
            source,
        })?;
        let entry = self.path(id, "json")?;
        match fs::remove_file(&entry) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OutboxError::Io {
                    path: entry,
                    source,
                });
            }
        }
        durable::sync_dir(&self.dir).map_err(|source| OutboxError::Io {
            path: self.dir.clone(),
            source,
        })
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
        }
    }

    #[test]
    fn entries_survive_and_secrets_are_shredded() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
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
        let json = fs::read_to_string(outbox.path(&a.message_id, "json").unwrap()).unwrap();
        assert!(
            !json.contains("alice") && !json.contains("secret text"),
            "{json}"
        );

        // Reopened (as after a restart): both, soonest first, same ids.
        let again = Outbox::open(dir.path()).unwrap();
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
    }

    #[test]
    fn a_corrupt_entry_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
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
    }
}
