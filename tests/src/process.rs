//! `leak-node` as a separate process: find the binary, run `init`, start
//! `run`, read what it prints, scrape its metrics, and make sure it is gone
//! when the test ends, however it ends.

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

pub use crate::ports::free_port;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The environment variable that names the `leak-node` binary to test.
pub const LEAK_NODE_BIN: &str = "LEAK_NODE_BIN";

/// How long a node gets to exit after SIGTERM before it is killed.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// The `leak-node` binary: `$LEAK_NODE_BIN` if set, else `leak-node` in the
/// target directory of the running executable (a test in
/// `target/<profile>/deps/` or an example in `target/<profile>/examples/`).
///
/// Panics with instructions when it does not exist: Cargo builds another
/// package's binaries for its own integration tests only, so run
/// `cargo build -p leak-node --bins` (with `--release` for a release test)
/// first.
pub fn leak_node_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(LEAK_NODE_BIN) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{LEAK_NODE_BIN}={} is not a file: point it at a leak-node binary or unset it",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the path of the running executable");
    // target/<profile>/deps/NAME-HASH or target/<profile>/examples/NAME
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the executable lives in target/<profile>/<dir>/");
    let bin = profile_dir.join(format!("leak-node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the leak-node binary is missing: {} does not exist.\n\
         Build it first with `cargo build -p leak-node --bins` (add --release for a \
         release run), or set {LEAK_NODE_BIN} to a leak-node binary.",
        bin.display()
    );
    bin
}

/// A `leak-node` command with a clean environment: no inherited `LEAK_*`
/// variables (they would override the config under test) and no colours.
pub fn leak_node_command() -> Command {
    leak_node_command_on(None)
}

/// As [`leak_node_command`], run on `cpu` only (`taskset -c CPU leak-node`,
/// so every thread it starts is pinned) when one is given.
pub fn leak_node_command_on(cpu: Option<usize>) -> Command {
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &cpu.to_string()]).arg(leak_node_bin());
            taskset
        }
        None => Command::new(leak_node_bin()),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEAK_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// Runs `leak-node init --data-dir DIR ARGS...` and returns the path of the
/// config it wrote. Panics with its output if it fails.
///
/// Unless `args` name an `--authority`, the node trusts the test
/// federation's authority and the roster file beside its data directory,
/// and is admitted to that roster (see [`crate::roster`]).
pub fn init_node(data_dir: &Path, args: &[&str]) -> PathBuf {
    let own_authority = args.contains(&"--authority");
    let roster = crate::roster::roster_file_beside(data_dir);
    let authority = crate::roster::test_authority();
    let mut command = leak_node_command();
    command
        .arg("init")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    if !own_authority {
        command
            .args(["--authority", &authority, "--roster"])
            .arg(&roster);
    }
    let output = command.output().expect("running leak-node init");
    assert!(
        output.status.success(),
        "leak-node init failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map_or_else(|| data_dir.join("leak-node.toml"), |w| PathBuf::from(w[1]));
    if !own_authority {
        let config = leak_node::Config::load(&config_path, &[]).expect("the config init wrote");
        let identity =
            leak_node::Identity::load(&config.identity_path()).expect("the identity init wrote");
        crate::roster::admit_config(&config, identity.node_id());
    }
    config_path
}

/// Lines a child printed, filled by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn spawn_reader(source: impl Read + Send + 'static) -> Arc<Self> {
        let lines = Arc::new(Self::default());
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(source);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        let mut guard = sink.lines.lock().unwrap_or_else(|e| e.into_inner());
                        guard.0.push(line);
                        sink.changed.notify_all();
                    }
                }
            }
            let mut guard = sink.lines.lock().unwrap_or_else(|e| e.into_inner());
            guard.1 = true;
            sink.changed.notify_all();
        });
        lines
    }

    fn text(&self) -> String {
        let guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.join("\n")
    }

    /// Waits for a line starting with `prefix`; `None` at end of output or
    /// timeout.
    fn wait_for(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(line) = guard.0.iter().find(|l| l.starts_with(prefix)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Waits until the stream ended (the child closed it), up to `timeout`.
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        while !guard.1 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// What a started node printed about itself.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Its listen addresses, each with the `/p2p/PEERID` suffix.
    pub listen: Vec<Multiaddr>,
    /// Its metrics endpoint, if enabled.
    pub metrics: Option<SocketAddr>,
}

impl Started {
    /// The first listen address, dialable (with `/p2p/`).
    pub fn dial_addr(&self) -> Multiaddr {
        self.listen.first().cloned().expect("a listen address")
    }

    /// The listen addresses without the `/p2p/` suffix (for an address book).
    pub fn transport_addrs(&self) -> Vec<Multiaddr> {
        self.listen
            .iter()
            .map(|a| {
                a.iter()
                    .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                    .collect()
            })
            .collect()
    }

    /// The metrics endpoint; panics if metrics are disabled.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.expect("the node was started with metrics")
    }
}

