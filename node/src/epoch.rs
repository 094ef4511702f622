//! Mix-key epochs on a fixed UTC schedule.
//!
//! Epoch `e` runs from `e × period` to `(e + 1) × period` seconds after the
//! Unix epoch. A node keeps the secret of the previous and the current epoch
//! (accepting packets under both) and of `keys_ahead` future epochs (published
//! so clients can build packets that arrive after a rotation). Older secrets
//! are deleted from memory and disk, with their replay tags: that is what
//! gives forward secrecy.

use std::collections::BTreeMap;

use leak_protocol::{MixSecret, directory::EpochKey, federation};

use crate::store::{Store, StoreError};

/// The schedule: seconds per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSchedule {
    period_secs: u64,
}

impl EpochSchedule {
    /// A schedule of `period_secs` (at least 1) seconds per epoch.
    pub fn new(period_secs: u64) -> Self {
        Self {
            period_secs: period_secs.max(1),
        }
    }

    /// Seconds per epoch.
    pub fn period_secs(self) -> u64 {
        self.period_secs
    }

    /// The epoch at Unix time `unix_secs`.
    pub fn epoch_at(self, unix_secs: u64) -> u64 {
        unix_secs / self.period_secs
    }

    /// When `epoch` starts, in Unix seconds.
    pub fn start_of(self, epoch: u64) -> u64 {
        epoch.saturating_mul(self.period_secs)
    }
}

/// The node's mix secrets by epoch, mirrored in the [`Store`].
pub struct KeyRing {
    schedule: EpochSchedule,
    keys_ahead: u32,
    keys: BTreeMap<u64, MixSecret>,
}

/// What [`KeyRing::rotate`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Epochs whose keys were generated.
    pub created: Vec<u64>,
    /// Epochs whose keys (and replay tags) were deleted.
    pub deleted: Vec<u64>,
}

impl KeyRing {
    /// Loads the stored keys.
    pub fn load(
        store: &Store,
        schedule: EpochSchedule,
        keys_ahead: u32,
    ) -> Result<Self, StoreError> {
        let keys = store
            .mix_keys()?
            .into_iter()
            .map(|(epoch, secret)| (epoch, MixSecret::from_bytes(*secret)))
            .collect();
        Ok(Self {
            schedule,
            keys_ahead,
            keys,
        })
    }

    /// Brings the ring to `now`: generates missing keys for the current and
    /// the future epochs (stored before use), deletes keys older than the
    /// previous epoch, with their replay tags.
    pub fn rotate<R: rand::CryptoRng + ?Sized>(
        &mut self,
        store: &Store,
        now_unix: u64,
        rng: &mut R,
    ) -> Result<Rotation, StoreError> {
        let current = self.schedule.epoch_at(now_unix);
        let mut rotation = Rotation::default();
        for epoch in current..=current + u64::from(self.keys_ahead) {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.keys.entry(epoch) {
                let secret = MixSecret::generate(rng);
                // Durable before it can be published or used.
                store.put_mix_key(epoch, &secret.to_bytes())?;
                slot.insert(secret);
                rotation.created.push(epoch);
            }
        }
        let oldest_kept = current.saturating_sub(1);
        rotation.deleted = store.delete_epochs_before(oldest_kept)?;
        self.keys.retain(|&epoch, _| epoch >= oldest_kept);
        Ok(rotation)
    }

    /// The secret to process a packet with the given key hint at `now`: the
    /// current or the previous epoch whose number ends in that byte.
    pub fn secret_for_hint(&self, hint: u8, now_unix: u64) -> Option<(u64, &MixSecret)> {
        let current = self.schedule.epoch_at(now_unix);
        [current, current.saturating_sub(1)]
            .into_iter()
            .filter(|epoch| federation::epoch_key_hint(*epoch) == hint)
            .find_map(|epoch| self.keys.get(&epoch).map(|k| (epoch, k)))
    }

    /// The public keys to publish: current and future epochs.
    pub fn published_keys(&self, now_unix: u64) -> Vec<EpochKey> {
        let current = self.schedule.epoch_at(now_unix);
        self.keys
            .range(current..)
            .map(|(&epoch, secret)| EpochKey {
                epoch,
                key: secret.public(),
            })
            .collect()
    }

    /// Epochs held, oldest first.
    pub fn epochs(&self) -> Vec<u64> {
        self.keys.keys().copied().collect()
    }

    /// The schedule.
    pub fn schedule(&self) -> EpochSchedule {
        self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_previous_current_and_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let schedule = EpochSchedule::new(10);
        let mut ring = KeyRing::load(&store, schedule, 1).unwrap();
        let mut rng = rand::rng();
        let r = ring.rotate(&store, 100, &mut rng).unwrap();
        assert_eq!(r.created, vec![10, 11]);
        assert_eq!(ring.epochs(), vec![10, 11]);
        ring.rotate(&store, 110, &mut rng).unwrap();
        assert_eq!(ring.epochs(), vec![10, 11, 12]);
        let r = ring.rotate(&store, 125, &mut rng).unwrap();
        assert_eq!(r.deleted, vec![10]);
        assert_eq!(ring.epochs(), vec![11, 12, 13]);
        // Persisted: a reload sees the same keys.
        let reloaded = KeyRing::load(&store, schedule, 1).unwrap();
        assert_eq!(reloaded.epochs(), vec![11, 12, 13]);
        assert_eq!(
            reloaded
                .secret_for_hint(11, 125)
                .map(|(e, k)| (e, k.public())),
            ring.secret_for_hint(11, 125).map(|(e, k)| (e, k.public()))
        );
        // Current (12) and previous (11) are accepted; the future (13) is not.
        assert_eq!(ring.secret_for_hint(12, 125).map(|(e, _)| e), Some(12));
        assert_eq!(ring.secret_for_hint(11, 125).map(|(e, _)| e), Some(11));
        assert_eq!(ring.secret_for_hint(13, 125).map(|(e, _)| e), None);
        assert_eq!(ring.secret_for_hint(10, 125).map(|(e, _)| e), None);
        let published: Vec<u64> = ring.published_keys(125).iter().map(|k| k.epoch).collect();
        assert_eq!(published, vec![12, 13]);
    }
}
