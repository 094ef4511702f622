//! The running agent: one task that owns every piece of state and reacts
//! to four kinds of events (its Poisson clocks, a command on the socket, a
//! finished network operation, a fresh directory), and small spawned tasks
//! that do the network work and report back. Only this task writes the
//! state directory, so no two writers ever race on a leak's files.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::PermissionsExt as _,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use leak_net::{MailboxLink, PacketLink, Peer, peer_id_of};
use leak_protocol::{
    MessageId, NodeId, Packet, Recipient, Relationship,
    payload::validate_text,
    policy::{self, Policy, Verdict},
};
use libp2p::PeerId;
use rand::RngExt as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use zeroize::Zeroizing;

use crate::{
    agent::{
        anonymity,
        fetch::{PendingFetches, next_fetch_ms},
        guard::{Guard, Replace},
        ipc::{self, AgentStatus, Counters, ErrorKind, LeakProgress, Queued, Request, Response},
        outbox::{Outbox, OutboxEntry, OutboxError, OutboxSecret},
        outbox_key::{self, KeyPlace, OutboxKey},
        traffic::{self, Context, LeakInput, Opened, PendingLeaks, PendingLoops},
        ui,
    },
    config::{AgentConfig, Config},
    cover::{CoverConfig, Schedule, Slot},
    directory::{self, DirectoryView},
    estimate::{Estimate, Observed},
    path::{self, MAX_HOPS, MIN_HOPS},
    send::unix_ms,
    state::{
        AttemptRecord, AttemptSecrets, ExitRecord, Finished, LeakRecord, StateDir, UnknownLeak,
        new_label, redact_recipient,
    },
    threads::{ThreadRecord, Threads},
};

/// Consecutive failed sends and polls after which the guard counts as
/// unreachable and is replaced.
const GUARD_MAX_FAILURES: u32 = 30;
/// How long a network operation may take before it counts as failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How soon a failed directory fetch is tried again, at first; each
/// failure in a row doubles it, up to [`DIRECTORY_RETRY_MAX_MS`].
const DIRECTORY_RETRY_MS: u64 = 10_000;
/// The longest wait between failed directory fetches.
const DIRECTORY_RETRY_MAX_MS: u64 = 600_000;

/// When to try the directory again after `failures` failed fetches in a
/// row (1 or more): [`DIRECTORY_RETRY_MS`] doubled per failure, at most
/// [`DIRECTORY_RETRY_MAX_MS`], times a random factor between 0.5 and 1.5.
/// Agents that all started at once against a busy bootstrap node spread
/// out instead of asking together every ten seconds.
fn directory_retry_ms(failures: u32, rng: &mut impl rand::Rng) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    let base = (DIRECTORY_RETRY_MS << doublings).min(DIRECTORY_RETRY_MAX_MS);
    let factor: f64 = rng.random_range(0.5..1.5);
    (base as f64 * factor) as u64
}
/// The p99.9 of a round trip over `hops` hops each way, in units of the
/// mean per-hop delay: `2 hops + 1` exponential delays (the way out, the
/// exit's receipt hold, the way back), an Erlang(2 hops + 1) whose 0.999
/// quantile is found by bisection of its distribution function (18.06 for
/// three hops, 21.16 for four). A receipt later than this is lost.
fn round_trip_p999_in_mu(hops: usize) -> f64 {
    let k = 2 * hops + 1;
    let cdf = |x: f64| {
        // 1 - e^-x Σ_{i<k} x^i / i!
        let mut term = 1.0;
        let mut sum = 1.0;
        for i in 1..k {
            term *= x / i as f64;
            sum += term;
        }
        1.0 - (-x).exp() * sum
    };
    let (mut lo, mut hi) = (0.0_f64, 200.0_f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) < 0.999 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

mod redirect;

/// Solves a leak's stamp on a blocking thread, so that the agent's task
/// goes on emitting on its schedule meanwhile.
async fn solve_stamp_aside(
    recipient_hash: [u8; 32],
    exit: NodeId,
    epoch: u64,
    bits: u8,
    message_id: MessageId,
) -> Result<leak_protocol::payload::Stamp, String> {
    tokio::task::spawn_blocking(move || {
        policy::solve_stamp(&recipient_hash, &exit, epoch, bits, &message_id)
    })
    .await
    .map_err(|_| "the stamp computation stopped".to_owned())
}

/// Something the agent's task reacts to.
enum Event {
    /// A command on the socket, and where to answer.
    Command(Request, oneshot::Sender<Response>),
    /// A packet was handed to the guard, or not.
    Sent(Sent, bool),
    /// A mailbox poll's entries, or why there are none.
    Polled(Result<Vec<Vec<u8>>, String>),
    /// A directory fetch's result.
    Directory(Result<DirectoryView, String>),
    /// A refused leak's stamp for its responsible exit was solved.
    Restamped(Box<redirect::Restamped>),
    /// A leak's stamp was solved (off this task, so that the Poisson
    /// clocks keep their times while it runs), and where to answer.
    Stamped(
        Box<Accepted>,
        Result<leak_protocol::payload::Stamp, String>,
        oneshot::Sender<Response>,
    ),
}

/// A leak checked and placed (exit, id, release time), awaiting its stamp.
struct Accepted {
    recipient: Recipient,
    relationship: Relationship,
    text: Zeroizing<String>,
    hops: usize,
    created_at_ms: u64,
    exit_node: NodeId,
    exit_peer: PeerId,
    exit_domain: String,
    /// The stamp's difficulty: the policy's, or more if the exit asks it.
    stamp_bits: u8,
    release_at_ms: u64,
    message_id: MessageId,
    /// Its conversation (a new one, or the one it follows up).
    thread: Option<ThreadRecord>,
}

/// Why the agent did not take a leak, and of what kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct NotTaken {
    kind: ErrorKind,
    message: String,
}

fn not_taken(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
    NotTaken {
        kind,
        message: message.into(),
    }
    .into()
}

/// How many ended leaks the agent remembers, in memory only, for
/// [`Request::Progress`] (the summaries on disk keep no message id).
const RECENT_ENDED: usize = 64;

/// The web page's address for `leak ui`, or why there is none.
#[derive(Default)]
pub struct UiInfo {
    /// `http://127.0.0.1:PORT/#token=KEY`.
    pub url: Option<Zeroizing<String>>,
    /// Why there is no page.
    pub note: String,
}

/// What a sent packet was.
enum Sent {
    Cover,
    /// A leak's attempt: its message id (hex).
    Leak(String),
}

