//! The page's JSON API (the table in [`super`]). Every handler answers
//! JSON; an error is `{"error": sentence, "kind": …, "field": …}`, and so
//! is a request the handlers never see: a body that is not JSON, not
//! declared JSON or too large ([`ApiJson`]), an address that does not
//! decode ([`ApiPath`]), a method a route does not take.
//!
//! `kind` is one of `invalid`, `too_long`, `bad_address`, `refused`,
//! `no_network`, `ended`, `internal`, and the guard's `forbidden` and
//! `token`; `field`, when there is one, names the form field it is about
//! (`recipient`, `relationship`, `text`, `when`).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{
        FromRequest, FromRequestParts, Path, Request as HttpRequest, State,
        rejection::{JsonRejection, PathRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response as HttpResponse},
};
use leak_protocol::{
    Recipient, Relationship,
    payload::{MAX_TEXT_LEN, validate_text},
    policy::{Category, Policy, Verdict, model::HEADS},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::Shared;
use crate::{
    agent::ipc::{AgentStatus, ErrorKind, Request, Response},
    state::{StateDir, day_to_date},
    threads::Threads,
    words,
};

/// How long a handler waits for the agent (a send waits for its stamp).
const AGENT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest release window the API accepts: seven days, as `leak send
/// --within`. The page itself offers at most three days (`#when` in
/// `client/ui/index.html`).
const MAX_WITHIN_SECS: u64 = 7 * 86_400;

/// An error answer: `{"error": sentence, "kind": …, "field": …}`.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    field: Option<&'static str>,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        (
            self.status,
            Json(json!({ "error": self.message, "kind": self.kind, "field": self.field })),
        )
            .into_response()
    }
}

/// Something went wrong on this side (500).
fn internal(message: &str) -> HttpResponse {
    internal_error(message).into_response()
}

fn internal_error(message: &str) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// An error of no field.
pub fn error(status: StatusCode, kind: &'static str, message: &str) -> ApiError {
    error_on(status, kind, None, message)
}

fn error_on(
    status: StatusCode,
    kind: &'static str,
    field: Option<&'static str>,
    message: &str,
) -> ApiError {
    ApiError {
        status,
        kind,
        field,
        message: message.to_owned(),
    }
}

/// A JSON body, as [`Json`] reads it, refused in the API's error shape:
/// axum's own refusals are plain text, which the page could only show as
/// "HTTP 413".
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: HttpRequest, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_refused(&rejection)),
        }
    }
}

/// Why a body was not taken, in words, with axum's status (413 too large,
/// 415 not declared JSON, 400 not JSON, 422 not the fields expected). The
/// sentence never quotes the body.
fn json_refused(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return error_on(
            status,
            "too_long",
            Some("text"),
            &format!(
                "The message is too long for the page to send (more than {} KiB).",
                super::MAX_BODY / 1024
            ),
        );
    }
    let message = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "The request was not sent as JSON (Content-Type: application/json), so the agent did nothing with it."
        }
        JsonRejection::JsonSyntaxError(_) => {
            "The request is not valid JSON, so the agent did nothing with it."
        }
        JsonRejection::JsonDataError(_) => {
            "The request lacks a field, or has one the agent does not take, so the agent did nothing with it."
        }
        _ => "The request did not arrive whole, so the agent did nothing with it.",
    };
    error(status, "invalid", message)
}

/// A path parameter, as [`Path`] reads it, refused in the API's error
/// shape (a label or id that does not decode).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_refused(&rejection)),
        }
    }
}

fn path_refused(rejection: &PathRejection) -> ApiError {
    let status = rejection.status();
    if status.is_server_error() {
        internal_error("The page's routes are wrong: this is a bug in the agent.")
    } else {
        error(
            status,
            "invalid",
            "This address names no leak or conversation the page knows.",
        )
    }
}

/// Asks the agent's task.
async fn ask(shared: &Shared, request: Request) -> Result<Response, ApiError> {
    let (answer, wait) = oneshot::channel();
    let stopped = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            "The agent is stopping.",
        )
    };
    shared
        .commands
        .send((request, answer))
        .await
        .map_err(|_| stopped())?;
    match tokio::time::timeout(AGENT_TIMEOUT, wait).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(_)) => Err(stopped()),
        Err(_) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "internal",
            "The agent did not answer in time.",
        )),
    }
}

