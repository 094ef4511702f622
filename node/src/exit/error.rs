//! What can go wrong in the exit, typed.
//!
//! A failed *delivery* is not an error here: it is an
//! [`Attempt`](super::smtp::Attempt), classified and retried. These are the
//! exit's own failures: a setting that is wrong (the exit does not start),
//! its storage failing (the leak at hand is retried, see [`super::retry`]),
//! an operator's request that names nothing.

use std::net::SocketAddr;

/// An error of the exit role.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// A setting is wrong: the exit does not start.
    #[error("{setting}: {reason}")]
    Setting {
        /// The setting, as the configuration file names it.
        setting: &'static str,
        /// What is wrong with it (in the message: it is shown alone).
        reason: String,
    },
    /// A file a setting names cannot be read.
    #[error("cannot read {setting} {path}: {source}")]
    Read {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The endpoint's address cannot be bound.
    #[error("cannot listen on exit.http_listen {addr} (port taken?): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The exit's files (its queue directory, the spool, the operator's
    /// socket) cannot be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exit's tables in the node's database.
    #[error("the exit's database: {0}")]
    Database(#[from] redb::Error),
    /// A record in the exit's tables does not encode or decode.
    #[error("an exit record does not encode or decode: {0}")]
    Record(#[from] postcard::Error),
    /// A leak is too large for a slot of the spool.
    #[error("a leak of {0} bytes does not fit a spool slot")]
    TooLarge(usize),
    /// The thread committing finished leaks has stopped (the exit is
    /// stopping, or it failed).
    #[error("the exit's commit thread stopped")]
    CommitStopped,
    /// The commit of finished leaks failed (the whole group's).
    #[error("cannot commit finished leaks: {0}")]
    Commit(String),
    /// A blocking task of the exit failed.
    #[error("a blocking task of the exit failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A leak's email cannot be composed (its sender is told `Bounced`).
    #[error("cannot compose the email: {0}")]
    Compose(String),
    /// The operator named a leak that is not queued.
    #[error("no queued leak has the id {0}")]
    NoSuchLeak(String),
    /// The operator's socket spoke something else than the protocol.
    #[error("the exit's admin socket: {0}")]
    Admin(String),
}

impl ExitError {
    /// A wrong setting.
    pub fn setting(setting: &'static str, reason: impl Into<String>) -> Self {
        Self::Setting {
            setting,
            reason: reason.into(),
        }
    }

    /// A file a setting names that cannot be read.
    pub fn read(setting: &'static str, path: &str, source: std::io::Error) -> Self {
        Self::Read {
            setting,
            path: path.to_owned(),
            source,
        }
    }

    /// An I/O failure of the exit's own files.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// redb reports each step (begin, open a table, read, commit) with its own
/// error type; all of them are the database's.
macro_rules! database_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ExitError {
            fn from(e: $t) -> Self {
                Self::Database(e.into())
            }
        }
    )*};
}

database_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// An I/O error without more to say: the exit's files.
impl From<std::io::Error> for ExitError {
    fn from(source: std::io::Error) -> Self {
        Self::io("the exit's files", source)
    }
}