/// Runs the agent until `leak agent stop`, SIGTERM or SIGINT. What it
/// holds stays on disk for the next run.
pub async fn run(config: Config, state: StateDir, policy: Policy) -> anyhow::Result<()> {
    let root = state.root().to_path_buf();
    let socket = ipc::socket_path(&root);
    if ipc::running(&root) {
        anyhow::bail!(
            "an agent already runs for {} (`leak status` shows it)",
            root.display()
        );
    }
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", socket.display())),
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", socket.display()))?;
    let mut agent = Agent::new(config, state, policy)?;
    let page = agent.start_page().await;
    let result = agent.serve(listener).await;
    if let Some(page) = page {
        page.abort();
    }
    // `leak ui`'s forwarding file holds this run's key, now void.
    let _ = std::fs::remove_file(root.join("ui-open.html"));
    let _ = std::fs::remove_file(&socket);
    result
}

struct Agent {
    config: Config,
    state: StateDir,
    outbox: Outbox,
    policy: Policy,
    peer: Arc<Peer>,
    /// The long-lived packet stream to the guard (replaced when the guard
    /// changes).
    link: Option<Arc<PacketLink>>,
    /// The long-lived mailbox stream to the guard, likewise.
    mailbox_link: Option<Arc<MailboxLink>>,
    directory: Option<DirectoryView>,
    next_directory_ms: u64,
    guard: Option<Guard>,
    guard_failures: u32,
    /// Directory fetches that failed in a row.
    directory_failures: u32,
    /// Leaks refused as `exit.not_responsible`, waiting for their exit.
    redirects: HashMap<String, redirect::Redirect>,
    schedule: Schedule,
    entries: Vec<OutboxEntry>,
    leaks: PendingLeaks,
    loops: PendingLoops,
    /// Conversations, and the fetches of their answers waiting for a reply.
    threads: Threads,
    fetches: PendingFetches,
    in_flight: HashSet<String>,
    polling: bool,
    /// The last trouble logged, so a lasting one is logged once.
    last_warning: Option<String>,
    counters: Counters,
    started_at_ms: u64,
    stopping: bool,
    /// Leaks that ended during this run: message id, how, the exit's
    /// domain (newest last; memory only).
    recent: std::collections::VecDeque<(String, Finished, String)>,
    ui: UiInfo,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
}

fn log(message: impl std::fmt::Display) {
    eprintln!("leak agent: {message}");
}

impl Agent {
    fn new(config: Config, state: StateDir, policy: Policy) -> anyhow::Result<Self> {
        let outbox = Outbox::open(state.root())?.keyed(&outbox_key::default_memory_dirs())?;
        if outbox.key().map(OutboxKey::place) == Some(&KeyPlace::ProcessOnly) {
            log(
                "no memory file system for the outbox key (XDG_RUNTIME_DIR or /dev/shm, tmpfs): \
                 a leak still waiting to leave is lost if the agent restarts",
            );
        }
        let guard = Guard::load(state.root())?;
        let peer = Arc::new(config.network.peer()?);
        let now = unix_ms();
        let schedule = Schedule::new(cover_config(&config), now, &mut rand::rng());
        let (tx, rx) = mpsc::channel(256);
        let threads_root = state.root().to_path_buf();
        let mut agent = Self {
            config,
            state,
            outbox,
            policy,
            peer,
            link: None,
            mailbox_link: None,
            directory: None,
            next_directory_ms: now,
            guard,
            guard_failures: 0,
            directory_failures: 0,
            redirects: HashMap::new(),
            schedule,
            entries: Vec::new(),
            leaks: HashMap::new(),
            loops: PendingLoops::default(),
            threads: Threads::open(&threads_root)?,
            fetches: PendingFetches::default(),
            in_flight: HashSet::new(),
            polling: false,
            last_warning: None,
            counters: Counters::default(),
            started_at_ms: now,
            stopping: false,
            recent: std::collections::VecDeque::new(),
            ui: UiInfo::default(),
            tx,
            rx,
        };
        agent.reload_outbox()?;
        Ok(agent)
    }

