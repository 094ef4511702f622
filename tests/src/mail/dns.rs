//! A private DNS server for tests: dnsmasq on 127.0.0.1 on a port of its
//! own, answering MX and TXT queries from a fixed table and nothing else
//! (no upstream, no /etc/hosts). Debian's `dnsmasq-base`.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::ports::{PortReservation, listening};

/// A running dnsmasq; dropping it stops it.
pub struct Dnsmasq {
    port: PortReservation,
    child: Child,
}

impl Dnsmasq {
    /// Answers `MX` for each `(domain, host)` (preference 10); panics if it
    /// does not come up.
    pub fn start(mx: &[(&str, &str)]) -> Self {
        Self::start_with(mx, &[])
    }

    /// Answers `MX` as [`Dnsmasq::start`] does, and `TXT` for each `(name,
    /// text)` (one string: at most 255 bytes, no comma).
    pub fn start_with(mx: &[(&str, &str)], txt: &[(&str, &str)]) -> Self {
        let program = std::path::Path::new("/usr/sbin/dnsmasq");
        assert!(
            program.is_file(),
            "/usr/sbin/dnsmasq not found: install Debian's dnsmasq-base (scripts/test.sh does)"
        );
        let port = PortReservation::new();
        let mut command = Command::new(program);
        command
            .arg("--keep-in-foreground")
            .arg(format!("--port={}", port.port))
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--pid-file",
                "--user=root",
                "--conf-file=/dev/null",
            ]);
        for (domain, host) in mx {
            command.arg(format!("--mx-host={domain},{host},10"));
        }
        for (name, text) in txt {
            assert!(text.len() <= 255 && !text.contains(','), "{text}");
            command.arg(format!("--txt-record={name},{text}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting dnsmasq: {e}"));
        let dns = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(dns.port.port) {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }

    /// `127.0.0.1:PORT`, for `exit.dns_resolver`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
