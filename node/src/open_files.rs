//! The open-files limit a node needs for its connection cap.
//!
//! Every connection is a socket, and a socket is an open file. Linux gives
//! a service 1,024 open files unless told otherwise (systemd's soft
//! `LimitNOFILE`), fewer than `limits.max_connections` may need; past the
//! limit, accepting or dialling fails. The soft limit may be raised up to
//! the hard one without privileges, so `leak-node run` does so at start,
//! as far as the connection cap needs, and says so when the hard limit is
//! too low.

/// Files beside the connections: databases, listeners, the runtime's
/// event descriptors, the metrics and exit endpoints' connections.
pub const SPARE_FILES: u64 = 256;

/// The open files `max_connections` connections need.
pub fn needed(max_connections: u32) -> u64 {
    u64::from(max_connections) + SPARE_FILES
}

/// The soft limit to set, given the current `soft` and `hard` limits:
/// `None` when `soft` already suffices, else what is needed, at most
/// `hard`.
pub fn raised_soft_limit(soft: u64, hard: u64, needed: u64) -> Option<u64> {
    (soft < needed && soft < hard).then(|| needed.min(hard))
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
    /// What the connection cap needs.
    pub needed: u64,
}

/// Raises this process's soft open-files limit towards what
/// `max_connections` needs (never lowers it, never past the hard limit).
pub fn ensure(max_connections: u32) -> std::io::Result<OpenFiles> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = needed(max_connections);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    let now = match raised_soft_limit(soft, hard, needed) {
        Some(raised) => {
            setrlimit(Resource::RLIMIT_NOFILE, raised, hard).map_err(std::io::Error::from)?;
            raised
        }
        None => soft,
    };
    Ok(OpenFiles {
        was: soft,
        now,
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_what_the_cap_needs_within_the_hard_limit() {
        let need = needed(1024);
        assert_eq!(need, 1280);
        assert_eq!(raised_soft_limit(1024, 524_288, need), Some(1280));
        assert_eq!(
            raised_soft_limit(1024, 1100, need),
            Some(1100),
            "capped by hard"
        );
        assert_eq!(
            raised_soft_limit(20_000, 20_000, need),
            None,
            "enough already"
        );
        assert_eq!(raised_soft_limit(1024, 1024, need), None, "nothing to gain");
        assert_eq!(raised_soft_limit(1280, 4096, need), None);
    }

    #[test]
    fn ensure_never_lowers_the_limit() {
        let before = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let found = ensure(1).expect("ensure");
        assert_eq!(found.was, before.0);
        assert_eq!(found.now, before.0, "a cap of one connection needs no more");
    }
}
