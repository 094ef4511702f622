//! The recipient's pages: answer the sender, or end the conversation.
//!
//! | request | does |
//! |---|---|
//! | `GET /answer/TOKEN` | the answer form: says plainly that the sender stays anonymous and that the answer is checked against the federation's policy |
//! | `POST /answer/TOKEN` | takes the answer (`text`, form-encoded), and says what became of it |
//! | `GET /end/TOKEN` | a page with a confirm button (link scanners fetch links; only a POST acts) |
//! | `POST /end/TOKEN` | ends the conversation: no follow-up is delivered |
//!
//! Every page is self-contained (no script, no outside resource) and
//! served with a Content-Security-Policy that allows nothing else: a page
//! of an anonymous-message service must not tell a third party who reads
//! it. An invalid token does nothing but say so.

use std::sync::Arc;

use axum::{
    Form, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use leak_protocol::answers::{AnswerVia, MAX_ANSWER_LEN};
use serde::Deserialize;

use super::{Taken, ThreadLink};
use crate::{exit::Exit, metrics::Metrics};

/// No script, no outside resource, forms post to this server only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The largest request body the form takes: the textarea counts
/// characters, not bytes (2,000 characters of non-ASCII text can be 8,000
/// bytes, tripled by percent-encoding); a text over [`MAX_ANSWER_LEN`]
/// bytes is then refused with its reason by the answer's own check.
const BODY_LIMIT: usize = 24 * 1024;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:38em;margin:2em auto;\
padding:0 1em;line-height:1.5;color:#1a1a1a;background:#fff}\
label{display:block;font-weight:600;margin:1em 0 .3em}\
textarea{width:100%;box-sizing:border-box;min-height:12em;font:inherit;padding:.5em;\
border:1px solid #555;border-radius:4px}\
textarea:focus,button:focus{outline:3px solid #1d4ed8;outline-offset:2px}\
button{font:inherit;padding:.6em 1.2em;margin-top:1em;border:0;border-radius:4px;\
background:#1d4ed8;color:#fff;cursor:pointer}\
.note{color:#444;font-size:.95em}#result{font-weight:600}";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn invalid() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        "<p id=\"result\">The link may have been cut short by your email program, or the \
         conversation has ended its time (answers are kept for a limited time). Copy the \
         whole link from the email.</p>",
    )
}

fn failed() -> Response {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "<p id=\"result\">Nothing was recorded. Please try again in a minute.</p>",
    )
}

fn form_body(text: &str, error: Option<&str>, days: u32) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(
            "<p id=\"error\" role=\"alert\"><strong>{}</strong></p>",
            escape(e)
        )
    });
    format!(
        "<p>Someone sent you a message through Leak. You can answer them here. \
         <strong>They stay anonymous</strong>: neither you nor this server knows who they \
         are. Your answer is checked against the Leak federation's moderation policy, as \
         their message was, then kept encrypted until they collect it (at most \
         {days} days). They will read what you write, and nothing else about you: not \
         your email address.</p>{error}\
         <form method=\"post\">\
         <label for=\"answer\">Your answer</label>\
         <textarea id=\"answer\" name=\"text\" maxlength=\"{MAX_ANSWER_LEN}\" required \
          aria-describedby=\"limit\">{text}</textarea>\
         <p id=\"limit\" class=\"note\">At most {MAX_ANSWER_LEN} bytes of text. No \
         attachments.</p>\
         <button id=\"send\" type=\"submit\">Send my answer</button></form>\
         <p class=\"note\">You can also answer by replying to the email.</p>",
        text = escape(text),
    )
}

async fn answer_page(State(exit): State<Arc<Exit>>, Path(token): Path<String>) -> Response {
    let Some((key, recipient)) = exit.threads.check(ThreadLink::Answer, &token) else {
        Metrics::count(&exit.metrics.exit_answers, "result", "bad_token");
        return invalid();
    };
    let this = exit.clone();
    let known = tokio::task::spawn_blocking(move || this.threads.store.thread(&key)).await;
    match known {
        Ok(Ok(Some(thread))) if thread.recipient == recipient => page(
            StatusCode::OK,
            "Answer a message",
            &form_body("", None, exit.config.exit.answer_keep_days),
        ),
        Ok(Ok(_)) => invalid(),
        _ => failed(),
    }
}

