//! The page's guard (pure) and its routes over real HTTP on 127.0.0.1,
//! with a stand-in for the agent's task that answers status requests.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
};

use axum::http::HeaderValue;
use leak_protocol::policy::{Category, model::HEADS};

use super::*;
use crate::agent::ipc::AgentStatus;

fn shared(token: &str) -> Shared {
    let (commands, _) = mpsc::channel(1);
    Shared {
        token: Zeroizing::new(token.to_owned()),
        hosts: vec!["127.0.0.1:7390".into(), "localhost:7390".into()],
        commands,
        policy: Policy::builtin(),
        state_root: PathBuf::from("/nonexistent"),
        send_interval_ms: 3000,
        poll_interval_ms: 20_000,
        keep_ended_days: 7,
        page_loaded_ns: AtomicU64::new(0),
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn only_the_page_itself_with_its_key_reaches_the_api() {
    let s = shared("k3y");
    let own = [("host", "127.0.0.1:7390"), ("x-leak-token", "k3y")];
    assert_eq!(admit(&s, "/api/state", &headers(&own)), Ok(()));
    // The same through `localhost`, from the page itself.
    let local = [
        ("host", "localhost:7390"),
        ("origin", "http://localhost:7390"),
        ("sec-fetch-site", "same-origin"),
        ("x-leak-token", "k3y"),
    ];
    assert_eq!(admit(&s, "/api/send", &headers(&local)), Ok(()));
    // DNS rebinding: the browser names the attacker's host.
    let rebound = [("host", "evil.example:7390"), ("x-leak-token", "k3y")];
    assert_eq!(
        admit(&s, "/api/state", &headers(&rebound)),
        Err(Refused::Host)
    );
    assert_eq!(admit(&s, "/", &headers(&rebound[..1])), Err(Refused::Host));
    assert_eq!(admit(&s, "/", &HeaderMap::new()), Err(Refused::Host));
    // Another port of this machine is another origin.
    let other_port = [("host", "127.0.0.1:7391"), ("x-leak-token", "k3y")];
    assert_eq!(
        admit(&s, "/api/state", &headers(&other_port)),
        Err(Refused::Host)
    );
    // Another website's script, even with the key.
    for origin in ["http://evil.example", "http://127.0.0.1:8000", "null"] {
        let cross = [
            ("host", "127.0.0.1:7390"),
            ("origin", origin),
            ("x-leak-token", "k3y"),
        ];
        assert_eq!(
            admit(&s, "/api/send", &headers(&cross)),
            Err(Refused::Origin),
            "{origin}"
        );
    }
    let cross_site = [
        ("host", "127.0.0.1:7390"),
        ("sec-fetch-site", "cross-site"),
        ("x-leak-token", "k3y"),
    ];
    assert_eq!(
        admit(&s, "/api/threads", &headers(&cross_site)),
        Err(Refused::Origin)
    );
    // A link from elsewhere may open the page, not load its parts.
    let navigate = [
        ("host", "127.0.0.1:7390"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
    ];
    assert_eq!(admit(&s, "/", &headers(&navigate)), Ok(()));
    let embedded = [
        ("host", "127.0.0.1:7390"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
    ];
    assert_eq!(
        admit(&s, "/app.js", &headers(&embedded)),
        Err(Refused::Origin)
    );
    // No key, a wrong one, one of another length.
    for token in [None, Some("k3z"), Some("k3"), Some("")] {
        let mut h = headers(&own[..1]);
        if let Some(t) = token {
            h.insert("x-leak-token", HeaderValue::from_str(t).unwrap());
        }
        assert_eq!(
            admit(&s, "/api/state", &h),
            Err(Refused::Token),
            "{token:?}"
        );
    }
    // The page's files need no key (they hold nothing).
    assert_eq!(admit(&s, "/app.js", &headers(&own[..1])), Ok(()));
}

/// One raw HTTP/1.1 exchange: the status line's code, the head, the body.
fn exchange(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_owned())
}

/// A JSON POST with the page's key, as the page sends it.
fn post(port: u16, token: &str, path: &str, body: &str) -> (u16, String, String) {
    let host = format!("127.0.0.1:{port}");
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nX-Leak-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A GET as the page's script sends it (with the key, when given).
fn get(port: u16, token: Option<&str>, path: &str) -> (u16, String, String) {
    let host = format!("127.0.0.1:{port}");
    let key = token.map_or(String::new(), |t| format!("X-Leak-Token: {t}\r\n"));
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{key}Connection: close\r\n\r\n"),
    )
}

/// A page served on 127.0.0.1 with a stand-in for the agent's task.
struct Served {
    /// Serves the page while it lives.
    _runtime: tokio::runtime::Runtime,
    port: u16,
    token: String,
    /// Each request that reached the agent's task, as it prints.
    seen: std::sync::mpsc::Receiver<String>,
}

/// Serves a page on a free port of 127.0.0.1, over the state directory
/// `state_root`, with a stand-in agent that answers Status and refuses
/// every send with "no network yet".
fn serve(state_root: &Path) -> Served {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (commands, mut requests) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(8);
    let page = runtime
        .block_on(Page::bind(
            "127.0.0.1:0".parse().unwrap(),
            PageConfig {
                commands,
                policy: Policy::builtin(),
                state_root: state_root.to_path_buf(),
                send_interval_ms: 3000,
                poll_interval_ms: 20_000,
                keep_ended_days: 7,
            },
        ))
        .unwrap();
    let url = page.url().to_string();
    let token = url.split("#token=").nth(1).unwrap().to_owned();
    assert_eq!(token.len(), 64);
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    runtime.spawn(page.serve());
    // A stand-in agent: answers Status, and remembers that nothing else came.
    let (seen_tx, seen_rx) = std::sync::mpsc::sync_channel(64);
    runtime.spawn(async move {
        while let Some((request, answer)) = requests.recv().await {
            let response = match request {
                Request::Status => Response::Status(AgentStatus {
                    anonymity_note: "no estimate yet".into(),
                    ..AgentStatus::default()
                }),
                // An agent that has not reached the network yet.
                Request::Send { .. } => Response::Error {
                    message: "the agent has not reached the network yet".into(),
                    kind: Some(crate::agent::ipc::ErrorKind::NoNetwork),
                },
                _ => Response::error("not in this test"),
            };
            let _ = seen_tx.send(format!("{request:?}"));
            let _ = answer.send(response);
        }
    });
    Served {
        _runtime: runtime,
        port,
        token,
        seen: seen_rx,
    }
}

#[test]
fn over_http_every_answer_is_locked_down_and_refusals_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        _runtime,
        port,
        token,
        seen: seen_rx,
    } = serve(dir.path());
    let host = format!("127.0.0.1:{port}");

    let (code, head, body) = exchange(
        port,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200);
    assert!(
        head.contains(&format!(
            "content-security-policy: {}",
            CSP.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store") && head.contains("x-frame-options: deny"));
    assert!(head.contains("content-type: text/html"));
    assert_eq!(
        !body.is_empty(),
        !include_str!("../../../ui/index.html").is_empty()
    );

    let (code, _, body) = exchange(
        port,
        &format!(
            "GET /api/state HTTP/1.1\r\nHost: {host}\r\nX-Leak-Token: {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["network"]["ok"], false);
    assert_eq!(
        state["max_text_bytes"],
        Policy::builtin().limits().max_text_len.min(2500)
    );
    assert!(state["cost"]["expected_sent_mb_per_day"].as_f64().unwrap() > 100.0);

    // A rebinding page's request, a cross-origin send, a keyless read:
    // refused before any reaches the agent.
    let leak = r#"{"recipient":"a@example.com","relationship":"friend","text":"hello there"}"#;
    for (request, want) in [
        (
            format!(
                "GET /api/threads HTTP/1.1\r\nHost: rebind.example:{port}\r\nX-Leak-Token: {token}\r\nConnection: close\r\n\r\n"
            ),
            403,
        ),
        (
            format!(
                "POST /api/send HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{leak}",
                leak.len()
            ),
            403,
        ),
        (
            format!(
                "POST /api/send HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{leak}",
                leak.len()
            ),
            401,
        ),
        (
            format!(
                "GET /api/leaks HTTP/1.1\r\nHost: {host}\r\nX-Leak-Token: {}\r\nConnection: close\r\n\r\n",
                "0".repeat(64)
            ),
            401,
        ),
    ] {
        let (code, head, body) = exchange(port, &request);
        assert_eq!(code, want, "{request}\n{body}");
        assert!(head.contains("content-security-policy"));
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().len() > 10);
    }
    // The page's own checks, with the key: a bad address and a refused
    // text are named with their field, and neither reaches the agent.
    for (body, field, kind) in [
        (
            r#"{"recipient":"not an address","relationship":"friend","text":"hello there"}"#,
            "recipient",
            "bad_address",
        ),
        (
            r#"{"recipient":"a@example.com","relationship":"boss","text":"hello there"}"#,
            "relationship",
            "invalid",
        ),
        (
            r#"{"recipient":"a@example.com","relationship":"friend","text":"   "}"#,
            "text",
            "invalid",
        ),
        (
            r#"{"recipient":"a@example.com","relationship":"friend","text":"see https://example.com now"}"#,
            "text",
            "refused",
        ),
    ] {
        let (code, _, answer) = post(port, &token, "/api/send", body);
        assert_eq!(code, 422, "{answer}");
        let error: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            (error["field"].as_str(), error["kind"].as_str()),
            (Some(field), Some(kind)),
            "{answer}"
        );
    }
    // The verdict as the person types.
    let text = r#"{"text":"you should visit example.com"}"#;
    let (code, _, answer) = post(port, &token, "/api/check", text);
    assert_eq!(code, 200);
    let verdict: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(verdict["verdict"], "refused", "{answer}");
    assert_eq!(verdict["bytes"], "you should visit example.com".len());
    // Forgetting a conversation this machine does not have, or a label
    // that is not one (a path), is refused in words.
    for label in ["ab12cd", "..%2F..%2Fguard"] {
        let (code, _, answer) = post(port, &token, &format!("/api/threads/{label}/forget"), "{}");
        assert_eq!(code, 409, "{answer}");
        assert!(answer.contains("conversation"), "{answer}");
    }
    let seen: Vec<String> = seen_rx.try_iter().collect();
    assert_eq!(seen, vec!["Status".to_owned()]);
    // A good leak reaches the agent; its answer (no network yet) comes
    // back in words, with its kind.
    let body = r#"{"recipient":"a@example.com","relationship":"friend","text":"hello there","within_secs":3600}"#;
    let (code, _, answer) = post(port, &token, "/api/send", body);
    assert_eq!(code, 503, "{answer}");
    let error: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(error["kind"], "no_network");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("The agent has not reached")
    );
    let seen: Vec<String> = seen_rx.try_iter().collect();
    assert_eq!(seen, vec!["Send([redacted])".to_owned()]);
}

/// A raw request with a body (`Content-Length` from it), the page's key
/// and `Origin`, and the given `Content-Type` line (or none).
fn post_as(
    port: u16,
    token: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String, serde_json::Value) {
    let host = format!("127.0.0.1:{port}");
    let kind = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    let (code, head, answer) = exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nX-Leak-Token: {token}\r\n{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let json = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("not JSON: {answer:?}"));
    (code, head, json)
}

/// Every error the API answers, whoever refused the request (a handler,
/// or axum before any handler ran), is `{"error", "kind", "field"}` JSON
/// with a sentence to show, and reaches no agent.
#[test]
fn requests_the_handlers_never_see_are_refused_in_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    let (port, token) = (served.port, served.token.as_str());
    let leak = r#"{"recipient":"a@example.com","relationship":"friend","text":"hello there"}"#;
    let big_text = format!(r#"{{"text":"{}"}}"#, "a".repeat(100_000));
    let big_leak = format!(
        r#"{{"recipient":"a@example.com","relationship":"friend","text":"{}"}}"#,
        "a".repeat(70_000)
    );
    let json = Some("application/json");
    for (path, content_type, body, want, kind, field, words) in [
        // Not JSON at all, and JSON cut short.
        (
            "/api/send",
            json,
            "recipient=a@example.com",
            400,
            "invalid",
            None,
            "not valid JSON",
        ),
        (
            "/api/check",
            json,
            r#"{"text":"hel"#,
            400,
            "invalid",
            None,
            "not valid JSON",
        ),
        // Not declared JSON (a form's type, or none).
        (
            "/api/send",
            Some("text/plain"),
            leak,
            415,
            "invalid",
            None,
            "application/json",
        ),
        (
            "/api/check",
            None,
            r#"{"text":"hello"}"#,
            415,
            "invalid",
            None,
            "application/json",
        ),
        // JSON, but not the fields a leak has.
        (
            "/api/send",
            json,
            r#"{"text":"hello there"}"#,
            422,
            "invalid",
            None,
            "field",
        ),
        (
            "/api/check",
            json,
            r#"{"text":"hi","extra":1}"#,
            422,
            "invalid",
            None,
            "field",
        ),
        (
            "/api/send",
            json,
            r#"{"recipient":"a@example.com","relationship":"friend","text":"hi","within_secs":"soon"}"#,
            422,
            "invalid",
            None,
            "field",
        ),
        // Larger than the page may send.
        (
            "/api/check",
            json,
            big_text.as_str(),
            413,
            "too_long",
            Some("text"),
            "more than 64 KiB",
        ),
        (
            "/api/send",
            json,
            big_leak.as_str(),
            413,
            "too_long",
            Some("text"),
            "too long for the page to send",
        ),
        (
            "/api/threads/ab12cd/reply",
            json,
            big_text.as_str(),
            413,
            "too_long",
            Some("text"),
            "more than 64 KiB",
        ),
    ] {
        let (code, head, error) = post_as(port, token, path, content_type, body);
        assert_eq!(code, want, "{path} {content_type:?} {error}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("content-security-policy"), "{head}");
        assert_eq!(error["kind"], kind, "{error}");
        assert_eq!(error["field"].as_str(), field, "{error}");
        let sentence = error["error"].as_str().unwrap();
        assert!(sentence.contains(words), "{path}: {sentence}");
        assert!(sentence.ends_with('.'), "{sentence}");
        // The sentence never quotes the body.
        assert!(
            !sentence.contains("hello") && !sentence.contains("aaaa"),
            "{sentence}"
        );
    }
    // A method a route does not take, an address that does not decode.
    let (code, head, body) = get(port, Some(token), "/api/send");
    assert_eq!(code, 405, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["kind"], "invalid");
    let (code, _, body) = get(port, Some(token), "/api/leaks/%FF%FE");
    assert_eq!(code, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["kind"], "invalid", "{error}");
    assert!(error["error"].as_str().unwrap().len() > 10, "{error}");
    let seen: Vec<String> = served.seen.try_iter().collect();
    assert_eq!(seen, Vec::<String>::new());
}

/// The don'ts name every category the policy can refuse a text for: its
/// rules', its model's (every head), links when it forbids them; once each.
#[test]
fn the_donts_name_every_category_the_policy_refuses() {
    let policy = Policy::builtin();
    assert!(policy.has_model(), "the built-in policy has a model");
    let donts = api::dont_categories(&policy);
    let heads: Vec<Category> = HEADS.iter().flatten().copied().collect();
    assert_eq!(heads.len(), 7);
    for category in heads.iter().chain(&[Category::Links]) {
        assert!(donts.contains(category), "{category:?} in {donts:?}");
    }
    for (rule, category) in policy.rule_names() {
        assert!(
            donts.contains(&category) || category == Category::Length,
            "rule {rule}: {category:?} in {donts:?}"
        );
    }
    assert!(!donts.contains(&Category::Length));
    let mut unique = donts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, donts, "sorted, each once");
    // The built-in rules name every category themselves: the same policy
    // with its first rule only shows what the model adds (every head).
    let source = policy.source();
    let (second_rule, _) = source.match_indices("\n[[rules]]").nth(1).unwrap();
    let one_rule = Policy::from_toml(&source[..second_rule]).unwrap();
    assert!(one_rule.has_model());
    let ruled: Vec<Category> = one_rule.rule_names().map(|(_, c)| c).collect();
    assert_eq!(ruled.len(), 1);
    let mut want: Vec<Category> = heads.iter().copied().chain([Category::Links]).collect();
    want.sort();
    assert_eq!(api::dont_categories(&one_rule), want);
    // Without its model, it refuses only what its rule lists, and links.
    let mut want: Vec<Category> = ruled.into_iter().chain([Category::Links]).collect();
    want.sort();
    want.dedup();
    assert_eq!(api::dont_categories(&one_rule.without_model()), want);

    // Over HTTP: one sentence per category, no sentence twice.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    let (code, _, body) = get(served.port, Some(&served.token), "/api/rules");
    assert_eq!(code, 200, "{body}");
    let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<(&str, &str)> = rules["donts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["category"].as_str().unwrap(),
                d["words"].as_str().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = donts.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        listed.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        names,
        "{body}"
    );
    let mut words: Vec<&str> = listed.iter().map(|(_, w)| *w).collect();
    words.sort_unstable();
    words.dedup();
    assert_eq!(words.len(), listed.len(), "{body}");
    assert!(
        words.iter().all(|w| w.len() > 10 && w.ends_with('.')),
        "{body}"
    );
    assert_eq!(rules["dos"].as_array().unwrap().len(), 4);
}

/// A page load as a browser makes it: a document, typed or forwarded to.
fn load_page(port: u16, dest: &str) -> u16 {
    let host = format!("127.0.0.1:{port}");
    let (code, _, _) = exchange(
        port,
        &format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: {dest}\r\nConnection: close\r\n\r\n"
        ),
    );
    code
}

/// `leak ui`'s forwarding file holds the key: it is removed at the first
/// request with the key from a page loaded after it was written, and not
/// before (a tab already open must not remove it before the browser
/// `leak ui` started has read it).
#[test]
fn the_forwarding_file_goes_once_the_page_it_opened_used_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    let (port, token) = (served.port, served.token.as_str());
    let opener = dir.path().join(OPENER);
    let write = || {
        // File times are coarser than the clock: let them tell apart.
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(&opener, "<meta http-equiv=refresh>").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    write();
    // Calls before any page load (a tab already open polls; a tab of the
    // agent's previous run has a void key): the file stays.
    assert_eq!(get(port, Some(token), "/api/threads").0, 200);
    assert_eq!(get(port, Some("0"), "/api/threads").0, 401);
    assert!(opener.exists());
    // The browser follows the file: the page loads, without the key.
    assert_eq!(load_page(port, "document"), 200);
    assert!(opener.exists());
    // A request without the key, or with a wrong one, does not count.
    assert_eq!(get(port, None, "/api/threads").0, 401);
    assert_eq!(get(port, Some(&"0".repeat(64)), "/api/threads").0, 401);
    assert_eq!(get(port, None, "/app.js").0, 200);
    assert!(opener.exists());
    // The page's first call with the key removes it.
    assert_eq!(get(port, Some(token), "/api/threads").0, 200);
    assert!(!opener.exists());

    // `leak ui` again while a tab is open: that tab's polls leave the new
    // file alone, and so does a frame of the page (refused by the browser)...
    write();
    assert_eq!(get(port, Some(token), "/api/threads").0, 200);
    assert_eq!(load_page(port, "iframe"), 200);
    assert_eq!(get(port, Some(token), "/api/threads").0, 200);
    assert!(opener.exists());
    // ...until the page loads from it and calls.
    assert_eq!(load_page(port, "document"), 200);
    assert_eq!(get(port, Some(token), "/api/state").0, 200);
    assert!(!opener.exists());
    // Nothing else in the state directory is touched.
    std::fs::write(dir.path().join("kept"), "x").unwrap();
    assert_eq!(load_page(port, "document"), 200);
    assert_eq!(get(port, Some(token), "/api/threads").0, 200);
    assert!(dir.path().join("kept").exists());
}
