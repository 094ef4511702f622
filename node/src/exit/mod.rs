//! The exit role: the last hop, where a leak becomes an email.
//!
//! ```text
//!  packet ends here ──▶ ingest (one at a time, in order):
//!                         decode ─ invalid ──────────────────▶ Refused receipt
//!                         seen before? ─ finished ───────────▶ the same receipt again
//!                                      └ queued ─────────────▶ keep the newer reply block
//!                         opted out? policy? local rules?
//!                         stamp? deliverable? rate? ─ no ────▶ receipt (recorded)
//!                         accept: leak file synced, entry committed
//!                                        │
//!                                        ▼
//!                      delivery loop: due leaks, paced (token bucket),
//!                      `exit.smtp_connections` at a time ─▶ lettre
//!                         250 ─▶ Delivered   5xx ─▶ Bounced
//!                         4xx / no connection ─▶ retry with backoff
//!                         421, 4.7.x ─▶ also slow the pace
//!                         past exit.lifetime_secs ─▶ Bounced
//!                      outcome committed, leak file scrubbed, receipt sent
//! ```
//!
//! A leak is delivered at most once per message id, except in one window:
//! if the exit dies after the mail server said 250 and before the outcome is
//! committed, the leak is sent again after the restart (with the same
//! `Message-ID`, so mail systems can drop the copy).

pub mod admin;
pub mod deliver;
pub mod email;
pub mod http;
pub mod spool;
pub mod store;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use leak_protocol::{
    Delay, Leak, MessageId, NodeId, Outcome, Packet, Receipt, ReplyBlock,
    payload::{LeakDecodeError, MAX_REASON_LEN, MAX_RULE_LEN, PayloadError},
    policy::{
        self, Policy, Verdict,
        optout::{self, OptOut},
    },
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use self::{
    deliver::{Attempt, Mailer, Pace},
    email::{Composer, Link, Tokens},
    store::{Done, Entry, ExitStore, Known},
};
use crate::{
    clock::unix_now_ms, config::Config, metrics::Metrics, policy::PolicyState, store::Store,
};

/// A leak that reached this node as its exit, for the exit role to deliver.
pub struct ExitDelivery {
    /// The decrypted message (an encoded `Leak`).
    pub message: zeroize::Zeroizing<Vec<u8>>,
    /// The delay the client asked the exit to hold it for.
    pub delay: Delay,
}

/// Sends a packet to a node (the first hop of a reply block).
pub type SendPacket = Arc<dyn Fn(NodeId, Packet) + Send + Sync>;
/// Publishes a batch of signed opt-outs to the federation.
pub type PublishOptOuts = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

const DAY_MS: u64 = 86_400_000;
/// How often finished leaks and old counters are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Most leaks in flight at once per SMTP connection: being read, sent, or
/// waiting for their outcome's commit (which holds no connection).
const IN_FLIGHT_PER_CONNECTION: usize = 8;

/// Leaks due for delivery, and those being delivered.
#[derive(Default)]
struct Schedule {
    due: BTreeSet<(u64, MessageId)>,
    /// When each leak in `due` is due (to find its entry there).
    at: HashMap<MessageId, u64>,
    in_flight: HashSet<MessageId>,
}

impl Schedule {
    fn insert(&mut self, at_ms: u64, id: MessageId) {
        self.remove(&id);
        self.at.insert(id, at_ms);
        self.due.insert((at_ms, id));
    }

    fn remove(&mut self, id: &MessageId) {
        if let Some(at) = self.at.remove(id) {
            self.due.remove(&(at, *id));
        }
    }

    /// The first due leak not in flight, taken out of the schedule. A leak
    /// in flight stays scheduled (a retry asked for while it is sent) and
    /// is taken once its attempt is over, so it is never sent twice at once.
    fn take_due(&mut self, now_ms: u64) -> Option<MessageId> {
        let first = *self
            .due
            .iter()
            .find(|(_, id)| !self.in_flight.contains(id))?;
        if first.0 > now_ms {
            return None;
        }
        self.due.remove(&first);
        self.at.remove(&first.1);
        self.in_flight.insert(first.1);
        Some(first.1)
    }

