//! Destination providers and the exit's standing with each: pure, with
//! time passed in.
//!
//! Mailbox providers judge a sender by its complaint rate: Gmail's line is
//! a spam rate that never reaches 0.3 % and stays under 0.1 %; Yahoo and
//! Microsoft count the same way through their feedback loops. An exit that
//! goes on sending to a provider whose users complain loses the federation's
//! standing there (Leak 2014 lasted ten days). So the exit counts, per
//! provider ([`Provider`]), the leaks it delivered and the complaints about
//! them (a report from the email's link; feedback-loop reports when they
//! arrive) over a rolling window, and pauses delivery to a provider whose
//! rate crosses the threshold ([`Health`]). The pause holds until the
//! operator resumes it (`leak-node queue resume --provider P`): leaks to
//! that provider stay queued meanwhile, every other provider is served.
//!
//! A new sender is also watched more closely: providers ask for a slow
//! ramp of a new domain's or address's volume. From its first delivery the
//! exit starts at most `first_day` deliveries a UTC day to each provider,
//! a number that grows by `growth` every day ([`RampSettings`]); what does
//! not fit waits for the next day.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A destination provider, by the recipient's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Gmail (gmail.com, googlemail.com).
    Gmail,
    /// Microsoft's consumer mail (outlook.com, hotmail.*, live.*, msn.com).
    Microsoft,
    /// Yahoo and AOL.
    Yahoo,
    /// Every other domain.
    Other,
}

/// Domains of each named provider. A company's own domain hosted by one of
/// them (Google Workspace, Microsoft 365) counts as `Other`: telling those
/// apart needs the domain's MX hosts.
const DOMAINS: &[(Provider, &[&str])] = &[
    (Provider::Gmail, &["gmail.com", "googlemail.com"]),
    (
        Provider::Microsoft,
        &[
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "passport.com",
        ],
    ),
    (
        Provider::Yahoo,
        &[
            "yahoo.com",
            "ymail.com",
            "rocketmail.com",
            "aol.com",
            "aim.com",
        ],
    ),
];

/// Country variants: `hotmail.fr`, `outlook.co.uk`, `yahoo.co.jp`, `live.de`.
const COUNTRY_PREFIXES: &[(Provider, &[&str])] = &[
    (Provider::Microsoft, &["hotmail.", "outlook.", "live."]),
    (Provider::Yahoo, &["yahoo."]),
];

impl Provider {
    /// Every provider, in a stable order.
    pub const ALL: [Self; 4] = [Self::Gmail, Self::Microsoft, Self::Yahoo, Self::Other];

    /// Its name in metrics, logs and `leak-node queue`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Gmail => "gmail",
            Self::Microsoft => "microsoft",
            Self::Yahoo => "yahoo",
            Self::Other => "other",
        }
    }

    /// The provider a label names.
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.label() == label.trim().to_ascii_lowercase())
    }

    /// The provider of a recipient domain (ASCII, any case).
    pub fn of_domain(domain: &str) -> Self {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        for (provider, domains) in DOMAINS {
            if domains.contains(&domain.as_str()) {
                return *provider;
            }
        }
        for (provider, prefixes) in COUNTRY_PREFIXES {
            for prefix in *prefixes {
                if let Some(country) = domain.strip_prefix(prefix)
                    && is_country_suffix(country)
                {
                    return *provider;
                }
            }
        }
        Self::Other
    }

    /// The provider whose servers a domain's MX hosts are, if any:
    /// Google (`*.google.com`, `*.googlemail.com`), Microsoft
    /// (`*.outlook.com`, `*.hotmail.com`), Yahoo (`*.yahoodns.net`,
    /// `*.yahoo.com`, `*.aol.com`). The first host that names one decides.
    pub fn of_mx_hosts(hosts: &[String]) -> Option<Self> {
        const SUFFIXES: [(Provider, &[&str]); 3] = [
            (Provider::Gmail, &["google.com", "googlemail.com"]),
            (Provider::Microsoft, &["outlook.com", "hotmail.com"]),
            (Provider::Yahoo, &["yahoodns.net", "yahoo.com", "aol.com"]),
        ];
        hosts.iter().find_map(|host| {
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            SUFFIXES.iter().find_map(|(provider, suffixes)| {
                suffixes
                    .iter()
                    .any(|s| host == *s || host.ends_with(&format!(".{s}")))
                    .then_some(*provider)
            })
        })
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// One byte, for link tokens.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The provider of [`Provider::to_byte`]'s byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.get(usize::from(byte)).copied()
    }
}

