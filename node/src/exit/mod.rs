//! The exit role: the last hop, where a leak becomes an email.
//!
//! ```text
//!  packet ends here ──▶ intake (one at a time, in order):      intake.rs
//!                         decode ─ invalid ──────────────────▶ Refused receipt
//!                         seen before? ─ finished ───────────▶ the same receipt again
//!                                      └ queued ─────────────▶ keep the newer reply block
//!                         opted out? policy? local rules?
//!                         stamp? deliverable? rate? ─ no ────▶ receipt (recorded)
//!                         accept: leak in the spool, entry committed
//!                                        │
//!                                        ▼
//!                      delivery loop: due leaks (Schedule),   delivery.rs, schedule.rs
//!                      paced (Pace, a token bucket),
//!                      `exit.smtp_connections` at a time ─▶ smtp/
//!                         250 ─▶ Delivered   5xx ─▶ Bounced
//!                         4xx, no connection, TLS, AUTH,
//!                         our own storage failing ─▶ the retry policy   retry.rs
//!                         421, 4.7.x ─▶ also slow the pace
//!                         past exit.lifetime_secs ─▶ Bounced (expired)
//!                      outcome committed, spool slot zeroed, receipt sent
//! ```
//!
//! "How does the exit retry?" is answered in one file: [`retry`].
//!
//! The node holds the exit behind a narrow interface: `start` with its
//! `Parts` (a [`SendPacket`] and a [`SendOptOuts`] handle, the node's
//! store, metrics, policy and clock), a channel of [`ExitDelivery`]s, and
//! [`Exit::take_opt_outs`] / [`Exit::pass_on_opt_outs`] for the opt-out
//! records exits exchange. The exit never imports the node.
//!
//! A leak is delivered at most once per message id, except in one window:
//! if the exit dies after the mail server said 250 and before the outcome is
//! committed, the leak is sent again after the restart (with the same
//! `Message-ID`, so mail systems can drop the copy).

pub mod admin;
pub mod answers;
pub mod dedup;
mod delivery;
pub mod dkim_keys;
pub mod email;
pub mod error;
pub mod evidence;
pub mod http;
pub mod inbound;
mod intake;
pub mod mx;
mod notify;
pub mod optout;
pub mod postfix_config;
pub mod provider;
pub mod queue;
pub mod retry;
pub mod schedule;
pub mod smtp;
pub mod spool;
pub mod state;
pub mod store;
pub mod surcharge;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use leak_protocol::{Delay, Leak, NodeId, Packet, policy::Policy};
use tokio::sync::{Notify, mpsc, watch};

use self::{
    dedup::LeakKeys,
    email::{Composer, Tokens},
    provider::{Complaint, Health, HealthSettings, Provider, RampSettings},
    retry::RetryPolicy,
    schedule::{Pace, Schedule},
    smtp::Mailer,
    store::ExitStore,
};
pub use self::{
    error::ExitError,
    state::{EndState, Intake, QueueState},
};
use crate::{
    clock::SharedClock, config::Config, metrics::Metrics, policy::PolicyState, store::Store,
};

/// A leak that reached this node as its exit, for the exit role to deliver.
pub struct ExitDelivery {
    /// The decrypted message (an encoded `Leak`).
    pub message: zeroize::Zeroizing<Vec<u8>>,
    /// The delay the client asked the exit to hold it for.
    pub delay: Delay,
}

/// Sends a packet to a node (the first hop of a reply block) once the
/// node's clock reaches the given Unix ms (at once if it has).
pub type SendPacket = Arc<dyn Fn(NodeId, Packet, u64) + Send + Sync>;
/// Sends a batch of signed opt-out records to another exit.
pub type SendOptOuts = Arc<dyn Fn(NodeId, Vec<u8>) + Send + Sync>;
/// The exits' descriptors in the node's directory (its own included), for
/// the rule of which exit is responsible for a recipient.
pub type DirectoryNodes = Arc<dyn Fn() -> Vec<leak_protocol::directory::Descriptor> + Send + Sync>;

const DAY_MS: u64 = 86_400_000;

