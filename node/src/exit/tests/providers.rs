//! The exit's standing with destination providers, end to end on a manual
//! clock: complaints that pause one provider, the warm-up ramp.

use super::*;

/// Sends `POST PATH` to the exit's endpoint over real HTTP; the status.
async fn post(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: exit.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap()
}

/// The report link of the email in `outbox` sent to `to` (the body is
/// quoted-printable: soft line breaks joined).
fn report_path(outbox: &std::path::Path, to: &str) -> Option<String> {
    for entry in std::fs::read_dir(outbox).ok()? {
        let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
        if !text.contains(&format!("To: {to}")) {
            continue;
        }
        let text = text.replace("=\r\n", "").replace("=\n", "");
        let at = text.find("/report/")?;
        let token: String = text[at + "/report/".len()..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        return Some(format!("/report/{token}"));
    }
    None
}

/// Configures the file transport into `outbox`, then `more`.
fn into_outbox(
    outbox: &std::path::Path,
    more: impl Fn(&mut Config) + Clone,
) -> impl Fn(&mut Config) + Clone {
    let outbox = outbox.to_path_buf();
    move |c: &mut Config| {
        c.exit.transport = Transport::File;
        c.exit.file_dir = outbox.display().to_string();
        more(c);
    }
}

/// The emails in `outbox`.
fn emails(outbox: &std::path::Path) -> usize {
    std::fs::read_dir(outbox).map_or(0, |d| d.count())
}

/// The exit's standing with `provider`.
fn standing(t: &TestExit, provider: &str) -> super::provider::ProviderStatus {
    t.exit
        .providers()
        .into_iter()
        .find(|p| p.provider == provider)
        .unwrap()
}

/// Reports from the emails' links count toward their recipient's provider:
/// one report (of a link followed twice) is under 0.1 % of the floor of
/// 1,000 deliveries, a second crosses it and pauses Gmail only. Leaks to
/// Gmail then wait in the queue while Yahoo's go out; the pause shows in
/// the metrics and `queue providers`, is kept on disk, and the
/// operator's resume (over the control socket) sends the waiting leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_pause_one_provider_until_the_operator_resumes_it() {
    use super::admin::{Request, Response, request};
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let file_transport = into_outbox(&outbox, |_| {});
    let socket = Config::defaults(dir.path().to_path_buf()).admin_socket_path();
    let t = TestExit::start(
        dir.path(),
        [8; 32],
        file_transport.clone(),
        Arc::new(Vec::new),
    )
    .await;
    let now = t.clock.now_ms();
    let send = |i: u8, to: &'static str| {
        leak_to(
            &t.exit,
            t.node_id,
            now,
            MessageId([i; 16]),
            "The vase was me.",
            0,
            to,
        )
    };
    let emails = || emails(&outbox);
    for (i, to) in [
        (1, "bob@gmail.com"),
        (2, "carol@gmail.com"),
        (3, "dave@yahoo.com"),
    ] {
        t.deliver(send(i, to)).await;
    }
    until("three emails", || emails() == 3).await;
    let gmail = |t: &TestExit| standing(t, "gmail");
    let paused_gauge = |t: &TestExit| {
        t.metrics
            .exit_provider_paused
            .get_or_create(&vec![("provider", "gmail")])
            .get()
    };

    let bob = report_path(&outbox, "bob@gmail.com").unwrap();
    assert_eq!(post(t.http_addr, &bob).await, 200);
    assert_eq!(post(t.http_addr, &bob).await, 200);
    let standing = gmail(&t);
    assert_eq!((standing.delivered, standing.complaints), (2, 1));
    assert_eq!(standing.paused_since_ms, None);
    // A forged token (one hex digit changed) counts nowhere.
    let mut forged = report_path(&outbox, "carol@gmail.com").unwrap();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    post(t.http_addr, &forged).await;
    assert_eq!(gmail(&t).complaints, 1);
    let carol = report_path(&outbox, "carol@gmail.com").unwrap();
    assert_eq!(post(t.http_addr, &carol).await, 200);
    let standing = gmail(&t);
    assert_eq!(standing.complaints, 2);
    assert!(standing.paused_since_ms.is_some() && standing.paused_automatically);
    assert_eq!(paused_gauge(&t), 1);

    t.deliver(send(4, "erin@gmail.com")).await;
    t.deliver(send(5, "frank@yahoo.com")).await;
    until("Yahoo's email", || emails() == 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(emails(), 4, "nothing goes to Gmail while it is paused");
    assert_eq!(t.exit.counts().unwrap().states.get("queued"), Some(&1));
    let Response::Providers { providers } = request(&socket, &Request::Providers).await.unwrap()
    else {
        panic!("not a providers answer");
    };
    assert!(
        providers
            .iter()
            .any(|p| p.provider == "gmail" && p.paused_since_ms.is_some())
    );

    // What a restart reads back keeps the pause (and the counts).
    let mut restored = Health::new(HealthSettings {
        threshold: 0.001,
        window_hours: 24,
        min_deliveries: 1000,
    });
    assert!(restored.restore(&t.exit.store.standing().unwrap().unwrap()));
    assert!(restored.is_paused(Provider::Gmail));
    assert!(!restored.is_paused(Provider::Yahoo));

    let resumed = request(
        &socket,
        &Request::Resume {
            provider: Some("gmail".into()),
        },
    )
    .await
    .unwrap();
    assert!(matches!(resumed, Response::Done { .. }), "{resumed:?}");
    until("Gmail's email after the resume", || emails() == 5).await;
    assert_eq!(gmail(&t).paused_since_ms, None);
    assert_eq!(paused_gauge(&t), 0);
    let unknown = request(
        &socket,
        &Request::Pause {
            provider: Some("hotmail".into()),
        },
    )
    .await
    .unwrap();
    assert!(matches!(unknown, Response::Error { .. }), "{unknown:?}");
    t.stop();
}