    /// When the first leak not in flight is due.
    fn next_at(&self) -> Option<u64> {
        self.due
            .iter()
            .find(|(_, id)| !self.in_flight.contains(id))
            .map(|(at, _)| *at)
    }
}

/// The exit.
pub struct Exit {
    config: Config,
    policy: Arc<PolicyState>,
    seed: zeroize::Zeroizing<[u8; 32]>,
    publish_opt_outs: PublishOptOuts,
    local_rules: Option<Policy>,
    node_id: NodeId,
    store: ExitStore,
    pub(crate) composer: Composer,
    mailer: Mailer,
    #[cfg(feature = "dkim")]
    dkim: Option<lettre::message::dkim::DkimConfig>,
    pub(crate) metrics: Arc<Metrics>,
    send_packet: SendPacket,
    runtime: tokio::runtime::Handle,
    schedule: Mutex<Schedule>,
    /// Set by the operator (`leak-node queue pause`): no new delivery starts.
    paused: std::sync::atomic::AtomicBool,
    wake: Notify,
    pace: Mutex<Pace>,
    clock: Instant,
}

/// A refusal's rule name for an invalid leak.
fn invalid_rule(error: &PayloadError) -> &'static str {
    match error {
        PayloadError::Recipient(_) => "format.recipient",
        PayloadError::Text(_) => "format.text",
        PayloadError::InvalidUtf8(_) => "format.utf8",
        PayloadError::UnknownRelationship(_) => "format.relationship",
        _ => "format",
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn refused(rule: &str, reason: &str) -> Outcome {
    Outcome::Refused {
        rule: truncate(rule, MAX_RULE_LEN),
        reason: truncate(reason, MAX_REASON_LEN),
    }
}

fn outcome_label(state: &str) -> &'static str {
    match state {
        "delivered" => "delivered",
        "bounced" => "bounced",
        "expired" => "expired",
        "purged" => "purged",
        "lost" => "lost",
        _ => "other",
    }
}

/// The running exit's tasks and its endpoint's address.
pub(crate) struct Started {
    pub exit: Arc<Exit>,
    pub http_addr: SocketAddr,
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
    pub publish_opt_outs: PublishOptOuts,
}

/// Opens the exit's state and starts its tasks: ingest, delivery, the
/// HTTP endpoint and the operator's socket.
pub(crate) async fn start(
    parts: Parts,
    incoming: mpsc::Receiver<ExitDelivery>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Started> {
    let Parts {
        config,
        seed,
        store,
        metrics,
        policy,
        send_packet,
        publish_opt_outs,
    } = parts;
    let seed = zeroize::Zeroizing::new(seed);
    let node_id = NodeId(leak_protocol::crypto::ed25519_public(&seed));
    let local_rules = if config.exit.local_rules.trim().is_empty() {
        None
    } else {
        let path = config.exit.local_rules.trim();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read exit.local_rules {path}"))?;
        Some(Policy::from_toml(&text).with_context(|| format!("exit.local_rules {path}"))?)
    };
    let exit_store = ExitStore::open(store, config.exit_queue_dir())?;
    let http_addr = config.exit_http_addr()?;
    // Bind first: the public URL may need the real port.
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on exit.http_listen {http_addr} (port taken?)"))?;
    let http_addr = listener.local_addr()?;
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
        .map_err(|e| anyhow::anyhow!("exit.from {:?}: {e}", config.exit_from()))?;
    let composer = Composer {
        from,
        domain: config.exit.domain.trim().to_owned(),
        abuse_address: config.exit_abuse_address(),
        public_url,
        tokens: Tokens::new(&seed),
    };
    let mailer = Mailer::from_config(&config)?;
    #[cfg(feature = "dkim")]
    let dkim = dkim_config(&config)?;
    let clock = Instant::now();
    let pace = Pace::new(config.exit.min_rate, config.exit.max_rate, Duration::ZERO);
    let exit = Arc::new(Exit {
        policy,
        seed,
        publish_opt_outs,
        local_rules,
        node_id,
        store: exit_store,
        composer,
        mailer,
        #[cfg(feature = "dkim")]
        dkim,
        metrics,
        send_packet,
        runtime: tokio::runtime::Handle::current(),
        schedule: Mutex::new(Schedule::default()),
        paused: std::sync::atomic::AtomicBool::new(false),
        wake: Notify::new(),
        pace: Mutex::new(pace),
        clock,
        config,
    });
    {
        let queued = exit.store.queued()?;
        let mut schedule = exit.lock_schedule();
        for (id, entry) in &queued {
            schedule.insert(entry.next_attempt_ms, *id);
        }
        exit.metrics.exit_queue.set(queued.len() as i64);
    }
    exit.metrics
        .exit_rate_per_hour
        .set((exit.config.exit.max_rate * 3600.0) as i64);

    let mut tasks = Vec::new();
    tasks.push((
        "exit ingest",
        tokio::spawn(exit.clone().run_ingest(incoming, shutdown.clone())),
    ));
    tasks.push((
        "exit delivery",
        tokio::spawn(exit.clone().run_delivery(shutdown.clone())),
    ));
    tasks.push(("exit endpoint", http::serve_on(listener, exit.clone())));
    let admin = admin::serve(exit.config.admin_socket_path(), exit.clone(), shutdown).await?;
    tasks.push(("exit admin socket", admin));
    Ok(Started {
        exit,
        http_addr,
        tasks,
    })
}

#[cfg(feature = "dkim")]
fn dkim_config(config: &Config) -> anyhow::Result<Option<lettre::message::dkim::DkimConfig>> {
    use lettre::message::{
        dkim::{
            DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
            DkimSigningKey,
        },
        header::HeaderName,
    };
    let exit = &config.exit;
    if exit.dkim_selector.is_empty() {
        return Ok(None);
    }
    let key = std::fs::read_to_string(&exit.dkim_key_file)
        .with_context(|| format!("cannot read exit.dkim_key_file {}", exit.dkim_key_file))?;
    let algorithm = match exit.dkim_algorithm.as_str() {
        "rsa" => DkimSigningAlgorithm::Rsa,
        _ => DkimSigningAlgorithm::Ed25519,
    };
    let key = DkimSigningKey::new(key.trim(), algorithm)
        .map_err(|e| anyhow::anyhow!("exit.dkim_key_file {}: {e}", exit.dkim_key_file))?;
    let headers = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Content-Type",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    .into_iter()
    .map(HeaderName::new_from_ascii_str)
    .collect();
    Ok(Some(DkimConfig::new(
        exit.dkim_selector.clone(),
        exit.domain.trim().to_owned(),
        key,
        headers,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    )))
}

/// One queued leak, as `leak-node queue` lists it: no recipient, no text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueItem {
    /// The message id.
    pub id: String,
    /// queued, retrying or sending.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Seconds since it was accepted.
    pub age_secs: u64,
    /// Seconds until the next attempt (0: due).
    pub next_attempt_in_secs: u64,
    /// The last failure's code.
    pub last_error: String,
    /// The recipient's domain (only that).
    pub recipient_domain: String,
}

/// The queue at a glance.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct QueueCounts {
    /// Leaks waiting, by state (queued, retrying, sending), and finished
    /// leaks still remembered, by how they ended.
    pub states: std::collections::BTreeMap<String, u64>,
    /// The current sending rate (emails per second).
    pub send_rate: f64,
    /// Whether delivery is paused.
    #[serde(default)]
    pub paused: bool,
}

