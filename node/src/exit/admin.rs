//! The operator's control socket: `leak-node queue` talks to a running exit
//! through a Unix socket in the data directory (mode 0600, so only the
//! node's own user can use it). One JSON request per line, one JSON answer
//! per line.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};

use super::{
    Exit,
    error::ExitError,
    provider::{Provider, ProviderStatus},
    queue::{QueueCounts, QueueItem},
};

/// The longest request line read.
const MAX_REQUEST: u64 = 4096;

/// What the operator asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Counts by state.
    Counts,
    /// The queued leaks, oldest first.
    List {
        /// At most this many.
        limit: usize,
    },
    /// Make one queued leak (or all) due now.
    Retry {
        /// A message id; none means all.
        id: Option<String>,
    },
    /// Remove one queued leak (or all) undelivered.
    Purge {
        /// A message id; none means all.
        id: Option<String>,
    },
    /// Stop starting deliveries (leaks are still taken and queued), to
    /// one provider or to all.
    Pause {
        /// A provider's label; none means all.
        #[serde(default)]
        provider: Option<String>,
    },
    /// Start delivering again, to one provider or to all.
    Resume {
        /// A provider's label; none means all.
        #[serde(default)]
        provider: Option<String>,
    },
    /// Every provider's standing.
    Providers,
}

/// The exit's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Response {
    /// For `Counts`.
    Counts(QueueCounts),
    /// For `List`.
    List {
        /// The leaks.
        items: Vec<QueueItem>,
    },
    /// For `Providers`.
    Providers {
        /// In a stable order.
        providers: Vec<ProviderStatus>,
    },
    /// For `Retry` and `Purge`: how many leaks it touched.
    Done {
        /// How many.
        count: usize,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

fn provider(label: &str) -> Result<Provider, ExitError> {
    Provider::parse(label).ok_or_else(|| {
        ExitError::Admin(format!(
            "no provider {label:?}: one of gmail, microsoft, yahoo, other"
        ))
    })
}

fn handle(exit: &Exit, request: Request) -> Response {
    let result = match request {
        Request::Counts => exit.counts().map(Response::Counts),
        Request::List { limit } => exit.list(limit).map(|items| Response::List { items }),
        Request::Retry { id } => exit
            .retry_now(id.as_deref())
            .map(|count| Response::Done { count }),
        Request::Purge { id } => exit
            .purge(id.as_deref())
            .map(|count| Response::Done { count }),
        Request::Pause { provider: None } => {
            exit.set_paused(true);
            Ok(Response::Done { count: 0 })
        }
        Request::Resume { provider: None } => {
            exit.set_paused(false);
            Ok(Response::Done { count: 0 })
        }
        Request::Pause {
            provider: Some(label),
        } => provider(&label).map(|p| {
            exit.set_provider_paused(p, true);
            Response::Done { count: 0 }
        }),
        Request::Resume {
            provider: Some(label),
        } => provider(&label).map(|p| {
            exit.set_provider_paused(p, false);
            Response::Done { count: 0 }
        }),
        Request::Providers => Ok(Response::Providers {
            providers: exit.providers(),
        }),
    };
    result.unwrap_or_else(|e| Response::Error {
        message: e.to_string(),
    })
}

async fn serve_one(stream: UnixStream, exit: Arc<Exit>) -> Result<(), ExitError> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => tokio::task::spawn_blocking(move || handle(&exit, request)).await?,
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(|e| ExitError::Admin(e.to_string()))?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Listens on `path` (replacing a stale socket) until shutdown.
pub(crate) async fn serve(
    path: PathBuf,
    exit: Arc<Exit>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ExitError> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| ExitError::io(format!("cannot listen on {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let exit = exit.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve_one(stream, exit).await {
                                tracing::debug!(error = %e, "a control connection failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the control socket failed");
                        break;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// Sends one request to the node whose control socket is `path`.
pub async fn request(path: &std::path::Path, request: &Request) -> Result<Response, ExitError> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        ExitError::io(
            format!(
                "cannot reach the node's control socket {} (is the exit running?)",
                path.display()
            ),
            e,
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(request).map_err(|e| ExitError::Admin(e.to_string()))?;
    out.push(b'\n');
    write.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line)
        .map_err(|e| ExitError::Admin(format!("the node's answer does not parse: {e}")))
}
