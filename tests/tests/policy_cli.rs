//! `leak-node policy` as maintainers and operators run it: `keygen`, `sign`
//! (and `sign --add-to`), `verify` against given keys or a node's config,
//! `show` and `eval`, through the real binary.
//!
//! Build the binary first with `cargo build -p leak-node --bins`
//! (`scripts/test.sh` does). Every file lives in a temporary directory; the
//! evaluation reads only the repository's own fixtures, never `../shared`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use leak_protocol::policy::{BUILTIN_TOML, Category, Policy};
use leak_tests::{
    init_node,
    process::{Run, Workdir},
};

/// `leak-node policy` run in a [`Workdir`].
trait PolicyCli {
    /// `policy keygen --out NAME`: the public key it prints.
    fn keygen(&self, name: &str) -> String;
    /// `policy sign --key KEY... [--add-to SIGNED] TOML --out OUT`.
    fn sign(&self, keys: &[&str], add_to: Option<&str>, toml: &str, out: &str) -> Run;
    /// `policy verify SIGNED --trusted-key KEY... [--threshold N]`.
    fn verify(&self, signed: &str, keys: &[&str], threshold: Option<&str>) -> Run;
    /// Writes the built-in policy with `version` as NAME.
    fn policy_toml(&self, name: &str, version: u32);
}

impl PolicyCli for Workdir {
    fn keygen(&self, name: &str) -> String {
        let run = self.run(&["policy", "keygen", "--out", name]);
        let out = run.ok();
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("public key: "))
            .unwrap_or_else(|| panic!("no public key in:\n{out}"))
            .to_owned();
        assert_eq!(key.len(), 64, "{key}");
        key
    }

    fn sign(&self, keys: &[&str], add_to: Option<&str>, toml: &str, out: &str) -> Run {
        let mut args = vec!["policy", "sign"];
        for key in keys {
            args.extend(["--key", key]);
        }
        if let Some(signed) = add_to {
            args.extend(["--add-to", signed]);
        }
        args.extend([toml, "--out", out]);
        self.run(&args)
    }

    fn verify(&self, signed: &str, keys: &[&str], threshold: Option<&str>) -> Run {
        let mut args = vec!["policy", "verify", signed];
        for key in keys {
            args.extend(["--trusted-key", key]);
        }
        if let Some(n) = threshold {
            args.extend(["--threshold", n]);
        }
        self.run(&args)
    }

    fn policy_toml(&self, name: &str, version: u32) {
        let builtin = format!("\nversion = {}\n", Policy::builtin().version());
        assert!(BUILTIN_TOML.contains(&builtin));
        let text = BUILTIN_TOML.replacen(&builtin, &format!("\nversion = {version}\n"), 1);
        std::fs::write(self.path(name), text).unwrap();
    }
}

fn newer() -> u32 {
    Policy::builtin().version() + 1
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let dir = Workdir::new();
    let public = dir.keygen("maint.key");
    let path = dir.path("maint.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let seed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(seed.trim().len(), 64, "32 bytes in hex");
    assert_ne!(
        seed.trim(),
        public,
        "the file holds the secret, not the public key"
    );

    dir.run(&["policy", "keygen", "--out", "maint.key"])
        .refused("exists; not overwriting it");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), seed);

    // A key others can read is refused when signing.
    dir.policy_toml("policy.toml", newer());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.sign(&["maint.key"], None, "policy.toml", "policy.signed")
        .refused("chmod 600");
}

