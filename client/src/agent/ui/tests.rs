//! The page's guard (pure) and its routes over real HTTP on 127.0.0.1,
//! with a stand-in for the agent's task that answers status requests.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
};

use axum::http::HeaderValue;

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

#[test]
fn over_http_every_answer_is_locked_down_and_refusals_are_json() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (commands, mut requests) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(8);
    let page = runtime
        .block_on(Page::bind(
            "127.0.0.1:0".parse().unwrap(),
            PageConfig {
                commands,
                policy: Policy::builtin(),
                state_root: dir.path().to_path_buf(),
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
    // An oversize body is refused whole.
    let big = format!(r#"{{"text":"{}"}}"#, "a".repeat(100_000));
    let (code, _, _) = post(port, &token, "/api/check", &big);
    assert_eq!(code, 413);
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
