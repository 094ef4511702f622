//! The exit's small HTTP endpoint: one-click opt-out (RFC 8058) and abuse
//! reports. Serve it behind an HTTPS reverse proxy; `exit.public_url` names
//! the public address.
//!
//! | request | does |
//! |---|---|
//! | `GET /opt-out/TOKEN` | a page with a confirm button (link scanners fetch links; only a POST acts) |
//! | `POST /opt-out/TOKEN` | opts the recipient out (the RFC 8058 one-click POST, or the button) |
//! | `GET /opt-in/TOKEN` | a page with a button to opt back in |
//! | `POST /opt-in/TOKEN` | opts the recipient back in (the same email's token) |
//! | `GET /report/TOKEN` | a page with a report button |
//! | `POST /report/TOKEN` | records an abuse report about that leak |
//!
//! A token is a MAC over the message id and the recipient hash
//! ([`super::email::Tokens`]): an invalid one does nothing but say so.
//!
//! A click holds at this exit only (nothing in it shows another exit that
//! the recipient acted), so the pages that confirm an opt-out or an
//! opt-back-in offer the email (a `mailto:` link) that makes it hold at
//! every exit: its provider's DKIM signature is the evidence
//! ([`super::evidence`]).

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::Html,
    routing::get,
};

use super::{Exit, email::Link};

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
         <h1>{title}</h1>{body}</body></html>"
    ))
}

fn invalid() -> (StatusCode, Html<String>) {
    (
        StatusCode::BAD_REQUEST,
        page(
            "This link is not valid",
            "<p>The link may have been cut short by your email program. Copy the whole link from the email.</p>",
        ),
    )
}

fn failed() -> (StatusCode, Html<String>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            "Something went wrong",
            "<p>Nothing was recorded. Please try again in a minute.</p>",
        ),
    )
}

async fn about() -> Html<String> {
    page(
        "Leak",
        "<p>This server delivers anonymous messages for the Leak federation. \
         Every message carries a link to stop receiving them, and one to report abuse.</p>",
    )
}

/// The paragraph offering the email that makes an opt-out (`out`) or an
/// opt-back-in hold at every exit.
fn by_email(exit: &Exit, token: &str, out: bool) -> String {
    format!(
        "<p>This server will remember it. To make it hold at every Leak server, \
         including those that may deliver to you later, <a href=\"{}\">send the email this \
         link prepares</a> from this address: your email provider's signature shows that \
         you asked.</p>",
        exit.composer.opt_out_mailto(token, out)
    )
}

/// The form that opts the token's recipient back in.
fn opt_in_form(token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/opt-in/{token}\">\
         <button type=\"submit\">Receive messages from Leak again</button></form>"
    )
}

async fn opt_out_page(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
) -> (StatusCode, Html<String>) {
    match exit.opted_out_with_token(&token).await {
        Ok(Some(true)) => (
            StatusCode::OK,
            page(
                "You opted out",
                &format!(
                    "<p>Leak will not deliver a message to your address.</p>{}\
                     <p>If you changed your mind:</p>{}",
                    by_email(&exit, &token, true),
                    opt_in_form(&token)
                ),
            ),
        ),
        Ok(Some(false)) => (
            StatusCode::OK,
            page(
                "Stop receiving messages from Leak",
                "<p>Confirm, and no Leak exit will deliver a message to your address again \
                 (until you opt back in from this page).</p>\
                 <form method=\"post\"><button type=\"submit\">Never receive a message from Leak again</button></form>",
            ),
        ),
        Ok(None) => invalid(),
        Err(_) => failed(),
    }
}

async fn opt_out(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
) -> (StatusCode, Html<String>) {
    match exit.opt_out_with_token(&token, true).await {
        Ok(true) => (
            StatusCode::OK,
            page(
                "Done",
                &format!(
                    "<p>You will not receive messages from Leak any more.</p>{}\
                     <p>If you change your mind, come back to this link:</p>{}",
                    by_email(&exit, &token, true),
                    opt_in_form(&token)
                ),
            ),
        ),
        Ok(false) => invalid(),
        Err(_) => failed(),
    }
}

async fn opt_in_page(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
) -> (StatusCode, Html<String>) {
    match exit.opted_out_with_token(&token).await {
        Ok(Some(_)) => (
            StatusCode::OK,
            page("Receive messages from Leak again", &opt_in_form(&token)),
        ),
        Ok(None) => invalid(),
        Err(_) => failed(),
    }
}

async fn opt_in(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
) -> (StatusCode, Html<String>) {
    match exit.opt_out_with_token(&token, false).await {
        Ok(true) => (
            StatusCode::OK,
            page(
                "Done",
                &format!(
                    "<p>Leak may deliver messages to you again. The link in the email still \
                     opts you out.</p>{}",
                    by_email(&exit, &token, false)
                ),
            ),
        ),
        Ok(false) => invalid(),
        Err(_) => failed(),
    }
}

async fn report_page(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
) -> (StatusCode, Html<String>) {
    if exit.composer.tokens.check(Link::Report, &token).is_none() {
        exit.metrics.exit_bad_tokens.inc();
        return invalid();
    }
    (
        StatusCode::OK,
        page(
            "Report this message as abuse",
            "<p>Reports help the federation's moderators tune the shared policy. \
             The message itself was deleted when it was delivered, so nothing of it is sent.</p>\
             <form method=\"post\"><button type=\"submit\">Report as abuse</button></form>",
        ),
    )
}

async fn report(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
) -> (StatusCode, Html<String>) {
    match exit.report_with_token(&token).await {
        Ok(true) => (
            StatusCode::OK,
            page(
                "Thank you",
                "<p>Your report was recorded. To stop receiving messages from Leak, \
                 use the other link in the email.</p>",
            ),
        ),
        Ok(false) => invalid(),
        Err(_) => failed(),
    }
}

/// Serves the endpoint on `listener` until the task ends.
pub fn serve_on(listener: tokio::net::TcpListener, exit: Arc<Exit>) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/", get(about))
        .route("/opt-out/{token}", get(opt_out_page).post(opt_out))
        .route("/opt-in/{token}", get(opt_in_page).post(opt_in))
        .route("/report/{token}", get(report_page).post(report))
        .merge(super::answers::form::routes())
        .with_state(exit);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the exit's HTTP endpoint stopped");
        }
    })
}
