//! How `leak send`, `leak status` and `leak agent stop` talk to a running
//! agent: a Unix socket, `STATE_DIR/agent.sock` (mode 0600, in the 0700
//! state directory, so only its owner can connect), one JSON object per
//! line each way, one request and one answer per connection.
//!
//! ```text
//! → {"version":1,"body":{"request":"send","recipient":"a@example.com","relationship":"friend","text":"…","within_secs":7200,"hops":null}}
//! ← {"version":1,"body":{"response":"queued","message_id":"…","release_at_ms":…}}
//! → {"version":1,"body":{"request":"status"}}
//! ← {"version":1,"body":{"response":"status", …}}
//! → {"version":1,"body":{"request":"stop"}}
//! ← {"version":1,"body":{"response":"stopping"}}
//! ```
//!
//! A request of another version is answered with an error naming the
//! version this agent speaks; so is a malformed one.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const IPC_VERSION: u32 = 1;
/// The longest line either side reads (a leak's text is far shorter).
pub const MAX_LINE: usize = 256 * 1024;
/// The socket's name in the state directory.
pub const SOCKET_NAME: &str = "agent.sock";

/// The socket of the agent of the state directory `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET_NAME)
}

/// One message, with the version it is written in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`IPC_VERSION`].
    pub version: u32,
    /// The request or the answer.
    pub body: T,
}

/// What a command asks the agent.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Take a leak (its text already checked against the policy).
    Send {
        /// The recipient's address.
        recipient: String,
        /// Who the sender is to them.
        relationship: String,
        /// The text.
        text: String,
        /// Release it at a random time in the next this many seconds
        /// (`None`: at the next loop slot).
        within_secs: Option<u64>,
        /// Hops of its forward path (`None`: the config's).
        hops: Option<usize>,
        /// A follow-up in this conversation (its label): the recipient and
        /// the exit are the conversation's.
        #[serde(default)]
        thread: Option<String>,
        /// Send it without a way to answer.
        #[serde(default)]
        no_answers: bool,
    },
    /// The agent's state.
    Status,
    /// Where a leak handed over during this run is: waiting, on its way,
    /// or how it ended.
    Progress {
        /// Its message id, hex.
        message_id: String,
    },
    /// The address of the agent's web page, with this run's key.
    Ui,
    /// Stop the agent (what it holds stays on disk).
    Stop,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Send { .. } => f.write_str("Send([redacted])"),
            Self::Status => f.write_str("Status"),
            Self::Progress { .. } => f.write_str("Progress"),
            Self::Ui => f.write_str("Ui"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Self::Send {
            recipient, text, ..
        } = self
        {
            use zeroize::Zeroize as _;
            recipient.zeroize();
            text.zeroize();
        }
    }
}

/// What the agent answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// The leak is on disk and will leave at `release_at_ms` or after.
    Queued {
        /// Its message id, hex.
        message_id: String,
        /// Not before this time (Unix ms).
        release_at_ms: u64,
        /// Its conversation's label (`leak inbox`), if it can be answered.
        #[serde(default)]
        thread: Option<String>,
    },
    /// The agent's state.
    Status(AgentStatus),
    /// Where a leak is.
    Progress(LeakProgress),
    /// The web page's address (`None` when it is off or failed to start,
    /// and `note` says why).
    Ui {
        /// `http://127.0.0.1:PORT/#token=KEY`.
        url: Option<String>,
        /// Why there is none.
        note: String,
    },
    /// The agent is stopping.
    Stopping,
    /// The request was not carried out.
    Error {
        /// Why, for the user.
        message: String,
        /// What kind of trouble, when the agent knows (the web page ties
        /// it to a field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<ErrorKind>,
    },
}

impl Response {
    /// An error of no particular kind.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
            kind: None,
        }
    }
}

/// Why a leak was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The recipient's address is not one.
    BadAddress,
    /// The policy refuses the text.
    Refused,
    /// Something else of the request is wrong (text too long or empty,
    /// an unknown relationship, hops).
    Invalid,
    /// The agent cannot reach the network (no directory, no exit).
    NoNetwork,
    /// The conversation is over.
    Ended,
}

/// Where a leak is, as [`Request::Progress`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakProgress {
    /// Its message id, hex.
    pub message_id: String,
    /// `waiting` (not sent yet), `sent` (waiting for the receipt),
    /// `finished`, or `unknown` (not handed over during this run, or
    /// ended so long ago that the agent forgot).
    pub state: String,
    /// Attempts sent so far.
    pub attempts: u32,
    /// When the next attempt may leave (Unix ms), while it waits.
    pub next_at_ms: Option<u64>,
    /// How it ended: `delivered`, `refused`… (`state::outcome_name`) or
    /// `no_receipt`.
    pub outcome: Option<String>,
    /// Good news, bad news, or not known.
    pub good: Option<bool>,
    /// The state in a sentence.
    pub words: String,
}

/// The agent's state, as `leak status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// When the agent started (Unix ms).
    pub started_at_ms: u64,
    /// The guard's peer id, once chosen.
    pub guard: Option<String>,
    /// Since when it is the guard (Unix ms).
    pub guard_since_ms: Option<u64>,
    /// Nodes in the agent's directory.
    pub directory_nodes: usize,
    /// When that directory was fetched (Unix seconds).
    pub directory_fetched_at: u64,
    /// What the agent sent and received since it started.
    pub counters: Counters,
    /// The leaks it holds, soonest first.
    pub outbox: Vec<Queued>,
    /// The estimated number of senders a leak of this agent hides among,
    /// when there is an estimate.
    pub anonymity_set: Option<f64>,
    /// What the estimate rests on, or why there is none, in words.
    pub anonymity_note: String,
}