#[test]
fn sign_then_verify_and_every_refusal() {
    let dir = Workdir::new();
    let alice = dir.keygen("alice.key");
    let bob = dir.keygen("bob.key");
    let version = newer();
    dir.policy_toml("policy.toml", version);

    let signed = dir.sign(&["alice.key"], None, "policy.toml", "policy.signed");
    let out = signed.ok();
    assert!(
        out.contains(&format!("signed policy version {version}")),
        "{out}"
    );
    assert!(out.contains(&alice), "{out}");

    // Valid with Alice's key.
    let run = dir.verify("policy.signed", &[&alice], None);
    let out = run.ok();
    assert!(out.contains("policy.signed: valid"), "{out}");
    assert!(out.contains(&format!("version: {version}")), "{out}");
    assert!(out.contains(&alice), "{out}");

    // An untrusted key.
    dir.verify("policy.signed", &[&bob], None)
        .refused("0 valid signature(s) by trusted keys, 1 required");

    // Threshold 2 with one signature.
    dir.verify("policy.signed", &[&alice, &bob], Some("2"))
        .refused("1 valid signature(s) by trusted keys, 2 required");

    // Tampered: the same length, another version.
    let bytes = std::fs::read(dir.path("policy.signed")).unwrap();
    let from = format!("\nversion = {version}\n");
    let to = format!("\nversion = {}\n", version + 1);
    assert_eq!(from.len(), to.len(), "a one-digit change");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[at..at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(dir.path("tampered.signed"), &tampered).unwrap();
    dir.verify("tampered.signed", &[&alice], None)
        .refused("does not verify (forged or altered)");

    // Malformed: cut short, or not a signed policy at all.
    std::fs::write(dir.path("short.signed"), &bytes[..bytes.len() / 2]).unwrap();
    dir.verify("short.signed", &[&alice], None)
        .refused("signed policy: truncated");
    dir.verify("policy.toml", &[&alice], None)
        .refused("not a signed Leak policy");

    // Older than the built-in policy: validly signed, still refused.
    if Policy::builtin().version() > 0 {
        dir.policy_toml("old.toml", Policy::builtin().version() - 1);
        let run = dir.sign(&["alice.key"], None, "old.toml", "old.signed");
        run.ok();
        assert!(run.stderr.contains("older than"), "{}", run.stderr);
        dir.verify("old.signed", &[&alice], None)
            .refused("older than the policy built into this release");
    }

    // Bob adds his signature to the same document: threshold 2 passes.
    let run = dir.sign(
        &["bob.key"],
        Some("policy.signed"),
        "policy.toml",
        "both.signed",
    );
    let out = run.ok();
    assert!(out.contains("signers (2)"), "{out}");
    let run = dir.verify("both.signed", &[&alice, &bob], Some("2"));
    let out = run.ok();
    assert!(
        out.contains("valid signatures by trusted keys: 2 (2 required)"),
        "{out}"
    );
    assert!(out.contains(&alice) && out.contains(&bob), "{out}");

    // Both keys at once.
    let run = dir.sign(&["alice.key", "bob.key"], None, "policy.toml", "two.signed");
    assert!(run.ok().contains("signers (2)"));
    dir.verify("two.signed", &[&alice, &bob], Some("2")).ok();

    // Adding to a signed policy of another document is refused.
    dir.policy_toml("other.toml", version + 1);
    dir.sign(
        &["bob.key"],
        Some("policy.signed"),
        "other.toml",
        "mixed.signed",
    )
    .refused("signs another policy text");
}

#[test]
fn sign_refuses_a_policy_that_does_not_compile() {
    let dir = Workdir::new();
    dir.keygen("maint.key");
    let text = BUILTIN_TOML.replacen("\n[limits]\n", "\n[limits]\nno_such_limit = 1\n", 1);
    assert_ne!(text, BUILTIN_TOML);
    std::fs::write(dir.path("bad.toml"), text).unwrap();
    let run = dir.sign(&["maint.key"], None, "bad.toml", "bad.signed");
    run.refused("bad.toml does not compile");
    assert!(run.stderr.contains("no_such_limit"), "{}", run.stderr);
    assert!(!dir.path("bad.signed").exists());
}

#[test]
fn verify_and_show_with_a_node_config() {
    let dir = Workdir::new();
    let key = dir.keygen("maint.key");
    let version = newer();
    dir.policy_toml("policy.toml", version);
    dir.sign(&["maint.key"], None, "policy.toml", "policy.signed")
        .ok();
    let config = init_node(&dir.path("node"), &[]);
    let config_arg = config.to_str().unwrap();

    // A config that trusts no key verifies nothing.
    dir.run(&["policy", "verify", "policy.signed", "--config", config_arg])
        .refused("trusts no maintainer key");

    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\ntrusted_keys = []\n"), "{text}");
    let text = text.replace(
        "\ntrusted_keys = []\n",
        &format!("\ntrusted_keys = [\"{key}\"]\n"),
    );
    std::fs::write(&config, text).unwrap();
    let run = dir.run(&["policy", "verify", "policy.signed", "--config", config_arg]);
    assert!(run.ok().contains(&format!("version: {version}")));

    // The node enforces the built-in policy until one is configured...
    let run = dir.run(&["policy", "show", "--config", config_arg]);
    let out = run.ok();
    assert!(
        out.contains(&format!("version: {}", Policy::builtin().version())),
        "{out}"
    );
    assert!(out.contains("source: built into leak-node"), "{out}");
    assert!(
        out.contains("trusted maintainer keys: 1, threshold 1"),
        "{out}"
    );

    // ...and the signed file when it is policy.file.
    let run = dir.run(&[
        "policy",
        "show",
        "--config",
        config_arg,
        "--file",
        "policy.signed",
    ]);
    let out = run.ok();
    assert!(out.contains(&format!("version: {version}")), "{out}");
    assert!(out.contains("source: policy.file policy.signed"), "{out}");
    assert!(out.contains(&format!("signed by: {key}")), "{out}");

    // A newer policy adopted from the network (DATA_DIR/policy.signed).
    std::fs::copy(dir.path("policy.signed"), dir.path("node/policy.signed")).unwrap();
    let run = dir.run(&["policy", "show", "--config", config_arg]);
    let out = run.ok();
    assert!(out.contains(&format!("version: {version}")), "{out}");
    assert!(out.contains("source: adopted from the network"), "{out}");
}

#[test]
fn show_prints_the_builtin_policy() {
    let dir = Workdir::new();
    let run = dir.run(&["policy", "show"]);
    let out = run.ok();
    let policy = Policy::builtin();
    assert!(
        out.contains(&format!("version: {}\n", policy.version())),
        "{out}"
    );
    assert!(out.contains("source: built into leak-node"), "{out}");
    let limits = policy.limits();
    assert!(
        out.contains(&format!("max length: {} bytes", limits.max_text_len)),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "per recipient per day: {}",
            limits.per_recipient_per_day
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("stamp bits: {}", limits.stamp_bits)),
        "{out}"
    );
    for category in Category::RULE_CATEGORIES {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(category.as_str())),
            "no line for {category}:\n{out}"
        );
    }
    for (rule, _) in policy.rule_names() {
        assert!(out.contains(rule), "rule {rule} missing:\n{out}");
    }

    let run = dir.run(&["policy", "show", "--toml"]);
    assert_eq!(run.ok(), BUILTIN_TOML);
}

#[test]
fn eval_with_the_fixtures_prints_the_targets() {
    let dir = Workdir::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/policy/fixtures");
    let fixtures = fixtures.to_str().unwrap();
    let run = dir.run(&["policy", "eval", "--fixtures", fixtures]);
    let out = run.ok();
    assert!(out.contains("precision"), "{out}");
    assert!(out.contains("fixtures by group:"), "{out}");
    assert!(out.contains("targets:"), "{out}");
    assert!(
        out.contains("PASS own benign confessions refused: 0.000"),
        "{out}"
    );
    assert!(out.contains("SKIP SMS spam recall: no data"), "{out}");
    assert!(out.contains("SKIP HateCheck recall, all hateful"), "{out}");
    assert!(run.stderr.contains("no --data DIR"), "{}", run.stderr);

    // Outside the source tree, without --fixtures: a clear error.
    dir.run(&["policy", "eval"]).refused("pass --fixtures DIR");
    // A data directory without the data sets.
    dir.run(&["policy", "eval", "--fixtures", fixtures, "--data", "."])
        .refused("hatecheck_test_suite_cases.csv");
}