/// `fr`, `de`, `co.uk`, `com.au`: a country code, alone or after `co.` or
/// `com.`.
fn is_country_suffix(s: &str) -> bool {
    let code = s
        .strip_prefix("co.")
        .or_else(|| s.strip_prefix("com."))
        .unwrap_or(s);
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase())
}

/// When a provider's delivery pauses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    /// Complaints over deliveries above which delivery pauses (0.001).
    pub threshold: f64,
    /// The rolling window, in hours.
    pub window_hours: u64,
    /// The rate's denominator is at least this many deliveries, so one
    /// complaint about one of a handful of emails does not pause a
    /// provider (and two about a few hundred do).
    pub min_deliveries: u64,
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// A day's cap above this is no cap.
const NO_CAP: f64 = 1e9;

/// The warm-up ramp of a new exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RampSettings {
    /// Deliveries started per provider on the first day; 0 for no ramp.
    pub first_day: u64,
    /// The factor the day's cap grows by each day.
    pub growth: f64,
}

/// One hour's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    hour: u64,
    delivered: u64,
    complaints: u64,
    bounced: u64,
}

/// One provider's counts and pause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    buckets: VecDeque<Bucket>,
    /// Since when delivery is paused (Unix ms), if it is.
    paused_since_ms: Option<u64>,
    /// Whether the pause was the complaint rate's (not the operator's).
    paused_automatically: bool,
    /// The UTC day of `started_today`.
    #[serde(default)]
    day: u64,
    /// Deliveries started on `day`.
    #[serde(default)]
    started_today: u64,
}

/// What `leak-node queue providers` shows of one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Its label.
    pub provider: String,
    /// Leaks delivered to it in the window.
    pub delivered: u64,
    /// Complaints in the window.
    pub complaints: u64,
    /// Permanent failures (bounces) in the window.
    pub bounced: u64,
    /// The complaint rate the pause is decided on.
    pub complaint_rate: f64,
    /// Since when delivery is paused (Unix ms), if it is.
    pub paused_since_ms: Option<u64>,
    /// Whether the complaint rate paused it (rather than the operator).
    pub paused_automatically: bool,
    /// Deliveries started today (UTC).
    pub started_today: u64,
    /// Today's cap of the warm-up ramp, if there is one still.
    pub daily_cap: Option<u64>,
}

/// The exit's standing with every provider.
#[derive(Debug, Clone)]
pub struct Health {
    settings: HealthSettings,
    ramp: RampSettings,
    saved: Saved,
}

/// What is kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Saved {
    standings: [Standing; 4],
    /// The UTC day of the exit's first delivery (the ramp's day 0).
    first_day: Option<u64>,
}

/// What a complaint did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Complaint {
    /// Counted; the rate is under the threshold (or delivery was paused
    /// already).
    Counted,
    /// Counted, and the rate crossed the threshold: delivery to the
    /// provider is paused now.
    Paused {
        /// The rate.
        rate: f64,
    },
}

impl Health {
    /// No counts, nothing paused, no ramp.
    pub fn new(settings: HealthSettings) -> Self {
        Self::with_ramp(
            settings,
            RampSettings {
                first_day: 0,
                growth: 1.0,
            },
        )
    }

    /// No counts, nothing paused, warming up by `ramp`.
    pub fn with_ramp(settings: HealthSettings, ramp: RampSettings) -> Self {
        Self {
            settings,
            ramp,
            saved: Saved::default(),
        }
    }

    /// The ramp's cap on deliveries started per provider on the UTC day of
    /// `now_ms`; `None` when there is no ramp, or no more.
    pub fn daily_cap(&self, now_ms: u64) -> Option<u64> {
        if self.ramp.first_day == 0 {
            return None;
        }
        let today = now_ms / DAY_MS;
        let days = today.saturating_sub(self.saved.first_day.unwrap_or(today));
        let cap =
            self.ramp.first_day as f64 * self.ramp.growth.max(1.0).powi(days.min(10_000) as i32);
        (cap < NO_CAP).then_some(cap as u64)
    }

