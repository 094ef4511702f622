//! An SMTP server inside the benchmark's own process that accepts every
//! message at once and notes when: the moment a leak was handed over and
//! the moment the server took its email then come from one monotonic clock
//! (Postfix's `smtp-sink` would do the same work, but its dump files only
//! say when they were last written, on the file system's clock). Each
//! message is told apart by its recipient.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
    sync::watch,
};

/// What the SMTP server saw of one message.
#[derive(Debug, Clone, Copy)]
pub struct Transaction {
    /// When MAIL FROM arrived: the exit began to deliver.
    pub mail: Instant,
    /// When the server was about to answer 250 to the final `.`.
    pub accepted: Instant,
    /// How long the end-of-data marker (`CRLF.CRLF`, its own 5-byte write
    /// in lettre) arrived after the last line of the message.
    pub end_marker_gap: Duration,
}

/// The SMTP server's transactions, by recipient.
#[derive(Clone)]
pub struct Accepted {
    at: Arc<Mutex<HashMap<String, Transaction>>>,
    changed: watch::Sender<u64>,
}

impl Accepted {
    /// Waits until a message to `recipient` was accepted.
    pub async fn wait(&self, recipient: &str, timeout: Duration) -> Option<Transaction> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.at.lock().unwrap().get(recipient) {
                return Some(*at);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}

/// An SMTP server on 127.0.0.1 that accepts every message at once.
pub async fn start_instant_smtp() -> (u16, Accepted) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Accepted {
        at: Arc::new(Mutex::new(HashMap::new())),
        changed: watch::channel(0).0,
    };
    let shared = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).unwrap();
            let accepted = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = smtp_session(stream, &accepted).await {
                    eprintln!("instant SMTP server: a session failed: {e}");
                }
            });
        }
    });
    (port, accepted)
}

async fn smtp_session(stream: tokio::net::TcpStream, accepted: &Accepted) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 instant-smtp ESMTP\r\n").await?;
    let mut recipients: Vec<String> = Vec::new();
    let mut mail_at = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-instant-smtp\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10240000\r\n"
        } else if command.starts_with("HELO") {
            b"250 instant-smtp\r\n"
        } else if command.starts_with("MAIL") {
            mail_at = Instant::now();
            recipients.clear();
            b"250 2.1.0 Ok\r\n"
        } else if command.starts_with("RCPT") {
            let address = line
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map_or_else(String::new, |(a, _)| a.to_ascii_lowercase());
            recipients.push(address);
            b"250 2.1.5 Ok\r\n"
        } else if command == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            // Arrival times of the last three lines: the message's last
            // line, then the marker's empty line and its ".".
            let mut arrivals = [Instant::now(); 3];
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                arrivals.rotate_left(1);
                arrivals[2] = Instant::now();
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
            }
            let transaction = Transaction {
                mail: mail_at,
                accepted: Instant::now(),
                end_marker_gap: arrivals[1].duration_since(arrivals[0]),
            };
            {
                let mut at = accepted.at.lock().unwrap();
                for r in recipients.drain(..) {
                    at.insert(r, transaction);
                }
            }
            accepted.changed.send_modify(|n| *n += 1);
            b"250 2.0.0 Ok: queued\r\n"
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if command.starts_with("RSET") || command.starts_with("NOOP") {
            b"250 2.0.0 Ok\r\n"
        } else {
            b"502 5.5.2 Error: command not recognized\r\n"
        };
        write.write_all(reply).await?;
    }
}

impl Accepted {
    /// How many messages were accepted so far.
    pub fn count(&self) -> usize {
        self.at.lock().unwrap().len()
    }

    /// When the message to `recipient` was accepted, if it was.
    pub fn get(&self, recipient: &str) -> Option<Transaction> {
        self.at.lock().unwrap().get(recipient).copied()
    }
}
