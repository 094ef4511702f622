//! `leak-node authority` as directory authorities run it: `keygen`,
//! `admit` / `remove` on a roster TOML, `sign` (serial bumps), `cosign`,
//! `show` against given keys or a node's config, and the refusals (forged,
//! too few signatures, expired, not yet valid), through the real binary.
//! Also `leak-node init --authority … --roster …`, which points a node at
//! them.
//!
//! Build the binary first with `cargo build -p leak-node --bins`
//! (`scripts/test.sh` does). Every file lives in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use leak_protocol::{
    NodeId, crypto,
    directory::Roles,
    roster::{Admission, MAX_ROSTER_LEN, Roster, SignedRoster},
    signed::{Format, SignedText},
};
use leak_tests::{
    init_node,
    process::{Run, Workdir},
};

/// `leak-node authority` run in a [`Workdir`].
trait AuthorityCli {
    /// `authority keygen --out NAME`: the public key it prints.
    fn keygen(&self, name: &str) -> String;
    /// The seed in a key file written by `keygen`.
    fn seed(&self, name: &str) -> [u8; 32];
    fn admit(&self, node: &str, roles: &str, family: &str) -> Run;
    fn remove(&self, node: &str) -> Run;
    /// `authority sign --roster roster.toml --key KEY... [EXTRA...] --out OUT`.
    fn sign(&self, keys: &[&str], extra: &[&str], out: &str) -> Run;
    fn cosign(&self, keys: &[&str], signed: &str) -> Run;
    /// `authority show SIGNED --authority KEY... [--threshold N]`.
    fn show(&self, signed: &str, keys: &[&str], threshold: Option<&str>) -> Run;
    /// The roster TOML as the protocol parses it.
    fn roster(&self) -> Roster;
    /// A signed roster's contents, not verified.
    fn signed(&self, name: &str) -> (Roster, Vec<String>);
}

impl AuthorityCli for Workdir {
    fn keygen(&self, name: &str) -> String {
        let run = self.run(&["authority", "keygen", "--out", name]);
        let out = run.ok();
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("public key: "))
            .unwrap_or_else(|| panic!("no public key in:\n{out}"))
            .to_owned();
        assert_eq!(key.len(), 64, "{key}");
        assert!(out.contains(&format!("authorities = [\"{key}\"]")), "{out}");
        assert!(
            out.contains(&format!("leak-node init --authority {key}")),
            "{out}"
        );
        key
    }

    fn seed(&self, name: &str) -> [u8; 32] {
        let text = std::fs::read_to_string(self.path(name)).unwrap();
        leak_protocol::signed::decode_hex_key(text.trim()).unwrap()
    }

    fn admit(&self, node: &str, roles: &str, family: &str) -> Run {
        self.run(&[
            "authority",
            "admit",
            "--roster",
            "roster.toml",
            "--node",
            node,
            "--roles",
            roles,
            "--family",
            family,
        ])
    }

    fn remove(&self, node: &str) -> Run {
        self.run(&[
            "authority",
            "remove",
            "--roster",
            "roster.toml",
            "--node",
            node,
        ])
    }

    fn sign(&self, keys: &[&str], extra: &[&str], out: &str) -> Run {
        let mut args = vec!["authority", "sign", "--roster", "roster.toml"];
        for key in keys {
            args.extend(["--key", key]);
        }
        args.extend(extra);
        args.extend(["--out", out]);
        self.run(&args)
    }

    fn cosign(&self, keys: &[&str], signed: &str) -> Run {
        let mut args = vec!["authority", "cosign"];
        for key in keys {
            args.extend(["--key", key]);
        }
        args.push(signed);
        self.run(&args)
    }

    fn show(&self, signed: &str, keys: &[&str], threshold: Option<&str>) -> Run {
        let mut args = vec!["authority", "show", signed];
        for key in keys {
            args.extend(["--authority", key]);
        }
        if let Some(n) = threshold {
            args.extend(["--threshold", n]);
        }
        self.run(&args)
    }

    fn roster(&self) -> Roster {
        Roster::from_toml(&std::fs::read_to_string(self.path("roster.toml")).unwrap()).unwrap()
    }

    fn signed(&self, name: &str) -> (Roster, Vec<String>) {
        let signed = SignedRoster::from_bytes(&std::fs::read(self.path(name)).unwrap()).unwrap();
        let signers = signed.signers().map(|k| hex(k)).collect();
        (signed.roster_unverified().unwrap(), signers)
    }
}

