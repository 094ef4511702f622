//! `leak-node authority …`: a directory authority's keys, the roster it
//! keeps (which nodes the federation admits, their roles and families),
//! signing and co-signing it, and showing a signed roster as a node would
//! take it.
//!
//! | file | what | written by |
//! | --- | --- | --- |
//! | authority key | the Ed25519 seed, 64 hex digits, mode 0600 | `keygen` (never over an existing file) |
//! | roster TOML | the roster's text ([`leak_protocol::roster`]): serial, validity, `[[node]]`s | `admit`, `remove` (created at serial 0); `sign` (serial and validity of the last signing) |
//! | signed roster | the TOML's text and the authorities' signatures | `sign`, `cosign` (atomically, mode 0644) |
//!
//! `sign` numbers each roster one more than the last signed from the same
//! TOML (nodes keep the newest serial and refuse an older one) and writes
//! the bumped TOML back before the signed roster, so a failed write can
//! skip a serial but never sign two rosters under one.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Subcommand;
use leak_net::{
    durable::{self, Access},
    node_id_of, peer_id_of,
};
use leak_node::{Config, clock::unix_now};
use leak_protocol::{
    NodeId,
    directory::{MAX_NAME_LEN, Roles},
    federation::MAX_CLOCK_SKEW_SECS,
    roster::{self, Admission, MAX_VALIDITY_SECS, Roster, RosterError, SignedRoster},
    signed,
};
use libp2p::PeerId;

use crate::signing_key::{self, AUTHORITY};

/// The longest `--valid-hours`: a roster claims at most
/// [`MAX_VALIDITY_SECS`].
const MAX_VALID_HOURS: u64 = MAX_VALIDITY_SECS / 3600;
/// `--valid-hours` by default: three days, so a roster signed on Friday
/// outlives a weekend.
const DEFAULT_VALID_HOURS: u64 = 72;

#[derive(Subcommand)]
pub(crate) enum AuthorityAction {
    /// Create a directory authority's signing key (mode 0600) and print the
    /// public key that nodes list in `directory.authorities`.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Admit a node to the roster (created if missing), or change the
    /// roles and family of an admitted one.
    Admit {
        /// The roster's TOML, which `sign` signs.
        #[arg(long, value_name = "TOML")]
        roster: PathBuf,
        /// The node: its peer id (12D3KooW…, `leak-node id`) or its node
        /// id (64 hex digits, `leak-node init`).
        #[arg(long, value_name = "ID")]
        node: String,
        /// What it may do: relay, exit, or both (relay,exit).
        #[arg(long, value_name = "ROLE", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Its operator family: no path crosses two nodes of one family.
        #[arg(long, value_name = "NAME")]
        family: String,
    },
    /// Remove an admitted node from the roster.
    Remove {
        /// The roster's TOML.
        #[arg(long, value_name = "TOML")]
        roster: PathBuf,
        /// The node: its peer id or its node id (64 hex digits).
        #[arg(long, value_name = "ID")]
        node: String,
    },
    /// Sign the roster with the next serial number and a new validity,
    /// write it, and keep the serial in the TOML for the next time.
    Sign {
        /// The roster's TOML.
        #[arg(long, value_name = "TOML")]
        roster: PathBuf,
        /// An authority key written by `authority keygen` (repeatable:
        /// each key signs).
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// How long nodes take the roster, in hours (1 to 336, 14 days):
        /// sign a new one before it runs out.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_VALID_HOURS)]
        valid_hours: u64,
        /// Where to write the signed roster (what nodes take as
        /// `directory.roster_file`).
        #[arg(long, value_name = "SIGNED")]
        out: PathBuf,
    },
    /// Add another authority's signature to a signed roster (the same
    /// text), rewriting the file.
    Cosign {
        /// An authority key (repeatable: each key signs).
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// The signed roster.
        signed: PathBuf,
    },
    /// A signed roster's serial, validity, nodes and signers; given the
    /// authorities to trust, whether a node would take it (exit 1 if not).
    Show {
        /// The signed roster.
        signed: PathBuf,
        /// Trust the authorities and threshold of this config's
        /// `[directory]`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Trust this authority key, 64 hex digits (repeatable).
        #[arg(long = "authority", value_name = "HEX", conflicts_with = "config")]
        authorities: Vec<String>,
        /// How many of the --authority keys must have signed [default: 1].
        #[arg(long, requires = "authorities", conflicts_with = "config")]
        threshold: Option<usize>,
    },
}

