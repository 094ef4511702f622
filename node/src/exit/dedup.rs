//! The exit's keys for leaks: what its database and logs name a leak by,
//! instead of the sender's message id.
//!
//! The message id comes from the sender's client, which shows it to its
//! user and may keep it; an exit that stored it would let a seized laptop be
//! matched against a seized exit ("this id is in both: this person sent
//! that email"). So the exit stores, for seven days (`exit.dedup_secs`,
//! long enough to answer a retransmission instead of delivering again), a
//! *leak key*: the keyed BLAKE3 of the id under a random secret of this
//! exit, truncated to 16 bytes. The raw id lives only in memory and in the
//! leak's slot of the spool, which is scrubbed when the leak leaves.
//!
//! What it protects: a copy of the database (a backup, a seized disk image
//! without the key file, freed pages redb never scrubs) cannot be matched
//! against a message id without the secret. The secret is in the data
//! directory too (`exit-leak-keys`, mode 0600), so whoever takes the whole
//! directory can match, but only for the secrets still there: a secret
//! lives two periods of `exit.dedup_secs` (the current one and the one
//! before, so that a retransmission is recognised whenever it comes within
//! `dedup_secs`), then is overwritten by its successor. After that, the
//! entries made under it, pruned by then anyway, match nothing that can be
//! computed, even with the laptop and the disk.
//!
//! | file | holds |
//! |---|---|
//! | `exit-leak-keys` | the period number, its secret and the previous period's secret (postcard) |

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use leak_net::durable::{self, Access};
use leak_protocol::{
    MessageId,
    crypto::{SymmetricKey, mac},
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::ExitError;

/// The file the secrets are kept in, in the data directory.
pub const KEYS_FILE: &str = "exit-leak-keys";

/// The secrets of one period and the one before.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Secrets {
    /// The period: Unix ms / (`dedup_secs` × 1000).
    period: u64,
    current: [u8; 32],
    previous: Option<[u8; 32]>,
}

/// The exit's leak keys, rotated every `dedup_secs`.
pub struct LeakKeys {
    path: PathBuf,
    period_ms: u64,
    secrets: Mutex<Secrets>,
}

impl std::fmt::Debug for LeakKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeakKeys([redacted])")
    }
}

fn derive(secret: &[u8; 32], id: &MessageId) -> MessageId {
    let full = mac(&SymmetricKey(*secret), &[b"leak key v1", &id.0]);
    MessageId(full)
}

impl LeakKeys {
    /// Loads the secrets from `data_dir` (creating them on first use) and
    /// rotates them if their period is over at `now_ms`.
    pub fn open(data_dir: &Path, dedup_secs: u64, now_ms: u64) -> Result<Self, ExitError> {
        let path = data_dir.join(KEYS_FILE);
        let period_ms = dedup_secs.max(1).saturating_mul(1000);
        let secrets = match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                postcard::from_bytes::<Secrets>(&bytes)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secrets {
                period: now_ms / period_ms,
                current: rand::random(),
                previous: None,
            },
            Err(source) => {
                return Err(ExitError::Io {
                    what: format!("reading {}", path.display()),
                    source,
                });
            }
        };
        let keys = Self {
            path,
            period_ms,
            secrets: Mutex::new(secrets.clone()),
        };
        keys.save(&secrets)?;
        keys.rotate(now_ms)?;
        Ok(keys)
    }

    fn save(&self, secrets: &Secrets) -> Result<(), ExitError> {
        let bytes = zeroize::Zeroizing::new(postcard::to_allocvec(secrets)?);
        durable::write(&self.path, &bytes, Access::Private).map_err(|source| ExitError::Io {
            what: format!("writing {}", self.path.display()),
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Secrets> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new period if `now_ms` is past the current one: a fresh
    /// secret, the current one kept as the previous, the one before
    /// forgotten (overwritten on disk).
    pub fn rotate(&self, now_ms: u64) -> Result<(), ExitError> {
        let period = now_ms / self.period_ms;
        let mut secrets = self.lock();
        if period <= secrets.period {
            return Ok(());
        }
        let next = Secrets {
            period,
            current: rand::random(),
            // Two periods or more without a start: the old secret is older
            // than anything still worth recognising.
            previous: (period == secrets.period + 1).then_some(secrets.current),
        };
        self.save(&next)?;
        *secrets = next;
        Ok(())
    }

    /// The key a new leak with id `id` is stored under.
    pub fn current(&self, id: &MessageId) -> MessageId {
        derive(&self.lock().current, id)
    }

    /// Every key a leak with id `id` may be stored under: the current
    /// period's first, then the previous one's.
    pub fn candidates(&self, id: &MessageId) -> Vec<MessageId> {
        let secrets = self.lock();
        std::iter::once(&secrets.current)
            .chain(secrets.previous.as_ref())
            .map(|s| derive(s, id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn keys_hide_the_id_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = MessageId([7; 16]);
        let keys = LeakKeys::open(dir.path(), 7 * 86_400, 100 * DAY_MS).unwrap();
        let key = keys.current(&id);
        assert_ne!(key, id);
        assert_ne!(key, keys.current(&MessageId([8; 16])));
        let path = dir.path().join(KEYS_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(keys);
        let again = LeakKeys::open(dir.path(), 7 * 86_400, 100 * DAY_MS + 1).unwrap();
        assert_eq!(again.current(&id), key, "the same secret after a restart");
        // Another exit (another secret) derives another key.
        let other = tempfile::tempdir().unwrap();
        let other = LeakKeys::open(other.path(), 7 * 86_400, 100 * DAY_MS).unwrap();
        assert_ne!(other.current(&id), key);
    }

    /// A key made in one period is still found in the next (as the
    /// previous), and in none after: its secret is gone from the disk.
    #[test]
    fn secrets_rotate_and_old_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let id = MessageId([1; 16]);
        let week = 7 * DAY_MS;
        let keys = LeakKeys::open(dir.path(), 7 * 86_400, 10 * week).unwrap();
        let first = keys.current(&id);
        let secret = keys.lock().current;
        keys.rotate(10 * week + week / 2).unwrap();
        assert_eq!(keys.current(&id), first, "same period");
        keys.rotate(11 * week).unwrap();
        assert_ne!(keys.current(&id), first);
        assert_eq!(keys.candidates(&id), vec![keys.current(&id), first]);
        keys.rotate(12 * week).unwrap();
        assert!(!keys.candidates(&id).contains(&first));
        let on_disk = std::fs::read(dir.path().join(KEYS_FILE)).unwrap();
        assert!(
            !on_disk.windows(32).any(|w| w == secret),
            "the first secret is overwritten"
        );
        // A long stop: nothing of before is kept.
        keys.rotate(20 * week).unwrap();
        assert_eq!(keys.candidates(&id).len(), 1);
        let reopened = LeakKeys::open(dir.path(), 7 * 86_400, 20 * week).unwrap();
        assert_eq!(reopened.candidates(&id), keys.candidates(&id));
    }
}