    /// Starts the web page (`[ui]`), whose requests reach this task as
    /// commands do. A page that cannot start (its port taken) leaves the
    /// agent running without it: `leak ui` says why.
    async fn start_page(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.config.ui.enabled {
            self.ui.note = "the web page is off (ui.enabled = false in the configuration)".into();
            return None;
        }
        let (commands, mut requests) = mpsc::channel(64);
        let page_config = ui::PageConfig {
            commands,
            policy: self.policy.clone(),
            state_root: self.state.root().to_path_buf(),
            send_interval_ms: self.config.cover.send_interval_ms,
            poll_interval_ms: self.config.cover.poll_interval_ms,
            keep_ended_days: self.config.agent.forget_ended_after_days,
        };
        let page = match self.config.ui.address() {
            Ok(address) => ui::Page::bind(address, page_config).await.map_err(|e| {
                format!(
                    "the web page could not start on {}: {e:#}",
                    self.config.ui.listen
                )
            }),
            Err(e) => Err(format!("{e:#}")),
        };
        let page = match page {
            Ok(page) => page,
            Err(note) => {
                log(&note);
                self.ui.note = note;
                return None;
            }
        };
        self.ui.url = Some(page.url());
        log("the web page is served on loopback: `leak ui` opens it");
        let tx = self.tx.clone();
        Some(tokio::spawn(async move {
            let forward = async move {
                while let Some((request, answer)) = requests.recv().await {
                    if tx.send(Event::Command(request, answer)).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                served = page.serve() => {
                    if let Err(e) = served {
                        log(format!("the web page stopped: {e}"));
                    }
                }
                () = forward => {}
            }
        }))
    }

    /// Reads the outbox and the keys of every attempt of its leaks, as
    /// after a restart. A leak whose text was lost with the machine's
    /// memory ([`OutboxError::Lost`]) ends as [`Finished::Lost`] when it
    /// never left; one that left waits for its receipt but is not sent
    /// again.
    fn reload_outbox(&mut self) -> anyhow::Result<()> {
        let (entries, errors) = self.outbox.list()?;
        for e in errors {
            log(e);
        }
        let mut waiting = Vec::new();
        let mut lost = Vec::new();
        for mut entry in entries {
            let Some(id) = entry.id() else { continue };
            let mut recorded_attempts = 0;
            let keys = match self.state.load(&entry.message_id) {
                // Ended while the agent was away (`leak status` fetched the
                // receipt), or just before it stopped: only the text is
                // left to forget. (A record is stored before its outbox
                // entry, so a missing one means ended.)
                Err(e) if e.is::<UnknownLeak>() => {
                    self.outbox.remove(&entry.message_id)?;
                    continue;
                }
                Ok(record) => {
                    recorded_attempts = record.attempts.len();
                    record
                        .attempts
                        .iter()
                        .filter_map(|a| a.secrets.as_ref()?.reply_keys().ok())
                        .collect()
                }
                Err(_) => Vec::new(),
            };
            if let Err(OutboxError::Lost) = self.outbox.secret(&entry.message_id) {
                // An attempt recorded may have left even if it was not
                // counted as sent (the machine stopped while it left): only
                // a leak with none is surely not sent.
                if recorded_attempts == 0 {
                    lost.push(entry.message_id.clone());
                } else {
                    log(
                        "a sent leak's text was lost when this machine restarted: its receipt may still come; it will not be sent again",
                    );
                    entry.attempts_sent = entry.attempts_sent.max(self.max_attempts());
                    // Parked for another exit: not any more, it waits for
                    // a receipt (or gives up at its time).
                    if entry.redirect_until_ms.take().is_some() {
                        entry.next_at_ms = unix_ms();
                    }
                    self.outbox.update(&entry)?;
                }
            }
            self.leaks.insert(entry.message_id.clone(), (id, keys));
            waiting.push(entry);
        }
        // A record with no attempt and no outbox entry is a leak whose
        // hand-over a crash cut short: `leak send` never heard it was
        // taken, so it is not the agent's to send.
        let (records, _) = self.state.list()?;
        for record in records {
            let held = waiting.iter().any(|e| e.message_id == record.message_id);
            if record.is_pending() && record.attempts.is_empty() && !held {
                self.state.remove(&record.message_id)?;
            }
        }
        self.entries = waiting;
        self.resume_redirects();
        for id in lost {
            log(
                "a leak's text was lost when this machine restarted before it left: it must be sent again",
            );
            self.finish(&id, Finished::Lost)?;
        }
        if !self.entries.is_empty() {
            log(format!(
                "{} leak(s) waiting in the outbox",
                self.entries.len()
            ));
        }
        Ok(())
    }

    async fn serve(mut self, listener: UnixListener) -> anyhow::Result<()> {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot watch SIGTERM")?;
        log("started");
        while !self.stopping {
            let now = unix_ms();
            let wake = self.schedule.next_event_ms().min(self.next_directory_ms);
            let sleep = tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now)));
            tokio::select! {
                () = sleep => self.on_clock(unix_ms()),
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_connection(stream, self.tx.clone()));
                    }
                }
                Some(event) = self.rx.recv() => self.on_event(event).await,
                _ = terminate.recv() => self.stopping = true,
                _ = tokio::signal::ctrl_c() => self.stopping = true,
            }
        }
        let waiting = self.entries.len();
        // Nothing waits: the outbox key goes, so nothing it sealed can
        // ever be read again.
        if let Err(e) = self.outbox.close() {
            log(format!("closing the outbox: {e}"));
        }
        if waiting > 0 {
            log(
                "stopped; the waiting leaks stay in the outbox for the next start (sealed under a key in memory: lost if this machine restarts first)",
            );
        } else {
            log("stopped");
        }
        Ok(())
    }

    fn on_clock(&mut self, now: u64) {
        if now >= self.next_directory_ms {
            self.next_directory_ms = u64::MAX;
            self.fetch_directory(now);
            // As often as the directory: summaries are kept in whole days.
            self.forget_ended(now);
        }
        self.counters.loops_lost += self.loops.expire(now);
        self.give_up_on_expired(now);
        let waiting = self.due_leak(now).is_some();
        match self.schedule.take_send_slot(now, waiting, &mut rand::rng()) {
            Some(Slot::Drop) => self.send_drop(now),
            // A conversation's fetch, when one is due, takes a loop's slot:
            // it is built like one and comes back like one.
            Some(Slot::Loop) if !self.send_fetch(now) => self.send_loop(now),
            Some(Slot::Loop) => {}
            // A leak that cannot be built leaves its slot to a loop.
            Some(Slot::Real) if !self.send_leak(now) => self.send_loop(now),
            Some(Slot::Real) | None => {}
        }
        if self.schedule.take_poll(now, &mut rand::rng()) {
            self.poll();
        }
    }

    /// Deletes the summaries of leaks that ended longer ago than the
    /// configuration keeps them.
    fn forget_ended(&self, now: u64) {
        let keep = self.config.agent.forget_ended_after_days;
        if let Err(e) = self.state.forget_ended(now, keep) {
            log(format!("forgetting ended leaks: {e:#}"));
        }
        if let Err(e) = self
            .threads
            .forget_idle(now, self.config.agent.keep_threads_days)
        {
            log(format!("forgetting idle conversations: {e:#}"));
        }
    }

    fn fetch_directory(&mut self, now: u64) {
        let peer = self.peer.clone();
        let config = self.config.clone();
        let state = self.state.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = directory::load(&peer, &config, &state, now / 1000)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::Directory(result)).await;
        });
    }

    /// The guard's node id, peer id and the mailbox capability, once there
    /// is a guard.
    fn guard_parts(&self) -> Option<(NodeId, PeerId, Zeroizing<[u8; 32]>)> {
        let guard = self.guard.as_ref()?;
        let node = guard.node_id()?;
        Some((node, peer_id_of(&node)?, guard.capability()?))
    }

    /// What the agent observes and the estimate from it, once a node
    /// publishes traffic counts.
    fn estimate(&self) -> Option<(Observed, Estimate)> {
        let observed = anonymity::observe(
            &self.directory.as_ref()?.nodes,
            self.config.cover.send_interval_ms,
            self.config.send.mixing_delay_ms,
            self.config.send.hops,
            self.counters.loops_returned,
            self.counters.loops_lost,
        )?;
        let estimate = anonymity::assess(&observed, self.config.agent.min_anonymity_set);
        Some((observed, estimate))
    }

    /// The per-hop mean delay of new packets: the configured one, longer
    /// when traffic is too low for the minimum anonymity set.
    fn mean_delay_ms(&self) -> u32 {
        let configured = self.config.send.mixing_delay_ms;
        self.estimate()
            .map_or(configured, |(_, e)| e.mean_delay_ms.max(configured))
    }

    fn context(&self, now: u64) -> Option<Context<'_>> {
        let directory = self.directory.as_ref()?;
        let guard = self.guard.as_ref()?;
        Some(Context {
            nodes: &directory.nodes,
            guard: guard.node_id()?,
            mailbox: guard.mailbox()?,
            mean_delay_ms: self.mean_delay_ms(),
            hops: self.config.send.hops,
            now_ms: now,
        })
    }

    /// Logs `message` unless it is the trouble logged last.
    fn warn(&mut self, message: String) {
        if self.last_warning.as_ref() != Some(&message) {
            log(&message);
            self.last_warning = Some(message);
        }
    }

    fn send_drop(&mut self, now: u64) {
        let Some(cx) = self.context(now) else { return };
        match traffic::build_drop(&cx, self.policy.version(), &mut rand::rng()) {
            Ok(packet) => {
                self.counters.drops_sent += 1;
                self.transmit(packet, Sent::Cover);
            }
            Err(e) => self.warn(format!("no drop this slot: {e}")),
        }
    }

    fn send_loop(&mut self, now: u64) {
        let Some(cx) = self.context(now) else { return };
        match traffic::build_loop(&cx, self.policy.version(), &mut rand::rng()) {
            Ok((packet, keys, delays_ms)) => {
                // Given up on once it is clearly late: its delays, the
                // longest receipt hold an exit may add, and room for polls
                // that found the mailbox busy.
                let grace = self.config.cover.poll_interval_ms.saturating_mul(30)
                    + 60_000
                    + u64::from(leak_protocol::federation::MAX_HOP_DELAY_MS);
                let expires = now + delays_ms + grace;
                self.counters.loops_lost += self.loops.push(expires, keys);
                self.counters.loops_sent += 1;
                self.transmit(packet, Sent::Cover);
            }
            Err(e) => self.warn(format!("no loop this slot: {e}")),
        }
    }

    /// Sends a fetch for the first conversation whose fetch is due, if any
    /// (true: the slot is taken). A conversation is fetched until its exit
    /// says it keeps nothing of it.
    fn send_fetch(&mut self, now: u64) -> bool {
        self.fetches.expire(now);
        let due = match self.threads.list() {
            Ok((threads, _)) => threads.into_iter().find(|t| {
                t.state != "gone" && t.next_fetch_ms <= now && !self.fetches.waiting_for(&t.label)
            }),
            Err(e) => {
                self.warn(format!("cannot read the conversations: {e:#}"));
                None
            }
        };
        let Some(mut thread) = due else {
            return false;
        };
        let Some(cx) = self.context(now) else {
            return false;
        };
        let (Some(exit), Ok(capability)) = (thread.exit(), thread.capability()) else {
            return false;
        };
        let built = traffic::build_fetch(&cx, exit, &capability, thread.acked, &mut rand::rng());
        let mean = self
            .config
            .agent
            .fetch_every_secs
            .saturating_mul(thread.backoff());
        thread.next_fetch_ms = next_fetch_ms(now, mean, &mut rand::rng());
        if let Err(e) = self.threads.save(&thread) {
            log(format!("recording a fetch: {e:#}"));
        }
        match built {
            Ok((packet, keys, delays_ms)) => {
                let grace = self.config.cover.poll_interval_ms.saturating_mul(30)
                    + 60_000
                    + u64::from(leak_protocol::federation::MAX_HOP_DELAY_MS);
                self.fetches
                    .push(now + delays_ms + grace, thread.label, keys);
                self.counters.loops_sent += 1;
                self.transmit(packet, Sent::Cover);
                true
            }
            Err(e) => {
                self.warn(format!("a conversation's fetch could not leave: {e}"));
                false
            }
        }
    }

    /// The exit's reply to a fetch: an answer is opened and stored; more
    /// waiting are fetched at the next loop slot.
    fn on_fetch_reply(&mut self, label: &str, reply: &leak_protocol::answers::FetchReply) {
        self.counters.loops_returned += 1;
        let result = (|| -> anyhow::Result<()> {
            let mut thread = self.threads.load(label)?;
            let opened = match &reply.answer {
                Some(sealed) => {
                    let secret = thread.secret()?;
                    // One that does not open is kept as such and
                    // acknowledged: it must not stop the answers after it.
                    let answer = leak_protocol::answers::open_answer(&secret, &sealed.sealed)
                        .unwrap_or_else(|e| {
                            log(format!("an answer does not open: {e}"));
                            leak_protocol::answers::Answer {
                                via: leak_protocol::answers::AnswerVia::Web,
                                received_minute: unix_ms() / 60_000,
                                text: "[an answer came that could not be opened]".into(),
                                dropped_attachments: 0,
                            }
                        });
                    Some((sealed.seq, answer))
                }
                None => None,
            };
            if thread.apply(reply.state, opened, unix_ms()) {
                log("an answer came");
            }
            if reply.waiting > 0 {
                thread.next_fetch_ms = 0;
            }
            self.threads.save(&thread)
        })();
        if let Err(e) = result {
            log(format!("recording an answer: {e:#}"));
        }
    }

    /// The first leak whose next attempt is due and not already leaving.
    fn due_leak(&self, now: u64) -> Option<usize> {
        let max = self.max_attempts();
        self.entries.iter().position(|e| {
            e.next_at_ms <= now && e.attempts_sent < max && !self.in_flight.contains(&e.message_id)
        })
    }

    fn max_attempts(&self) -> u32 {
        1 + self.config.send.retransmissions
    }

    /// Sends the next due leak's attempt in this slot; false when none
    /// could be built (the slot then carries a loop).
    fn send_leak(&mut self, now: u64) -> bool {
        let Some(index) = self.due_leak(now) else {
            return false;
        };
        let entry = self.entries[index].clone();
        match self.build_attempt(&entry, now) {
            Ok(packet) => {
                self.in_flight.insert(entry.message_id.clone());
                self.counters.leaks_sent += 1;
                self.transmit(packet, Sent::Leak(entry.message_id));
                true
            }
            Err(e) => {
                if matches!(e.downcast_ref(), Some(traffic::TrafficError::ExitGone)) {
                    // Its stamp binds it to that exit: wait for the exit to
                    // be listed again rather than trying every slot.
                    let retry = now + self.config.agent.directory_refresh_secs * 1000;
                    if let Some(waiting) = self.entries.get_mut(index) {
                        waiting.next_at_ms = retry;
                        if let Err(e) = self.outbox.update(waiting) {
                            log(format!("cannot update the outbox: {e}"));
                        }
                    }
                    self.warn(
                        "a leak's exit is not in the directory: it waits for the next directory"
                            .to_owned(),
                    );
                } else {
                    self.warn(format!("a leak could not leave in this slot: {e:#}"));
                }
                false
            }
        }
    }

    /// Seals an attempt of `entry` over a fresh route and records it (with
    /// its reply keys) before it leaves: a receipt is never unreadable
    /// because the agent stopped.
    fn build_attempt(&mut self, entry: &OutboxEntry, now: u64) -> anyhow::Result<Packet> {
        let (Some(cx), Some((_, guard_peer, capability))) = (self.context(now), self.guard_parts())
        else {
            anyhow::bail!("no directory or guard yet");
        };
        let secret = self.outbox.secret(&entry.message_id)?;
        let recipient = Recipient::parse(&secret.recipient)?;
        let relationship: Relationship = entry
            .relationship
            .parse()
            .map_err(|e| anyhow::anyhow!("stored relationship: {e}"))?;
        let message_id = entry.id().context("stored message id")?;
        let exit = entry.exit().context("stored exit")?;
        // A conversation forgotten meanwhile (`leak inbox --forget`): the
        // leak leaves without a way to answer rather than not at all.
        let answer_to = entry
            .thread
            .as_ref()
            .and_then(|label| self.threads.load(label).ok())
            .and_then(|t| t.answer_to().ok());
        let (packet, keys, path_delay_ms) = traffic::build_leak(
            &Context {
                hops: entry.hops,
                ..cx
            },
            &LeakInput {
                message_id,
                exit,
                recipient: &recipient,
                relationship,
                text: &secret.text,
                policy_version: entry.policy_version,
                stamp: entry.stamp(),
                answer_to,
            },
            &mut rand::rng(),
        )?;
        let mailbox_addresses = self
            .directory
            .as_ref()
            .and_then(|d| d.nodes.iter().find(|n| n.node == cx.guard))
            .map(|d| d.addresses.clone())
            .unwrap_or_default();
        let mut record = self.state.load(&entry.message_id)?;
        record.attempts.push(AttemptRecord {
            sent_at_ms: now,
            path_delay_ms,
            mailbox_peer: guard_peer.to_string(),
            mailbox_addresses,
            sent: false,
            secrets: Some(AttemptSecrets::new(&capability, &keys)?),
        });
        self.state.save(&record)?;
        if let Some((_, all)) = self.leaks.get_mut(&entry.message_id) {
            all.push(keys);
        }
        Ok(packet)
    }

    fn transmit(&mut self, packet: Packet, what: Sent) {
        let Some((_, guard_peer, _)) = self.guard_parts() else {
            return;
        };
        let link = match &self.link {
            Some(link) if link.peer() == guard_peer => link.clone(),
            _ => {
                let link = Arc::new(self.peer.packet_link(guard_peer));
                self.link = Some(link.clone());
                link
            }
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(OPERATION_TIMEOUT, link.send(&packet)).await;
            let ok = matches!(sent, Ok(Ok(())));
            let _ = tx.send(Event::Sent(what, ok)).await;
        });
    }

    fn poll(&mut self) {
        let Some((_, guard_peer, capability)) = self.guard_parts() else {
            return;
        };
        if self.polling {
            // The last poll has not come back yet: this one would only
            // queue behind it.
            return;
        }
        self.polling = true;
        let link = match &self.mailbox_link {
            Some(link) if link.peer() == guard_peer => link.clone(),
            _ => {
                let link = Arc::new(self.peer.mailbox_link(guard_peer));
                self.mailbox_link = Some(link.clone());
                link
            }
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let fetched = tokio::time::timeout(OPERATION_TIMEOUT, link.fetch(&capability)).await;
            let result = match fetched {
                Ok(Ok(entries)) => Ok(entries),
                Ok(Err(e)) => Err(directory::short_network_error(&e)),
                Err(_) => Err("no answer in time".to_owned()),
            };
            let _ = tx.send(Event::Polled(result)).await;
        });
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Command(request, answer) => self.on_command(&request, answer),
            Event::Stamped(accepted, stamp, answer) => {
                let response = match stamp {
                    Ok(stamp) => self
                        .store(*accepted, stamp)
                        .unwrap_or_else(|e| Response::error(format!("{e:#}"))),
                    Err(e) => Response::error(e),
                };
                let _ = answer.send(response);
            }
            Event::Sent(what, ok) => {
                self.note_guard(ok);
                if let Sent::Leak(id) = what {
                    self.in_flight.remove(&id);
                    if let Err(e) = self.after_attempt(&id, ok) {
                        log(format!("recording an attempt: {e:#}"));
                    }
                }
            }
            Event::Polled(result) => {
                self.polling = false;
                self.counters.polls += 1;
                match result {
                    Ok(entries) => {
                        self.note_guard(true);
                        for entry in entries {
                            self.on_mailbox_entry(&entry);
                        }
                    }
                    Err(e) => {
                        self.note_guard(false);
                        log(format!("mailbox poll failed: {e}"));
                    }
                }
            }
            Event::Directory(result) => {
                self.on_directory(result);
                self.continue_redirects();
            }
            Event::Restamped(restamped) => self.on_restamped(*restamped),
        }
    }

    fn note_guard(&mut self, ok: bool) {
        if ok {
            self.guard_failures = 0;
            return;
        }
        self.counters.failures += 1;
        self.guard_failures += 1;
        if self.guard_failures >= GUARD_MAX_FAILURES {
            log("the guard has not answered for a while: choosing another");
            let avoid = self.guard.as_ref().and_then(Guard::node_id);
            self.choose_guard(avoid);
        }
    }

    fn on_directory(&mut self, result: Result<DirectoryView, String>) {
        let now = unix_ms();
        match result {
            Ok(view) => {
                let fresh = !view.from_cache;
                self.directory_failures = 0;
                self.directory = Some(view);
                self.next_directory_ms = now + self.config.agent.directory_refresh_secs * 1000;
                let replace = match &self.guard {
                    None => true,
                    Some(guard) => {
                        let nodes = self
                            .directory
                            .as_ref()
                            .map_or(&[][..], |d| d.nodes.as_slice());
                        match guard.replace(nodes, fresh, now) {
                            Some(Replace::Expired) => {
                                log("the guard has served 30 days: choosing a new one");
                                true
                            }
                            Some(Replace::LeftDirectory) => {
                                log("the guard left the directory: choosing a new one");
                                true
                            }
                            None => false,
                        }
                    }
                };
                if replace {
                    let avoid = self.guard.as_ref().and_then(Guard::node_id);
                    self.choose_guard(avoid);
                }
            }
            Err(e) => {
                log(format!("no directory: {e}"));
                self.directory_failures = self.directory_failures.saturating_add(1);
                self.next_directory_ms =
                    now + directory_retry_ms(self.directory_failures, &mut rand::rng());
            }
        }
    }

    fn choose_guard(&mut self, avoid: Option<NodeId>) {
        let Some(directory) = &self.directory else {
            return;
        };
        let Some(guard) = Guard::choose(&directory.nodes, avoid, unix_ms(), &mut rand::rng())
        else {
            log("no relay can be the guard yet");
            return;
        };
        if let Err(e) = guard.save(self.state.root()) {
            log(format!("cannot store the guard: {e}"));
            return;
        }
        self.guard = Some(guard);
        self.guard_failures = 0;
        // The loops went to the old mailbox: they will not come back.
        let lost = self.loops.len() as u64;
        self.loops = PendingLoops::default();
        self.counters.loops_lost += lost;
    }

    fn on_mailbox_entry(&mut self, entry: &[u8]) {
        if let Some((label, reply)) = self.fetches.recognise(entry) {
            self.on_fetch_reply(&label, &reply);
            return;
        }
        match traffic::open_entry(&self.leaks, &mut self.loops, entry) {
            Opened::Receipt(id, outcome) => {
                self.counters.receipts += 1;
                log(format!(
                    "a receipt came: {}",
                    crate::state::outcome_name(&outcome)
                ));
                if self.redirect_on_refusal(&id, &outcome) {
                    return;
                }
                if let Err(e) = self.finish(&id, Finished::Receipt { receipt: outcome }) {
                    log(format!("recording a receipt: {e:#}"));
                }
            }
            Opened::Loop => self.counters.loops_returned += 1,
            Opened::Nothing => {}
        }
    }

    /// Ends a leak (its record becomes the summary `leak status` shows),
    /// then forgets its text.
    fn finish(&mut self, id: &str, result: Finished) -> anyhow::Result<()> {
        // A conversation whose only leak was not delivered has nothing to
        // fetch: the exit keeps no conversation for it.
        let delivered = matches!(
            &result,
            Finished::Receipt {
                receipt: leak_protocol::Outcome::Delivered | leak_protocol::Outcome::Accepted
            }
        );
        let label = self
            .entries
            .iter()
            .find(|e| e.message_id == id)
            .and_then(|e| e.thread.clone());
        if let (false, Some(label)) = (delivered, label)
            && let Ok(mut thread) = self.threads.load(&label)
            && thread.answers.is_empty()
            && thread.sent_days.len() <= 1
        {
            thread.state = "gone".into();
            self.threads.save(&thread)?;
        }
        match self.state.load(id) {
            Ok(record) => {
                if self.recent.len() >= RECENT_ENDED {
                    self.recent.pop_front();
                }
                self.recent
                    .push_back((id.to_owned(), result.clone(), record.exit.domain.clone()));
                self.state.end(&record, result, unix_ms())?;
            }
            // `leak status` ended it already.
            Err(e) if e.is::<UnknownLeak>() => {}
            Err(e) => return Err(e),
        }
        self.entries.retain(|e| e.message_id != id);
        self.leaks.remove(id);
        self.outbox.remove(id)?;
        Ok(())
    }

    /// After an attempt was handed to the guard (or not): the record says
    /// so, and the next attempt's time is drawn.
    fn after_attempt(&mut self, id: &str, ok: bool) -> anyhow::Result<()> {
        let now = unix_ms();
        let mut record = self.state.load(id)?;
        if let Some(last) = record.attempts.last_mut() {
            last.sent = ok;
            if ok {
                last.sent_at_ms = now;
            } else {
                last.secrets = None;
            }
        }
        self.state.save(&record)?;
        if !ok {
            return Ok(());
        }
        let hops = self
            .entries
            .iter()
            .find(|e| e.message_id == id)
            .map_or(self.config.send.hops, |e| e.hops);
        let next_at = retransmission_at(
            now,
            self.mean_delay_ms(),
            hops,
            &self.config.agent,
            &mut rand::rng(),
        );
        if let Some(entry) = self.entries.iter_mut().find(|e| e.message_id == id) {
            entry.attempts_sent += 1;
            // After the last attempt, this is when the agent gives up. (A
            // leak parked for another exit meanwhile stays parked.)
            if entry.redirect_until_ms.is_none() {
                entry.next_at_ms = next_at;
            }
            self.outbox.update(entry)?;
        }
        Ok(())
    }

    fn give_up_on_expired(&mut self, now: u64) {
        let max = self.max_attempts();
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.attempts_sent >= max && e.next_at_ms <= now)
            .map(|e| e.message_id.clone())
            .collect();
        for id in expired {
            log("a leak got no receipt after its last attempt");
            if let Err(e) = self.finish(&id, Finished::NoReceipt) {
                log(format!("recording a failed leak: {e:#}"));
            }
        }
    }

    /// Answers a command. A leak is checked and placed here and its stamp
    /// solved on a blocking thread: this task goes on emitting on its
    /// schedule meanwhile (a sender's packets must not pause while a leak
    /// is handed over), and [`Event::Stamped`] brings the leak back to be
    /// stored and answered.
    fn on_command(&mut self, request: &Request, answer: oneshot::Sender<Response>) {
        let response = match request {
            Request::Send {
                recipient,
                relationship,
                text,
                within_secs,
                hops,
                thread,
                no_answers,
            } => match self.accept(
                recipient,
                relationship,
                text,
                *within_secs,
                *hops,
                thread.as_deref(),
                *no_answers,
            ) {
                Ok(accepted) => {
                    let tx = self.tx.clone();
                    let hash = self.policy.recipient_hash(&accepted.recipient);
                    let bits = accepted.stamp_bits;
                    let epoch = accepted.release_at_ms / 1000 / policy::STAMP_EPOCH_SECS;
                    let (exit_node, message_id) = (accepted.exit_node, accepted.message_id);
                    tokio::spawn(async move {
                        let stamp =
                            solve_stamp_aside(hash, exit_node, epoch, bits, message_id).await;
                        let _ = tx
                            .send(Event::Stamped(Box::new(accepted), stamp, answer))
                            .await;
                    });
                    return;
                }
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                    kind: e.downcast_ref::<NotTaken>().map(|n| n.kind),
                },
            },
            Request::Status => Response::Status(self.status()),
            Request::Progress { message_id } => Response::Progress(self.progress(message_id)),
            Request::Ui => Response::Ui {
                url: self.ui.url.as_ref().map(|u| u.as_str().to_owned()),
                note: self.ui.note.clone(),
            },
            Request::Stop => {
                self.stopping = true;
                Response::Stopping
            }
        };
        let _ = answer.send(response);
    }

    /// Checks a leak and chooses its exit, id and release time; a
    /// follow-up (`thread`) goes to its conversation's recipient through
    /// its exit.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        recipient: &str,
        relationship: &str,
        text: &str,
        within_secs: Option<u64>,
        hops: Option<usize>,
        thread: Option<&str>,
        no_answers: bool,
    ) -> anyhow::Result<Accepted> {
        let follows = match thread {
            Some(label) => {
                let thread = self.threads.load(label)?;
                match thread.state.as_str() {
                    "ended" => {
                        return Err(not_taken(
                            ErrorKind::Ended,
                            "the recipient ended this conversation: follow-ups are not delivered",
                        ));
                    }
                    "gone" => {
                        return Err(not_taken(
                            ErrorKind::Ended,
                            "the exit keeps nothing of this conversation any more; send a new leak",
                        ));
                    }
                    _ => Some(thread),
                }
            }
            None => None,
        };
        let (recipient, relationship) = match &follows {
            Some(t) => (t.recipient.as_str(), t.relationship.as_str()),
            None => (recipient, relationship),
        };
        let recipient = Recipient::parse(recipient)
            .map_err(|e| not_taken(ErrorKind::BadAddress, e.to_string()))?;
        let relationship: Relationship = relationship
            .parse()
            .map_err(|e| not_taken(ErrorKind::Invalid, format!("{e}")))?;
        validate_text(text).map_err(|e| not_taken(ErrorKind::Invalid, e.to_string()))?;
        if let Verdict::Refused(refusal) = self.policy.check_text(text) {
            return Err(not_taken(
                ErrorKind::Refused,
                format!("refused ({}): {}", refusal.rule, refusal.reason),
            ));
        }
        let hops = hops.unwrap_or(self.config.send.hops);
        if !(MIN_HOPS..=MAX_HOPS).contains(&hops) {
            return Err(not_taken(
                ErrorKind::Invalid,
                format!("a path has {MIN_HOPS} to {MAX_HOPS} hops, not {hops}"),
            ));
        }
        let now = unix_ms();
        let Some(directory) = &self.directory else {
            return Err(not_taken(
                ErrorKind::NoNetwork,
                "the agent has not reached the network yet (no directory of nodes): try again in a moment",
            ));
        };
        let mut rng = rand::rng();
        let recipient_hash = self.policy.recipient_hash(&recipient);
        let exit = match follows.as_ref().and_then(ThreadRecord::exit) {
            // The conversation's exit keeps its answers and threads its
            // emails: a follow-up goes there or not at all.
            Some(node) => directory
                .nodes
                .iter()
                .find(|d| d.node == node)
                .cloned()
                .map(|descriptor| path::ExitChoice {
                    same_policy: leak_protocol::directory::is_exit_for(
                        &descriptor,
                        self.policy.version(),
                        now / 1000,
                    ),
                    descriptor,
                })
                .ok_or_else(|| {
                    not_taken(
                        ErrorKind::NoNetwork,
                        "this conversation's exit is not in the directory now; try again later",
                    )
                })?,
            None => path::choose_exit(
                &directory.nodes,
                self.policy.version(),
                Some(&recipient_hash),
                now,
                &mut rng,
            )
            .map_err(|e| not_taken(ErrorKind::NoNetwork, e.to_string()))?,
        };
        let exit_domain = exit
            .descriptor
            .exit
            .as_ref()
            .map(|e| e.domain.clone())
            .unwrap_or_default();
        let exit_peer = peer_id_of(&exit.descriptor.node)
            .context("the exit's node id is not an Ed25519 key")?;
        let within_ms = within_secs.unwrap_or(0).saturating_mul(1000);
        let thread = match follows {
            Some(thread) => Some(thread),
            None if no_answers => None,
            None => Some(ThreadRecord::new(
                recipient.as_str(),
                relationship.as_str(),
                exit.descriptor.node,
                &exit_domain,
                now,
                &mut rng,
            )),
        };
        Ok(Accepted {
            recipient,
            relationship,
            text: Zeroizing::new(text.to_owned()),
            hops,
            created_at_ms: now,
            exit_node: exit.descriptor.node,
            exit_peer,
            exit_domain,
            stamp_bits: exit
                .descriptor
                .exit
                .as_ref()
                .map_or(self.policy.limits().stamp_bits, |e| {
                    e.stamp_bits_for(self.policy.limits().stamp_bits)
                }),
            release_at_ms: crate::cover::release_time(now, within_ms, &mut rng),
            message_id: MessageId(rng.random()),
            thread,
        })
    }

    /// Stores a stamped leak (synced) and answers that it is queued.
    fn store(
        &mut self,
        a: Accepted,
        stamp: leak_protocol::payload::Stamp,
    ) -> anyhow::Result<Response> {
        let record = LeakRecord {
            message_id: a.message_id.to_string(),
            recipient: redact_recipient(a.recipient.as_str()),
            relationship: a.relationship.to_string(),
            exit: ExitRecord {
                peer: a.exit_peer.to_string(),
                domain: a.exit_domain,
            },
            created_at_ms: a.created_at_ms,
            label: new_label(),
            attempts: Vec::new(),
            outcome: None,
        };
        let entry = OutboxEntry {
            message_id: a.message_id.to_string(),
            relationship: a.relationship.to_string(),
            policy_version: self.policy.version(),
            stamp_epoch: stamp.epoch,
            stamp_nonce: stamp.nonce,
            exit_node: hex::encode(a.exit_node.0),
            hops: a.hops,
            next_at_ms: a.release_at_ms,
            attempts_sent: 0,
            thread: a.thread.as_ref().map(|t| t.label.clone()),
            redirected: false,
            redirect_until_ms: None,
        };
        let label = entry.thread.clone();
        if let Some(accepted) = a.thread {
            // A follow-up's conversation as it is now (answers may have
            // come while the stamp was solved), a new one as drawn.
            let mut thread = match self.threads.load(&accepted.label) {
                Ok(current) => current,
                Err(_) => accepted,
            };
            thread.sent_days.push(a.release_at_ms / 86_400_000);
            thread.last_ms = thread.last_ms.max(a.created_at_ms);
            // Answers come after the email: the fetches start an interval
            // after the leak leaves (its release time, not the moment it
            // was handed over, which `--within` hides) and ask often again.
            thread.empty_fetches = 0;
            thread.next_fetch_ms = next_fetch_ms(
                a.release_at_ms,
                self.config.agent.fetch_every_secs,
                &mut rand::rng(),
            );
            if thread.state == "gone" {
                thread.state = "open".into();
            }
            self.threads.save(&thread)?;
        }
        self.state.save(&record)?;
        self.outbox.put(
            &entry,
            &OutboxSecret {
                recipient: a.recipient.as_str().to_owned(),
                text: a.text.as_str().to_owned(),
            },
        )?;
        self.leaks
            .insert(entry.message_id.clone(), (a.message_id, Vec::new()));
        self.entries.push(entry);
        self.entries.sort_by_key(|e| e.next_at_ms);
        log("a leak was queued");
        Ok(Response::Queued {
            message_id: a.message_id.to_string(),
            release_at_ms: a.release_at_ms,
            thread: label,
        })
    }

    /// Where the leak `id` is.
    fn progress(&self, id: &str) -> LeakProgress {
        let mut progress = LeakProgress {
            message_id: id.to_owned(),
            state: "unknown".into(),
            attempts: 0,
            next_at_ms: None,
            outcome: None,
            good: None,
            words: "The agent knows nothing of this leak (it was not sent through it since it started).".into(),
        };
        if let Some(entry) = self.entries.iter().find(|e| e.message_id == id) {
            progress.state = crate::words::held_state(entry.attempts_sent).into();
            progress.attempts = entry.attempts_sent;
            progress.next_at_ms = (entry.attempts_sent == 0).then_some(entry.next_at_ms);
            progress.words = crate::words::in_progress(entry.attempts_sent);
        } else if let Some((_, result, exit)) = self.recent.iter().rev().find(|(i, ..)| i == id) {
            let (outcome, good) = crate::words::finished_outcome(result);
            progress.state = "finished".into();
            progress.words = crate::words::finished(result, exit);
            progress.outcome = Some(outcome.into());
            progress.good = good;
        }
        progress
    }

    fn status(&self) -> AgentStatus {
        let estimate = self.estimate();
        let c = &self.counters;
        let nodes = self.directory.as_ref().map_or(0, |d| d.nodes.len());
        let returned = if c.loops_sent == 0 {
            "no loop sent yet".to_owned()
        } else {
            format!(
                "{} of {} loops came back ({} given up on, {} on their way)",
                c.loops_returned,
                c.loops_sent,
                c.loops_lost,
                self.loops.len()
            )
        };
        AgentStatus {
            started_at_ms: self.started_at_ms,
            guard: self
                .guard
                .as_ref()
                .and_then(Guard::node_id)
                .and_then(|n| peer_id_of(&n))
                .map(|p| p.to_string()),
            guard_since_ms: self.guard.as_ref().map(|g| g.chosen_at_ms),
            directory_nodes: nodes,
            directory_fetched_at: self.directory.as_ref().map_or(0, |d| d.fetched_at),
            counters: c.clone(),
            outbox: self
                .entries
                .iter()
                .map(|e| Queued {
                    message_id: e.message_id.clone(),
                    attempts_sent: e.attempts_sent,
                    next_at_ms: e.next_at_ms,
                })
                .collect(),
            anonymity_set: estimate.map(|(_, e)| e.anonymity_set),
            anonymity_note: match estimate {
                Some((observed, e)) => anonymity::words(
                    &e,
                    &observed,
                    self.config.send.mixing_delay_ms,
                    self.config.agent.min_anonymity_set,
                ),
                None => format!(
                    "no estimate yet: no node of the directory publishes traffic counts (they come after a node's first complete epoch); what the agent sees: {returned}; {nodes} node(s) in the directory"
                ),
            },
        }
    }
}

