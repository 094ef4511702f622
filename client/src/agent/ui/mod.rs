//! The agent's web page: Leak's form, served by the sender's own agent on
//! a loopback address (`ui.listen`, 127.0.0.1:7390 by default), so the
//! text and the sender's address never reach a web server of anyone else.
//!
//! | request | does |
//! |---|---|
//! | `GET /`, `/app.js`, `/app.css`, `/icon.svg` | the page (`client/ui/`, built into the binary) |
//! | `GET /api/state` | the agent's connection, anonymity estimate and cost |
//! | `POST /api/check` | the policy's verdict on a text, as the person types |
//! | `GET /api/rules` | the agent's do's; the federation's don'ts and limits |
//! | `POST /api/send` | hands a leak to the agent |
//! | `GET /api/leaks`, `GET /api/leaks/{id}` | the sent list; one leak's progress and receipt |
//! | `GET /api/threads`, `POST /api/threads/{label}/reply`, `…/forget` | conversations and their answers; a follow-up; forgetting one |
//!
//! Another website open in the same browser must be able to do nothing
//! with it ([`guard`]): every request must name the page's own address in
//! `Host` (a DNS-rebinding page names its own domain) and, when the browser
//! says where a request comes from (`Origin`, `Sec-Fetch-Site`), come from
//! the page itself; every API request must carry the key the agent draws
//! at each start (`X-Leak-Token`), which only `leak ui` hands out (in the
//! address's fragment, which the browser never sends anywhere) and which
//! no other origin can read. The page loads nothing from elsewhere, and
//! its Content-Security-Policy forbids it to. Nothing is written to disk
//! by the page or for it: a leak handed over is kept like one `leak send`
//! hands over (the outbox: its recipient and text sealed under a key kept
//! in memory only, [`super::outbox_key`]), and no response may be cached.
//!
//! `leak ui` hands the key to the browser through a private file in the
//! state directory ([`OPENER`], which forwards to the page's address). The
//! page removes it as soon as it has served its purpose: at the first API
//! request that passes the key check after the page was loaded since the
//! file was written ([`forget_opener`]). A tab that was already open and
//! polls does not count: it would remove the file before the browser
//! `leak ui` started could read it. The agent removes it too when it stops.

mod api;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request as HttpRequest, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response as HttpResponse},
    routing::{get, post},
};
use leak_protocol::policy::Policy;
use rand::RngExt as _;
use subtle::ConstantTimeEq as _;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::ipc::{Request, Response};

/// How a request reaches the agent's task, and where it answers.
pub type Commands = mpsc::Sender<(Request, oneshot::Sender<Response>)>;

/// `leak ui`'s forwarding file in the state directory: it holds the key
/// (`leak ui` writes it, the page and the agent remove it).
pub const OPENER: &str = "ui-open.html";
/// The header an API request carries the page's key in.
pub const TOKEN_HEADER: &str = "x-leak-token";
/// The largest request body (a leak's text is at most 2,500 bytes).
const MAX_BODY: usize = 64 * 1024;
/// Every response's Content-Security-Policy: the page's own files only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// What the page's handlers share.
pub struct Shared {
    /// This run's key.
    token: Zeroizing<String>,
    /// The `Host` values the page answers to.
    hosts: Vec<String>,
    /// The agent's task.
    commands: Commands,
    /// The policy texts are checked against (the agent's).
    policy: Policy,
    /// The state directory (the sent list, the conversations).
    state_root: PathBuf,
    /// Mean milliseconds between two packets, and between two polls.
    send_interval_ms: u64,
    poll_interval_ms: u64,
    /// Whole days ended leaks stay listed.
    keep_ended_days: u32,
    /// When the page was last loaded in a browser tab (Unix ns; 0: not
    /// yet), for [`forget_opener`].
    page_loaded_ns: AtomicU64,
}

/// A bound page, ready to serve.
pub struct Page {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    url: Zeroizing<String>,
}

/// What [`Page::bind`] needs beyond the address.
pub struct PageConfig {
    /// The agent's task.
    pub commands: Commands,
    /// The agent's policy.
    pub policy: Policy,
    /// The state directory.
    pub state_root: PathBuf,
    /// `cover.send_interval_ms`.
    pub send_interval_ms: u64,
    /// `cover.poll_interval_ms`.
    pub poll_interval_ms: u64,
    /// `agent.forget_ended_after_days`.
    pub keep_ended_days: u32,
}

impl Page {
    /// Listens on `address` (a loopback one) and draws this run's key.
    pub async fn bind(address: SocketAddr, config: PageConfig) -> anyhow::Result<Self> {
        if !address.ip().is_loopback() {
            anyhow::bail!("the page is served on a loopback address only, not {address}");
        }
        let listener = tokio::net::TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        let port = bound.port();
        let own = match bound {
            SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
            SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
        };
        let hosts = vec![own.clone(), format!("localhost:{port}")];
        let token = Zeroizing::new(hex::encode(rand::rng().random::<[u8; 32]>()));
        let url = Zeroizing::new(format!("http://{own}/#token={}", token.as_str()));
        let shared = Arc::new(Shared {
            token,
            hosts,
            commands: config.commands,
            policy: config.policy,
            state_root: config.state_root,
            send_interval_ms: config.send_interval_ms.max(1),
            poll_interval_ms: config.poll_interval_ms.max(1),
            keep_ended_days: config.keep_ended_days,
            page_loaded_ns: AtomicU64::new(0),
        });
        Ok(Self {
            listener,
            shared,
            url,
        })
    }