/// A new exit warms up: on its first day at most `warmup_first_day`
/// deliveries start per provider (here 2), the rest wait for the next UTC
/// day, when the cap has doubled; another provider is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_exit_ramps_up_per_provider() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let configure = into_outbox(&outbox, |c| c.exit.warmup_first_day = 2);
    let t = TestExit::start(dir.path(), [9; 32], configure, Arc::new(Vec::new)).await;
    let now = t.clock.now_ms();
    let emails = || emails(&outbox);
    for (i, to) in [
        (1, "bob@gmail.com"),
        (2, "carol@gmail.com"),
        (3, "erin@gmail.com"),
        (4, "dave@yahoo.com"),
    ] {
        let leak = leak_to(&t.exit, t.node_id, now, MessageId([i; 16]), "Hi.", 0, to);
        t.deliver(leak).await;
    }
    until("three emails", || emails() == 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(emails(), 3, "Gmail's third waits for tomorrow");
    let gmail = standing(&t, "gmail");
    assert_eq!((gmail.started_today, gmail.daily_cap), (2, Some(2)));
    t.clock.advance_ms(Health::until_next_day(now));
    t.exit.clock_moved();
    until("Gmail's third, the next day", || emails() == 4).await;
    let gmail = standing(&t, "gmail");
    assert_eq!((gmail.started_today, gmail.daily_cap), (1, Some(4)));
    t.stop();
}

/// At most `exit.provider_connections` deliveries to one provider at once:
/// against a mail server that takes connections and never answers, two of
/// four leaks to Gmail are being sent and the other two wait, while a
/// leak to Yahoo still gets a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_provider_holds_at_most_its_share_of_connections() {
    use super::provider::Provider;
    // Accepts, and holds every connection open without a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let t = TestExit::start(
        dir.path(),
        [9; 32],
        move |c| {
            c.exit.smtp_url = format!("smtp://127.0.0.1:{port}");
            c.exit.smtp_connections = 4;
            c.exit.provider_connections = 2;
            c.exit.smtp_timeout_secs = 600;
        },
        Arc::new(Vec::new),
    )
    .await;
    let now = t.clock.now_ms();
    for (i, to) in [
        (1, "a@gmail.com"),
        (2, "b@gmail.com"),
        (3, "c@gmail.com"),
        (4, "d@gmail.com"),
        (5, "e@yahoo.com"),
    ] {
        t.deliver(leak_to(
            &t.exit,
            t.node_id,
            now,
            MessageId([i; 16]),
            "I kept your letters.",
            0,
            to,
        ))
        .await;
    }
    let busy = |t: &TestExit| t.exit.lock_schedule().in_flight_by_provider();
    until("three deliveries under way", || {
        busy(&t).iter().sum::<usize>() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = busy(&t);
    assert_eq!(busy[Provider::Gmail.index()], 2, "{busy:?}");
    assert_eq!(busy[Provider::Yahoo.index()], 1, "{busy:?}");
    held.abort();
}
