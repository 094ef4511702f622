//! Ports for the test servers, reserved across test processes.
//!
//! A test mail server listens on 127.0.0.1 on a port of its own in
//! [`PORT_RANGE`], below the kernel's ephemeral range so that no socket
//! bound to port 0 (nor any outgoing connection) can take it. Ports are
//! reserved across processes with a lock file per port, held while the
//! server lives: Postfix's `master` listens with `SO_REUSEPORT`, so two
//! instances on one port would both start and share its connections
//! without any error. [`free_port`] is the weaker kind, for a `leak-node`
//! that must be told its port before it binds.

use std::{
    fs::{self, File, OpenOptions},
    net::TcpListener,
    ops::Range,
};

/// The ports test mail servers listen on: below Linux's ephemeral range
/// (32768–60999), so that nothing that binds port 0 collides with them.
pub const PORT_RANGE: Range<u16> = 20_000..32_000;

/// A port of [`PORT_RANGE`] reserved for this process until dropped.
#[derive(Debug)]
pub(crate) struct PortReservation {
    /// The port.
    pub(crate) port: u16,
    /// Holds an exclusive lock on `<tmp>/leak-tests-ports/<port>.lock`; the
    /// kernel releases it when the process ends, however it ends.
    _lock: File,
}

impl PortReservation {
    /// A free port no other test process holds.
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join("leak-tests-ports");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        for _ in 0..1000 {
            let port = rand::random_range(PORT_RANGE);
            let path = dir.join(format!("{port}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if lock.try_lock().is_err() {
                continue; // another test process has it
            }
            // Something else (not one of these servers) may listen there.
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            return Self { port, _lock: lock };
        }
        panic!("no free port in {PORT_RANGE:?} after 1000 tries");
    }
}

/// Whether something listens on 127.0.0.1:`port` (from `/proc/net/tcp`,
/// without connecting).
pub(crate) fn listening(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
        })
}

/// A port that was free a moment ago on 127.0.0.1 (another process may take
/// it before it is used: prefer port 0 where the caller can learn the port).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}