/// When a leak whose attempt left at `sent_at_ms` is sent again (or, after
/// its last attempt, given up on): once a receipt is clearly late (the p99.9
/// of a round trip, at least `agent.retransmit_min_wait_secs`), then at a
/// random time uniform in the next `agent.retransmit_spread_secs`, so an exit
/// that withholds receipts learns nothing sharper from a retransmission's
/// timing than from the first attempt's.
fn retransmission_at<R: rand::Rng + ?Sized>(
    sent_at_ms: u64,
    mean_delay_ms: u32,
    hops: usize,
    agent: &AgentConfig,
    rng: &mut R,
) -> u64 {
    let p999 = (f64::from(mean_delay_ms) * round_trip_p999_in_mu(hops)) as u64;
    let wait = p999.max(agent.retransmit_min_wait_secs.saturating_mul(1000));
    let spread = agent.retransmit_spread_secs.saturating_mul(1000);
    let jitter = if spread == 0 {
        0
    } else {
        rng.random_range(0..=spread)
    };
    sent_at_ms.saturating_add(wait).saturating_add(jitter)
}

/// The agent's Poisson clocks from the configuration.
fn cover_config(config: &Config) -> CoverConfig {
    CoverConfig {
        send_interval_ms: config.cover.send_interval_ms,
        loop_share: config.cover.loop_share,
        poll_interval_ms: config.cover.poll_interval_ms,
    }
}

