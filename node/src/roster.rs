//! The roster in force on this node: which signed roster it holds, where
//! new ones come from (its `directory.roster_file`, other nodes'
//! directory answers), and where it keeps the one it adopted.
//!
//! Verification and the directory's rules are pure
//! ([`leak_protocol::roster`], [`leak_protocol::directory::Directory`]);
//! this module adds the bytes to serve and the files.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use leak_net::durable::{self, Access};
use leak_protocol::roster::{self, Roster, RosterError};

use crate::config::Config;

/// The file where the roster in force is kept, so a restarted node has it
/// before it hears from any other.
pub const ADOPTED_FILE: &str = "roster.signed";

/// The signed roster in force and what a new one must pass.
pub struct RosterState {
    trusted: Vec<[u8; 32]>,
    threshold: usize,
    max_clock_skew_secs: u64,
    file: Option<PathBuf>,
    adopted_path: PathBuf,
    /// The serial and signed bytes of the roster in force.
    held: RwLock<Option<(u64, Arc<Vec<u8>>)>>,
    /// The configured file's modification time and length when last read.
    file_seen: Mutex<Option<(SystemTime, u64)>>,
}

impl RosterState {
    /// The authorities of `config` (validated by `Config::validate`).
    pub fn new(config: &Config) -> Result<Self, RosterError> {
        let trusted = leak_protocol::policy::parse_public_keys(&config.directory.authorities)
            .map_err(|e| RosterError::Invalid(format!("directory.authorities: {e}")))?;
        let file = config.directory.roster_file.trim();
        Ok(Self {
            trusted,
            threshold: config.directory.authority_threshold,
            max_clock_skew_secs: config.directory.max_clock_skew_secs,
            file: (!file.is_empty()).then(|| PathBuf::from(file)),
            adopted_path: config.node.data_dir.join(ADOPTED_FILE),
            held: RwLock::new(None),
            file_seen: Mutex::new(None),
        })
    }

    /// Verifies a signed roster at `now`: enough trusted signatures first,
    /// then its text and time.
    pub fn verify(&self, bytes: &[u8], now: u64) -> Result<Roster, RosterError> {
        roster::verify_signed(
            bytes,
            &self.trusted,
            self.threshold,
            now,
            self.max_clock_skew_secs,
        )
    }

    /// The serial of the roster in force (0: none).
    pub fn serial(&self) -> u64 {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |(s, _)| *s)
    }

    /// The signed roster in force, to serve.
    pub fn signed(&self) -> Option<Arc<Vec<u8>>> {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, b)| b.clone())
    }

    /// Whether `bytes` are the roster in force (a replay costs no
    /// signature check).
    pub fn is_held(&self, bytes: &[u8]) -> bool {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(_, b)| b.as_slice() == bytes)
    }

    /// Records `bytes` (of `serial`) as the roster in force and keeps it on
    /// disk. The caller has adopted it in the directory.
    pub fn hold(&self, serial: u64, bytes: &[u8]) {
        *self.held.write().unwrap_or_else(|e| e.into_inner()) =
            Some((serial, Arc::new(bytes.to_vec())));
        if let Err(e) = durable::write(&self.adopted_path, bytes, Access::Shared) {
            tracing::warn!(error = %e, "cannot keep the roster on disk");
        }
    }

    /// Forgets the roster in force (it expired).
    pub fn drop_held(&self) {
        *self.held.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The rosters found on disk at start: the one adopted earlier, then
    /// the configured file.
    pub fn on_disk(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = std::fs::read(&self.adopted_path).into_iter().collect();
        out.extend(self.changed_file());
        out
    }

    /// The configured roster file's bytes, if it changed since last read
    /// (or was never read).
    pub fn changed_file(&self) -> Option<Vec<u8>> {
        let path = self.file.as_deref()?;
        let stamp = file_stamp(path)?;
        let mut seen = self.file_seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == Some(stamp) {
            return None;
        }
        match std::fs::read(path) {
            Ok(bytes) => {
                *seen = Some(stamp);
                Some(bytes)
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read directory.roster_file");
                None
            }
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