/// Runs an `authority` subcommand; what it prints goes to stdout (a closed
/// pipe, as with `| head`, is not an error), then its error, if any.
pub(crate) fn authority_command(action: AuthorityAction) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (out, refusal) = authority_action(action)?;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    refusal.map_or(Ok(()), Err)
}

/// A subcommand's output, and why it failed after printing it (`show`
/// prints a roster that does not verify, then says why).
type Outcome = (String, Option<anyhow::Error>);

fn authority_action(action: AuthorityAction) -> anyhow::Result<Outcome> {
    let out = match action {
        AuthorityAction::Keygen { out } => keygen(&out)?,
        AuthorityAction::Admit {
            roster,
            node,
            roles,
            family,
        } => admit(&roster, &node, &roles, &family)?,
        AuthorityAction::Remove { roster, node } => remove(&roster, &node)?,
        AuthorityAction::Sign {
            roster,
            keys,
            valid_hours,
            out,
        } => sign(&roster, &keys, valid_hours, &out)?,
        AuthorityAction::Cosign { keys, signed } => cosign(&keys, &signed)?,
        AuthorityAction::Show {
            signed,
            config,
            authorities,
            threshold,
        } => {
            let trust = match config {
                Some(path) => Some(Trust::of_config(&path)?),
                None if authorities.is_empty() => None,
                None => Some(Trust::given(&authorities, threshold.unwrap_or(1))?),
            };
            return show(&signed, trust.as_ref());
        }
    };
    Ok((out, None))
}

fn keygen(path: &Path) -> anyhow::Result<String> {
    let public = hex::encode(signing_key::create(path, AUTHORITY)?);
    let mut out = String::new();
    writeln!(out, "authority key: {} (keep it secret)", path.display())?;
    writeln!(out, "public key: {public}")?;
    writeln!(
        out,
        "nodes trust it with, in [directory]: authorities = [\"{public}\"]"
    )?;
    writeln!(
        out,
        "or when created: leak-node init --authority {public} …"
    )?;
    Ok(out)
}

fn admit(path: &Path, node: &str, roles: &[String], family: &str) -> anyhow::Result<String> {
    let node = parse_node(node)?;
    let roles = parse_roles(roles)?;
    let family = family.trim();
    anyhow::ensure!(
        !family.is_empty() && family.len() <= MAX_NAME_LEN,
        "--family must name the node's operator family (1 to {MAX_NAME_LEN} bytes)"
    );
    let (mut roster, created) = match std::fs::exists(path) {
        Ok(false) => (Roster::new(0, 0, 1), true),
        _ => (read_roster(path)?, false),
    };
    let admission = Admission {
        roles,
        family: family.to_owned(),
    };
    let before = roster.get(&node).cloned();
    let mut out = String::new();
    let name = node_name(&node);
    match &before {
        None => writeln!(
            out,
            "admitted {name}: roles {}, family {family}",
            roles_text(roles)
        )?,
        Some(old) if *old == admission => {
            writeln!(
                out,
                "{name} is already admitted with roles {}, family {family}: nothing changed",
                roles_text(roles)
            )?;
            return Ok(out);
        }
        Some(old) => {
            writeln!(out, "changed {name}:")?;
            if old.roles != roles {
                writeln!(
                    out,
                    "  roles: {} -> {}",
                    roles_text(old.roles),
                    roles_text(roles)
                )?;
            }
            if old.family != family {
                writeln!(out, "  family: {} -> {family}", old.family)?;
            }
        }
    }
    roster
        .admit(node, admission)
        .map_err(|e| anyhow::anyhow!("cannot admit {name}: {}", roster_reason(&e)))?;
    write_roster(path, &roster)?;
    if created {
        writeln!(out, "created {}", path.display())?;
    }
    writeln!(out, "{}", pending(path, &roster))?;
    Ok(out)
}

fn remove(path: &Path, node: &str) -> anyhow::Result<String> {
    let node = parse_node(node)?;
    let mut roster = read_roster(path)?;
    let name = node_name(&node);
    let admission = roster
        .get(&node)
        .cloned()
        .with_context(|| format!("{name} is not admitted in {}", path.display()))?;
    roster.remove(&node);
    write_roster(path, &roster)?;
    let mut out = String::new();
    writeln!(
        out,
        "removed {name} (roles {}, family {})",
        roles_text(admission.roles),
        admission.family
    )?;
    writeln!(out, "{}", pending(path, &roster))?;
    Ok(out)
}

