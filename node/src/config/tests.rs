//! The configuration's defaults, its example file and its checks.

use super::*;

fn write(dir: &std::path::Path, text: &str) -> PathBuf {
    let path = dir.join("leak-node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The commented file `init` writes parses back to the same values.
#[test]
fn commented_template_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(dir.path().to_path_buf());
    config.node.bootstrap = vec!["/ip4/127.0.0.1/tcp/4701".parse().unwrap()];
    config.node.family = "alice's \"nodes\"".into();
    config.node.roles = vec![Role::Relay, Role::Exit];
    config.exit.domain = "leak.example".into();
    config.exit.transport = Transport::Smtp;
    config.exit.smtp_url = "smtp://relay@127.0.0.1:2525?tls=required".into();
    config.exit.smtp_password_file = "/etc/leak/smtp-password".into();
    config.exit.smtp_ca_file = "/etc/leak/smarthost-ca.pem".into();
    config.exit.max_rate = 7.5;
    let path = write(dir.path(), &config.to_commented_toml().unwrap());
    assert_eq!(Config::load(&path, &[]).unwrap(), config);
}

/// The example file parses to the defaults.
#[test]
fn example_is_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), EXAMPLE);
    let defaults = Config::defaults(PathBuf::from(EXAMPLE_DATA_DIR));
    assert_eq!(Config::load(&path, &[]).unwrap(), defaults);
    // And the defaults are written as the example itself.
    assert_eq!(defaults.to_commented_toml().unwrap(), EXAMPLE);
}

/// Every setting is in the example (so a new one cannot be left out of
/// it), and nothing else is.
#[test]
fn example_names_every_setting() {
    fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(table) => keys(&format!("{path}."), table, out),
                _ => out.push(path),
            }
        }
    }
    let mut settings = Vec::new();
    let defaults = Config::defaults(PathBuf::from(EXAMPLE_DATA_DIR));
    keys(
        "",
        &toml::Table::try_from(&defaults).unwrap(),
        &mut settings,
    );
    let mut in_example = Vec::new();
    keys("", &toml::from_str(EXAMPLE).unwrap(), &mut in_example);
    settings.sort();
    in_example.sort();
    assert_eq!(in_example, settings);
    // Each is explained: a comment line comes before it in its section.
    let mut commented = false;
    for line in EXAMPLE.lines() {
        if line.starts_with('#') {
            commented = true;
        } else if line.starts_with('[') {
            commented = false;
        } else if let Some((key, _)) = line.split_once(" = ") {
            assert!(commented, "{key} has no comment in the example");
        }
    }
}

/// What `init` writes is the example with the changed values only: every
/// comment and every unchanged line stays.
#[test]
fn commented_file_is_the_example_with_values_set() {
    let mut config = Config::defaults(PathBuf::from("/srv/leak"));
    config.node.bootstrap = vec!["/ip4/127.0.0.1/tcp/4701".parse().unwrap()];
    config.exit.max_rate = 7.5;
    let text = config.to_commented_toml().unwrap();
    let changed = [
        "data_dir = \"/srv/leak\"",
        "bootstrap = [\"/ip4/127.0.0.1/tcp/4701\"]",
        "max_rate = 7.5",
    ];
    let written: Vec<&str> = text.lines().collect();
    let example: Vec<&str> = EXAMPLE.lines().collect();
    assert_eq!(written.len(), example.len());
    for (written, example) in written.iter().zip(&example) {
        if written != example {
            assert!(changed.contains(written), "{example:?} became {written:?}");
        }
    }
    for line in changed {
        assert!(written.contains(&line), "{line} missing:\n{text}");
    }
}

/// A hand-written file naming only what differs from the defaults.
#[test]
fn missing_keys_take_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[limits]\nglobal_queue = 99\n");
    let loaded = Config::load(&path, &[]).unwrap();
    let mut expected = Config::defaults(dir.path().to_path_buf());
    expected.limits.global_queue = 99;
    assert_eq!(loaded, expected);
}

#[test]
fn set_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::defaults(dir.path().to_path_buf());
    let path = write(dir.path(), &config.to_commented_toml().unwrap());
    let loaded = Config::load(
        &path,
        &[
            "limits.global_queue=77".into(),
            "node.listen=[\"/ip4/127.0.0.1/tcp/9\"]".into(),
            "node.family=ops team".into(),
            "metrics.listen=".into(),
        ],
    )
    .unwrap();
    assert_eq!(loaded.limits.global_queue, 77);
    assert_eq!(loaded.node.listen[0].to_string(), "/ip4/127.0.0.1/tcp/9");
    assert_eq!(loaded.node.family, "ops team");
    assert_eq!(loaded.metrics_addr().unwrap(), None);
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::defaults(dir.path().to_path_buf());
    let text = config
        .to_commented_toml()
        .unwrap()
        .replace("[limits]", "[limits]\nmax_conections = 3");
    let err = Config::load(&write(dir.path(), &text), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_conections"), "{err}");

    let text = config.to_commented_toml().unwrap();
    let path = write(dir.path(), &text);
    let err = Config::load(&path, &["limits.peer_queue=many".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("peer_queue"), "{err}");
    let err = Config::load(&path, &["node.listen=[\"not an address\"]".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
    let err = Config::load(&path, &["epochs.period_secs=0".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("period_secs"), "{err}");
    // No relay holds a packet longer than the federation lets a hop ask.
    assert!(Config::load(&path, &["limits.max_delay_ms=600000".into()]).is_ok());
    let err = Config::load(&path, &["limits.max_delay_ms=600001".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_delay_ms"), "{err}");
    // A second DKIM signature is Ed25519 beside an RSA one, with both its
    // settings.
    let rsa = [
        "node.roles=[\"relay\", \"exit\"]".into(),
        "exit.domain=\"exit.example\"".into(),
        "exit.dkim_selector=\"s\"".into(),
        "exit.dkim_key_file=\"k\"".into(),
    ];
    let ed = |selector: &str| -> Vec<String> {
        vec![
            format!("exit.dkim_ed25519_selector=\"{selector}\""),
            "exit.dkim_ed25519_key_file=\"e\"".into(),
        ]
    };
    assert!(Config::load(&path, &[rsa.to_vec(), ed("s-ed")].concat()).is_ok());
    for (flags, expected) in [
        ([rsa[..2].to_vec(), ed("s-ed")].concat(), "RSA"),
        ([rsa.to_vec(), ed("s")].concat(), "differ"),
        (
            [
                rsa.to_vec(),
                ed("s-ed"),
                vec!["exit.dkim_algorithm=\"ed25519\"".into()],
            ]
            .concat(),
            "RSA",
        ),
        (
            [
                rsa.to_vec(),
                vec!["exit.dkim_ed25519_selector=\"x\"".into()],
            ]
            .concat(),
            "together",
        ),
    ] {
        let err = Config::load(&path, &flags).unwrap_err().to_string();
        assert!(err.contains(expected), "{flags:?}: {err}");
    }
    let err = Config::load(&dir.path().join("missing.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read the config file"), "{err}");
}

#[test]
fn runtime_threads_are_half_the_cores_unless_set() {
    let mut limits = Config::defaults(std::path::PathBuf::from("/tmp")).limits;
    assert_eq!(limits.io_threads, 0);
    assert_eq!(limits.runtime_threads(1), 1);
    assert_eq!(limits.runtime_threads(2), 1);
    assert_eq!(limits.runtime_threads(16), 8);
    limits.io_threads = 3;
    assert_eq!(limits.runtime_threads(2), 3);
}