impl Exit {
    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The policy this exit enforces.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// Keeps opt-outs other exits verified (already checked by the node).
    pub(crate) fn take_opt_outs(&self, records: &[OptOut]) -> anyhow::Result<usize> {
        let records: Vec<_> = records
            .iter()
            .map(|r| (r.recipient, r.at.saturating_mul(1000), r.exit.0))
            .collect();
        self.store.opt_out(&records)
    }

    /// This exit's own opt-outs, signed, in batches (to republish them for
    /// exits that joined since).
    pub(crate) fn own_opt_outs(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let own = self.store.opt_outs_by(&self.node_id.0)?;
        Ok(own
            .chunks(optout::MAX_OPT_OUTS)
            .filter_map(|chunk| {
                let records: Vec<OptOut> = chunk
                    .iter()
                    .map(|(recipient, at_ms)| OptOut::sign(&self.seed, *recipient, at_ms / 1000))
                    .collect();
                optout::encode_batch(&records)
            })
            .collect())
    }

    fn count(&self, outcome: &'static str) {
        Metrics::count(&self.metrics.exit_leaks, "outcome", outcome);
    }

    /// Sends `outcome` back along `reply_block`, after `delay`.
    fn answer(&self, reply_block: ReplyBlock, id: MessageId, outcome: Outcome, delay: Duration) {
        let receipt = Receipt {
            message_id: id,
            outcome,
        };
        let packet = receipt
            .encode()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| reply_block.into_packet(&bytes).map_err(anyhow::Error::from));
        match packet {
            Ok((first_hop, packet)) => {
                self.metrics.exit_receipts.inc();
                if delay.is_zero() {
                    (self.send_packet)(first_hop, packet);
                } else {
                    // Not durable: if the exit stops first, the client's
                    // retransmission is answered from the record.
                    let send = self.send_packet.clone();
                    self.runtime.spawn(async move {
                        tokio::time::sleep(delay).await;
                        send(first_hop, packet);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot build a receipt"),
        }
    }

    fn record(&self, id: MessageId, outcome: Outcome, state: &str) -> anyhow::Result<()> {
        self.store.record(
            &id,
            &Done {
                outcome,
                state: state.to_owned(),
                at_ms: unix_now_ms(),
            },
        )
    }

    /// Why the exit will not deliver `leak`, if it will not.
    fn judge(
        &self,
        leak: &Leak,
        recipient: &[u8; 32],
        now_ms: u64,
    ) -> anyhow::Result<Option<(Outcome, &'static str)>> {
        if self.store.opted_out(recipient)? {
            return Ok(Some((Outcome::RecipientOptedOut, "opted_out")));
        }
        let policy = self.policy();
        let verdicts = std::iter::once(policy.check_text(&leak.text))
            .chain(self.local_rules.iter().map(|p| p.check_text(&leak.text)));
        for verdict in verdicts {
            if let Verdict::Refused(r) = verdict {
                return Ok(Some((refused(&r.rule, &r.reason), "refused")));
            }
        }
        let bits = policy.limits().stamp_bits;
        if bits > 0 {
            let epoch = now_ms / 1000 / policy::STAMP_EPOCH_SECS;
            if let Err(e) = policy::verify_stamp(
                &leak.stamp,
                recipient,
                &self.node_id,
                &leak.message_id,
                bits,
                epoch,
            ) {
                return Ok(Some((
                    refused("stamp", &format!("the anti-abuse stamp is not valid: {e}")),
                    "refused",
                )));
            }
        }
        if leak
            .recipient
            .to_ascii_address()
            .parse::<lettre::Address>()
            .is_err()
        {
            return Ok(Some((
                refused(
                    "address.undeliverable",
                    "this exit cannot deliver to that address",
                ),
                "refused",
            )));
        }
        let policy_limit = policy.limits().per_recipient_per_day;
        let local_limit = self.config.exit.per_recipient_per_day;
        let limit = match (policy_limit, local_limit) {
            (0, l) | (l, 0) => l,
            (p, l) => p.min(l),
        };
        if limit > 0 && self.store.rate_count(recipient, now_ms / DAY_MS)? >= limit {
            return Ok(Some((Outcome::RateLimited, "rate_limited")));
        }
        Ok(None)
    }

    /// Takes one leak that ended here: refuses, answers again, or accepts
    /// it durably. Runs on a blocking thread.
    fn ingest(&self, message: &[u8], delay: Delay) -> anyhow::Result<()> {
        let now = unix_now_ms();
        let hold = Duration::from_millis(u64::from(delay.as_millis()));
        let leak = match Leak::decode_or_reject(message) {
            Ok(leak) => leak,
            Err(LeakDecodeError::Unanswerable(_)) => {
                self.count("unanswerable");
                return Ok(());
            }
            Err(LeakDecodeError::Invalid {
                message_id,
                reply_block,
                error,
            }) => {
                if let Known::Done(done) = self.store.lookup(&message_id)? {
                    self.count("duplicate");
                    self.answer(*reply_block, message_id, done.outcome, hold);
                    return Ok(());
                }
                let outcome = refused(invalid_rule(&error), &error.to_string());
                self.record(message_id, outcome.clone(), "invalid")?;
                self.count("invalid");
                self.answer(*reply_block, message_id, outcome, hold);
                return Ok(());
            }
        };
        match self.store.lookup(&leak.message_id)? {
            Known::Done(done) => {
                self.count("duplicate");
                self.answer(leak.reply_block, leak.message_id, done.outcome, hold);
                return Ok(());
            }
            Known::Queued(_) => {
                // A retransmission: its reply block is the one to answer.
                self.count("duplicate");
                let block = leak.reply_block.to_bytes().to_vec();
                self.store
                    .update_with(&leak.message_id, |e| e.reply_block = block)?;
                return Ok(());
            }
            Known::New => {}
        }
        let recipient = self.policy().recipient_hash(&leak.recipient);
        if let Some((outcome, state)) = self.judge(&leak, &recipient, now)? {
            self.record(leak.message_id, outcome.clone(), state)?;
            self.count(match state {
                "opted_out" => "opted_out",
                "rate_limited" => "rate_limited",
                _ => "refused",
            });
            self.answer(leak.reply_block, leak.message_id, outcome, hold);
            return Ok(());
        }
        let due = now + u64::from(delay.as_millis());
        let entry = Entry {
            accepted_ms: now,
            next_attempt_ms: due,
            attempts: 0,
            last_error: String::new(),
            reply_block: leak.reply_block.to_bytes().to_vec(),
        };
        self.store
            .accept(&leak.message_id, message, &entry, &recipient, now / DAY_MS)?;
        self.count("accepted");
        self.metrics.exit_queue.inc();
        self.lock_schedule().insert(due, leak.message_id);
        self.wake.notify_one();
        Ok(())
    }

    async fn run_ingest(
        self: Arc<Self>,
        mut incoming: mpsc::Receiver<ExitDelivery>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let delivery = tokio::select! {
                _ = shutdown.changed() => break,
                d = incoming.recv() => match d {
                    Some(d) => d,
                    None => break,
                },
            };
            let this = self.clone();
            let result =
                tokio::task::spawn_blocking(move || this.ingest(&delivery.message, delivery.delay))
                    .await;
            match result {
                Ok(Ok(())) => {}
                // The leak was not acknowledged: the client retransmits.
                Ok(Err(e)) => {
                    self.count("storage_error");
                    tracing::error!(error = %e, "cannot take a leak");
                }
                Err(e) => tracing::error!(error = %e, "the ingest thread failed"),
            }
        }
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    async fn run_delivery(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let connections = self.config.exit.smtp_connections.max(1) as usize;
        // A leak holds an SMTP connection only while it is sent: its
        // outcome's durable commit (grouped with others) and its receipt
        // follow without one, so the connection takes the next leak at once.
        let sending = Arc::new(Semaphore::new(connections));
        let max_in_flight = connections * IN_FLIGHT_PER_CONNECTION;
        let mut running = tokio::task::JoinSet::new();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            let mut wait = Duration::from_secs(3600);
            while running.len() < max_in_flight && !self.is_paused() {
                let Ok(permit) = sending.clone().try_acquire_owned() else {
                    break;
                };
                let now_ms = unix_now_ms();
                let next_at = self.lock_schedule().next_at();
                match next_at {
                    None => break,
                    Some(at) if at > now_ms => {
                        wait = wait.min(Duration::from_millis(at - now_ms));
                        break;
                    }
                    Some(_) => {}
                }
                if let Err(until_token) = self.lock_pace().take(self.now()) {
                    wait = wait.min(until_token);
                    break;
                }
                let Some(id) = self.lock_schedule().take_due(now_ms) else {
                    break;
                };
                running.spawn(self.clone().deliver(id, permit));
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                () = self.wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(wait) => {}
                _ = prune.tick() => {
                    let this = self.clone();
                    let now = unix_now_ms();
                    let before = now.saturating_sub(this.config.exit.dedup_secs * 1000);
                    let oldest_day = (now / DAY_MS).saturating_sub(1);
                    let result = tokio::task::spawn_blocking(move || this.store.prune(before, oldest_day)).await;
                    if let Ok(Err(e)) = result {
                        tracing::warn!(error = %e, "cannot prune the exit's records");
                    }
                }
            }
        }
        // Deliveries in flight stop here; they are retried after a restart.
        running.abort_all();
    }

    /// Ends a queued leak with `outcome` and answers its sender. Blocks.
    fn finish(&self, id: MessageId, outcome: Outcome, state: &str) -> anyhow::Result<bool> {
        let done = Self::done(&outcome, state);
        let entry = self.store.finish(&id, &done)?;
        Ok(self.finished(id, outcome, state, entry))
    }

    /// [`Exit::finish`] for the delivery tasks: waits for the group commit
    /// without holding a thread.
    async fn finish_async(
        &self,
        id: MessageId,
        outcome: Outcome,
        state: &str,
    ) -> anyhow::Result<bool> {
        let done = Self::done(&outcome, state);
        let entry = self.store.finish_async(&id, &done).await?;
        Ok(self.finished(id, outcome, state, entry))
    }

    fn done(outcome: &Outcome, state: &str) -> Done {
        Done {
            outcome: outcome.clone(),
            state: state.to_owned(),
            at_ms: unix_now_ms(),
        }
    }

    /// Counts a finished leak and answers its sender; false if it was no
    /// longer queued.
    fn finished(&self, id: MessageId, outcome: Outcome, state: &str, entry: Option<Entry>) -> bool {
        let Some(entry) = entry else {
            return false;
        };
        self.metrics.exit_queue.dec();
        Metrics::count(&self.metrics.exit_finished, "outcome", outcome_label(state));
        match ReplyBlock::from_bytes(&entry.reply_block) {
            Some(block) => self.answer(block, id, outcome, Duration::ZERO),
            None => tracing::warn!("a queued leak's reply block does not decode"),
        }
        true
    }

    /// One delivery attempt of a queued leak; `connection` is given back
    /// once the SMTP exchange is over.
    async fn deliver(self: Arc<Self>, id: MessageId, connection: OwnedSemaphorePermit) {
        let result = self.try_deliver(id, connection).await;
        let mut schedule = self.lock_schedule();
        schedule.in_flight.remove(&id);
        if let Err(e) = result {
            tracing::error!(error = %e, "a delivery attempt failed; retrying later");
            let retry = unix_now_ms() + self.config.exit.retry_initial_secs * 1000;
            schedule.insert(retry, id);
        }
        drop(schedule);
        self.wake.notify_one();
    }

    async fn try_deliver(
        self: &Arc<Self>,
        id: MessageId,
        connection: OwnedSemaphorePermit,
    ) -> anyhow::Result<()> {
        // Both quick (a read transaction, one read of a slot of the spool,
        // in the page cache): done here rather than on another thread.
        let entry = match self.store.lookup(&id)? {
            Known::Queued(entry) => entry,
            // Purged meanwhile.
            _ => return Ok(()),
        };
        let Some(body) = self.store.body(&id)? else {
            // Its slot is gone or damaged (the spool restored or edited, a
            // failed disk): it cannot be delivered, and retrying would not
            // change that. Its sender is told.
            tracing::error!(%id, "a queued leak's text is missing from the spool; it is bounced");
            self.finish_async(id, Outcome::Bounced, "lost").await?;
            return Ok(());
        };
        let leak = match Leak::decode(&body) {
            Ok(leak) => leak,
            Err(_) => {
                self.finish_async(id, Outcome::Bounced, "bounced").await?;
                return Ok(());
            }
        };
        let recipient = self.policy().recipient_hash(&leak.recipient);
        #[allow(unused_mut)]
        let mut message = match self.composer.compose(&leak, &recipient) {
            Ok(m) => m,
            Err(_) => {
                self.finish_async(id, Outcome::Bounced, "bounced").await?;
                return Ok(());
            }
        };
        drop(leak);
        #[cfg(feature = "dkim")]
        if let Some(dkim) = &self.dkim {
            lettre::message::dkim::dkim_sign(&mut message, dkim);
        }
        let attempt = self.mailer.send(message).await;
        drop(connection);
        self.wake.notify_one();
        self.settle(id, entry, attempt).await
    }

    /// Records what an attempt did.
    async fn settle(
        self: &Arc<Self>,
        id: MessageId,
        mut entry: Entry,
        attempt: Attempt,
    ) -> anyhow::Result<()> {
        let result = match &attempt {
            Attempt::Delivered => "ok",
            Attempt::Permanent { .. } => "permanent",
            Attempt::Temporary { deferral: true, .. } => "deferred",
            Attempt::Temporary { .. } => "temporary",
        };
        Metrics::count(&self.metrics.exit_attempts, "result", result);
        match attempt {
            Attempt::Delivered => {
                self.lock_pace().succeeded();
                // The server has it: never sent again for a failed commit
                // (only a crash before the commit resends it). The commit
                // is retried until it holds; the leak stays in flight.
                let mut wait = Duration::from_secs(1);
                while let Err(e) = self.finish_async(id, Outcome::Delivered, "delivered").await {
                    tracing::error!(error = %e, "cannot record a delivered leak; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
            Attempt::Permanent { code } => {
                tracing::info!(%id, %code, "a leak bounced");
                self.finish_async(id, Outcome::Bounced, "bounced").await?;
            }
            Attempt::Temporary { code, deferral } => {
                if deferral {
                    let now = self.now();
                    self.lock_pace().deferred(now);
                }
                let rate = self.lock_pace().rate();
                self.metrics.exit_rate_per_hour.set((rate * 3600.0) as i64);
                let now = unix_now_ms();
                entry.attempts = entry.attempts.saturating_add(1);
                entry.last_error = code;
                if now.saturating_sub(entry.accepted_ms) >= self.config.exit.lifetime_secs * 1000 {
                    tracing::info!(%id, attempts = entry.attempts, "a leak expired undelivered");
                    self.finish_async(id, Outcome::Bounced, "expired").await?;
                    return Ok(());
                }
                let wait = deliver::backoff(
                    entry.attempts,
                    Duration::from_secs(self.config.exit.retry_initial_secs),
                    Duration::from_secs(self.config.exit.retry_max_secs),
                    rand::random::<f64>(),
                );
                entry.next_attempt_ms = now + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                let this = self.clone();
                let next = entry.next_attempt_ms;
                let (attempts, last_error) = (entry.attempts, entry.last_error);
                // Changed in place: a reply block a retransmission brought
                // meanwhile is kept.
                let kept = tokio::task::spawn_blocking(move || {
                    this.store.update_with(&id, |e| {
                        e.attempts = attempts;
                        e.last_error = last_error;
                        e.next_attempt_ms = next;
                    })
                })
                .await??;
                if kept {
                    self.lock_schedule().insert(next, id);
                }
            }
        }
        if matches!(result, "ok") {
            let rate = self.lock_pace().rate();
            self.metrics.exit_rate_per_hour.set((rate * 3600.0) as i64);
        }
        Ok(())
    }

    /// Opts out the recipient a token was made for. `Ok(false)`: the token
    /// is not valid.
    pub async fn opt_out_with_token(self: &Arc<Self>, token: &str) -> anyhow::Result<bool> {
        let Some((_, recipient)) = self.composer.tokens.check(Link::OptOut, token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(false);
        };
        let this = self.clone();
        let now = unix_now_ms();
        let own = self.node_id.0;
        let new = tokio::task::spawn_blocking(move || this.store.opt_out(&[(recipient, now, own)]))
            .await??;
        if new > 0 {
            self.metrics.exit_opt_outs.inc();
            // Every exit refuses this recipient from now on.
            let record = OptOut::sign(&self.seed, recipient, now / 1000);
            if let Some(batch) = optout::encode_batch(&[record]) {
                (self.publish_opt_outs)(batch);
            }
        }
        Ok(true)
    }

    /// Records an abuse report for the leak a token was made for.
    pub async fn report_with_token(self: &Arc<Self>, token: &str) -> anyhow::Result<bool> {
        let Some((id, _)) = self.composer.tokens.check(Link::Report, token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(false);
        };
        let this = self.clone();
        let new =
            tokio::task::spawn_blocking(move || this.store.report(&id, unix_now_ms())).await??;
        if new {
            self.metrics.exit_abuse_reports.inc();
        }
        Ok(true)
    }

    /// Counts by state.
    pub fn counts(&self) -> anyhow::Result<QueueCounts> {
        let mut states = self.store.done_counts()?;
        let in_flight = self.lock_schedule().in_flight.clone();
        for (id, entry) in self.store.queued()? {
            let state = if in_flight.contains(&id) {
                "sending"
            } else if entry.attempts > 0 {
                "retrying"
            } else {
                "queued"
            };
            *states.entry(state.into()).or_insert(0) += 1;
        }
        Ok(QueueCounts {
            states,
            send_rate: self.lock_pace().rate(),
            paused: self.is_paused(),
        })
    }

    /// The queued leaks, oldest first, redacted.
    pub fn list(&self, limit: usize) -> anyhow::Result<Vec<QueueItem>> {
        let now = unix_now_ms();
        let in_flight = self.lock_schedule().in_flight.clone();
        let mut queued = self.store.queued()?;
        queued.sort_by_key(|(_, e)| e.accepted_ms);
        let mut out = Vec::new();
        for (id, entry) in queued.into_iter().take(limit) {
            let recipient_domain = self
                .store
                .body(&id)
                .ok()
                .flatten()
                .and_then(|b| Leak::decode(&b).ok())
                .map(|l| l.recipient.ascii_domain().to_owned())
                .unwrap_or_default();
            out.push(QueueItem {
                id: id.to_string(),
                state: if in_flight.contains(&id) {
                    "sending"
                } else if entry.attempts > 0 {
                    "retrying"
                } else {
                    "queued"
                }
                .into(),
                attempts: entry.attempts,
                age_secs: now.saturating_sub(entry.accepted_ms) / 1000,
                next_attempt_in_secs: entry.next_attempt_ms.saturating_sub(now) / 1000,
                last_error: entry.last_error,
                recipient_domain,
            });
        }
        Ok(out)
    }

    fn queued_ids(&self, id: Option<&str>) -> anyhow::Result<Vec<(MessageId, Entry)>> {
        let queued = self.store.queued()?;
        match id {
            None => Ok(queued),
            Some(id) => {
                let found: Vec<_> = queued
                    .into_iter()
                    .filter(|(m, _)| m.to_string() == id.trim().to_lowercase())
                    .collect();
                anyhow::ensure!(!found.is_empty(), "no queued leak has the id {id}");
                Ok(found)
            }
        }
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pauses delivery (leaks are still taken and queued) or resumes it.
    /// Not kept across a restart: a restarted exit delivers.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Makes queued leaks (one, or all) due now. Returns how many.
    pub fn retry_now(&self, id: Option<&str>) -> anyhow::Result<usize> {
        let now = unix_now_ms();
        let mut n = 0;
        for (id, _) in self.queued_ids(id)? {
            if self.lock_schedule().in_flight.contains(&id) {
                continue;
            }
            if self.store.update_with(&id, |e| e.next_attempt_ms = now)? {
                self.lock_schedule().insert(now, id);
                n += 1;
            }
        }
        self.wake.notify_one();
        Ok(n)
    }

    /// Removes queued leaks (one, or all) without delivering them; their
    /// senders are told `Bounced`. Leaks being sent right now are skipped.
    pub fn purge(&self, id: Option<&str>) -> anyhow::Result<usize> {
        let mut n = 0;
        for (id, _) in self.queued_ids(id)? {
            {
                let mut schedule = self.lock_schedule();
                if schedule.in_flight.contains(&id) {
                    continue;
                }
                schedule.remove(&id);
            }
            if self.finish(id, Outcome::Bounced, "purged")? {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_in_flight_is_not_taken_again() {
        let mut schedule = Schedule::default();
        let (a, b) = (MessageId([1; 16]), MessageId([2; 16]));
        schedule.insert(10, a);
        schedule.insert(20, b);
        assert_eq!(schedule.take_due(100), Some(a));
        // A retry of `a` asked for while it is sent.
        schedule.insert(5, a);
        assert_eq!(schedule.next_at(), Some(20));
        assert_eq!(schedule.take_due(100), Some(b));
        assert_eq!(schedule.take_due(100), None, "a is still in flight");
        schedule.in_flight.remove(&a);
        assert_eq!(schedule.next_at(), Some(5));
        assert_eq!(schedule.take_due(100), Some(a));
        assert_eq!(schedule.take_due(100), None);
    }
}