fn sign(
    path: &Path,
    keys: &[PathBuf],
    valid_hours: u64,
    out_path: &Path,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        (1..=MAX_VALID_HOURS).contains(&valid_hours),
        "--valid-hours must be 1 to {MAX_VALID_HOURS}: nodes refuse a roster valid for more than 14 days"
    );
    // Every key is read (and its mode checked) before anything is written.
    let seeds = read_keys(keys)?;
    let mut roster = read_roster(path)?;
    anyhow::ensure!(
        !roster.is_empty(),
        "{} admits no node: nodes that took it would admit no other node; \
         admit nodes first (leak-node authority admit)",
        path.display()
    );
    let serial = roster
        .serial
        .checked_add(1)
        .context("the roster's serial cannot grow any more")?;
    if let Some(published) = published_serial(out_path)
        && published >= serial
    {
        anyhow::bail!(
            "{} holds roster serial {published}: nodes keep the newest and would refuse serial {serial}; \
             raise serial in {} above {published} or write elsewhere",
            out_path.display(),
            path.display()
        );
    }
    let now = unix_now();
    let valid_until = now.saturating_add(valid_hours * 3600);
    // Back-dated for nodes whose clocks are behind, within the most
    // validity a roster may claim.
    let valid_from = now
        .saturating_sub(MAX_CLOCK_SKEW_SECS)
        .max(valid_until.saturating_sub(MAX_VALIDITY_SECS));
    roster.serial = serial;
    roster.valid_from = valid_from;
    roster.valid_until = valid_until;
    let (first, rest) = seeds.split_first().context("no --key")?;
    let mut signed = SignedRoster::sign(&roster, first)
        .map_err(|e| anyhow::anyhow!("cannot sign {}: {}", path.display(), roster_reason(&e)))?;
    for seed in rest {
        signed.add_signature(seed)?;
    }
    // The serial is kept before the roster is published: never two
    // rosters under one serial.
    write_roster(path, &roster)?;
    durable::write(out_path, &signed.to_bytes(), Access::Shared)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    let mut out = String::new();
    writeln!(
        out,
        "signed roster serial {serial} written to {}",
        out_path.display()
    )?;
    describe(&mut out, &roster, now)?;
    write_signers(&mut out, &signed, None)?;
    writeln!(
        out,
        "publish it: put it where nodes read directory.roster_file (they pass it on); \
         sign again before {}",
        utc(valid_until)
    )?;
    Ok(out)
}

fn cosign(keys: &[PathBuf], path: &Path) -> anyhow::Result<String> {
    let seeds = read_keys(keys)?;
    let mut signed = read_signed(path)?;
    let roster = signed.roster_unverified().map_err(|e| {
        anyhow::anyhow!("{} is not a roster: {}", path.display(), roster_reason(&e))
    })?;
    // Every signature it carries must verify, whoever made them: a
    // signature added to an altered text would vouch for the alteration.
    let mut signers: Vec<[u8; 32]> = signed.signers().copied().collect();
    signers.sort_unstable();
    signers.dedup();
    signed
        .verify(&signers, signers.len(), roster.valid_until, u64::MAX)
        .map_err(|e| anyhow::anyhow!("{} refused: {}", path.display(), roster_reason(&e)))?;
    let now = unix_now();
    anyhow::ensure!(
        now <= roster.valid_until,
        "{} refused: roster {} expired at {}; sign a new one (leak-node authority sign)",
        path.display(),
        roster.serial,
        utc(roster.valid_until)
    );
    let mut out = String::new();
    for seed in &seeds {
        let key = leak_protocol::crypto::ed25519_public(seed);
        let had = signers.contains(&key);
        signed.add_signature(seed)?;
        if had {
            writeln!(out, "{} had already signed", hex::encode(key))?;
        } else {
            writeln!(out, "{} signed", hex::encode(key))?;
        }
    }
    durable::write(path, &signed.to_bytes(), Access::Shared)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(
        out,
        "roster serial {} written to {}",
        roster.serial,
        path.display()
    )?;
    describe(&mut out, &roster, now)?;
    write_signers(&mut out, &signed, None)?;
    Ok(out)
}

/// The authorities `show` checks a roster against.
struct Trust {
    keys: Vec<[u8; 32]>,
    threshold: usize,
    max_clock_skew_secs: u64,
}