fn hex(bytes: &[u8]) -> String {
    leak_protocol::signed::hex(bytes)
}

fn now() -> u64 {
    leak_tests::unix_time().as_secs()
}

/// A node id (hex) and its peer id, from a seed.
fn node(seed: u8) -> (NodeId, String, String) {
    let id = NodeId(crypto::ed25519_public(&[seed; 32]));
    let peer = leak_net::peer_id_of(&id).unwrap().to_string();
    (id, hex(&id.0), peer)
}

fn roles(relay: bool, exit: bool) -> Roles {
    Roles { relay, exit }
}

/// Admits one node and signs with `key`: a valid `roster.signed`.
fn signed_roster(dir: &Workdir, key: &str) {
    dir.admit(&node(7).1, "relay", "alpha").ok();
    dir.sign(&[key], &[], "roster.signed").ok();
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let dir = Workdir::new();
    let public = dir.keygen("auth.key");
    let path = dir.path("auth.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let seed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(seed.trim().len(), 64, "32 bytes in hex");
    assert_eq!(hex(&crypto::ed25519_public(&dir.seed("auth.key"))), public);
    assert_ne!(seed.trim(), public, "the file holds the secret");

    dir.run(&["authority", "keygen", "--out", "auth.key"])
        .refused("exists; not overwriting it");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), seed);

    // A key others can read is refused when signing, before anything is
    // written.
    dir.admit(&node(7).1, "relay", "alpha").ok();
    let toml = std::fs::read_to_string(dir.path("roster.toml")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.sign(&["auth.key"], &[], "roster.signed")
        .refused("the authority key auth.key has mode 644");
    dir.sign(&["auth.key"], &[], "roster.signed")
        .refused("chmod 600");
    assert!(!dir.path("roster.signed").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path("roster.toml")).unwrap(),
        toml
    );
    // A file that is not a key.
    std::fs::write(dir.path("bad.key"), "hello\n").unwrap();
    std::fs::set_permissions(dir.path("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.sign(&["bad.key"], &[], "roster.signed").refused(
        "bad.key is not an authority key (64 hex digits; `leak-node authority keygen` writes one)",
    );
}

#[test]
fn admit_readmit_and_remove_by_peer_id_or_node_id() {
    let dir = Workdir::new();
    let (a, a_hex, a_peer) = node(7);
    let (b, b_hex, b_peer) = node(8);

    // By peer id: the roster is created.
    let out = dir.admit(&a_peer, "relay", "alpha").ok().to_owned();
    assert!(
        out.contains(&format!("admitted {a_hex} (peer {a_peer})")),
        "{out}"
    );
    assert!(out.contains("created roster.toml"), "{out}");
    let roster = dir.roster();
    assert_eq!(roster.len(), 1);
    assert_eq!(roster.serial, 0, "never signed");
    assert_eq!(
        roster.get(&a),
        Some(&Admission {
            roles: roles(true, false),
            family: "alpha".into()
        })
    );

    // By node id, both roles.
    let out = dir.admit(&b_hex, "relay,exit", "beta").ok().to_owned();
    assert!(out.contains(&format!("admitted {b_hex}")), "{out}");
    assert!(!out.contains("created"), "{out}");
    assert_eq!(dir.roster().get(&b).unwrap().roles, roles(true, true));

    // Re-admitting changes roles and family, and says what changed.
    let out = dir.admit(&a_hex, "exit,relay", "gamma").ok().to_owned();
    assert!(out.contains(&format!("changed {a_hex}")), "{out}");
    assert!(out.contains("roles: relay -> relay, exit"), "{out}");
    assert!(out.contains("family: alpha -> gamma"), "{out}");
    let roster = dir.roster();
    assert_eq!(roster.len(), 2);
    assert_eq!(
        roster.get(&a),
        Some(&Admission {
            roles: roles(true, true),
            family: "gamma".into()
        })
    );
    // Only the family.
    let out = dir.admit(&a_peer, "relay,exit", "delta").ok().to_owned();
    assert!(out.contains("family: gamma -> delta"), "{out}");
    assert!(!out.contains("roles:"), "{out}");
    // The same again.
    let out = dir.admit(&a_peer, "relay,exit", "delta").ok().to_owned();
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(dir.roster().get(&a).unwrap().family, "delta");

    // Removing, by either form.
    let out = dir.remove(&b_peer).ok().to_owned();
    assert!(out.contains(&format!("removed {b_hex}")), "{out}");
    assert!(out.contains("now admits 1 node(s)"), "{out}");
    assert_eq!(dir.roster().get(&b), None);
    dir.remove(&b_hex).refused("is not admitted in roster.toml");
    dir.remove(&a_hex).ok();
    assert!(dir.roster().is_empty());
}

