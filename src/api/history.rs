//! The console's routes (docs/behaviour.md §12): `GET …/callbacks/history`, the recent
//! callbacks with their attempts and exact requests; `GET …/callbacks/stream`, server-sent
//! events as callbacks end, rules change and buckets change; `POST …/callbacks/resend`, one
//! callback sent again, edited or not.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;

use super::rules::RuleView;
use super::{
    ApiError, AppErrors, AppState, Ctx, Envelope, ErrorKind, bad_request, body_error, error_responses, field_error,
    query_pairs, truncate,
};
use crate::dispatch::CallbackReport;
use crate::domain::{CallbackUrl, EventType, FinalOutcome};
use crate::history::{EntryView, Filter, Note, Watch};
use crate::message::parse_json_object;
use crate::runtime::AppRuntime;
use crate::sim::ResendError;

/// `callbacks/history`: entries listed when no `limit` is given, and the most one request may ask.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// Bucket changes are told at most this often: a failing receiver stores many batches a second.
const STORE_EVERY: Duration = Duration::from_millis(250);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app-id/{app_id}/callbacks/history", get(history))
        .route("/app-id/{app_id}/callbacks/stream", get(stream))
        .route("/app-id/{app_id}/callbacks/resend", post(resend))
}

error_responses!(
    /// The errors of `callbacks/resend`.
    ResendErrors: PayloadTooLarge, CallbackNotFound, AppNotFound, Unauthorized, TooManyRequests, BadRequest,
        ShuttingDown, StoreUnavailable
);

fn app_of<'a>(
    ctx: &Ctx,
    sim: &'a crate::sim::Simulator,
    app_id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
) -> Result<&'a Arc<AppRuntime>, ApiError> {
    let app_id = app_id.map(|Path(a)| a).unwrap_or_default();
    ctx.authorize(sim, &app_id, headers)
}

/// The app's most recent callbacks, newest first: each with its attempts and the exact
/// request. Filters combine; `before` pages (the callbacks older than that one).
#[utoipa::path(get, path = "/app-id/{app_id}/callbacks/history", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id"),
           ("limit" = Option<u32>, Query, description = "At most this many (default 100, max 1000)"),
           ("rule" = Option<String>, Query, description = "Only this rule's callbacks"),
           ("event" = Option<String>, Query, description = "Only this event type (`chat`, `chat_offline`, …)"),
           ("outcome" = Option<FinalOutcome>, Query, description = "Only this final outcome"),
           ("before" = Option<String>, Query, description = "The callbacks older than the one with this callId (the last of the previous page); a callId no longer in the history is a 400")),
    responses(
        (status = 200, description = "The callbacks, newest first", body = Envelope<Vec<EntryView>>),
        AppErrors),
    security(("bearer" = [])))]
pub(super) async fn history(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = app_of(&ctx, &sim, app_id, &headers)?;
    let bad = |msg: String| bad_request(&ctx, msg);
    let (mut filter, mut limit, mut before) = (Filter::default(), DEFAULT_LIMIT, None);
    for (k, v) in query_pairs(&ctx, query.as_deref(), &["limit", "rule", "event", "outcome", "before"])? {
        match k.as_str() {
            "limit" => {
                limit = v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    bad(format!(
                        "query parameter limit must be between 1 and {MAX_LIMIT}, got {:?}",
                        truncate(&v)
                    ))
                })?
            }
            "rule" => filter.rule = Some(v),
            "event" => {
                filter.event = Some(EventType::parse(&v).map_err(|e| bad(format!("query parameter event: {e}")))?)
            }
            "outcome" => {
                filter.outcome =
                    Some(FinalOutcome::parse(&v).map_err(|e| bad(format!("query parameter outcome: {e}")))?)
            }
            _ => before = Some(v),
        }
    }
    let kept = sim
        .history
        .app(app.config.id.as_str())
        .expect("every app has a history");
    let entries = kept.list(&filter, limit, before.as_deref()).ok_or_else(|| {
        bad(format!(
            "query parameter before: no callback {:?} in the history (the last server.history_per_app callbacks); list again without before",
            truncate(before.as_deref().unwrap_or_default())
        ))
    })?;
    let views: Vec<EntryView> = entries.iter().map(|e| e.view()).collect();
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), views))
}

/// Server-sent events, from the moment of the request: `ready` once (`{"app", "dialect"}`), then `callback` (a
/// history entry, at its final outcome), `rule` (a rule's new state, as in `callbacks/rules`),
/// `store` (`{"buckets": [...]}` as in `storage/info`, at most four times a second) and
/// `lagged` (`{"missed": N}`: the reader fell behind and missed N notes; list the history
/// again). Bearer auth as every app route: read it with `fetch`, not `EventSource`.
#[utoipa::path(get, path = "/app-id/{app_id}/callbacks/stream", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id")),
    responses(
        (status = 200, description = "`text/event-stream`: events `ready`, `callback`, `rule`, `store`, `lagged`, each with JSON data", content_type = "text/event-stream"),
        AppErrors),
    security(("bearer" = [])))]