async fn agent_status(shared: &Shared) -> Result<AgentStatus, ApiError> {
    match ask(shared, Request::Status).await? {
        Response::Status(status) => Ok(status),
        _ => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The agent answered something unexpected.",
        )),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `GET /api/state`.
pub async fn state(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let status = match agent_status(&shared).await {
        Ok(status) => status,
        Err(response) => return response.into_response(),
    };
    let now_ms = crate::send::unix_ms();
    let connected = status.guard.is_some() && status.directory_nodes > 0;
    let network = if connected {
        let days = status
            .guard_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since) / 86_400_000);
        json!({ "ok": true, "words": format!(
            "Connected to the Leak network: {} nodes known; your entry relay, kept for weeks, was chosen {}.",
            status.directory_nodes,
            match days { 0 => "today".to_owned(), 1 => "yesterday".to_owned(), d => format!("{d} days ago") }
        )})
    } else {
        json!({ "ok": false, "words":
            "Not connected to the Leak network yet: the agent is looking for its nodes. \
             What you send waits in the agent and leaves once it is connected." })
    };
    let anonymity = json!({
        "set": status.anonymity_set,
        "words": capitalised(&status.anonymity_note) + ".",
    });
    let (sent_per_day, received_per_day) = expected_bytes_per_day(&shared);
    let c = &status.counters;
    let sent = (c.drops_sent + c.loops_sent + c.leaks_sent) as f64
        * leak_protocol::sphinx::PACKET_LEN as f64;
    let received = c.polls as f64 * leak_net::wire::MAILBOX_ANSWER_LEN as f64;
    let cost = json!({
        "words": format!(
            "While it runs, the agent sends about {} a day and receives about {} a day, \
             whether or not you send anything: that steady traffic is what hides your leaks. \
             Since it started: {} sent, {} received.",
            words::megabytes(sent_per_day), words::megabytes(received_per_day),
            words::megabytes(sent), words::megabytes(received)),
        "expected_sent_mb_per_day": sent_per_day / 1e6,
        "expected_received_mb_per_day": received_per_day / 1e6,
        "sent_mb": sent / 1e6,
        "received_mb": received / 1e6,
    });
    Json(json!({
        "policy_version": shared.policy.version(),
        "max_text_bytes": max_text_bytes(&shared),
        "relationships": Relationship::ALL.iter().map(|r| json!({
            "value": r.as_str(), "label": r.noun_phrase() })).collect::<Vec<_>>(),
        "network": network,
        "anonymity": anonymity,
        "cost": cost,
        "waiting": status.outbox.len(),
    }))
    .into_response()
}

/// The bytes a day the agent sends (one packet per Poisson slot) and
/// receives (one mailbox answer per poll) at its settings.
fn expected_bytes_per_day(shared: &Shared) -> (f64, f64) {
    let day_ms = 86_400_000.0;
    (
        day_ms / shared.send_interval_ms as f64 * leak_protocol::sphinx::PACKET_LEN as f64,
        day_ms / shared.poll_interval_ms as f64 * leak_net::wire::MAILBOX_ANSWER_LEN as f64,
    )
}

fn max_text_bytes(shared: &Shared) -> usize {
    shared.policy.limits().max_text_len.min(MAX_TEXT_LEN)
}

/// A text to check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    text: Zeroizing<String>,
}

/// `POST /api/check`: the policy's verdict, as an exit would give it.
pub async fn check(
    State(shared): State<Arc<Shared>>,
    ApiJson(body): ApiJson<CheckBody>,
) -> HttpResponse {
    let max = max_text_bytes(&shared);
    let bytes = body.text.len();
    let (verdict, refusal) = if body.text.trim().is_empty() {
        ("empty", None)
    } else if bytes > max {
        ("too_long", None)
    } else {
        let checker = shared.clone();
        match tokio::task::spawn_blocking(move || checker.policy.check_text(&body.text)).await {
            Ok(Verdict::Accepted) => ("accepted", None),
            Ok(Verdict::Refused(refusal)) => ("refused", Some(refusal)),
            Err(_) => return internal("The check stopped."),
        }
    };
    Json(json!({
        "bytes": bytes, "max_bytes": max, "verdict": verdict,
        "category": refusal.as_ref().map(|r| r.category.as_str()),
        "rule": refusal.as_ref().map(|r| r.rule.as_str()),
        "reason": refusal.as_ref().map(|r| r.reason.as_str()),
    }))
    .into_response()
}