/// The exit.
pub struct Exit {
    config: Config,
    policy: Arc<PolicyState>,
    seed: zeroize::Zeroizing<[u8; 32]>,
    send_opt_outs: SendOptOuts,
    /// Opt-out records taken from each exit today.
    opt_out_quota: Mutex<optout::Quota>,
    directory: DirectoryNodes,
    local_rules: Option<Policy>,
    node_id: NodeId,
    store: ExitStore,
    /// What the store names leaks by (never their message ids).
    keys: LeakKeys,
    pub(crate) composer: Composer,
    mailer: Mailer,
    /// DKIM signatures to add (RSA first; none when not configured).
    dkim: Vec<lettre::message::dkim::DkimConfig>,
    pub(crate) metrics: Arc<Metrics>,
    send_packet: SendPacket,
    /// When each queued leak is tried next, and which are being sent.
    schedule: Mutex<Schedule>,
    /// When a failed attempt is tried again.
    retry: RetryPolicy,
    /// Set by the operator (`leak-node queue pause`): no new delivery starts.
    paused: std::sync::atomic::AtomicBool,
    wake: Notify,
    pace: Mutex<Pace>,
    /// Deliveries and complaints per provider, which are paused, and the
    /// warm-up ramp.
    health: Mutex<Health>,
    /// The sending pace to each provider (by [`Provider::index`]).
    provider_pace: Mutex<[Pace; 4]>,
    /// Leaks holding an SMTP connection, per provider.
    provider_sending: Arc<[std::sync::atomic::AtomicUsize; 4]>,
    /// The load, and the stamp bits asked beyond the policy's.
    surcharge: Mutex<surcharge::Surcharge>,
    /// Whether the exit takes inbound mail (LMTP): then it asks its mail
    /// server for delivery notifications and waits for them.
    inbound: bool,
    /// Wakes the loop that ends waits for notifications.
    deadlines: Notify,
    /// The caps on forwards and explanations ([`inbound::reply`]).
    answers: Mutex<inbound::reply::Budget>,
    /// Recipients' providers by MX.
    mx: mx::MxProviders,
    /// Checks the DKIM evidence of opt-outs by email.
    pub(crate) evidence: evidence::Checker,
    /// Conversations and their answers ([`answers`]).
    threads: answers::Threads,
    clock: SharedClock,
}