pub(super) async fn stream(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = app_of(&ctx, &sim, app_id, &headers)?.clone();
    query_pairs(&ctx, query.as_deref(), &[])?;
    let kept = sim
        .history
        .app(app.config.id.as_str())
        .expect("every app has a history");
    let follow = Follow {
        watch: kept.watch(),
        closed: Box::pin(sim.history.closed()),
        sim: sim.clone(),
        app,
        store_due: None,
        ready: false,
    };
    let events = futures_util::stream::unfold(follow, |f| f.next());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// One live stream's state.
struct Follow {
    watch: Watch,
    closed: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    sim: AppState,
    app: Arc<AppRuntime>,
    /// When the pending bucket change is told.
    store_due: Option<tokio::time::Instant>,
    ready: bool,
}

impl Follow {
    /// The next event, or the end when the simulator stops.
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        if !self.ready {
            self.ready = true;
            let hello = serde_json::json!({ "app": self.app.config.id.as_str(), "dialect": self.app.config.dialect });
            return Some((Ok(event("ready", &hello)), self));
        }
        loop {
            let due = self.store_due;
            tokio::select! {
                _ = &mut self.closed => return None,
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    self.store_due = None;
                    let buckets = self.sim.store().buckets(&self.app.config.id);
                    return Some((Ok(event("store", &serde_json::json!({ "buckets": buckets }))), self));
                }
                note = self.watch.notes.recv() => match note {
                    Ok(Note::Callback(e)) => return Some((Ok(event("callback", &e.view())), self)),
                    Ok(Note::Rule(name)) => {
                        if let Some(rule) = self.app.rule(name.as_str()) {
                            let view = RuleView::of(rule, self.sim.clock.now_ms());
                            return Some((Ok(event("rule", &view)), self));
                        }
                    }
                    Ok(Note::Store) => {
                        if self.store_due.is_none() {
                            self.store_due = Some(tokio::time::Instant::now() + STORE_EVERY);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        return Some((Ok(event("lagged", &serde_json::json!({ "missed": missed }))), self));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// An SSE event named `name` with `data` as JSON.
fn event(name: &str, data: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(data).expect("views serialize"))
}

/// The body of `POST …/callbacks/resend`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResendRequest {
    /// The callback to send again (in the history, or in the exception store).
    #[serde(rename = "callId")]
    call_id: String,
    /// An edited body: the JSON object itself, or a string holding it. Its fields keep their
    /// order; the provider signs it again (agora: `security` from its own `callId` and
    /// `timestamp`). Absent: the very bytes sent before.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    body: Option<Box<RawValue>>,
    /// Where to send it instead of the rule's URL (which obeys and feeds the rule's ban).
    #[serde(rename = "targetUrl", default)]
    target_url: Option<String>,
}

/// Sends one callback again — edited and signed again, or as it was — to its rule's URL or
/// `targetUrl`, with the app's delivery policy; answers its outcome. Not stored if it fails.
#[utoipa::path(post, path = "/app-id/{app_id}/callbacks/resend", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id")),
    request_body = ResendRequest,
    responses(
        (status = 200, description = "The outcome, as a `callbacks` entry of a `?wait=true` answer (`dropped` when it failed: a resend is not stored)", body = Envelope<CallbackReport>),
        ResendErrors),
    security(("bearer" = [])))]
pub(super) async fn resend(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let max = sim.config.server.max_body_bytes;
    if let Err(rej) = &body
        && rej.status() == StatusCode::PAYLOAD_TOO_LARGE
    {
        return Err(body_error(&ctx, rej, max));
    }
    let app = app_of(&ctx, &sim, app_id, &headers)?;
    query_pairs(&ctx, query.as_deref(), &[])?;
    let body = body.map_err(|rej| body_error(&ctx, &rej, max))?;
    let req: ResendRequest = parse_json_object(&body).map_err(|e| field_error(&ctx, e))?;
    let target = match req.target_url.as_deref() {
        None | Some("") => None,
        Some(u) => Some(CallbackUrl::parse(u).map_err(|e| bad_request(&ctx, format!("field `targetUrl`: {e}")))?),
    };
    // A string holds the body's text (as a text area gives it); anything else is the body.
    let edited: Option<String> = match req.body.as_deref().map(RawValue::get) {
        None | Some("null") => None,
        Some(raw) if raw.starts_with('"') => {
            Some(serde_json::from_str(raw).map_err(|e| bad_request(&ctx, format!("field `body`: {e}")))?)
        }
        Some(raw) => Some(raw.to_string()),
    };
    let report = sim
        .resend(app, &req.call_id, edited.as_deref().map(str::as_bytes), target)
        .await
        .map_err(|e| match &e {
            ResendError::NotFound(_) => ctx.error(ErrorKind::CallbackNotFound, e.to_string()),
            ResendError::RuleGone { .. } | ResendError::Body(_) => bad_request(&ctx, e.to_string()),
            ResendError::ShuttingDown => ctx.error(ErrorKind::ShuttingDown, e.to_string()),
            ResendError::Store(se) => {
                tracing::error!(error = %se, "resend: the exception store could not be read");
                ctx.error(
                    ErrorKind::StoreUnavailable,
                    "the exception store could not be read; see the simulator's log",
                )
            }
        })?;
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), report))
}
