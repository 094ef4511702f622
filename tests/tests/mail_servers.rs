//! The mail-server harness itself (`leak_tests::mail`): a private Postfix
//! delivers into its Maildir and the messages read back decoded, two run at
//! once, and each `smtp-sink` constructor answers what it documents. Spoken
//! to with a minimal SMTP client over a `TcpStream`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    time::Duration,
};

use leak_tests::mail::{DeliveredMail, Postfix, SmtpSink, smtp_source_rate};

const WAIT: Duration = Duration::from_secs(10);

/// One SMTP reply: its code (0 when the server closed the connection) and
/// its lines joined.
#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

/// A minimal SMTP client: a command, then its reply.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> (Self, Reply) {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut smtp = Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = smtp.reply();
        (smtp, greeting)
    }

    fn reply(&mut self) -> Reply {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    return Reply {
                        code: 0,
                        text: format!("{text}(connection closed)"),
                    };
                }
                Ok(_) => {}
            }
            text.push_str(&line);
            let last = line.as_bytes().get(3) != Some(&b'-');
            if last {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Reply { code, text };
            }
        }
    }

    fn command(&mut self, line: &str) -> Reply {
        // A write to a closed connection shows as a closed reply.
        let _ = self.writer.write_all(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `command` and asserts the reply's code.
    fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.command(line);
        assert_eq!(reply.code, code, "{line:?} got {reply:?}");
        reply
    }

    /// DATA, then the message (LF or CRLF line ends), dot-stuffed.
    fn data(&mut self, message: &str) -> Reply {
        self.expect("DATA", 354);
        let mut wire = String::new();
        for line in message.lines() {
            if line.starts_with('.') {
                wire.push('.');
            }
            wire.push_str(line);
            wire.push_str("\r\n");
        }
        wire.push_str(".\r\n");
        self.writer.write_all(wire.as_bytes()).unwrap();
        self.reply()
    }

    /// A whole transaction (after EHLO) that must be accepted.
    fn send(&mut self, from: &str, to: &str, message: &str) {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        self.expect(&format!("RCPT TO:<{to}>"), 250);
        let reply = self.data(message);
        assert_eq!(reply.code, 250, "end of DATA got {reply:?}");
    }
}

/// Connects, says EHLO, sends one message from a@sender.test to `to`, quits.
fn deliver(port: u16, to: &str, message: &str) {
    let (mut smtp, greeting) = Smtp::connect(port);
    assert_eq!(greeting.code, 220, "{greeting:?}");
    smtp.expect("EHLO client.test", 250);
    smtp.send("a@sender.test", to, message);
    smtp.expect("QUIT", 221);
}

fn find<'a>(messages: &'a [DeliveredMail], message_id: &str) -> &'a DeliveredMail {
    messages
        .iter()
        .find(|m| m.header("message-id").as_deref() == Some(message_id))
        .unwrap_or_else(|| panic!("no message {message_id} in {messages:#?}"))
}

#[test]
fn postfix_delivers_into_its_maildir_and_messages_read_back_decoded() {
    let postfix = Postfix::start("example.test");
    assert_eq!(
        postfix.smtp_url(),
        format!("smtp://127.0.0.1:{}", postfix.port())
    );

    let (mut smtp, greeting) = Smtp::connect(postfix.port());
    assert_eq!(greeting.code, 220, "{greeting:?}");
    smtp.expect("EHLO client.test", 250);

    // Quoted-printable UTF-8, a folded header, an encoded-word subject, a
    // line that needs dot-stuffing.
    smtp.send(
        "a@sender.test",
        "Someone@example.test",
        "From: A <a@sender.test>\n\
         To: someone@example.test\n\
         Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the test\n\
         Message-ID: <qp@sender.test>\n\
         X-Folded: first part\n \tsecond part\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\
         \n\
         Gr=C3=BC=C3=9Fe =E2=80=94 a soft=\n\
         ly broken line.\n\
         .a line with a dot\n",
    );
    // Base64 in ISO-8859-1, in the same session.
    smtp.send(
        "a@sender.test",
        "other@example.test",
        "From: a@sender.test\n\
         To: other@example.test\n\
         Subject: latin-1\n\
         Message-ID: <b64@sender.test>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=iso-8859-1\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         xOTW9tz8IGVuIGxhdGluLTE=\n",
    );
    // Another domain is refused: nothing leaves the instance.
    smtp.expect("MAIL FROM:<a@sender.test>", 250);
    let refused = smtp.expect("RCPT TO:<x@elsewhere.test>", 554);
    assert!(refused.text.contains("Relay access denied"), "{refused:?}");
    smtp.expect("RSET", 250);
    smtp.expect("QUIT", 221);

    let messages = postfix.wait_for_messages(2, WAIT);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    for message in &messages {
        assert!(message.path.starts_with(postfix.maildir()));
    }

    let qp = find(&messages, "<qp@sender.test>");
    // The recipient as sent, case kept.
    assert_eq!(
        qp.header("delivered-to").as_deref(),
        Some("Someone@example.test")
    );
    assert_eq!(qp.header("Return-Path").as_deref(), Some("<a@sender.test>"));
    assert_eq!(
        qp.header("x-folded").as_deref(),
        Some("first part \tsecond part")
    );
    assert_eq!(
        qp.header("subject").as_deref(),
        Some("=?utf-8?q?Gr=C3=BC=C3=9Fe?= from the test")
    );
    assert_eq!(qp.subject().as_deref(), Some("Grüße from the test"));
    assert!(!qp.header_all("received").is_empty());
    // The header order is kept: Postfix's fields come first.
    let names: Vec<String> = qp.headers().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names.first().map(String::as_str), Some("Return-Path"));
    assert!(names.contains(&"From".to_owned()), "{names:?}");
    assert_eq!(
        qp.body_text().trim_end(),
        "Grüße — a softly broken line.\n.a line with a dot"
    );

    let b64 = find(&messages, "<b64@sender.test>");
    assert_eq!(
        b64.header("Delivered-To").as_deref(),
        Some("other@example.test")
    );
    assert_eq!(b64.body_text().trim_end(), "ÄäÖöÜü en latin-1");
    assert!(b64.header("Date").is_some(), "Postfix adds a Date");

    assert!(postfix.log().contains("status=sent"), "{}", postfix.log());
}