/// The running exit's tasks and its endpoint's address.
pub(crate) struct Started {
    pub exit: Arc<Exit>,
    pub http_addr: SocketAddr,
    /// The LMTP address, when the exit takes inbound mail.
    pub inbound_addr: Option<SocketAddr>,
    pub tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

/// What the exit needs from its node.
pub(crate) struct Parts {
    pub config: Config,
    pub seed: [u8; 32],
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub policy: Arc<PolicyState>,
    pub send_packet: SendPacket,
    pub send_opt_outs: SendOptOuts,
    pub directory: DirectoryNodes,
    /// The time every decision of the exit takes (the system clock in a
    /// running node).
    pub clock: SharedClock,
}

/// Opens the exit's state and starts its tasks: intake, delivery, the
/// HTTP endpoint and the operator's socket.
pub(crate) async fn start(
    parts: Parts,
    incoming: mpsc::Receiver<ExitDelivery>,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, ExitError> {
    let Parts {
        config,
        seed,
        store,
        metrics,
        policy,
        send_packet,
        send_opt_outs,
        directory,
        clock,
    } = parts;
    let seed = zeroize::Zeroizing::new(seed);
    let node_id = NodeId(leak_protocol::crypto::ed25519_public(&seed));
    let local_rules = if config.exit.local_rules.trim().is_empty() {
        None
    } else {
        let path = config.exit.local_rules.trim();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ExitError::read("exit.local_rules", path, e))?;
        Some(
            Policy::from_toml(&text)
                .map_err(|e| ExitError::setting("exit.local_rules", format!("{path}: {e}")))?,
        )
    };
    let threads = answers::Threads::new(&seed, answers::store::AnswerStore::open(store.clone())?);
    let exit_store = ExitStore::open(store, config.exit_queue_dir())?;
    let keys = LeakKeys::open(
        &config.node.data_dir,
        config.exit.dedup_secs,
        clock.now_ms(),
    )?;
    let http_addr = config
        .exit_http_addr()
        .map_err(|e| ExitError::setting("exit.http_listen", e.to_string()))?;
    // Bind first: the public URL may need the real port.
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| ExitError::Listen {
            addr: http_addr,
            source: e,
        })?;
    let http_addr = listener.local_addr().map_err(|e| ExitError::Listen {
        addr: http_addr,
        source: e,
    })?;
    let inbound_listener = match config
        .exit_inbound_addr()
        .map_err(|e| ExitError::setting("exit.inbound_listen", e.to_string()))?
    {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ExitError::Listen { addr, source: e })?,
        ),
        None => None,
    };
    let inbound_addr = inbound_listener.as_ref().and_then(|l| l.local_addr().ok());
    let public_url = if config.exit.public_url.trim().is_empty() {
        format!("http://{http_addr}")
    } else {
        config
            .exit
            .public_url
            .trim()
            .trim_end_matches('/')
            .to_owned()
    };
    let from: lettre::Address = config
        .exit_from()
        .parse()
        .map_err(|e| ExitError::setting("exit.from", format!("{:?}: {e}", config.exit_from())))?;
    let composer = Composer {
        from,
        domain: config.exit.domain.trim().to_owned(),
        abuse_address: config.exit_abuse_address(),
        public_url,
        tokens: Tokens::new(&seed),
        sender_id: hex::encode(&node_id.0[..5]),
    };
    let mailer = Mailer::from_config(&config)?;
    let dkim = email::dkim_configs(&config)?;
    let pace = Pace::new(config.exit.min_rate, config.exit.max_rate, clock.now_ms());
    let surcharge = surcharge::Surcharge::new(config.exit.busy_leaks_per_hour);
    let mut health = Health::with_ramp(
        HealthSettings {
            threshold: config.exit.complaint_threshold,
            window_hours: config.exit.complaint_window_hours,
            min_deliveries: config.exit.complaint_min_deliveries,
        },
        RampSettings {
            first_day: config.exit.warmup_first_day,
            growth: config.exit.warmup_growth,
        },
    );
    let provider_pace = Provider::ALL.map(|_| {
        Pace::new(
            config.exit.min_rate,
            config.exit.provider_max_rate,
            clock.now_ms(),
        )
    });
    if let Some(bytes) = exit_store.standing()?
        && !health.restore(&bytes)
    {
        tracing::warn!(
            "the exit's record of its standing with providers is damaged; starting afresh"
        );
    }
    let answers = inbound::reply::Budget::new(&seed);
    let exit = Arc::new(Exit {
        policy,
        seed,
        send_opt_outs,
        opt_out_quota: Mutex::new(optout::Quota::default()),
        directory,
        local_rules,
        node_id,
        store: exit_store,
        keys,
        composer,
        mailer,
        dkim,
        metrics,
        send_packet,
        schedule: Mutex::new(Schedule::default()),
        retry: RetryPolicy::from_config(&config),
        paused: std::sync::atomic::AtomicBool::new(false),
        wake: Notify::new(),
        pace: Mutex::new(pace),
        health: Mutex::new(health),
        provider_pace: Mutex::new(provider_pace),
        provider_sending: Arc::new(Default::default()),
        surcharge: Mutex::new(surcharge),
        inbound: inbound_listener.is_some(),
        deadlines: Notify::new(),
        answers: Mutex::new(answers),
        mx: mx::MxProviders::from_config(&config)?,
        evidence: evidence::Checker::from_setting(&config.exit.dns_resolver)?,
        threads,
        clock,
        config,
    });
    exit.migrate_opt_outs()?;
    {
        let queued = exit.store.queued()?;
        let mut schedule = exit.lock_schedule();
        for (id, entry) in &queued {
            // Its provider, from the spool (a damaged slot counts as
            // `Other`; its attempt bounces it).
            let provider = exit
                .store
                .body(id)
                .ok()
                .flatten()
                .and_then(|b| Leak::decode(&b).ok())
                .map_or(Provider::Other, |l| {
                    Provider::of_domain(l.recipient.ascii_domain())
                });
            schedule.insert_to(entry.next_attempt_ms, *id, provider);
        }
        exit.show_standing();
        exit.metrics.exit_queue.set(queued.len() as i64);
    }
    exit.metrics
        .exit_rate_per_hour
        .set((exit.config.exit.max_rate * 3600.0) as i64);

    let mut tasks = vec![
        (
            "exit ingest",
            tokio::spawn(exit.clone().run_intake(incoming, shutdown.clone())),
        ),
        (
            "exit delivery",
            tokio::spawn(exit.clone().run_delivery(shutdown.clone())),
        ),
        ("exit endpoint", http::serve_on(listener, exit.clone())),
        (
            "exit notification deadlines",
            tokio::spawn(exit.clone().run_deadlines(shutdown.clone())),
        ),
    ];
    if let Some(listener) = inbound_listener {
        tasks.push((
            "exit inbound mail",
            inbound::lmtp::serve(listener, exit.clone(), shutdown.clone()),
        ));
    }
    let admin = admin::serve(exit.config.admin_socket_path(), exit.clone(), shutdown).await?;
    tasks.push(("exit admin socket", admin));
    Ok(Started {
        exit,
        http_addr,
        inbound_addr,
        tasks,
    })
}