/// The form's fields.
#[derive(Deserialize)]
struct AnswerForm {
    text: String,
}

async fn answer(
    State(exit): State<Arc<Exit>>,
    Path(token): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let Some((key, recipient)) = exit.threads.check(ThreadLink::Answer, &token) else {
        Metrics::count(&exit.metrics.exit_answers, "result", "bad_token");
        return invalid();
    };
    let this = exit.clone();
    let text = form.text.clone();
    let taken = tokio::task::spawn_blocking(move || {
        this.take_answer(&key, &[recipient], &text, AnswerVia::Web, 0)
    })
    .await;
    match taken {
        Ok(Ok(Taken::Stored)) => page(
            StatusCode::OK,
            "Thank you",
            "<p id=\"result\">Your answer was stored, encrypted, for the sender. They will \
             read it when their Leak program next checks for answers.</p>",
        ),
        Ok(Ok(Taken::Refused(reason))) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Your answer was not sent",
            &form_body(
                &form.text,
                Some(&format!(
                    "The federation's moderation policy refused it: {reason} Nothing was \
                     stored."
                )),
                exit.config.exit.answer_keep_days,
            ),
        ),
        Ok(Ok(Taken::Invalid(why))) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Your answer was not sent",
            &form_body(
                &form.text,
                Some(&format!("{why}. Nothing was stored.")),
                exit.config.exit.answer_keep_days,
            ),
        ),
        Ok(Ok(Taken::Flood)) => page(
            StatusCode::TOO_MANY_REQUESTS,
            "Not now",
            "<p id=\"result\">This conversation has taken as many answers as it can today. \
             Try again tomorrow.</p>",
        ),
        Ok(Ok(Taken::Full)) => page(
            StatusCode::TOO_MANY_REQUESTS,
            "Not now",
            "<p id=\"result\">The sender has not collected your earlier answers yet; no more \
             can wait for them.</p>",
        ),
        Ok(Ok(Taken::Ended)) => page(
            StatusCode::GONE,
            "This conversation is over",
            "<p id=\"result\">You ended this conversation, so it takes no more answers.</p>",
        ),
        Ok(Ok(Taken::Unknown | Taken::NotRecipient)) => invalid(),
        _ => failed(),
    }
}

async fn end_page(State(exit): State<Arc<Exit>>, Path(token): Path<String>) -> Response {
    if exit.threads.check(ThreadLink::End, &token).is_none() {
        Metrics::count(&exit.metrics.exit_answers, "result", "bad_token");
        return invalid();
    }
    page(
        StatusCode::OK,
        "End this conversation",
        "<p>Confirm, and the sender's further messages in this conversation will not be \
         delivered to you. (To stop every message from Leak, use the other link in the \
         email.)</p><form method=\"post\"><button id=\"send\" type=\"submit\">End this \
         conversation</button></form>",
    )
}

async fn end(State(exit): State<Arc<Exit>>, Path(token): Path<String>) -> Response {
    let Some((key, recipient)) = exit.threads.check(ThreadLink::End, &token) else {
        Metrics::count(&exit.metrics.exit_answers, "result", "bad_token");
        return invalid();
    };
    let this = exit.clone();
    match tokio::task::spawn_blocking(move || this.end_thread(&key, &recipient)).await {
        Ok(Ok(true)) => {
            Metrics::count(&exit.metrics.exit_answers, "result", "thread_ended");
            page(
                StatusCode::OK,
                "Done",
                "<p id=\"result\">This conversation is over: no further message in it will \
                 be delivered to you.</p>",
            )
        }
        Ok(Ok(false)) => invalid(),
        _ => failed(),
    }
}

/// The routes, for the exit's endpoint.
pub fn routes() -> Router<Arc<Exit>> {
    Router::new()
        .route("/answer/{token}", get(answer_page).post(answer))
        .route("/end/{token}", get(end_page).post(end))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_in_the_form() {
        let body = form_body("<script>alert('x')</script>&", Some("<b>"), 30);
        assert!(!body.contains("<script>"));
        assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"));
        assert!(body.contains("&lt;b&gt;"));
    }
}