    /// Deliveries started to `provider` on the UTC day of `now_ms`.
    pub fn started_today(&self, provider: Provider, now_ms: u64) -> u64 {
        let standing = &self.saved.standings[provider.index()];
        if standing.day == now_ms / DAY_MS {
            standing.started_today
        } else {
            0
        }
    }

    /// Whether the ramp lets another delivery to `provider` start now.
    pub fn ramp_allows(&self, provider: Provider, now_ms: u64) -> bool {
        self.daily_cap(now_ms)
            .is_none_or(|cap| self.started_today(provider, now_ms) < cap)
    }

    /// Milliseconds until the next UTC day (when the ramp's count starts
    /// again).
    pub fn until_next_day(now_ms: u64) -> u64 {
        DAY_MS - now_ms % DAY_MS
    }

    /// A delivery to `provider` starts (counted against the day's cap; the
    /// first ever starts the ramp).
    pub fn started(&mut self, provider: Provider, now_ms: u64) {
        let today = now_ms / DAY_MS;
        self.saved.first_day.get_or_insert(today);
        let standing = &mut self.saved.standings[provider.index()];
        if standing.day != today {
            standing.day = today;
            standing.started_today = 0;
        }
        standing.started_today += 1;
    }

    fn bucket(&mut self, provider: Provider, now_ms: u64) -> &mut Bucket {
        let hour = now_ms / HOUR_MS;
        let oldest = hour.saturating_sub(self.settings.window_hours.max(1) - 1);
        let buckets = &mut self.saved.standings[provider.index()].buckets;
        while buckets.front().is_some_and(|b| b.hour < oldest) {
            buckets.pop_front();
        }
        // A clock stepped back counts into the newest hour.
        if buckets.back().is_none_or(|b| b.hour < hour) {
            buckets.push_back(Bucket {
                hour,
                ..Bucket::default()
            });
        }
        buckets
            .back_mut()
            .unwrap_or_else(|| unreachable!("pushed above"))
    }

    fn totals(&self, provider: Provider, now_ms: u64) -> Bucket {
        let oldest = (now_ms / HOUR_MS).saturating_sub(self.settings.window_hours.max(1) - 1);
        self.saved.standings[provider.index()]
            .buckets
            .iter()
            .filter(|b| b.hour >= oldest)
            .fold(Bucket::default(), |sum, b| Bucket {
                hour: 0,
                delivered: sum.delivered + b.delivered,
                complaints: sum.complaints + b.complaints,
                bounced: sum.bounced + b.bounced,
            })
    }

    /// A leak was delivered to `provider`.
    pub fn delivered(&mut self, provider: Provider, now_ms: u64) {
        self.bucket(provider, now_ms).delivered += 1;
    }

    /// A leak to `provider` failed for good.
    pub fn bounced(&mut self, provider: Provider, now_ms: u64) {
        self.bucket(provider, now_ms).bounced += 1;
    }

    /// The complaint rate of `provider` over the window: complaints over
    /// deliveries, counting at least `min_deliveries`.
    pub fn rate(&self, provider: Provider, now_ms: u64) -> f64 {
        let totals = self.totals(provider, now_ms);
        totals.complaints as f64 / totals.delivered.max(self.settings.min_deliveries).max(1) as f64
    }

    /// A recipient at `provider` complained; pauses the provider when the
    /// rate crosses the threshold.
    pub fn complaint(&mut self, provider: Provider, now_ms: u64) -> Complaint {
        self.bucket(provider, now_ms).complaints += 1;
        let rate = self.rate(provider, now_ms);
        let standing = &mut self.saved.standings[provider.index()];
        if rate > self.settings.threshold && standing.paused_since_ms.is_none() {
            standing.paused_since_ms = Some(now_ms);
            standing.paused_automatically = true;
            return Complaint::Paused { rate };
        }
        Complaint::Counted
    }

    /// Whether delivery to `provider` is paused.
    pub fn is_paused(&self, provider: Provider) -> bool {
        self.saved.standings[provider.index()]
            .paused_since_ms
            .is_some()
    }

