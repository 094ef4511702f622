//! `[exit]`: the exit role's settings.

use serde::{Deserialize, Serialize};

/// How the exit hands email on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `.eml` files in a directory (local federations, demos).
    File,
    /// SMTP to the operator's smarthost.
    Smtp,
}

/// `[exit]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitConfig {
    /// The mail domain the exit sends from (published in its descriptor).
    pub domain: String,
    /// The `From:` address; empty means `leak@DOMAIN`.
    pub from: String,
    /// Where recipients report abuse (named in every email's footer); empty
    /// means `abuse@DOMAIN`.
    pub abuse_address: String,
    /// Address of the opt-out and report endpoint (HTTP); put it behind an
    /// HTTPS reverse proxy and name that in `public_url`.
    pub http_listen: String,
    /// The base URL of the endpoint as recipients reach it, e.g.
    /// `https://leak.example.org`; empty means `http://HTTP_LISTEN`.
    pub public_url: String,
    /// "file" or "smtp".
    pub transport: Transport,
    /// Directory for the file transport; empty means `DATA_DIR/outbox`.
    pub file_dir: String,
    /// The smarthost: `smtp://host:587?tls=required` (STARTTLS),
    /// `smtps://host:465` (implicit TLS), `smtp://127.0.0.1:25` (plain, for
    /// loopback only); a user name may be given as `smtp://user@host`.
    pub smtp_url: String,
    /// File holding the SMTP password (mode 0600); empty for no AUTH.
    pub smtp_password_file: String,
    /// A PEM file of CA certificates trusted for the smarthost's TLS
    /// certificate besides the default (Mozilla) roots, for a smarthost with
    /// a private CA; empty for none.
    pub smtp_ca_file: String,
    /// Most SMTP connections kept open and used at once.
    pub smtp_connections: u32,
    /// Most leaks to one destination provider holding an SMTP connection
    /// at once (so one busy provider leaves connections for the others).
    pub provider_connections: u32,
    /// The DNS resolver for recipients' MX hosts (which provider hosts a
    /// domain) and for the DKIM keys of opt-out emails: "" the system's,
    /// "off" none (providers by domain name only; opt-outs by email hold at
    /// this exit only, and other exits' are refused), or `IP:PORT`.
    pub dns_resolver: String,
    /// Seconds before an SMTP command times out.
    pub smtp_timeout_secs: u64,
    /// Most leaks per recipient per UTC day, if stricter than the policy's;
    /// 0 means the policy's limit.
    pub per_recipient_per_day: u32,
    /// Leaks an hour (passing the stamp check) past which the exit asks
    /// harder stamps: one more bit per doubling, at most six (0: never
    /// more than the policy's).
    pub busy_leaks_per_hour: u64,
    /// A file of local rules (the policy format) applied on top of the
    /// shared policy; empty for none.
    pub local_rules: String,
    /// First retry after a temporary failure, in seconds; it doubles per
    /// attempt (with jitter) up to `retry_max_secs`.
    pub retry_initial_secs: u64,
    /// Longest wait between two attempts, in seconds.
    pub retry_max_secs: u64,
    /// A leak not delivered this many seconds after acceptance ends as
    /// `Bounced`.
    pub lifetime_secs: u64,
    /// How long a message id is remembered so a retransmission is not
    /// delivered twice, in seconds.
    pub dedup_secs: u64,
    /// Mean extra time a receipt is held before it leaves, in milliseconds
    /// (exponential: the time a leak's receipt leaves says nothing of when
    /// the leak arrived); 0 sends it after the exit hop's own delay.
    pub receipt_delay_ms: u64,
    /// Highest sending rate (emails per second).
    pub max_rate: f64,
    /// Lowest rate a deferral (421, 4.7.x) may slow sending to.
    pub min_rate: f64,
    /// DKIM selector; empty disables signing.
    pub dkim_selector: String,
    /// DKIM private key file (PEM: RSA in PKCS#1, or an Ed25519 seed in
    /// base64 as in RFC 8463); `leak-node dkim-keys` makes one.
    pub dkim_key_file: String,
    /// "rsa" (the default: every large provider verifies RSA) or "ed25519".
    pub dkim_algorithm: String,
    /// Highest sending rate to one destination provider (emails per
    /// second); a deferral from it (4.7.x) halves it, down to `min_rate`.
    pub provider_max_rate: f64,
    /// Deliveries started per provider on a new exit's first day (the
    /// warm-up ramp); 0 for none.
    pub warmup_first_day: u64,
    /// The factor the ramp's daily cap grows by each day.
    pub warmup_growth: f64,
    /// Complaints over deliveries (per provider, over the window) above
    /// which delivery to that provider pauses until the operator resumes it.
    pub complaint_threshold: f64,
    /// The complaint rate's rolling window, in hours.
    pub complaint_window_hours: u64,
    /// The complaint rate's denominator counts at least this many
    /// deliveries (a complaint about one of a handful of emails alone does
    /// not pause a provider).
    pub complaint_min_deliveries: u64,
    /// A second DKIM signature, Ed25519 (RFC 8463), beside an RSA one: its
    /// selector; empty for none.
    pub dkim_ed25519_selector: String,
    /// Its key file (a base64 Ed25519 seed).
    pub dkim_ed25519_key_file: String,
    /// Where the exit takes mail for its domain from its own mail server
    /// (LMTP, RFC 2033; a loopback address): delivery notifications,
    /// feedback-loop reports, mail to postmaster@, abuse@ and the From
    /// address. Used with the smtp transport; empty for none (then a 250
    /// from the mail server ends a leak as `Accepted`, outcome unknown).
    pub inbound_listen: String,
    /// How long a sent leak waits for its delivery notification before its
    /// sender is told `Accepted` (outcome unknown), in seconds.
    pub notify_wait_secs: u64,
    /// Where mail to postmaster@ and abuse@ is forwarded (as an
    /// attachment); empty: counted and dropped.
    pub operator_address: String,
    /// Most emails forwarded to the operator, and most explanations sent
    /// to people who answer the From address, per hour each (a flood at
    /// postmaster@ is counted, not forwarded).
    pub forward_per_hour: u32,
    /// How long the exit keeps a conversation's answers for its sender
    /// (each answer, from its arrival) and the conversation itself (from
    /// its last leak or answer), in days.
    pub answer_keep_days: u32,
    /// Most answers one conversation takes per UTC day (a flood is
    /// refused and counted).
    pub answers_per_day: u32,
    /// Most answers one conversation keeps waiting for its sender.
    pub answers_waiting: u32,
}