    /// The address `leak ui` opens: the page's, with the key in the
    /// fragment.
    pub fn url(&self) -> Zeroizing<String> {
        self.url.clone()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) -> std::io::Result<()> {
        axum::serve(self.listener, router(self.shared)).await
    }
}

/// The page's routes behind [`guard`].
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| asset(Asset::Html)))
        .route("/app.js", get(|| asset(Asset::Js)))
        .route("/app.css", get(|| asset(Asset::Css)))
        .route("/icon.svg", get(|| asset(Asset::Icon)))
        .route("/api/state", get(api::state))
        .route("/api/check", post(api::check))
        .route("/api/rules", get(api::rules))
        .route("/api/send", post(api::send))
        .route("/api/leaks", get(api::leaks))
        .route("/api/leaks/{id}", get(api::leak))
        .route("/api/threads", get(api::threads))
        .route("/api/threads/{label}/reply", post(api::reply))
        .route("/api/threads/{label}/forget", post(api::forget))
        .fallback(|| async {
            api::error(StatusCode::NOT_FOUND, "invalid", "No such page.").into_response()
        })
        .method_not_allowed_fallback(|| async {
            api::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid",
                "This address does not take that kind of request.",
            )
            .into_response()
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

enum Asset {
    Html,
    Js,
    Css,
    Icon,
}

async fn asset(which: Asset) -> HttpResponse {
    let (kind, body): (&str, &'static str) = match which {
        Asset::Html => (
            "text/html; charset=utf-8",
            include_str!("../../../ui/index.html"),
        ),
        Asset::Js => (
            "text/javascript; charset=utf-8",
            include_str!("../../../ui/app.js"),
        ),
        Asset::Css => (
            "text/css; charset=utf-8",
            include_str!("../../../ui/app.css"),
        ),
        Asset::Icon => ("image/svg+xml", include_str!("../../../ui/icon.svg")),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Why [`guard`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// `Host` is not the page's (DNS rebinding, or a proxy).
    Host,
    /// The browser says the request comes from another site.
    Origin,
    /// An API request without this run's key.
    Token,
}

/// Decides whether a request may reach the page (pure: the headers in, the
/// answer out).
fn admit(shared: &Shared, path: &str, headers: &HeaderMap) -> Result<(), Refused> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = value(header::HOST.as_str()).ok_or(Refused::Host)?;
    if !shared.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(Refused::Host);
    }
    if let Some(origin) = value(header::ORIGIN.as_str()) {
        let own = shared
            .hosts
            .iter()
            .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
        if !own {
            return Err(Refused::Origin);
        }
    }
    let api = path.starts_with("/api/");
    match value("sec-fetch-site") {
        None | Some("same-origin") => {}
        // Typed into the address bar or opened by `leak ui`.
        Some("none") if !api => {}
        // A link from elsewhere may open the page (it then has no key);
        // nothing else from another site reaches it.
        Some(_) if !api && value("sec-fetch-mode") == Some("navigate") => {}
        Some(_) => return Err(Refused::Origin),
    }
    if api {
        let given = value(TOKEN_HEADER).unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(shared.token.as_bytes())) {
            return Err(Refused::Token);
        }
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch (0 before it).
fn unix_ns(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether an admitted request loads the page in a tab of its own (not in
/// a frame, which the page forbids anyway, nor as a resource).
fn loads_page(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let dest = headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok());
    *method == Method::GET && path == "/" && matches!(dest, None | Some("document"))
}

/// Removes `leak ui`'s forwarding file ([`OPENER`]) once it has done its
/// work: called for an API request that passed the key check, it removes
/// the file if the page was loaded since the file was written (the tab
/// `leak ui` opened, now holding the key). Ignores every error: the agent
/// removes the file when it stops anyway.
async fn forget_opener(shared: &Shared) {
    let loaded = shared.page_loaded_ns.load(Ordering::Relaxed);
    if loaded == 0 {
        return;
    }
    let path = shared.state_root.join(OPENER);
    let Ok(metadata) = tokio::fs::symlink_metadata(&path).await else {
        return;
    };
    // No time on the file: removed, the key is safer gone.
    let written = metadata.modified().map_or(0, unix_ns);
    if written <= loaded {
        let _ = tokio::fs::remove_file(&path).await;
    }
}

async fn guard(
    State(shared): State<Arc<Shared>>,
    request: HttpRequest,
    next: Next,
) -> HttpResponse {
    let path = request.uri().path();
    let mut response = match admit(&shared, path, request.headers()) {
        Ok(()) => {
            if loads_page(request.method(), path, request.headers()) {
                shared
                    .page_loaded_ns
                    .fetch_max(unix_ns(SystemTime::now()), Ordering::Relaxed);
            } else if path.starts_with("/api/") {
                forget_opener(&shared).await;
            }
            next.run(request).await
        }
        Err(Refused::Host) => api::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This page answers only at its own address: open it with `leak ui`.",
        )
        .into_response(),
        Err(Refused::Origin) => api::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Requests from other websites are refused.",
        )
        .into_response(),
        Err(Refused::Token) => api::error(
            StatusCode::UNAUTHORIZED,
            "token",
            "This tab has no key to the agent (or the agent restarted): open the page again with `leak ui`.",
        )
        .into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests;
