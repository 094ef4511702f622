//! The exit's LMTP server (RFC 2033), on loopback: how its own mail server
//! hands it the mail for its domain. Commands are parsed by `smtp-proto`
//! (Stalwart's SMTP parser); after `DATA` there is one answer per
//! recipient, as LMTP requires.
//!
//! Every recipient the exit knows is taken (`250`) whatever the message
//! turns out to be: a forged or malformed notification is counted and
//! dropped here, never bounced back (that would be backscatter). Only a
//! failure of the exit's own storage answers `451` (the mail server keeps
//! the message and tries again).

use std::{sync::Arc, time::Duration};

use smtp_proto::{
    Error as ParseError, Request,
    request::receiver::{DataReceiver, RequestReceiver},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

use super::Recipient;
use crate::{exit::Exit, metrics::Metrics};

/// The largest message taken (a notification with the returned headers, a
/// report with the reported email, mail to postmaster@).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Most recipients of one transaction.
const MAX_RECIPIENTS: usize = 16;
/// Sessions at once (the mail server opens few; more wait).
const MAX_SESSIONS: usize = 8;
/// A session idle this long is closed (RFC 5321's five minutes).
const IDLE: Duration = Duration::from_secs(300);
/// Commands that fail in a row before the session is closed.
const MAX_ERRORS: u32 = 10;

/// Serves LMTP on `listener` until shutdown.
pub(crate) fn serve(
    listener: TcpListener,
    exit: Arc<Exit>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = sessions.clone().acquire_owned().await else {
                return;
            };
            let exit = exit.clone();
            tokio::spawn(async move {
                if let Err(e) = session(stream, &exit).await {
                    tracing::debug!(error = %e, "an LMTP session ended with an error");
                }
                drop(permit);
            });
        }
    })
}

/// One transaction's state.
#[derive(Default)]
struct Transaction {
    /// `MAIL FROM` was given (its address, empty for the null sender).
    from: Option<String>,
    recipients: Vec<Recipient>,
}