impl ExitConfig {
    pub(super) fn defaults() -> Self {
        Self {
            domain: String::new(),
            from: String::new(),
            abuse_address: String::new(),
            http_listen: "127.0.0.1:8025".into(),
            public_url: String::new(),
            transport: Transport::File,
            file_dir: String::new(),
            smtp_url: String::new(),
            smtp_password_file: String::new(),
            smtp_ca_file: String::new(),
            smtp_connections: 4,
            provider_connections: 2,
            dns_resolver: String::new(),
            smtp_timeout_secs: 60,
            per_recipient_per_day: 0,
            busy_leaks_per_hour: 3000,
            local_rules: String::new(),
            retry_initial_secs: 60,
            retry_max_secs: 3600,
            lifetime_secs: 5 * 86_400,
            dedup_secs: 7 * 86_400,
            receipt_delay_ms: 60_000,
            max_rate: 20.0,
            min_rate: 0.1,
            dkim_selector: String::new(),
            dkim_key_file: String::new(),
            provider_max_rate: 5.0,
            warmup_first_day: 1000,
            warmup_growth: 2.0,
            complaint_threshold: 0.001,
            complaint_window_hours: 24,
            complaint_min_deliveries: 1000,
            dkim_algorithm: "rsa".into(),
            dkim_ed25519_selector: String::new(),
            dkim_ed25519_key_file: String::new(),
            inbound_listen: "127.0.0.1:2424".into(),
            notify_wait_secs: 1800,
            operator_address: String::new(),
            forward_per_hour: 20,
            answer_keep_days: 30,
            answers_per_day: 10,
            answers_waiting: 50,
        }
    }
}