/// What a category of the policy forbids, in one plain sentence.
fn dont(category: Category) -> &'static str {
    match category {
        Category::Threat => "No threats, and nothing that calls for violence against anyone.",
        Category::SelfHarm => "Nothing that encourages anyone to hurt themselves.",
        Category::Bullying => "No insults, bullying or harassment of the person you write to.",
        Category::Hate => {
            "No hatred or contempt for people for who they are (origin, religion, gender, sexuality, disability)."
        }
        Category::Sexual => "No sexual content.",
        Category::Spam => "No advertising, scams or requests for money.",
        Category::Doxxing => {
            "No one's personal details: addresses, phone numbers, identity or card numbers."
        }
        Category::Links => "No links or web addresses.",
        Category::Length => "Nothing longer than the limit below.",
    }
}

/// What the don'ts name: every category a rule of the policy refuses
/// for, every category its model has a head for (the model judges what
/// rules cannot list), and links when the policy forbids them; each once,
/// in [`Category`] order. Length is a limit, listed with the limits.
pub(super) fn dont_categories(policy: &Policy) -> Vec<Category> {
    let mut categories: Vec<Category> = policy.rule_names().map(|(_, c)| c).collect();
    if policy.model().is_some() {
        // Every model has one head per `HEADS` entry (the file format
        // fixes them); `None` is the abusive head, which refuses under the
        // name of a category head.
        categories.extend(HEADS.iter().flatten().copied());
    }
    if !policy.limits().links_allowed {
        categories.push(Category::Links);
    }
    categories.sort();
    categories.dedup();
    categories.retain(|c| *c != Category::Length);
    categories
}

/// The do's: the agent's own advice on writing a leak, the same under
/// every federation. They are not part of the signed policy, which says
/// only what is refused (the don'ts and the limits come from it).
const DOS: [&str; 4] = [
    "Say what you want them to know, in your own words: a compliment, a worry, an apology, something they should hear.",
    "Write as you would to their face, with care: they will read it without knowing who wrote.",
    "Leave out what would tell them who you are, if you want to stay unknown: details only you know, your way of signing.",
    "Let them answer: they can, without learning who you are, and their answer appears under Conversations.",
];

/// `GET /api/rules`: the agent's do's ([`DOS`]), and the don'ts and limits
/// of the federation's policy.
pub async fn rules(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let policy = &shared.policy;
    let limits = policy.limits();
    let categories = dont_categories(policy);
    let mut limit_words = vec![format!(
        "At most {} bytes (about as many letters; accented letters and emoji count for more).",
        max_text_bytes(&shared)
    )];
    if limits.per_recipient_per_day > 0 {
        limit_words.push(format!(
            "One person receives at most {} leak(s) a day, from all senders together.",
            limits.per_recipient_per_day
        ));
    }
    limit_words
        .push("Anyone may ask never to receive leaks again; then nothing reaches them.".to_owned());
    Json(json!({
        "policy_version": policy.version(),
        "dos": DOS,
        "donts": categories.iter().map(|c| json!({ "category": c.as_str(), "words": dont(*c) })).collect::<Vec<_>>(),
        "limits": limit_words,
    }))
    .into_response()
}

/// A leak from the page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    recipient: Zeroizing<String>,
    relationship: String,
    text: Zeroizing<String>,
    #[serde(default)]
    within_secs: Option<u64>,
    #[serde(default)]
    thread: Option<String>,
    #[serde(default = "yes")]
    answers: bool,
}

fn yes() -> bool {
    true
}

