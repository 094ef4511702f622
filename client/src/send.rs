//! Sending one leak: from a checked text to the exit's receipt.
//!
//! 1. Fetch the directory and choose the exit (one enforcing the client's
//!    policy version when there is one).
//! 2. Draw a random message id and solve the anti-abuse stamp the policy
//!    asks for, bound to the recipient, that exit and the day.
//! 3. For each attempt: choose a fresh route to that exit, build a reply
//!    block to a new mailbox on the entry relay, seal the leak into one
//!    packet, record the attempt (with its reply keys) in the state
//!    directory *before* the packet leaves, and hand the packet to the entry.
//! 4. Wait for the receipt: fetch every attempt's mailbox from the moment
//!    a receipt could first be there (the path's delays) until the receipt
//!    timeout after that. Without a receipt, pause a random time and send
//!    the same leak (same message id, same exit, same stamp) over a fresh
//!    path; the exit delivers a message id once however often it arrives.
//! 5. Record how it ended; the reply keys are erased.
//!
//! The text and the full recipient address live only in memory, for as long
//! as retransmissions may need them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leak_net::{Peer, peer_id_of};
use leak_protocol::{
    MailboxId, MessageId, NodeId, Outcome, Recipient, Relationship,
    payload::Stamp,
    policy::{self, Policy},
    seal::{LeakContents, SealError, SealedLeak, seal_leak},
};
use rand::RngExt as _;
use zeroize::Zeroizing;

use crate::{
    config::Config,
    directory::{self, DirectoryError},
    path::{self, PathError, RouteRequest},
    progress::Progress,
    receipts,
    retransmit::Retransmit,
    state::{
        AttemptRecord, AttemptSecrets, ExitRecord, Finished, LeakRecord, StateDir, new_label,
        redact_recipient,
    },
};

/// The validated leak to send.
pub struct Draft {
    /// Who receives it.
    pub recipient: Recipient,
    /// Who the sender is to them.
    pub relationship: Relationship,
    /// The text, checked against the policy.
    pub text: Zeroizing<String>,
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Hops of each path.
    pub hops: usize,
    /// Return once the entry relay has the packet.
    pub no_wait: bool,
    /// Print the client's ephemeral peer id and each attempt's route on
    /// standard error (for debugging and tests; nothing else sees it).
    pub verbose: bool,
}

/// How a send ended (when it got that far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The exit answered.
    Receipt(Outcome),
    /// Handed to the entry relay; not waiting (`--no-wait`).
    Sent,
    /// No receipt after every attempt.
    NoReceipt,
}

/// The result of [`send`].
#[derive(Debug, Clone)]
pub struct SendReport {
    /// The leak's id.
    pub message_id: MessageId,
    /// How it ended.
    pub outcome: SendOutcome,
    /// Packets built and offered to an entry relay.
    pub attempts: u32,
    /// The exit's mail domain.
    pub exit_domain: String,
}