async fn session(mut stream: TcpStream, exit: &Arc<Exit>) -> std::io::Result<()> {
    let domain = exit.composer.domain.clone();
    stream
        .write_all(format!("220 {domain} LMTP leak-node\r\n").as_bytes())
        .await?;
    let mut receiver = RequestReceiver::default();
    let mut transaction = Transaction::default();
    let mut errors = 0u32;
    let mut buf = vec![0u8; 8192];
    // Bytes read but not yet parsed (after a DATA's end).
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if pending.is_empty() {
            let n = match tokio::time::timeout(IDLE, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
            };
            pending.extend_from_slice(&buf[..n]);
        }
        let bytes = std::mem::take(&mut pending);
        let mut iter = bytes.iter();
        loop {
            let request = match receiver.ingest(&mut iter) {
                Ok(request) => request.into_owned(),
                Err(ParseError::NeedsMoreData { .. }) => break,
                Err(e) => {
                    errors += 1;
                    stream.write_all(parse_error(&e)).await?;
                    if errors >= MAX_ERRORS {
                        stream.write_all(b"421 4.7.0 Too many errors\r\n").await?;
                        return Ok(());
                    }
                    continue;
                }
            };
            match request {
                Request::Lhlo { .. } => {
                    transaction = Transaction::default();
                    let reply = format!(
                        "250-{domain}\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
                         250-SMTPUTF8\r\n250 SIZE {MAX_MESSAGE}\r\n"
                    );
                    stream.write_all(reply.as_bytes()).await?;
                }
                Request::Ehlo { .. } | Request::Helo { .. } => {
                    stream
                        .write_all(b"500 5.5.1 This is LMTP: use LHLO\r\n")
                        .await?;
                }
                Request::Mail { from } => {
                    if transaction.from.is_some() {
                        stream
                            .write_all(b"503 5.5.1 Nested MAIL command\r\n")
                            .await?;
                    } else if from.size > MAX_MESSAGE {
                        stream.write_all(b"552 5.3.4 Message too big\r\n").await?;
                    } else {
                        transaction.from = Some(from.address);
                        stream.write_all(b"250 2.1.0 Ok\r\n").await?;
                    }
                }
                Request::Rcpt { to } => {
                    let reply: &[u8] = if transaction.from.is_none() {
                        b"503 5.5.1 MAIL first\r\n"
                    } else if transaction.recipients.len() >= MAX_RECIPIENTS {
                        b"452 4.5.3 Too many recipients\r\n"
                    } else {
                        match exit.inbound_recipient(&to.address) {
                            Some(recipient) => {
                                transaction.recipients.push(recipient);
                                b"250 2.1.5 Ok\r\n"
                            }
                            None => b"550 5.1.1 No such user here\r\n",
                        }
                    };
                    stream.write_all(reply).await?;
                }
                Request::Data => {
                    if transaction.recipients.is_empty() {
                        stream
                            .write_all(b"503 5.5.1 No valid recipients\r\n")
                            .await?;
                        continue;
                    }
                    stream
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let rest: Vec<u8> = iter.as_slice().to_vec();
                    let (message, too_large, left) = read_data(&mut stream, rest, &mut buf).await?;
                    pending = left;
                    let from = transaction.from.take().unwrap_or_default();
                    let recipients = std::mem::take(&mut transaction.recipients);
                    let mut replies = String::new();
                    for recipient in &recipients {
                        let reply = if too_large {
                            Metrics::count(&exit.metrics.exit_inbound, "kind", "too_large");
                            "552 5.3.4 Message too big\r\n"
                        } else {
                            match exit.take_inbound(recipient, &from, &message).await {
                                Ok(()) => "250 2.0.0 Ok\r\n",
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot take inbound mail; the mail server will retry");
                                    "451 4.3.0 Local error, try again later\r\n"
                                }
                            }
                        };
                        replies.push_str(reply);
                    }
                    stream.write_all(replies.as_bytes()).await?;
                    break;
                }
                Request::Rset => {
                    transaction = Transaction::default();
                    stream.write_all(b"250 2.0.0 Ok\r\n").await?;
                }
                Request::Noop { .. } => stream.write_all(b"250 2.0.0 Ok\r\n").await?,
                Request::Quit => {
                    stream.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => {
                    stream
                        .write_all(b"502 5.5.1 Command not implemented\r\n")
                        .await?;
                }
            }
        }
    }
}

/// Reads a message after `354` (starting with `rest`, what was read with
/// the command), until the lone dot: the message (unstuffed, at most
/// [`MAX_MESSAGE`] bytes kept), whether it was larger, and the bytes read
/// past its end.
async fn read_data(
    stream: &mut TcpStream,
    rest: Vec<u8>,
    buf: &mut [u8],
) -> std::io::Result<(Vec<u8>, bool, Vec<u8>)> {
    let mut data = DataReceiver::new();
    let mut message = Vec::new();
    let mut chunk = rest;
    let mut too_large = false;
    loop {
        let mut iter = chunk.iter();
        let mut part = Vec::new();
        let done = data.ingest(&mut iter, &mut part);
        if !too_large {
            if message.len() + part.len() > MAX_MESSAGE {
                too_large = true;
                message.clear();
            } else {
                message.extend_from_slice(&part);
            }
        }
        if done {
            return Ok((message, too_large, iter.as_slice().to_vec()));
        }
        let n = match tokio::time::timeout(IDLE, stream.read(buf)).await {
            Ok(Ok(0)) | Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the message ended early",
                ));
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
        };
        chunk = buf[..n].to_vec();
    }
}

fn parse_error(error: &ParseError) -> &'static [u8] {
    match error {
        ParseError::UnknownCommand => b"500 5.5.1 Unknown command\r\n",
        ParseError::InvalidSenderAddress => b"501 5.1.7 Bad sender address\r\n",
        ParseError::InvalidRecipientAddress => b"501 5.1.3 Bad recipient address\r\n",
        ParseError::ResponseTooLong => b"500 5.5.2 Line too long\r\n",
        ParseError::UnsupportedParameter { .. } | ParseError::InvalidParameter { .. } => {
            b"555 5.5.4 Unsupported parameter\r\n"
        }
        _ => b"501 5.5.2 Syntax error\r\n",
    }
}