/// Checks what the page can be told precisely (which field is wrong)
/// before the agent checks it all again.
fn check_leak(
    shared: &Shared,
    recipient: &str,
    relationship: &str,
    text: &str,
) -> Result<(), ApiError> {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    if let Err(e) = Recipient::parse(recipient.trim()) {
        return Err(error_on(
            unprocessable,
            "bad_address",
            Some("recipient"),
            &format!("This is not an email address we can send to: {e}."),
        ));
    }
    if relationship.parse::<Relationship>().is_err() {
        return Err(error_on(
            unprocessable,
            "invalid",
            Some("relationship"),
            "Choose who you are to them.",
        ));
    }
    if let Err(e) = validate_text(text) {
        return Err(error_on(
            unprocessable,
            "invalid",
            Some("text"),
            &capitalised(&e.to_string()),
        ));
    }
    if text.len() > max_text_bytes(shared) {
        return Err(error_on(
            unprocessable,
            "invalid",
            Some("text"),
            &format!(
                "The message is {} bytes long; at most {} are allowed.",
                text.len(),
                max_text_bytes(shared)
            ),
        ));
    }
    if let Verdict::Refused(refusal) = shared.policy.check_text(text) {
        return Err(error_on(
            unprocessable,
            "refused",
            Some("text"),
            &format!(
                "The federation's policy refuses this text: {} ({})",
                refusal.reason, refusal.rule
            ),
        ));
    }
    Ok(())
}

/// Hands a leak to the agent and answers what it said.
async fn hand_over(shared: &Shared, request: Request) -> HttpResponse {
    match ask(shared, request).await {
        Err(response) => response.into_response(),
        Ok(Response::Queued {
            message_id,
            release_at_ms,
            thread,
        }) => Json(json!({
            "message_id": message_id,
            "release_at_ms": release_at_ms,
            "thread": thread,
        }))
        .into_response(),
        Ok(Response::Error { message, kind }) => {
            let (status, kind, field) = match kind {
                Some(ErrorKind::BadAddress) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_address",
                    Some("recipient"),
                ),
                Some(ErrorKind::Refused) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "refused", Some("text"))
                }
                Some(ErrorKind::Invalid) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", None),
                Some(ErrorKind::NoNetwork) => (StatusCode::SERVICE_UNAVAILABLE, "no_network", None),
                Some(ErrorKind::Ended) => (StatusCode::CONFLICT, "ended", None),
                None => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            };
            error_on(status, kind, field, &capitalised(&message)).into_response()
        }
        Ok(_) => internal("The agent answered something unexpected."),
    }
}

fn check_within(within_secs: Option<u64>) -> Result<Option<u64>, ApiError> {
    match within_secs {
        Some(secs) if secs > MAX_WITHIN_SECS => Err(error_on(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some("when"),
            "A leak can wait at most seven days.",
        )),
        Some(0) | None => Ok(None),
        other => Ok(other),
    }
}

/// `POST /api/send`.
pub async fn send(
    State(shared): State<Arc<Shared>>,
    ApiJson(body): ApiJson<SendBody>,
) -> HttpResponse {
    let within_secs = match check_within(body.within_secs) {
        Ok(within) => within,
        Err(response) => return response.into_response(),
    };
    if body.thread.is_none()
        && let Err(response) = check_leak(&shared, &body.recipient, &body.relationship, &body.text)
    {
        return response.into_response();
    }
    let request = Request::Send {
        recipient: body.recipient.trim().to_owned(),
        relationship: body.relationship.clone(),
        text: body.text.as_str().to_owned(),
        within_secs,
        hops: None,
        thread: body.thread.clone(),
        no_answers: !body.answers,
    };
    hand_over(&shared, request).await
}

/// A follow-up from the page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    text: Zeroizing<String>,
    #[serde(default)]
    within_secs: Option<u64>,
}

/// `POST /api/threads/{label}/reply`: a follow-up in a conversation.
pub async fn reply(
    State(shared): State<Arc<Shared>>,
    ApiPath(label): ApiPath<String>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> HttpResponse {
    let within_secs = match check_within(body.within_secs) {
        Ok(within) => within,
        Err(response) => return response.into_response(),
    };
    let root = shared.state_root.clone();
    let wanted = label.clone();
    let thread = tokio::task::spawn_blocking(move || Threads::open(&root)?.load(&wanted)).await;
    let thread = match thread {
        Ok(Ok(thread)) => thread,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "invalid",
                "No such conversation on this machine.",
            )
            .into_response();
        }
    };
    if let Err(response) = check_leak(&shared, &thread.recipient, &thread.relationship, &body.text)
    {
        return response.into_response();
    }
    let request = Request::Send {
        recipient: String::new(),
        relationship: String::new(),
        text: body.text.as_str().to_owned(),
        within_secs,
        hops: None,
        thread: Some(thread.label.clone()),
        no_answers: false,
    };
    hand_over(&shared, request).await
}