/// Why a leak could not be sent at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// No path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The leak does not encode or the packet does not build.
    #[error(transparent)]
    Build(#[from] SealError),
    /// No entry relay took the packet.
    #[error("no entry relay took the packet: {0}")]
    Unreachable(String),
    /// Local trouble: the state directory, the libp2p peer.
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

/// The current Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sends `draft` and, unless `options.no_wait`, waits for its receipt.
pub async fn send(
    draft: &Draft,
    policy: &Policy,
    config: &Config,
    state: &StateDir,
    options: &SendOptions,
    progress: &Progress,
) -> Result<SendReport, SendError> {
    let mut rng = rand::rng();
    progress.stage("fetching the directory");
    let peer = config.network.peer()?;
    if options.verbose {
        progress.note(format!("client peer id: {}", peer.peer_id()));
    }
    // A directory fetched within the agent's refresh period is used as it
    // is: a bootstrap node need not see each send start.
    let directory = directory::load_recent(
        &peer,
        config,
        state,
        unix_ms() / 1000,
        config.agent.directory_refresh_secs,
    )
    .await?;
    if directory.from_cache {
        progress.note(format!(
            "using the directory fetched {} ago",
            directory::format_age((unix_ms() / 1000).saturating_sub(directory.fetched_at))
        ));
    }
    let recipient_hash = policy.recipient_hash(&draft.recipient);
    let exit = path::choose_exit(
        &directory.nodes,
        policy.version(),
        Some(&recipient_hash),
        unix_ms(),
        &mut rng,
    )?;
    let exit_info = exit.descriptor.exit.clone().unwrap_or_else(|| {
        // choose_exit only returns exits with details.
        leak_protocol::directory::ExitInfo {
            domain: String::new(),
            policy_version: 0,
            stamp_bits: 0,
        }
    });
    if !exit.same_policy {
        progress.note(format!(
            "note: no exit enforces policy version {} (this client's); {} enforces version {}, which may judge the text differently",
            policy.version(),
            exit_info.domain,
            exit_info.policy_version
        ));
    }
    let exit_peer = peer_id_of(&exit.descriptor.node)
        .ok_or_else(|| anyhow::anyhow!("the exit's node id is not an Ed25519 key"))?;

    let message_id = MessageId(rng.random());
    // The exit may ask more than the policy while it is under load.
    let bits = exit_info.stamp_bits_for(policy.limits().stamp_bits);
    progress.stage(format!("computing the anti-abuse stamp ({bits} bits)"));
    let stamp = solve_stamp(
        policy,
        &draft.recipient,
        exit.descriptor.node,
        message_id,
        bits,
    )
    .await?;

    let mut record = LeakRecord {
        message_id: message_id.to_string(),
        recipient: redact_recipient(draft.recipient.as_str()),
        relationship: draft.relationship.to_string(),
        exit: ExitRecord {
            peer: exit_peer.to_string(),
            domain: exit_info.domain.clone(),
        },
        created_at_ms: unix_ms(),
        label: new_label(),
        attempts: Vec::new(),
        outcome: None,
    };

    let retransmit = Retransmit::from_config(&config.send);
    let max_attempts = retransmit.max_attempts;
    let mut entry: Option<NodeId> = None;
    let mut used: Vec<NodeId> = Vec::new();
    let mut unreachable: Vec<NodeId> = Vec::new();
    let mut last_error = String::new();
    let mut any_sent = false;
    for attempt in 1..=max_attempts {
        if attempt > 1 {
            let pause = retransmit.pause(&mut rng);
            progress.stage(format!(
                "no receipt yet; sending again in {:.1}s",
                pause.as_secs_f64()
            ));
            if let Some(outcome) = wait(&peer, state, &mut record, pause, progress).await? {
                return finish(state, record, outcome, exit_info.domain);
            }
        }
        let route = path::choose_route(
            &directory.nodes,
            &RouteRequest {
                hops: options.hops,
                mean_delay_ms: config.send.mixing_delay_ms,
                now_ms: unix_ms(),
                exit: &exit.descriptor,
                entry,
                avoid: &used,
                exclude: &unreachable,
            },
            &mut rng,
        )?;
        let capability = Zeroizing::new(rng.random::<[u8; 32]>());
        let SealedLeak { packet, reply_keys } = seal_leak(
            &LeakContents {
                message_id,
                recipient: &draft.recipient,
                relationship: draft.relationship,
                text: &draft.text,
                policy_version: policy.version(),
                stamp,
                answer_to: None,
            },
            &route.forward,
            &route.reply,
            MailboxId::from_capability(&capability),
            &mut rng,
        )?;
        let entry_node = route.entry();
        let entry_descriptor = directory.nodes.iter().find(|d| d.node == entry_node);
        let entry_peer = peer_id_of(&entry_node)
            .ok_or_else(|| anyhow::anyhow!("an entry's node id is not an Ed25519 key"))?;
        record.attempts.push(AttemptRecord {
            sent_at_ms: unix_ms(),
            path_delay_ms: route.total_delay_ms(),
            mailbox_peer: entry_peer.to_string(),
            mailbox_addresses: entry_descriptor
                .map(|d| d.addresses.clone())
                .unwrap_or_default(),
            sent: false,
            secrets: Some(AttemptSecrets::new(&capability, &reply_keys)?),
        });
        // The keys are on disk before the packet leaves: a receipt is never
        // unreadable because the client stopped.
        state.save(&record)?;
        progress.stage(if attempt == 1 {
            format!("built; sending through {} hops", options.hops)
        } else {
            format!("sending again (attempt {attempt} of {max_attempts})")
        });
        if options.verbose {
            progress.note(format!("attempt {attempt}: {}", describe_route(&route)));
        }
        used.extend(route.middles().iter().map(|h| h.node));
        used.extend(route.reply[..route.reply.len() - 1].iter().map(|h| h.node));
        let timeout = Duration::from_secs(config.network.connect_timeout_secs);
        let sent = tokio::time::timeout(
            timeout,
            peer.send_packets(entry_peer, std::slice::from_ref(&packet)),
        )
        .await;
        let Some(current) = record.attempts.last_mut() else {
            continue;
        };
        match sent {
            Ok(Ok(())) => {
                current.sent = true;
                current.sent_at_ms = unix_ms();
                entry = Some(entry_node);
                any_sent = true;
            }
            Ok(Err(e)) => {
                last_error = format!(
                    "entry relay {entry_peer}: {}",
                    directory::short_network_error(&e)
                );
                current.secrets = None;
            }
            Err(_) => {
                last_error = format!("entry relay {entry_peer}: no answer in {timeout:?}");
                current.secrets = None;
            }
        }
        state.save(&record)?;
        if !current_sent(&record) {
            progress.note(format!("could not send: {last_error}"));
            unreachable.push(entry_node);
            entry = None;
            continue;
        }
        if options.no_wait {
            progress.finish();
            return Ok(SendReport {
                message_id,
                outcome: SendOutcome::Sent,
                attempts: attempt,
                exit_domain: exit_info.domain,
            });
        }
        progress.stage(format!(
            "sent; waiting for the receipt from {}",
            exit_info.domain
        ));
        let window = retransmit.window(route.total_delay_ms());
        if let Some(outcome) = wait(&peer, state, &mut record, window, progress).await? {
            return finish(state, record, outcome, exit_info.domain);
        }
    }
    if !any_sent {
        // Nothing left the client: forget the leak, it was never sent.
        state.remove(&record.message_id)?;
        return Err(SendError::Unreachable(last_error));
    }
    state.end(&record, Finished::NoReceipt, unix_ms())?;
    progress.finish();
    Ok(SendReport {
        message_id,
        outcome: SendOutcome::NoReceipt,
        attempts: u32::try_from(record.attempts.len()).unwrap_or(u32::MAX),
        exit_domain: exit_info.domain,
    })
}

/// `route: A -> B -> X (exit); receipt: X -> C -> A (mailbox)`, with peer ids.
pub fn describe_route(route: &path::Route) -> String {
    let name = |node: &NodeId| peer_id_of(node).map_or_else(|| "?".to_owned(), |p| p.to_string());
    let forward: Vec<String> = route.forward.iter().map(|h| name(&h.node)).collect();
    let reply: Vec<String> = route.reply.iter().map(|h| name(&h.node)).collect();
    format!(
        "route: {} (exit); receipt: {} -> {} (mailbox)",
        forward.join(" -> "),
        forward.last().map_or("?", String::as_str),
        reply.join(" -> ")
    )
}

fn current_sent(record: &LeakRecord) -> bool {
    record.attempts.last().is_some_and(|a| a.sent)
}

fn finish(
    state: &StateDir,
    record: LeakRecord,
    outcome: Outcome,
    exit_domain: String,
) -> Result<SendReport, SendError> {
    let attempts = u32::try_from(record.attempts.len()).unwrap_or(u32::MAX);
    let message_id = record.id()?;
    state.end(
        &record,
        Finished::Receipt {
            receipt: outcome.clone(),
        },
        unix_ms(),
    )?;
    Ok(SendReport {
        message_id,
        outcome: SendOutcome::Receipt(outcome),
        attempts,
        exit_domain,
    })
}

/// Waits up to `window` for a receipt to any attempt of `record`, fetching
/// the mailboxes from when a receipt could first be there. A receipt that
/// `leak status` fetched meanwhile (it then ended the leak: its summary is
/// under the record's label) counts.
async fn wait(
    peer: &Peer,
    state: &StateDir,
    record: &mut LeakRecord,
    window: Duration,
    progress: &Progress,
) -> Result<Option<Outcome>, SendError> {
    let deadline = Instant::now() + window;
    // No receipt can be in a mailbox before the path's delays have passed.
    let earliest_ms = record
        .attempts
        .iter()
        .filter(|a| a.sent)
        .map(|a| a.sent_at_ms + a.path_delay_ms)
        .min()
        .unwrap_or(0);
    let mut interval = Duration::from_millis(50);
    let mut reported_errors = false;
    loop {
        let now_ms = unix_ms();
        if now_ms >= earliest_ms {
            let found = receipts::poll(peer, record, Duration::from_secs(10)).await;
            if let Some(outcome) = found.outcome {
                return Ok(Some(outcome));
            }
            if !found.errors.is_empty() && !reported_errors {
                reported_errors = true;
                progress.note(format!(
                    "cannot fetch a mailbox yet: {}",
                    found.errors.join("; ")
                ));
            }
            if let Ok(Some(ended)) = state.load_ended(&record.label)
                && let Finished::Receipt { receipt } = &ended.result
            {
                return Ok(Some(receipt.clone()));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let mut sleep = interval;
        if now_ms < earliest_ms {
            sleep = sleep.max(Duration::from_millis(earliest_ms - now_ms));
        }
        tokio::time::sleep(sleep.min(deadline - now)).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(1));
    }
}

/// Solves the stamp off the async threads (it can take a second or more).
async fn solve_stamp(
    policy: &Policy,
    recipient: &Recipient,
    exit: NodeId,
    message_id: MessageId,
    bits: u8,
) -> anyhow::Result<Stamp> {
    let hash = policy.recipient_hash(recipient);
    let epoch = unix_ms() / 1000 / policy::STAMP_EPOCH_SECS;
    tokio::task::spawn_blocking(move || policy::solve_stamp(&hash, &exit, epoch, bits, &message_id))
        .await
        .map_err(|e| anyhow::anyhow!("the stamp computation stopped: {e}"))
}