    /// The operator pauses (`true`) or resumes delivery to `provider`.
    /// Returns whether that changed anything. A resumed provider is paused
    /// again by the next complaint while its rate is still over the
    /// threshold.
    pub fn set_paused(&mut self, provider: Provider, paused: bool, now_ms: u64) -> bool {
        let standing = &mut self.saved.standings[provider.index()];
        if standing.paused_since_ms.is_some() == paused {
            return false;
        }
        standing.paused_since_ms = paused.then_some(now_ms);
        standing.paused_automatically = false;
        true
    }

    /// Every provider's counts and pause.
    pub fn status(&self, now_ms: u64) -> Vec<ProviderStatus> {
        Provider::ALL
            .into_iter()
            .map(|provider| {
                let totals = self.totals(provider, now_ms);
                let standing = &self.saved.standings[provider.index()];
                ProviderStatus {
                    provider: provider.label().to_owned(),
                    delivered: totals.delivered,
                    complaints: totals.complaints,
                    bounced: totals.bounced,
                    complaint_rate: self.rate(provider, now_ms),
                    paused_since_ms: standing.paused_since_ms,
                    paused_automatically: standing.paused_automatically,
                    started_today: self.started_today(provider, now_ms),
                    daily_cap: self.daily_cap(now_ms),
                }
            })
            .collect()
    }