#[test]
fn two_postfix_instances_run_at_once() {
    let (one, two) = std::thread::scope(|scope| {
        let one = scope.spawn(|| Postfix::start("one.test"));
        let two = scope.spawn(|| Postfix::start_for(&["two.test", "two-b.test"]));
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_ne!(one.port(), two.port());
    assert_ne!(one.maildir(), two.maildir());

    deliver(
        one.port(),
        "x@one.test",
        "Subject: to one\nMessage-ID: <1@t>\n\nbody one\n",
    );
    deliver(
        two.port(),
        "y@two.test",
        "Subject: to two\nMessage-ID: <2@t>\n\nbody two\n",
    );
    deliver(
        two.port(),
        "z@two-b.test",
        "Subject: to two-b\nMessage-ID: <3@t>\n\nbody three\n",
    );
    // Each refuses the other's domain.
    let (mut smtp, _) = Smtp::connect(one.port());
    smtp.expect("HELO client.test", 250);
    smtp.expect("MAIL FROM:<>", 250);
    smtp.expect("RCPT TO:<y@two.test>", 554);

    let at_one = one.wait_for_messages(1, WAIT);
    let at_two = two.wait_for_messages(2, WAIT);
    assert_eq!(at_one.len(), 1);
    assert_eq!(at_one[0].body_text().trim_end(), "body one");
    let mut subjects: Vec<String> = at_two.iter().filter_map(|m| m.subject()).collect();
    subjects.sort();
    assert_eq!(subjects, ["to two", "to two-b"]);
}

#[test]
fn a_stopped_postfix_refuses_connections_and_restarts_with_its_mail() {
    let mut postfix = Postfix::start("restart.test");
    deliver(
        postfix.port(),
        "a@restart.test",
        "Subject: before\n\nbefore\n",
    );
    postfix.wait_for_messages(1, WAIT);

    postfix.stop();
    assert!(!postfix.is_running());
    assert!(TcpStream::connect(("127.0.0.1", postfix.port())).is_err());
    assert_eq!(postfix.messages().len(), 1, "mail stays readable");

    postfix.restart();
    deliver(
        postfix.port(),
        "b@restart.test",
        "Subject: after\n\nafter\n",
    );
    let messages = postfix.wait_for_messages(2, WAIT);
    let subjects: Vec<String> = messages.iter().filter_map(|m| m.subject()).collect();
    assert_eq!(subjects, ["before", "after"]);
}

#[test]
fn postfix_is_gone_when_dropped() {
    let postfix = Postfix::start("drop.test");
    let dir = postfix.dir().to_path_buf();
    let port = postfix.port();
    drop(postfix);
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn accepting_sink_keeps_each_message() {
    let sink = SmtpSink::accepting();
    assert_eq!(sink.smtp_url(), format!("smtp://127.0.0.1:{}", sink.port()));
    let (mut smtp, greeting) = Smtp::connect(sink.port());
    assert_eq!(greeting.code, 220, "{greeting:?}");
    smtp.expect("EHLO client.test", 250);
    let mail = smtp.expect("MAIL FROM:<a@sender.test>", 250);
    assert!(mail.text.starts_with("250 2.1.0"), "{mail:?}");
    let rcpt = smtp.expect("RCPT TO:<b@sink.test>", 250);
    assert!(rcpt.text.starts_with("250 2.1.5"), "{rcpt:?}");
    let end = smtp.data("Subject: to the sink\n\nhello sink\n");
    assert_eq!(end.code, 250, "{end:?}");
    smtp.send("a@sender.test", "c@sink.test", "Subject: second\n\nagain\n");
    smtp.expect("QUIT", 221);

    let messages = sink.wait_for_messages(2, WAIT);
    assert_eq!(sink.count(), 2);
    // A transaction in progress does not count (smtp-sink has its file
    // open from MAIL on).
    let (mut open, _) = Smtp::connect(sink.port());
    open.expect("HELO client.test", 250);
    open.expect("MAIL FROM:<a@sender.test>", 250);
    open.expect("RCPT TO:<d@sink.test>", 250);
    assert_eq!(sink.count(), 2);
    let first = messages
        .iter()
        .find(|m| m.subject().as_deref() == Some("to the sink"))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert_eq!(
        first.header("X-Rcpt-Args").as_deref(),
        Some("<b@sink.test>")
    );
    assert_eq!(
        first.header("X-Mail-Args").as_deref(),
        Some("<a@sender.test>")
    );
    assert_eq!(first.body_text().trim_end(), "hello sink");
}

/// Says EHLO and MAIL, then RCPT: the reply to RCPT.
fn rcpt_reply(sink: &SmtpSink) -> (Smtp, Reply) {
    let (mut smtp, greeting) = Smtp::connect(sink.port());
    assert_eq!(greeting.code, 220, "{greeting:?}");
    smtp.expect("EHLO client.test", 250);
    smtp.expect("MAIL FROM:<a@sender.test>", 250);
    let reply = smtp.command("RCPT TO:<b@sink.test>");
    (smtp, reply)
}

#[test]
fn temp_failing_sink_answers_rcpt_with_450() {
    let sink = SmtpSink::temp_failing();
    let (mut smtp, reply) = rcpt_reply(&sink);
    assert_eq!(reply.code, 450, "{reply:?}");
    assert!(reply.text.starts_with("450 4.3.0 "), "{reply:?}");
    smtp.expect("DATA", 503);
    smtp.expect("QUIT", 221);
    // smtp-sink deletes the transaction's file when the session ends, which
    // may be just after it answers QUIT.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sink.count() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sink.count(), 0);
}

#[test]
fn perm_failing_sink_answers_rcpt_with_500() {
    let sink = SmtpSink::perm_failing();
    let (mut smtp, reply) = rcpt_reply(&sink);
    assert_eq!(reply.code, 500, "{reply:?}");
    assert!(reply.text.starts_with("500 5.3.0 "), "{reply:?}");
    smtp.expect("QUIT", 221);
}

#[test]
fn deferring_sink_answers_rcpt_with_421_and_hangs_up() {
    let sink = SmtpSink::deferring_421();
    let (mut smtp, reply) = rcpt_reply(&sink);
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text.starts_with("421 4.0.0 "), "{reply:?}");
    assert_eq!(smtp.command("NOOP").code, 0, "the connection is closed");
}

#[test]
fn failing_sinks_can_fail_at_other_commands() {
    let greeting_421 = SmtpSink::deferring_421_at("CONNECT");
    let (_, greeting) = Smtp::connect(greeting_421.port());
    assert_eq!(greeting.code, 421, "{greeting:?}");

    let data_450 = SmtpSink::temp_failing_at("DATA");
    let (mut smtp, reply) = rcpt_reply(&data_450);
    assert_eq!(reply.code, 250, "{reply:?}");
    smtp.expect("DATA", 450);

    let dot_500 = SmtpSink::perm_failing_at(".");
    let (mut smtp, reply) = rcpt_reply(&dot_500);
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(smtp.data("Subject: x\n\nx\n").code, 500);

    let mail_450 = SmtpSink::start(&["-r", "MAIL"]);
    let (mut smtp, _) = Smtp::connect(mail_450.port());
    smtp.expect("HELO client.test", 250);
    smtp.expect("MAIL FROM:<a@sender.test>", 450);
}

#[test]
fn smtp_source_measures_a_rate() {
    let sink = SmtpSink::accepting();
    let rate = smtp_source_rate(sink.port(), 40, 2);
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    assert_eq!(sink.wait_for_messages(40, WAIT).len(), 40);

    let postfix = Postfix::start("bench.test");
    let rate = postfix.smtp_source_rate(10, 2);
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    postfix.wait_for_messages(10, WAIT);
}