impl Exit {
    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_provider_pace(&self) -> std::sync::MutexGuard<'_, [Pace; 4]> {
        self.provider_pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which providers no delivery may start to at `now_ms` (paused, past
    /// the ramp's cap for the day, or out of pace tokens), and when the
    /// first of them may be ready again (milliseconds from now).
    fn blocked_providers(&self, now_ms: u64) -> ([bool; 4], Option<u64>) {
        let health = self.lock_health();
        let mut paces = self.lock_provider_pace();
        let mut blocked = [false; 4];
        let mut ready_in: Option<u64> = None;
        for provider in Provider::ALL {
            let i = provider.index();
            let wait = if health.is_paused(provider) {
                blocked[i] = true;
                None
            } else if !health.ramp_allows(provider, now_ms) {
                blocked[i] = true;
                Some(Health::until_next_day(now_ms))
            } else if let Err(wait) = paces[i].available(now_ms) {
                blocked[i] = true;
                Some(wait)
            } else {
                None
            };
            if let Some(wait) = wait {
                ready_in = Some(ready_in.map_or(wait, |r| r.min(wait)));
            }
        }
        (blocked, ready_in)
    }

    /// A delivery to `provider` starts: its pace token and the ramp's count.
    fn starting(&self, provider: Provider, now_ms: u64) {
        let _ = self.lock_provider_pace()[provider.index()].take(now_ms);
        self.lock_health().started(provider, now_ms);
    }

    /// Sets the paused gauges from the standing.
    fn show_standing(&self) {
        let health = self.lock_health();
        for provider in Provider::ALL {
            self.metrics
                .exit_provider_paused
                .get_or_create(&vec![("provider", provider.label())])
                .set(i64::from(health.is_paused(provider)));
        }
    }

    /// Keeps the standing on disk (a blocking write: call it off the
    /// runtime's threads, or where a short wait is fine).
    fn save_standing(&self) {
        let bytes = self.lock_health().to_bytes();
        if let Err(e) = self.store.save_standing(&bytes) {
            tracing::warn!(error = %e, "cannot record the exit's standing with providers");
        }
    }

    /// A recipient at `provider` complained about a delivered leak: counted
    /// toward that provider's complaint rate, which may pause it.
    fn complained(&self, provider: Provider) {
        let now = self.now_ms();
        self.metrics
            .exit_complaints
            .get_or_create(&vec![("provider", provider.label())])
            .inc();
        let complaint = self.lock_health().complaint(provider, now);
        if let Complaint::Paused { rate } = complaint {
            tracing::warn!(
                provider = provider.label(),
                complaint_rate = format!("{:.3} %", rate * 100.0),
                threshold = format!("{:.3} %", self.config.exit.complaint_threshold * 100.0),
                "complaints crossed the threshold: delivery to this provider is paused \
                 (leaks stay queued); `leak-node queue resume --provider {}` resumes it",
                provider.label()
            );
            self.show_standing();
            self.wake.notify_one();
        }
        self.save_standing();
    }

    /// The operator pauses or resumes delivery to `provider` (kept across
    /// restarts, like a pause the complaint rate made).
    pub fn set_provider_paused(&self, provider: Provider, paused: bool) -> bool {
        let now = self.now_ms();
        let changed = self.lock_health().set_paused(provider, paused, now);
        if changed {
            tracing::info!(
                provider = provider.label(),
                "delivery to this provider {} by the operator",
                if paused { "paused" } else { "resumed" }
            );
            self.save_standing();
            self.show_standing();
            self.wake.notify_one();
        }
        changed
    }

    /// Every provider's deliveries, complaints and pause.
    pub fn providers(&self) -> Vec<provider::ProviderStatus> {
        self.lock_health().status(self.now_ms())
    }

    /// The current time (Unix ms), from the exit's clock.
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The policy this exit enforces.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// Tells the delivery loop that the clock moved (a virtual-time
    /// harness, after advancing its manual clock): leaks now due start
    /// without waiting for the loop's own timer, which counts real time.
    pub fn clock_moved(&self) {
        self.wake.notify_one();
        self.deadlines.notify_one();
    }

    /// The current sending rate, in the metric.
    fn show_rate(&self) {
        let rate = self.lock_pace().rate();
        self.metrics.exit_rate_per_hour.set((rate * 3600.0) as i64);
    }
}