/// Reads one request line from a connection, hands it to the agent's task
/// and writes the answer back.
async fn serve_connection(stream: UnixStream, tx: mpsc::Sender<Event>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(ipc::MAX_LINE as u64));
    let mut line = Zeroizing::new(Vec::new());
    let response =
        match tokio::time::timeout(OPERATION_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Ok(Ok(n)) if n > 0 => match ipc::decode_request(&line) {
                Ok(request) => {
                    let (answer, wait) = oneshot::channel();
                    if tx.send(Event::Command(request, answer)).await.is_err() {
                        return;
                    }
                    match wait.await {
                        Ok(response) => response,
                        Err(_) => Response::error("the agent is stopping"),
                    }
                }
                Err(message) => Response::error(message),
            },
            _ => return,
        };
    let _ = write.write_all(&ipc::encode_response(response)).await;
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng as _, rngs::StdRng};

    use super::*;

    #[test]
    fn retransmissions_wait_for_a_late_receipt_then_spread_out() {
        let mut rng = StdRng::seed_from_u64(8);
        let defaults = AgentConfig::default();
        // A minute per hop: the p99.9 (about 18 minutes) is under the
        // one-hour minimum, so the hour counts, then up to three more.
        let mut seen = Vec::new();
        for _ in 0..500 {
            let at = retransmission_at(1_000, 60_000, 4, &defaults, &mut rng);
            assert!((1_000 + 3_600_000..=1_000 + 3_600_000 + 10_800_000).contains(&at));
            seen.push(at);
        }
        seen.sort_unstable();
        assert!(seen[499] - seen[0] > 9_000_000, "spread over the window");
        // Ten minutes per hop: the p99.9 of a round trip is longer than
        // the hour (seven delays for three hops, nine for four).
        let slow = retransmission_at(0, 600_000, 3, &defaults, &mut rng);
        assert!(slow >= 10_830_000, "{slow}");
        let slower = retransmission_at(0, 600_000, 4, &defaults, &mut rng);
        assert!(slower >= 12_690_000, "{slower}");
        let exact = AgentConfig {
            retransmit_spread_secs: 0,
            ..defaults
        };
        assert_eq!(retransmission_at(5, 0, 4, &exact, &mut rng), 5 + 3_600_000);
    }

    #[test]
    fn failed_directory_fetches_back_off_with_jitter() {
        let mut rng = StdRng::seed_from_u64(3);
        for (failures, base) in [
            (1, 10_000),
            (2, 20_000),
            (4, 80_000),
            (7, 600_000),
            (40, 600_000),
        ] {
            let waits: Vec<u64> = (0..400)
                .map(|_| directory_retry_ms(failures, &mut rng))
                .collect();
            let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            assert!(
                *min >= base / 2 && *max < base * 3 / 2,
                "{failures}: {min}..{max}"
            );
            // Spread over the window, not one value.
            assert!(max - min > base / 2, "{failures}: {min}..{max}");
        }
    }

    #[test]
    fn the_round_trip_quantile_is_the_erlang_one() {
        // Erlang(7) and Erlang(9) 0.999 quantiles (computed independently).
        assert!((round_trip_p999_in_mu(3) - 18.0616).abs() < 1e-3);
        assert!((round_trip_p999_in_mu(4) - 21.1562).abs() < 1e-3);
        assert!(round_trip_p999_in_mu(5) > round_trip_p999_in_mu(4));
    }
}