#[test]
fn bad_inputs_are_refused_clearly() {
    let dir = Workdir::new();
    dir.keygen("auth.key");
    let (_, a_hex, _) = node(7);
    // Nothing to remove from, nothing to sign.
    dir.remove(&a_hex)
        .refused("cannot read the roster roster.toml");
    dir.sign(&["auth.key"], &[], "roster.signed")
        .refused("cannot read the roster roster.toml");

    for bad in [
        "12D3KooWbad",
        "abc",
        &a_hex[..62],
        format!("{a_hex}00").as_str(),
    ] {
        dir.admit(bad, "relay", "alpha")
            .refused("is neither a peer id (12D3KooW…");
    }
    // 64 hex digits that are not an Ed25519 key.
    let not_a_key = (0u8..=255)
        .map(|b| NodeId([b; 32]))
        .find(|n| leak_net::peer_id_of(n).is_none())
        .unwrap();
    dir.admit(&hex(&not_a_key.0), "relay", "alpha")
        .refused("not an Ed25519 public key");
    dir.admit(&a_hex, "relay,boss", "alpha")
        .refused("--roles: unknown role \"boss\"");
    dir.admit(&a_hex, "", "alpha")
        .refused("--roles: unknown role \"\"");
    dir.admit(&a_hex, "relay", "").refused("--family must name");
    dir.admit(&a_hex, "relay", "  ")
        .refused("--family must name");
    dir.admit(&a_hex, "relay", &"f".repeat(129))
        .refused("1 to 128 bytes");
    assert!(!dir.path("roster.toml").exists(), "no bad input wrote it");

    // A roster TOML that is not one.
    std::fs::write(dir.path("roster.toml"), "serial = 1\n").unwrap();
    dir.admit(&a_hex, "relay", "alpha")
        .refused("roster.toml is not a roster");
    std::fs::remove_file(dir.path("roster.toml")).unwrap();

    // Validity out of bounds.
    dir.admit(&a_hex, "relay", "alpha").ok();
    for hours in ["0", "337"] {
        dir.sign(&["auth.key"], &["--valid-hours", hours], "roster.signed")
            .refused("--valid-hours must be 1 to 336");
    }
    // An empty roster is not signed.
    dir.remove(&a_hex).ok();
    dir.sign(&["auth.key"], &[], "roster.signed")
        .refused("roster.toml admits no node");
    assert!(!dir.path("roster.signed").exists());
    // A threshold above the keys given.
    dir.admit(&a_hex, "relay", "alpha").ok();
    let key = dir.keygen("other.key");
    dir.sign(&["auth.key"], &[], "roster.signed").ok();
    dir.show("roster.signed", &[&key], Some("2"))
        .refused("--threshold must be between 1 and the number of --authority keys (1)");
    dir.show("roster.signed", &["abc"], None)
        .refused("--authority \"abc\" is not an authority key");
}