impl Trust {
    fn of_config(path: &Path) -> anyhow::Result<Self> {
        let config = Config::load(path, &[])?;
        let keys = leak_protocol::policy::parse_public_keys(&config.directory.authorities)
            .context("directory.authorities")?;
        Ok(Self {
            keys,
            threshold: config.directory.authority_threshold,
            max_clock_skew_secs: config.directory.max_clock_skew_secs,
        })
    }

    fn given(authorities: &[String], threshold: usize) -> anyhow::Result<Self> {
        let keys = authorities
            .iter()
            .map(|k| {
                signed::decode_hex_key(k.trim()).with_context(|| {
                    format!("--authority {k:?} is not an authority key (64 hex digits)")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            (1..=keys.len()).contains(&threshold),
            "--threshold must be between 1 and the number of --authority keys ({})",
            keys.len()
        );
        Ok(Self {
            keys,
            threshold,
            max_clock_skew_secs: MAX_CLOCK_SKEW_SECS,
        })
    }
}

fn show(path: &Path, trust: Option<&Trust>) -> anyhow::Result<Outcome> {
    let signed = read_signed(path)?;
    let roster = signed.roster_unverified().map_err(|e| {
        anyhow::anyhow!("{} is not a roster: {}", path.display(), roster_reason(&e))
    })?;
    let now = unix_now();
    let mut out = String::new();
    describe(&mut out, &roster, now)?;
    write_signers(&mut out, &signed, trust.map(|t| (&t.keys[..], &roster)))?;
    let Some(trust) = trust else {
        return Ok((out, None));
    };
    match signed.verify(&trust.keys, trust.threshold, now, trust.max_clock_skew_secs) {
        Ok(_) => {
            writeln!(
                out,
                "verifies: yes ({} of {} trusted authorities required)",
                trust.threshold,
                trust.keys.len()
            )?;
            Ok((out, None))
        }
        Err(e) => {
            let mut reason = roster_reason(&e);
            let untrusted: Vec<String> = signed
                .signers()
                .filter(|k| !trust.keys.contains(k))
                .map(hex::encode)
                .collect();
            if matches!(e, RosterError::NotEnoughSignatures { .. }) && !untrusted.is_empty() {
                reason = format!(
                    "{reason}; signatures by keys not trusted do not count: {}",
                    untrusted.join(", ")
                );
            }
            writeln!(out, "verifies: no: {reason}")?;
            let refusal = anyhow::anyhow!("{} refused: {reason}", path.display());
            Ok((out, Some(refusal)))
        }
    }
}

// Node ids, roster files, and how they are printed.

/// A node named by its peer id (12D3KooW…) or its node id (64 hex digits).
fn parse_node(text: &str) -> anyhow::Result<NodeId> {
    let text = text.trim();
    if let Some(key) = signed::decode_hex_key(text) {
        let node = NodeId(key);
        anyhow::ensure!(
            peer_id_of(&node).is_some(),
            "--node {text} is not a node id: not an Ed25519 public key"
        );
        return Ok(node);
    }
    let peer: PeerId = text.parse().map_err(|_| {
        anyhow::anyhow!(
            "--node {text:?} is neither a peer id (12D3KooW…, as `leak-node id` prints) \
             nor a node id (64 hex digits, as `leak-node init` prints)"
        )
    })?;
    node_id_of(&peer).with_context(|| format!("--node {text}: not the peer id of an Ed25519 key"))
}

/// `--roles`: relay, exit or both, at least one.
fn parse_roles(names: &[String]) -> anyhow::Result<Roles> {
    let names: Vec<&str> = names.iter().map(|n| n.trim()).collect();
    if let Some(bad) = names.iter().find(|n| !matches!(**n, "relay" | "exit")) {
        anyhow::bail!(
            "--roles: unknown role {bad:?}; a node's roles are relay and exit (--roles relay,exit)"
        );
    }
    roster::parse_roles(&names).map_err(|e| anyhow::anyhow!("--roles: {}", roster_reason(&e)))
}

/// A roster error's text without its `roster: ` prefix, times in UTC.
fn roster_reason(e: &RosterError) -> String {
    match e {
        RosterError::Expired {
            serial,
            valid_until,
        } => format!("roster {serial} expired at {}", utc(*valid_until)),
        RosterError::NotYetValid { serial, valid_from } => {
            format!("roster {serial} is not valid before {}", utc(*valid_from))
        }
        e => {
            let text = e.to_string();
            text.strip_prefix("roster: ").unwrap_or(&text).to_owned()
        }
    }
}

fn read_roster(path: &Path) -> anyhow::Result<Roster> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the roster {} (leak-node authority admit creates it)",
            path.display()
        )
    })?;
    Roster::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a roster: {}", path.display(), roster_reason(&e)))
}