    /// The counts and pauses, to keep across a restart.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.saved).unwrap_or_default()
    }

    /// Restores what [`Health::to_bytes`] kept; damaged bytes restore
    /// nothing (and are reported).
    pub fn restore(&mut self, bytes: &[u8]) -> bool {
        match serde_json::from_slice::<Saved>(bytes) {
            Ok(saved) => {
                self.saved = saved;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: HealthSettings = HealthSettings {
        threshold: 0.001,
        window_hours: 24,
        min_deliveries: 1000,
    };
    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn domains_name_their_provider() {
        for (domain, provider) in [
            ("gmail.com", Provider::Gmail),
            ("GoogleMail.com.", Provider::Gmail),
            ("hotmail.fr", Provider::Microsoft),
            ("outlook.co.uk", Provider::Microsoft),
            ("live.com", Provider::Microsoft),
            ("yahoo.co.jp", Provider::Yahoo),
            ("aol.com", Provider::Yahoo),
            ("example.com", Provider::Other),
            ("yahoo.example.com", Provider::Other),
            ("notgmail.com", Provider::Other),
            ("outlook.community", Provider::Other),
        ] {
            assert_eq!(Provider::of_domain(domain), provider, "{domain}");
        }
        for provider in Provider::ALL {
            assert_eq!(Provider::parse(provider.label()), Some(provider));
            assert_eq!(Provider::from_byte(provider.to_byte()), Some(provider));
        }
        assert_eq!(Provider::from_byte(9), None);
    }

    /// One complaint among few deliveries is 0.1 % at most (the floor of
    /// 1,000): counted, no pause. A second crosses the threshold and pauses
    /// that provider only; resuming clears it, and complaints older than
    /// the window no longer count.
    #[test]
    fn complaints_over_the_threshold_pause_one_provider() {
        let mut health = Health::new(SETTINGS);
        for _ in 0..500 {
            health.delivered(Provider::Gmail, T0);
            health.delivered(Provider::Yahoo, T0);
        }
        assert_eq!(health.complaint(Provider::Gmail, T0), Complaint::Counted);
        assert!(!health.is_paused(Provider::Gmail));
        assert_eq!(
            health.complaint(Provider::Gmail, T0 + 1),
            Complaint::Paused { rate: 0.002 }
        );
        assert!(health.is_paused(Provider::Gmail));
        assert!(!health.is_paused(Provider::Yahoo));
        // Paused already: counted only.
        assert_eq!(
            health.complaint(Provider::Gmail, T0 + 2),
            Complaint::Counted
        );
        let status = health.status(T0 + 2);
        assert_eq!(status[0].provider, "gmail");
        assert_eq!((status[0].delivered, status[0].complaints), (500, 3));
        assert!(status[0].paused_automatically);

        assert!(health.set_paused(Provider::Gmail, false, T0 + 3));
        assert!(!health.set_paused(Provider::Gmail, false, T0 + 3));
        // Still over the threshold: the next complaint pauses again.
        assert!(matches!(
            health.complaint(Provider::Gmail, T0 + 4),
            Complaint::Paused { .. }
        ));
        health.set_paused(Provider::Gmail, false, T0 + 5);
        // A day later the window holds none of it.
        let later = T0 + 25 * HOUR_MS;
        assert_eq!(health.rate(Provider::Gmail, later), 0.0);
        assert_eq!(health.complaint(Provider::Gmail, later), Complaint::Counted);
        // Many deliveries dilute complaints: 2 in 5,000 is 0.04 %.
        let mut busy = Health::new(SETTINGS);
        for _ in 0..5000 {
            busy.delivered(Provider::Microsoft, T0);
        }
        busy.complaint(Provider::Microsoft, T0);
        assert_eq!(busy.complaint(Provider::Microsoft, T0), Complaint::Counted);
    }

    /// The ramp starts at the first delivery: `first_day` per provider on
    /// that UTC day, doubling each day, each provider counted apart, until
    /// the cap is past any volume.
    #[test]
    fn a_new_exit_ramps_up_per_provider() {
        let ramp = RampSettings {
            first_day: 3,
            growth: 2.0,
        };
        let mut health = Health::with_ramp(SETTINGS, ramp);
        let day0 = (T0 / DAY_MS) * DAY_MS + 1000;
        assert_eq!(health.daily_cap(day0), Some(3));
        for _ in 0..3 {
            assert!(health.ramp_allows(Provider::Gmail, day0));
            health.started(Provider::Gmail, day0);
        }
        assert!(!health.ramp_allows(Provider::Gmail, day0));
        assert!(health.ramp_allows(Provider::Yahoo, day0));
        assert_eq!(Health::until_next_day(day0), DAY_MS - 1000);
        let day1 = day0 + DAY_MS;
        assert_eq!(health.daily_cap(day1), Some(6));
        assert_eq!(health.started_today(Provider::Gmail, day1), 0);
        assert!(health.ramp_allows(Provider::Gmail, day1));
        assert_eq!(health.daily_cap(day0 + 40 * DAY_MS), None);
        // Kept across a restart: day 1 of the ramp stays day 1.
        let mut restored = Health::with_ramp(SETTINGS, ramp);
        assert!(restored.restore(&health.to_bytes()));
        assert_eq!(restored.daily_cap(day1), Some(6));
        assert!(!restored.ramp_allows(Provider::Gmail, day0));
        // No ramp: no cap.
        assert_eq!(Health::new(SETTINGS).daily_cap(day0), None);
    }

    #[test]
    fn standing_survives_a_restart_and_damage_restores_nothing() {
        let mut health = Health::new(SETTINGS);
        health.delivered(Provider::Other, T0);
        health.bounced(Provider::Other, T0);
        health.set_paused(Provider::Yahoo, true, T0);
        let mut restored = Health::new(SETTINGS);
        assert!(restored.restore(&health.to_bytes()));
        assert_eq!(restored.status(T0), health.status(T0));
        assert!(restored.is_paused(Provider::Yahoo));
        let mut damaged = Health::new(SETTINGS);
        assert!(!damaged.restore(b"{not json"));
        assert!(!damaged.is_paused(Provider::Yahoo));
    }

    #[test]
    fn mx_hosts_name_their_provider() {
        let of = |hosts: &[&str]| {
            Provider::of_mx_hosts(&hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(of(&["aspmx.l.google.com."]), Some(Provider::Gmail));
        assert_eq!(
            of(&["univ-x-fr.mail.protection.outlook.com"]),
            Some(Provider::Microsoft)
        );
        assert_eq!(of(&["mta7.am0.yahoodns.net"]), Some(Provider::Yahoo));
        assert_eq!(
            of(&["mx.example.org", "ALT1.ASPMX.L.GOOGLE.COM"]),
            Some(Provider::Gmail)
        );
        assert_eq!(of(&["mx.notgoogle.com", "google.com.evil.test"]), None);
        assert_eq!(of(&[]), None);
    }
}