#[test]
fn sign_bumps_the_serial_and_sets_the_validity() {
    let dir = Workdir::new();
    let key = dir.keygen("auth.key");
    let (a, a_hex, a_peer) = node(7);
    dir.admit(&a_peer, "relay,exit", "alpha").ok();

    let before = now();
    let out = dir
        .sign(&["auth.key"], &[], "roster.signed")
        .ok()
        .to_owned();
    let after = now();
    assert!(
        out.contains("signed roster serial 1 written to roster.signed"),
        "{out}"
    );
    assert!(out.contains(&a_hex) && out.contains(&a_peer), "{out}");
    assert!(out.contains("signers (1):") && out.contains(&key), "{out}");
    let (roster, signers) = dir.signed("roster.signed");
    assert_eq!(roster.serial, 1);
    assert_eq!(signers, [key.as_str()]);
    // 72 hours by default, back-dated by the clock skew nodes allow.
    assert!((before + 72 * 3600..=after + 72 * 3600).contains(&roster.valid_until));
    assert!((before - 300..=after - 300).contains(&roster.valid_from));
    assert_eq!(roster.get(&a).unwrap().roles, roles(true, true));
    // The TOML keeps what was signed.
    assert_eq!(dir.roster(), roster);

    // Each signing bumps it; --valid-hours sets the validity.
    let out = dir
        .sign(&["auth.key"], &["--valid-hours", "5"], "roster.signed")
        .ok()
        .to_owned();
    assert!(out.contains("signed roster serial 2"), "{out}");
    let (roster, _) = dir.signed("roster.signed");
    assert_eq!(roster.serial, 2);
    assert!(roster.valid_until.abs_diff(now() + 5 * 3600) < 60);
    assert_eq!(dir.roster().serial, 2);
    // At most 14 days, still back-dated within them.
    dir.sign(&["auth.key"], &["--valid-hours", "336"], "roster.signed")
        .ok();
    let (roster, _) = dir.signed("roster.signed");
    assert_eq!(roster.serial, 3);
    assert_eq!(
        roster.valid_until - roster.valid_from,
        leak_protocol::roster::MAX_VALIDITY_SECS
    );
    dir.show("roster.signed", &[&key], None).ok();

    // A roster started anew would publish an older serial over a newer
    // one, which nodes refuse: refused here first.
    std::fs::remove_file(dir.path("roster.toml")).unwrap();
    dir.admit(&a_hex, "relay", "alpha").ok();
    dir.sign(&["auth.key"], &[], "roster.signed")
        .refused("roster.signed holds roster serial 3");
    assert_eq!(dir.signed("roster.signed").0.serial, 3);
    // Elsewhere it may.
    dir.sign(&["auth.key"], &[], "fresh.signed").ok();
    assert_eq!(dir.signed("fresh.signed").0.serial, 1);
}