/// A `leak-node` child process. Dropping it sends SIGTERM, waits up to
/// [`TERM_GRACE`], then sends SIGKILL and reaps it: no node outlives its
/// test, even one that panics.
pub struct NodeProcess {
    child: Option<Child>,
    pid: u32,
    status: Option<ExitStatus>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    name: String,
}

impl NodeProcess {
    /// Spawns `command` (see [`leak_node_command`]) with stdout and stderr
    /// captured. `name` labels it in messages.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = Lines::spawn_reader(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::spawn_reader(child.stderr.take().expect("piped stderr"));
        Self {
            pid: child.id(),
            child: Some(child),
            status: None,
            stdout,
            stderr,
            name: name.to_owned(),
        }
    }

    /// Starts `leak-node run --config CONFIG ARGS...` with extra environment
    /// variables `envs`.
    pub fn run(name: &str, config: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = leak_node_command();
        command.arg("run").arg("--config").arg(config).args(args);
        for (key, value) in envs {
            command.env(key, value);
        }
        Self::spawn(name, command)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    fn describe(&self) -> String {
        format!(
            "{} (pid {}), stdout:\n{}\nstderr:\n{}",
            self.name,
            self.pid,
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits for a stdout line starting with `prefix`; panics with the
    /// node's output if it does not come within `timeout`.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        match self.stdout.wait_for(prefix, timeout) {
            Some(line) => line,
            None => {
                let exited = self.try_status();
                panic!(
                    "no {prefix:?} line from {} within {timeout:?} (exit status: {exited:?})",
                    self.describe()
                )
            }
        }
    }

    /// Waits until the node has printed its peer id, its listen addresses
    /// and, if `metrics`, its metrics address.
    pub fn wait_started(&mut self, metrics: bool, timeout: Duration) -> Started {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let peer = self.wait_for_line("peer id: ", left());
        let peer_id: PeerId = peer["peer id: ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad peer id line {peer:?}: {e}"));
        self.wait_for_line("listening: ", left());
        let metrics = metrics.then(|| {
            let line = self.wait_for_line("metrics: ", left());
            line.trim_start_matches("metrics: http://")
                .trim_end_matches("/metrics")
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("bad metrics line {line:?}: {e}"))
        });
        // Every listening line comes before the metrics line, after the peer id.
        let listen = self
            .stdout()
            .lines()
            .filter_map(|l| l.strip_prefix("listening: "))
            .map(|a| {
                a.trim()
                    .parse::<Multiaddr>()
                    .unwrap_or_else(|e| panic!("bad listening line {a:?}: {e}"))
            })
            .collect();
        Started {
            peer_id,
            listen,
            metrics,
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                // Let the readers collect the last lines.
                self.stdout.wait_closed(Duration::from_secs(2));
                self.stderr.wait_closed(Duration::from_secs(2));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to fail by itself, and returns
    /// its stderr; panics if it keeps running or exits with status 0.
    pub fn expect_failure(&mut self, timeout: Duration) -> String {
        let Some(status) = self.wait_exit(timeout) else {
            panic!(
                "{} should have exited with an error within {timeout:?}; it is still running. {}",
                self.name,
                self.describe()
            );
        };
        assert!(
            !status.success(),
            "{} should have failed but exited with {status}. {}",
            self.name,
            self.describe()
        );
        self.stderr()
    }

    /// Sends `signal` (unless the process is gone already).
    pub fn signal(&mut self, signal: Signal) {
        if self.try_status().is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; then SIGKILL.
    /// Returns the exit status and whether SIGKILL was needed.
    pub fn terminate(&mut self, grace: Duration) -> (ExitStatus, bool) {
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            return (status, false);
        }
        self.signal(Signal::SIGKILL);
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.wait().ok())
            .expect("reaping a killed child");
        self.status = Some(status);
        (status, true)
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within
    /// [`TERM_GRACE`].
    pub fn stop_cleanly(&mut self) {
        let (status, killed) = self.terminate(TERM_GRACE);
        assert!(
            !killed,
            "{} ignored SIGTERM for {TERM_GRACE:?} and was killed. {}",
            self.name,
            self.describe()
        );
        assert!(
            status.success(),
            "{} did not shut down cleanly on SIGTERM: {status}. {}",
            self.name,
            self.describe()
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.terminate(TERM_GRACE);
        }
        // Reap in every case (a no-op when already reaped).
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// `GET /metrics` from a node's metrics endpoint: the body, or an error.
pub fn scrape_metrics(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "metrics answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_owned())
}

/// The sum of every sample of metric `name` (a counter's `_total`, a
/// gauge) whose labels contain `label` (e.g. `reason="replay"`), if any.
pub fn metric(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && label.is_none_or(|want| labels.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// User + system CPU seconds of process `pid` (every thread).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses; utime and
    // stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// Peak resident set size of process `pid` (`VmHWM`), MiB; 0 when unknown.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A `leak-node` process started by [`start_node`], with what it printed.
pub struct RunningProcess {
    /// The process.
    pub process: NodeProcess,
    /// Its peer id and addresses.
    pub started: Started,
}

/// Initialises and starts node `name` in `dir/name`: loopback, any port,
/// its own family, `bootstrap` if given, metrics on a free loopback port if
/// `metrics`; `init_args` go to `leak-node init`, `run_args` to `run`.
pub fn start_node(
    dir: &Path,
    name: &str,
    bootstrap: Option<&Multiaddr>,
    metrics: bool,
    init_args: &[&str],
    run_args: &[&str],
) -> RunningProcess {
    let data = dir.join(name);
    let bootstrap = bootstrap.map(ToString::to_string);
    let mut args = vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--metrics",
        if metrics { "127.0.0.1:0" } else { "" },
        "--family",
        name,
    ];
    if let Some(b) = &bootstrap {
        args.extend(["--bootstrap", b.as_str()]);
    }
    args.extend(init_args);
    let config = init_node(&data, &args);
    let mut process = NodeProcess::run(name, &config, run_args, &[]);
    let started = process.wait_started(metrics, Duration::from_secs(30));
    RunningProcess { process, started }
}

/// What one `leak-node` command left behind (tests of its subcommands).
pub struct Run {
    /// Its exit code.
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// Its stdout; panics unless it succeeded.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Panics unless it exited with code 1 and `reason` on stderr.
    pub fn refused(&self, reason: &str) {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit code 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(reason),
            "expected {reason:?} on stderr, got:\n{}",
            self.stderr
        );
    }
}

/// A temporary directory where `leak-node` commands run, and its files
/// (tests of its subcommands).
pub struct Workdir(tempfile::TempDir);

impl Workdir {
    /// A fresh directory.
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    /// A file in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Runs `leak-node ARGS...` in it.
    pub fn run(&self, args: &[&str]) -> Run {
        leak_node_in(self.0.path(), args)
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `leak-node ARGS...` in `dir` and waits for it.
pub fn leak_node_in(dir: &Path, args: &[&str]) -> Run {
    let output = leak_node_command()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running leak-node");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Resident memory of process `pid` now (`VmRSS`), MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
