//! The exit's LMTP server against hostile and broken clients: wrong
//! commands and orders, unknown recipients, forged notifications, a message
//! over the limit, a flood of garbage. Clear answers, counts, no panic.

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
};

use super::*;

/// An LMTP client that reads whole replies (every line of a multi-line
/// one).
struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> (Self, String) {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// One reply (its last line), or "" at the end of the stream.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                return String::new();
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or("")
}

async fn inbound_exit(dir: &std::path::Path) -> TestExit {
    TestExit::start(
        dir,
        [31; 32],
        |c| c.exit.inbound_listen = "127.0.0.1:0".into(),
        Arc::new(Vec::new),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_answers_every_mistake_and_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let t = inbound_exit(dir.path()).await;
    let addr = t.inbound_addr.unwrap();
    let count = |kind: &'static str| Metrics::get(&t.metrics.exit_inbound, "kind", kind);
    let (mut c, greeting) = Client::connect(addr).await;
    assert_eq!(code(&greeting), "220", "{greeting}");
    assert_eq!(code(&c.command("EHLO mx.test").await), "500");
    assert_eq!(code(&c.command("LHLO mx.test").await), "250");
    assert_eq!(
        code(&c.command("RCPT TO:<postmaster@exit.test>").await),
        "503"
    );
    assert_eq!(code(&c.command("DATA").await), "503");
    assert_eq!(code(&c.command("MAIL FROM:<>").await), "250");
    assert_eq!(code(&c.command("MAIL FROM:<>").await), "503");
    assert_eq!(code(&c.command("RCPT TO:<root@exit.test>").await), "550");
    assert_eq!(
        code(&c.command("RCPT TO:<leak@elsewhere.test>").await),
        "550"
    );
    assert_eq!(
        code(&c.command("RCPT TO:<postmaster@exit.test>").await),
        "250"
    );
    let forged = format!("RCPT TO:<b-{}@exit.test>", "ab".repeat(27));
    assert_eq!(code(&c.command(&forged).await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    // A notification whose token no leak of this exit has; dot-stuffed.
    c.send(
        b"From: MAILER-DAEMON@mx.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; \
          report-type=delivery-status; boundary=\"d\"\r\n\r\n--d\r\nContent-Type: \
          message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\nAction: failed\r\n\
          Status: 5.1.1\r\n\r\n--d--\r\n..a stuffed line\r\n.\r\n",
    )
    .await;
    // One answer per recipient, as LMTP requires.
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(count("dsn"), 2);
    assert_eq!(count("unverified"), 2);

    // Over the limit: refused after the data, for each recipient; the
    // session goes on.
    assert_eq!(code(&c.command("MAIL FROM:<a@b.test>").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<abuse@exit.test>").await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..(300 * 1024 / line.len()) {
        c.send(line.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    assert_eq!(code(&c.reply().await), "552");
    assert_eq!(count("too_large"), 1);
    assert_eq!(code(&c.command("RSET").await), "250");
    assert_eq!(code(&c.command("NOOP").await), "250");
    assert_eq!(code(&c.command("VRFY root").await), "502");

    // Garbage: each line answered, and the session closed after ten.
    let mut closed = false;
    for _ in 0..12 {
        let reply = c.command("\u{1}\u{2} nonsense").await;
        if reply.is_empty() || code(&reply) == "421" {
            closed = true;
            break;
        }
        assert_eq!(code(&reply), "500", "{reply}");
    }
    assert!(closed, "the session was not closed after a flood of errors");

    // The server goes on serving.
    let (mut c, _) = Client::connect(addr).await;
    assert_eq!(code(&c.command("LHLO mx.test").await), "250");
    assert_eq!(code(&c.command("QUIT").await), "221");
    assert_eq!(t.exit.metrics.exit_opt_outs.get(), 0);
}