#[test]
fn show_verifies_with_one_and_with_two_after_cosign() {
    let dir = Workdir::new();
    let alice = dir.keygen("alice.key");
    let bob = dir.keygen("bob.key");
    let (_, a_hex, a_peer) = node(7);
    signed_roster(&dir, "alice.key");

    // Without trust: what it holds, exit 0, no verdict.
    let out = dir.show("roster.signed", &[], None).ok().to_owned();
    assert!(out.contains("serial: 1\n"), "{out}");
    assert!(
        out.contains(&format!(
            "  {a_hex}\n    peer id: {a_peer}\n    roles: relay\n    family: alpha\n"
        )),
        "{out}"
    );
    assert!(out.contains("valid from: ") && out.contains("UTC"), "{out}");
    assert!(out.contains(&format!("signers (1):\n  {alice}\n")), "{out}");
    assert!(!out.contains("verifies"), "{out}");

    // Alice's key, threshold 1.
    let out = dir.show("roster.signed", &[&alice], None).ok().to_owned();
    assert!(out.contains("verifies: yes"), "{out}");
    assert!(out.contains(&format!("{alice} (trusted, valid)")), "{out}");
    // Bob's only: Alice's signature does not count.
    let run = dir.show("roster.signed", &[&bob], None);
    run.refused("0 valid signature(s) by trusted authorities, 1 required; signatures by keys not trusted do not count");
    assert!(run.stdout.contains("verifies: no"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{alice} (not trusted)")),
        "{}",
        run.stdout
    );
    // Threshold 2 before Bob signed.
    dir.show("roster.signed", &[&alice, &bob], Some("2"))
        .refused("1 valid signature(s) by trusted authorities, 2 required");

    // Bob co-signs the same text.
    let out = dir.cosign(&["bob.key"], "roster.signed").ok().to_owned();
    assert!(out.contains(&format!("{bob} signed")), "{out}");
    assert!(
        out.contains("roster serial 1 written to roster.signed"),
        "{out}"
    );
    let (roster, signers) = dir.signed("roster.signed");
    assert_eq!(roster.serial, 1, "co-signing does not change the roster");
    assert_eq!(signers, [alice.clone(), bob.clone()]);
    let out = dir
        .show("roster.signed", &[&alice, &bob], Some("2"))
        .ok()
        .to_owned();
    assert!(out.contains("verifies: yes"), "{out}");
    assert!(out.contains(&format!("{bob} (trusted, valid)")), "{out}");
    // Again: nothing new.
    let out = dir.cosign(&["bob.key"], "roster.signed").ok().to_owned();
    assert!(out.contains(&format!("{bob} had already signed")), "{out}");
    assert_eq!(dir.signed("roster.signed").1.len(), 2);

    // Both keys at once when signing.
    let out = dir
        .sign(&["alice.key", "bob.key"], &[], "both.signed")
        .ok()
        .to_owned();
    assert!(out.contains("signers (2):"), "{out}");
    dir.show("both.signed", &[&alice, &bob], Some("2")).ok();

    // A signed policy is not a roster.
    let policy = leak_protocol::policy::SignedPolicy::sign(
        leak_protocol::policy::BUILTIN_TOML,
        &dir.seed("alice.key"),
    )
    .unwrap();
    std::fs::write(dir.path("policy.signed"), policy.to_bytes()).unwrap();
    dir.show("policy.signed", &[&alice], None)
        .refused("not a signed Leak roster");
    dir.cosign(&["bob.key"], "policy.signed")
        .refused("not a signed Leak roster");
}

#[test]
fn a_tampered_roster_is_forged() {
    let dir = Workdir::new();
    let alice = dir.keygen("alice.key");
    dir.keygen("bob.key");
    signed_roster(&dir, "alice.key");
    let bytes = std::fs::read(dir.path("roster.signed")).unwrap();
    // Another family, the same length.
    let at = bytes.windows(5).position(|w| w == b"alpha").unwrap();
    let mut tampered = bytes.clone();
    tampered[at..at + 5].copy_from_slice(b"gamma");
    std::fs::write(dir.path("roster.signed"), &tampered).unwrap();

    let run = dir.show("roster.signed", &[&alice], None);
    run.refused(&format!(
        "the signature by trusted authority {alice} does not verify (forged or altered)"
    ));
    assert!(run.stdout.contains("family: gamma"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("{alice} (trusted, does not verify)")),
        "{}",
        run.stdout
    );
    // No co-signing of the altered text.
    dir.cosign(&["bob.key"], "roster.signed")
        .refused("does not verify (forged or altered)");
    assert_eq!(std::fs::read(dir.path("roster.signed")).unwrap(), tampered);
}

#[test]
fn expired_and_future_rosters_are_refused() {
    let dir = Workdir::new();
    let alice = dir.keygen("alice.key");
    dir.keygen("bob.key");
    let seed = dir.seed("alice.key");
    let write = |name: &str, valid_from: u64, valid_until: u64| {
        let mut roster = Roster::new(4, valid_from, valid_until);
        roster
            .admit(
                node(7).0,
                Admission {
                    roles: roles(true, false),
                    family: "alpha".into(),
                },
            )
            .unwrap();
        let signed = SignedRoster::sign(&roster, &seed).unwrap();
        std::fs::write(dir.path(name), signed.to_bytes()).unwrap();
    };
    let now = now();
    write("old.signed", now - 3 * 86_400, now - 86_400);
    write("future.signed", now + 86_400, now + 2 * 86_400);

    let run = dir.show("old.signed", &[&alice], None);
    run.refused("old.signed refused: roster 4 expired at ");
    assert!(run.stdout.contains("(expired)"), "{}", run.stdout);
    // Shown without trust: exit 0, marked expired.
    assert!(dir.show("old.signed", &[], None).ok().contains("(expired)"));
    dir.cosign(&["bob.key"], "old.signed").refused("expired at");

    let run = dir.show("future.signed", &[&alice], None);
    run.refused("roster 4 is not valid before ");
    assert!(run.stdout.contains("(not yet valid)"), "{}", run.stdout);
    // Co-signing ahead of time is fine.
    dir.cosign(&["bob.key"], "future.signed").ok();
}

#[test]
fn cosign_refuses_a_text_that_is_not_a_roster() {
    let dir = Workdir::new();
    dir.keygen("alice.key");
    dir.keygen("bob.key");
    // The roster's signed format (its magic and signature context) around
    // a text that is not a roster.
    let format = Format {
        magic: b"LEAKROS\x01",
        context: b"leak 2026 roster signature v1\0",
        max_len: MAX_ROSTER_LEN,
        name: "signed Leak roster",
    };
    let mut text = SignedText::new("serial = 1\nnodes = []\n", &format).unwrap();
    text.add_signature(&format, &dir.seed("alice.key")).unwrap();
    std::fs::write(dir.path("odd.signed"), text.to_bytes(&format)).unwrap();
    dir.cosign(&["bob.key"], "odd.signed")
        .refused("odd.signed is not a roster");
    dir.show("odd.signed", &[], None)
        .refused("odd.signed is not a roster");
}

#[test]
fn init_points_a_node_at_the_authorities_and_the_roster() {
    let dir = Workdir::new();
    let alice = dir.keygen("alice.key");
    let bob = dir.keygen("bob.key");
    signed_roster(&dir, "alice.key");
    let roster = dir.path("roster.signed");
    let config = init_node(
        &dir.path("node"),
        &[
            "--authority",
            &alice,
            "--authority",
            &bob,
            "--authority-threshold",
            "2",
            "--roster",
            roster.to_str().unwrap(),
        ],
    );
    // The written TOML, as the node reads it.
    let parsed = leak_node::Config::load(&config, &[]).unwrap();
    assert_eq!(parsed.directory.authorities, [alice.clone(), bob.clone()]);
    assert_eq!(parsed.directory.authority_threshold, 2);
    assert_eq!(Path::new(&parsed.directory.roster_file), roster);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("authorities = [\"{alice}\", \"{bob}\"]")),
        "{text}"
    );

    // `show --config` trusts what the config names.
    let config_arg = config.to_str().unwrap();
    dir.run(&["authority", "show", "roster.signed", "--config", config_arg])
        .refused("1 valid signature(s) by trusted authorities, 2 required");
    dir.cosign(&["bob.key"], "roster.signed").ok();
    let run = dir.run(&["authority", "show", "roster.signed", "--config", config_arg]);
    assert!(run.ok().contains("verifies: yes (2 of 2"), "{}", run.stdout);
    // The two ways of giving trust exclude each other.
    let run = dir.run(&[
        "authority",
        "show",
        "roster.signed",
        "--config",
        config_arg,
        "--authority",
        &alice,
    ]);
    assert_eq!(run.code, Some(2), "a usage error: {}", run.stderr);
}