/// `GET /api/leaks/{id}`: one leak's progress, or its receipt.
pub async fn leak(State(shared): State<Arc<Shared>>, ApiPath(id): ApiPath<String>) -> HttpResponse {
    match ask(&shared, Request::Progress { message_id: id }).await {
        Err(response) => response.into_response(),
        Ok(Response::Progress(progress)) => Json(progress).into_response(),
        Ok(_) => internal("The agent answered something unexpected."),
    }
}

/// `GET /api/leaks`: what was sent, as `leak status` lists it.
pub async fn leaks(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let status = match agent_status(&shared).await {
        Ok(status) => status,
        Err(response) => return response.into_response(),
    };
    let root = shared.state_root.clone();
    let keep = shared.keep_ended_days;
    let listed = tokio::task::spawn_blocking(move || {
        let state = StateDir::open(&root)?;
        state.forget_ended(crate::send::unix_ms(), keep)?;
        let (records, _) = state.list()?;
        let (ended, _) = state.list_ended()?;
        anyhow::Ok((records, ended))
    })
    .await;
    let Ok(Ok((mut records, mut ended))) = listed else {
        return internal("The list of sent leaks does not read.");
    };
    records.sort_by_key(|r| std::cmp::Reverse(r.created_at_ms));
    ended.sort_by_key(|(_, e)| std::cmp::Reverse(e.ended_day));
    let mut list: Vec<Value> = Vec::new();
    for record in &records {
        let queued = status
            .outbox
            .iter()
            .find(|q| q.message_id == record.message_id);
        let (state, words) = match (queued, &record.outcome) {
            (Some(q), _) => (
                words::held_state(q.attempts_sent),
                words::in_progress(q.attempts_sent),
            ),
            (None, Some(done)) => (
                "finished",
                words::finished(&done.result, &record.exit.domain),
            ),
            (None, None) => (
                "sent",
                "Sent without the agent (`leak send --direct`): `leak status` fetches its receipt."
                    .to_owned(),
            ),
        };
        let (outcome, good) = record.outcome.as_ref().map_or((None, None), |o| {
            let (outcome, good) = words::finished_outcome(&o.result);
            (Some(outcome), good)
        });
        list.push(json!({
            "message_id": record.message_id, "recipient": record.recipient,
            "relationship": record.relationship, "state": state, "outcome": outcome,
            "good": good, "words": words,
            "when": day_to_date(record.created_at_ms / 86_400_000),
        }));
    }
    for (_, summary) in &ended {
        let (outcome, good) = words::finished_outcome(&summary.result);
        list.push(json!({
            "message_id": null, "recipient": summary.recipient, "relationship": null,
            "state": "finished", "outcome": outcome, "good": good,
            "words": words::finished(&summary.result, "the exit"),
            "when": day_to_date(summary.ended_day),
        }));
    }
    Json(json!({ "leaks": list, "kept_days": keep })).into_response()
}

/// `GET /api/threads`: the conversations and their answers.
pub async fn threads(State(shared): State<Arc<Shared>>) -> HttpResponse {
    let root = shared.state_root.clone();
    let listed = tokio::task::spawn_blocking(move || Threads::open(&root)?.list()).await;
    // Newest activity first, as `Threads::list` gives them.
    let Ok(Ok((threads, _))) = listed else {
        return internal("The conversations do not read.");
    };
    Json(json!({
        "threads": threads.iter().map(crate::inbox::summary).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `POST /api/threads/{label}/forget`: deletes a conversation from this
/// machine (as `leak inbox --forget`).
pub async fn forget(
    State(shared): State<Arc<Shared>>,
    ApiPath(label): ApiPath<String>,
) -> HttpResponse {
    let root = shared.state_root.clone();
    let forgotten =
        tokio::task::spawn_blocking(move || crate::inbox::forget_thread(&root, &label)).await;
    match forgotten {
        Ok(Ok(())) => Json(json!({ "forgotten": true })).into_response(),
        Ok(Err(e)) => error(
            StatusCode::CONFLICT,
            "invalid",
            &capitalised(&format!("{e:#}")),
        )
        .into_response(),
        Err(_) => internal("Forgetting stopped."),
    }
}
