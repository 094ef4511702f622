//! Prometheus metrics: counters and histograms, never a per-peer,
//! per-sender or per-recipient label.

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric the node exports (names start with `leak_`).
pub struct Metrics {
    /// Packets read from peers.
    pub packets_received: Counter,
    /// Packets sent to the next hop.
    pub packets_forwarded: Counter,
    /// Packets that ended here, by kind (mailbox, exit).
    pub packets_final: Family<Labels, Counter>,
    /// Packets dropped, by reason.
    pub packets_dropped: Family<Labels, Counter>,
    /// Packets waiting for processing.
    pub queue_depth: Gauge,
    /// Packets held for their mixing delay.
    pub held_packets: Gauge,
    /// Of those, the packets waiting on disk (past `limits.held_in_memory`).
    pub held_on_disk: Gauge,
    /// Seconds of cryptography per packet.
    pub processing_seconds: Histogram,
    /// Connected peers.
    pub peers: Gauge,
    /// The current key epoch.
    pub epoch: Gauge,
    /// Verified descriptors known.
    pub directory_nodes: Gauge,
    /// Replies held in mailboxes.
    pub mailbox_replies: Gauge,
    /// Descriptors refused, by reason.
    pub descriptors_refused: Family<Labels, Counter>,
    /// Signed rosters refused, by reason (a replay of the held one is not
    /// counted).
    pub rosters_refused: Family<Labels, Counter>,
    /// The serial of the roster in force (0: none).
    pub roster_serial: Gauge,
    /// Inbound streams reset because too many were waiting for the node.
    pub inbound_streams_refused: Counter,
    /// Leaks that reached the exit, by outcome (accepted, duplicate,
    /// refused, opted_out, rate_limited, invalid, unanswerable).
    pub exit_leaks: Family<Labels, Counter>,
    /// Final outcomes of accepted leaks (delivered, bounced, expired, purged).
    pub exit_finished: Family<Labels, Counter>,
    /// Delivery attempts, by result (ok, temporary, deferred, permanent).
    pub exit_attempts: Family<Labels, Counter>,
    /// Leaks waiting in the exit's queue.
    pub exit_queue: Gauge,
    /// The exit's current sending rate, in emails per hour.
    pub exit_rate_per_hour: Gauge,
    /// Recipients who opted out here.
    pub exit_opt_outs: Counter,
    /// Recipients who opted back in here.
    pub exit_opt_ins: Counter,
    /// Opt-out records from other exits, by result (accepted, not_newer,
    /// forged, not_holder, no_evidence, bad_evidence, over_quota,
    /// malformed).
    pub exit_opt_out_records: Family<Labels, Counter>,
    /// Opt-out emails to this exit, by result (evidenced: the recipient's
    /// provider signed it, and the record goes to the other holders;
    /// local: it holds here only; not_newer; unverified: no token of
    /// this exit; not_opt_out).
    pub exit_opt_out_mail: Family<Labels, Counter>,
    /// Abuse reports received.
    pub exit_abuse_reports: Counter,
    /// Complaints (abuse reports) by destination provider.
    pub exit_complaints: Family<Labels, Counter>,
    /// 1 while delivery to a provider is paused, by provider.
    pub exit_provider_paused: Family<Labels, Gauge>,
    /// Opt-out or report requests with an invalid token.
    pub exit_bad_tokens: Counter,
    /// Receipts sent back along reply blocks.
    pub exit_receipts: Counter,
    /// Delivery status notifications and their absence, by what they
    /// decided (delivered, bounced, delayed, timeout, late).
    pub exit_notifications: Family<Labels, Counter>,
    /// Mail that reached the exit's domain, by kind (dsn, feedback,
    /// postmaster, abuse, reply, forwarded, answered, unverified,
    /// malformed, too_large, dropped).
    pub exit_inbound: Family<Labels, Counter>,
    /// Recipients' answers, by what became of them (stored, refused,
    /// ended, unknown, flood, full, invalid, bad_token).
    pub exit_answers: Family<Labels, Counter>,
    /// Senders' fetches of answers, by result (answer, empty, unknown,
    /// invalid).
    pub exit_fetches: Family<Labels, Counter>,
    /// This node's own loops sent.
    pub loops_sent: Counter,
    /// This node's loops that came back.
    pub loops_returned: Counter,
    /// This node's loops that did not come back in time.
    pub loops_lost: Counter,
    /// This node's loops in flight.
    pub loops_pending: Gauge,
    /// libp2p's own metrics, in the same registry.
    pub libp2p: libp2p::metrics::Metrics,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("leak");
        let packets_received = Counter::default();
        registry.register(
            "packets_received",
            "Packets read from peers",
            packets_received.clone(),
        );
        let packets_forwarded = Counter::default();
        registry.register(
            "packets_forwarded",
            "Packets sent to their next hop",
            packets_forwarded.clone(),
        );
        let packets_final = Family::<Labels, Counter>::default();
        registry.register(
            "packets_final",
            "Packets that ended at this node, by kind",
            packets_final.clone(),
        );
        let packets_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "packets_dropped",
            "Packets dropped, by reason",
            packets_dropped.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Packets waiting for processing",
            queue_depth.clone(),
        );
        let held_packets = Gauge::default();
        registry.register(
            "held_packets",
            "Packets held for their mixing delay",
            held_packets.clone(),
        );
        let held_on_disk = Gauge::default();
        registry.register(
            "held_on_disk",
            "Held packets waiting on disk (past limits.held_in_memory)",
            held_on_disk.clone(),
        );
        let processing_seconds = Histogram::new(exponential_buckets(10e-6, 2.0, 14));
        registry.register(
            "processing_seconds",
            "Time to process one packet (its cryptography)",
            processing_seconds.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Connected peers", peers.clone());
        let epoch = Gauge::default();
        registry.register("epoch", "Current mix-key epoch", epoch.clone());
        let directory_nodes = Gauge::default();
        registry.register(
            "directory_nodes",
            "Verified descriptors known",
            directory_nodes.clone(),
        );
        let mailbox_replies = Gauge::default();
        registry.register(
            "mailbox_replies",
            "Replies held in mailboxes",
            mailbox_replies.clone(),
        );
        let descriptors_refused = Family::<Labels, Counter>::default();
        registry.register(
            "descriptors_refused",
            "Descriptors refused, by reason",
            descriptors_refused.clone(),
        );
        let rosters_refused = Family::<Labels, Counter>::default();
        registry.register(
            "rosters_refused",
            "Signed rosters refused, by reason",
            rosters_refused.clone(),
        );
        let roster_serial = Gauge::default();
        registry.register(
            "roster_serial",
            "The serial of the roster in force (0: none)",
            roster_serial.clone(),
        );
        let inbound_streams_refused = Counter::default();
        registry.register(
            "inbound_streams_refused",
            "Inbound streams reset because too many were waiting for the node, or one peer held too many mailbox streams",
            inbound_streams_refused.clone(),
        );
        let exit_leaks = Family::<Labels, Counter>::default();
        registry.register(
            "exit_leaks",
            "Leaks that reached this exit, by outcome",
            exit_leaks.clone(),
        );
        let exit_finished = Family::<Labels, Counter>::default();
        registry.register(
            "exit_finished",
            "Accepted leaks that left the queue, by outcome",
            exit_finished.clone(),
        );
        let exit_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "exit_delivery_attempts",
            "Delivery attempts, by result",
            exit_attempts.clone(),
        );
        let exit_queue = Gauge::default();
        registry.register(
            "exit_queue",
            "Leaks waiting in the exit's queue",
            exit_queue.clone(),
        );
        let exit_rate_per_hour = Gauge::default();
        registry.register(
            "exit_send_rate_per_hour",
            "The exit's current sending rate (emails per hour)",
            exit_rate_per_hour.clone(),
        );
        let exit_opt_outs = Counter::default();
        registry.register(
            "exit_opt_outs",
            "Recipients who opted out at this exit",
            exit_opt_outs.clone(),
        );
        let exit_opt_ins = Counter::default();
        registry.register(
            "exit_opt_ins",
            "Recipients who opted back in at this exit",
            exit_opt_ins.clone(),
        );
        let exit_opt_out_records = Family::<Labels, Counter>::default();
        registry.register(
            "exit_opt_out_records",
            "Opt-out records from other exits, by result",
            exit_opt_out_records.clone(),
        );
        let exit_opt_out_mail = Family::<Labels, Counter>::default();
        registry.register(
            "exit_opt_out_mail",
            "Opt-out emails to this exit, by result",
            exit_opt_out_mail.clone(),
        );
        let exit_abuse_reports = Counter::default();
        registry.register(
            "exit_abuse_reports",
            "Abuse reports received",
            exit_abuse_reports.clone(),
        );
        let exit_complaints = Family::<Labels, Counter>::default();
        registry.register(
            "exit_complaints",
            "Complaints about delivered leaks, by destination provider",
            exit_complaints.clone(),
        );
        let exit_provider_paused = Family::<Labels, Gauge>::default();
        registry.register(
            "exit_provider_paused",
            "1 while delivery to a provider is paused (complaint rate or operator)",
            exit_provider_paused.clone(),
        );
        let exit_bad_tokens = Counter::default();
        registry.register(
            "exit_bad_tokens",
            "Opt-out or report requests with an invalid token",
            exit_bad_tokens.clone(),
        );
        let exit_notifications = Family::<Labels, Counter>::default();
        registry.register(
            "exit_notifications",
            "Delivery notifications (and their absence), by what they decided",
            exit_notifications.clone(),
        );
        let exit_inbound = Family::<Labels, Counter>::default();
        registry.register(
            "exit_inbound",
            "Mail that reached the exit's domain, by kind",
            exit_inbound.clone(),
        );
        let exit_answers = Family::<Labels, Counter>::default();
        registry.register(
            "exit_answers",
            "Recipients' answers to leaks, by what became of them",
            exit_answers.clone(),
        );
        let exit_fetches = Family::<Labels, Counter>::default();
        registry.register(
            "exit_fetches",
            "Senders' fetches of answers, by result",
            exit_fetches.clone(),
        );
        let exit_receipts = Counter::default();
        registry.register(
            "exit_receipts",
            "Receipts sent back along reply blocks",
            exit_receipts.clone(),
        );
        let loops_sent = Counter::default();
        registry.register(
            "loops_sent",
            "This node's own loops (cover through two relays and back) sent",
            loops_sent.clone(),
        );
        let loops_returned = Counter::default();
        registry.register(
            "loops_returned",
            "This node's loops that came back",
            loops_returned.clone(),
        );
        let loops_lost = Counter::default();
        registry.register(
            "loops_lost",
            "This node's loops that did not come back in time",
            loops_lost.clone(),
        );
        let loops_pending = Gauge::default();
        registry.register(
            "loops_pending",
            "This node's loops in flight",
            loops_pending.clone(),
        );
        // libp2p's metrics add their own "libp2p" prefix: leak_libp2p_*.
        let libp2p = libp2p::metrics::Metrics::new(&mut registry);
        Self {
            packets_received,
            packets_forwarded,
            packets_final,
            packets_dropped,
            queue_depth,
            held_packets,
            held_on_disk,
            processing_seconds,
            peers,
            epoch,
            directory_nodes,
            mailbox_replies,
            descriptors_refused,
            rosters_refused,
            roster_serial,
            inbound_streams_refused,
            exit_leaks,
            exit_finished,
            exit_attempts,
            exit_queue,
            exit_rate_per_hour,
            exit_opt_outs,
            exit_opt_ins,
            exit_opt_out_records,
            exit_opt_out_mail,
            exit_abuse_reports,
            exit_complaints,
            exit_provider_paused,
            exit_bad_tokens,
            exit_receipts,
            exit_notifications,
            exit_inbound,
            exit_answers,
            exit_fetches,
            loops_sent,
            loops_returned,
            loops_lost,
            loops_pending,
            libp2p,
            registry,
        }
    }

    /// Counts a dropped packet.
    pub fn drop_packet(&self, reason: &'static str) {
        self.packets_dropped
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts a packet that ended here.
    pub fn final_packet(&self, kind: &'static str) {
        self.packets_final
            .get_or_create(&vec![("kind", kind)])
            .inc();
    }

    /// Counts `value`'s label under `key` in `family`.
    pub fn count_as(family: &Family<Labels, Counter>, key: &'static str, value: &impl Label) {
        Self::count(family, key, value.as_label());
    }

    /// Counts `labels` in `family`.
    pub fn count(family: &Family<Labels, Counter>, key: &'static str, value: &'static str) {
        family.get_or_create(&vec![(key, value)]).inc();
    }

    /// The count of `value` in `family`.
    pub fn get(family: &Family<Labels, Counter>, key: &'static str, value: &'static str) -> u64 {
        family.get(&vec![(key, value)]).map_or(0, |c| c.get())
    }

    /// Counts a refused descriptor.
    pub fn refuse_descriptor(&self, reason: &'static str) {
        self.descriptors_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Descriptors refused for `reason` so far.
    pub fn refused(&self, reason: &'static str) -> u64 {
        self.descriptors_refused
            .get(&vec![("reason", reason)])
            .map_or(0, |c| c.get())
    }

    /// Packets dropped for `reason` so far.
    pub fn dropped(&self, reason: &'static str) -> u64 {
        self.packets_dropped
            .get(&vec![("reason", reason)])
            .map_or(0, |c| c.get())
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped. Returns the
/// bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), crate::error::NodeError> {
    let io = |source| crate::error::NodeError::Io {
        what: format!("cannot listen for metrics on {addr} (port taken?)"),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

/// A typed value (an end state, a drop reason, an attempt's result) that
/// names itself in a metric's label: labels are derived from enums, never
/// written as strings at the call site.
pub trait Label {
    /// The label's value: lower-case, `snake_case`, stable.
    fn as_label(&self) -> &'static str;
}