/// Counts since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Drop cover packets sent.
    pub drops_sent: u64,
    /// Loops sent.
    pub loops_sent: u64,
    /// Loops that came back.
    pub loops_returned: u64,
    /// Loops given up on.
    pub loops_lost: u64,
    /// Leak packets sent (first attempts and retransmissions).
    pub leaks_sent: u64,
    /// Receipts received.
    pub receipts: u64,
    /// Mailbox polls done.
    pub polls: u64,
    /// Sends or polls the guard did not take.
    pub failures: u64,
}

/// One leak the agent holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Its message id, hex.
    pub message_id: String,
    /// Attempts sent so far.
    pub attempts_sent: u32,
    /// When the next attempt may leave (Unix ms).
    pub next_at_ms: u64,
}

/// Why a command could not reach an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// Nothing listens on the socket.
    #[error("no agent is running for {0}")]
    NotRunning(PathBuf),
    /// The conversation failed.
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    /// The agent answered something this build does not understand.
    #[error("the agent's answer does not decode ({0}); is it another version of leak?")]
    Decode(String),
}

/// Sends one request to the agent of the state directory `root` and
/// returns its answer, waiting at most `timeout` for it.
pub fn call(root: &Path, request: Request, timeout: Duration) -> Result<Response, IpcError> {
    let path = socket_path(root);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(IpcError::NotRunning(root.to_path_buf()));
        }
        Err(e) => return Err(e.into()),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let envelope = Envelope {
        version: IPC_VERSION,
        body: request,
    };
    let mut line = zeroize::Zeroizing::new(
        serde_json::to_vec(&envelope).map_err(|e| IpcError::Decode(e.to_string()))?,
    );
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_LINE as u64)).read_line(&mut answer)?;
    decode_response(&answer)
}

/// Whether an agent answers on `root`'s socket.
pub fn running(root: &Path) -> bool {
    UnixStream::connect(socket_path(root)).is_ok()
}

/// Decodes the agent's answer line.
pub fn decode_response(line: &str) -> Result<Response, IpcError> {
    let envelope: Envelope<Response> =
        serde_json::from_str(line.trim()).map_err(|e| IpcError::Decode(e.to_string()))?;
    if envelope.version != IPC_VERSION {
        return Err(IpcError::Decode(format!(
            "version {} instead of {IPC_VERSION}",
            envelope.version
        )));
    }
    Ok(envelope.body)
}

/// Decodes a request line (agent side); the error is the message to answer.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version: Version =
        serde_json::from_slice(line).map_err(|e| format!("a malformed request: {e}"))?;
    if version.version != IPC_VERSION {
        return Err(format!(
            "this agent speaks version {IPC_VERSION} of the protocol, not {}: restart it after upgrading leak",
            version.version
        ));
    }
    let envelope: Envelope<Request> =
        serde_json::from_slice(line).map_err(|e| format!("a malformed request: {e}"))?;
    Ok(envelope.body)
}

/// Encodes an answer line (agent side), newline included.
pub fn encode_response(response: Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Envelope {
        version: IPC_VERSION,
        body: response,
    })
    .unwrap_or_else(|_| {
        br#"{"version":1,"body":{"response":"error","message":"encoding"}}"#.to_vec()
    });
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_and_versions_are_checked() {
        let request = Request::Send {
            recipient: "a@example.com".into(),
            relationship: "friend".into(),
            text: "hello there".into(),
            within_secs: Some(7200),
            hops: None,
            thread: Some("ab12".into()),
            no_answers: false,
        };
        let line = serde_json::to_vec(&Envelope {
            version: IPC_VERSION,
            body: request,
        })
        .unwrap();
        match decode_request(&line) {
            Ok(Request::Send {
                ref text,
                within_secs,
                ..
            }) => assert_eq!((text.as_str(), within_secs), ("hello there", Some(7200))),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{:?}", decode_request(&line)).contains("hello"));
        let old = br#"{"version":0,"body":{"request":"status"}}"#;
        match decode_request(old) {
            Err(message) => assert!(message.contains("version 1"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(decode_request(b"{").is_err());
        assert!(decode_request(br#"{"version":1,"body":{"request":"launch"}}"#).is_err());

        let status = Response::Status(AgentStatus {
            guard: Some("12D3Koo".into()),
            anonymity_note: "n".into(),
            ..AgentStatus::default()
        });
        let line = encode_response(status);
        assert!(line.ends_with(b"\n"));
        match decode_response(std::str::from_utf8(&line).unwrap()).unwrap() {
            Response::Status(s) => assert_eq!(s.guard.as_deref(), Some("12D3Koo")),
            other => panic!("{other:?}"),
        }
        assert!(decode_response(r#"{"version":2,"body":{"response":"stopping"}}"#).is_err());
    }

    #[test]
    fn no_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!running(dir.path()));
        assert!(matches!(
            call(dir.path(), Request::Status, Duration::from_secs(1)),
            Err(IpcError::NotRunning(_))
        ));
    }
}