fn write_roster(path: &Path, roster: &Roster) -> anyhow::Result<()> {
    durable::write(path, roster.to_toml().as_bytes(), Access::Shared)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_signed(path: &Path) -> anyhow::Result<SignedRoster> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the signed roster {}", path.display()))?;
    SignedRoster::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), roster_reason(&e)))
}

/// The serial of the signed roster at `path`, if there is one.
fn published_serial(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        SignedRoster::from_bytes(&bytes)
            .ok()?
            .roster_unverified()
            .ok()?
            .serial,
    )
}

fn read_keys(keys: &[PathBuf]) -> anyhow::Result<Vec<zeroize::Zeroizing<[u8; 32]>>> {
    keys.iter()
        .map(|k| signing_key::read(k, AUTHORITY))
        .collect()
}

/// The next step after `admit` or `remove`.
fn pending(path: &Path, roster: &Roster) -> String {
    format!(
        "{} now admits {} node(s); nodes learn of it when it is signed \
         (leak-node authority sign --roster {} --key FILE --out SIGNED)",
        path.display(),
        roster.len(),
        path.display()
    )
}

/// `HEX (peer 12D3KooW…)`.
fn node_name(node: &NodeId) -> String {
    match peer_id_of(node) {
        Some(peer) => format!("{} (peer {peer})", signed::hex(&node.0)),
        None => signed::hex(&node.0),
    }
}

fn roles_text(roles: Roles) -> &'static str {
    match (roles.relay, roles.exit) {
        (true, true) => "relay, exit",
        (true, false) => "relay",
        (false, true) => "exit",
        (false, false) => "none",
    }
}

/// Serial, validity (and whether it holds at `now`) and every node.
fn describe(out: &mut String, roster: &Roster, now: u64) -> std::fmt::Result {
    writeln!(out, "serial: {}", roster.serial)?;
    writeln!(out, "valid from: {}", utc(roster.valid_from))?;
    let state = if now > roster.valid_until {
        "expired".to_owned()
    } else if roster.valid_from > now {
        "not yet valid".to_owned()
    } else {
        let left = roster.valid_until - now;
        format!("{} h {} min left", left / 3600, left % 3600 / 60)
    };
    writeln!(out, "valid until: {} ({state})", utc(roster.valid_until))?;
    writeln!(out, "nodes ({}):", roster.len())?;
    for (id, admission) in roster.nodes() {
        writeln!(out, "  {}", signed::hex(&id.0))?;
        match peer_id_of(id) {
            Some(peer) => writeln!(out, "    peer id: {peer}")?,
            None => writeln!(out, "    peer id: none (not an Ed25519 key)")?,
        }
        writeln!(out, "    roles: {}", roles_text(admission.roles))?;
        writeln!(out, "    family: {}", admission.family)?;
    }
    Ok(())
}

/// The keys that signed; given trusted keys, which are trusted and whose
/// signature verifies.
fn write_signers(
    out: &mut String,
    signed: &SignedRoster,
    trusted: Option<(&[[u8; 32]], &Roster)>,
) -> std::fmt::Result {
    let signers: Vec<&[u8; 32]> = signed.signers().collect();
    writeln!(out, "signers ({}):", signers.len())?;
    for key in signers {
        let note = match trusted {
            None => "",
            Some((trusted, _)) if !trusted.contains(key) => " (not trusted)",
            // At the roster's last valid second, and with any clock skew:
            // only the signature is checked here.
            Some((_, roster)) => match signed.verify(&[*key], 1, roster.valid_until, u64::MAX) {
                Ok(_) => " (trusted, valid)",
                Err(_) => " (trusted, does not verify)",
            },
        };
        writeln!(out, "  {}{note}", hex::encode(key))?;
    }
    Ok(())
}

/// `2026-05-04 12:00:00 UTC (1777896000)`: the date, the time of day,
/// and the Unix seconds.
fn utc(secs: u64) -> String {
    let rest = secs % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC ({secs})",
        leak_net::dates::day_to_date(secs / 86_400),
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC (0)");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC (951782400)");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC (1767225599)");
    }
}
