//! The simulation's ingestion routes (docs/behaviour.md §8.3): `POST /app-id/{app_id}/messages`
//! and `POST /app-id/{app_id}/events`, both with `?wait=true`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;

use super::{
    ApiError, AppState, Ctx, Envelope, ErrorKind, bad_request, body_error, error_responses, field_error, query_pairs,
};
use crate::dispatch::{CallbackReport, EnqueueError};
use crate::event::catalog;
use crate::message::MessageRequest;
use crate::runtime::AppRuntime;
use crate::sim::{Simulator, Submitted};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app-id/{app_id}/messages", post(post_message))
        .route("/app-id/{app_id}/events", post(post_event))
}

/// `data` of `POST …/messages`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MessageAnswer {
    msg_id: String,
    accepted: bool,
    code: Option<String>,
    /// The error code the sender gets when blocked, where the provider has one (tencent
    /// 20006, or the before-command's 120001–130000).
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<i64>,
    /// `true` when a tencent before-command answered `ErrorCode` 2: the sender is told the
    /// message was sent, but no post-send callback is made.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    silently_dropped: bool,
    queued: usize,
    /// Why nothing was queued when no post-send rule takes the message; empty otherwise.
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callbacks: Option<Vec<CallbackReport>>,
}

/// `data` of `POST …/events`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EventAnswer {
    /// The event's own id (agora `msg_id` of action events).
    event_id: String,
    /// `false` when a tencent before-command refused it (see `warnings`): nothing was queued.
    accepted: bool,
    /// What the sender is told when refused (with `notify_sender`).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    queued: usize,
    /// Why nothing was queued when no post-send rule takes the event (its `event_types`);
    /// empty otherwise.
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callbacks: Option<Vec<CallbackReport>>,
}

/// What both routes check first, in the order of docs/behaviour.md §8: 413, 404, 401, 429,
/// 503 while stopping, then the `wait` parameter and the body (400).
struct Ingest {
    app: Arc<AppRuntime>,
    wait: bool,
    body: Bytes,
}

fn ingest(
    ctx: &Ctx,
    sim: &Simulator,
    app_id: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Ingest, ApiError> {
    let max = sim.config.server.max_body_bytes;
    if let Err(rej) = &body
        && rej.status() == StatusCode::PAYLOAD_TOO_LARGE
    {
        return Err(body_error(ctx, rej, max));
    }
    let app_id = app_id.map(|Path(a)| a).unwrap_or_default();
    let app = ctx.authorize(sim, &app_id, headers)?.clone();
    if sim.dispatcher.is_stopping() {
        return Err(shutting_down(ctx));
    }
    let mut wait = false;
    for (_, v) in query_pairs(ctx, query, &["wait"])? {
        wait = match v.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(bad_request(
                    ctx,
                    format!("query parameter wait must be true or false, got {v:?}"),
                ));
            }
        };
    }
    let body = body.map_err(|rej| body_error(ctx, &rej, max))?;
    Ok(Ingest { app, wait, body })
}

error_responses!(
    /// The errors of the ingestion routes, in the order they are checked.
    IngestErrors: PayloadTooLarge, AppNotFound, Unauthorized, TooManyRequests, QueueFull, ShuttingDown, BadRequest
);

fn shutting_down(ctx: &Ctx) -> ApiError {
    ctx.error(
        ErrorKind::ShuttingDown,
        "the simulator is stopping and takes no new messages",
    )
}

fn enqueue_error(ctx: &Ctx, sim: &Simulator, e: EnqueueError) -> ApiError {
    match e {
        EnqueueError::Full => ctx.error(
            ErrorKind::QueueFull,
            format!(
                "the delivery queue is full ({} callbacks, delivery.queue_capacity); retry later",
                sim.config.delivery.queue_capacity
            ),
        ),
        EnqueueError::ShuttingDown => shutting_down(ctx),
    }
}

async fn callbacks(submitted: Submitted, wait: bool) -> Option<Vec<CallbackReport>> {
    if wait { Some(submitted.wait().await) } else { None }
}

/// A message into the simulated IM world; with `wait=true` the answer comes when every callback
/// has its final outcome.
#[utoipa::path(post, path = "/app-id/{app_id}/messages", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id"),
           ("wait" = Option<bool>, Query, description = "Answer only when every callback has its final outcome")),
    request_body = MessageRequest,
    responses(
        (status = 200, description = "Accepted (or blocked by pre-send: `accepted` false)", body = Envelope<MessageAnswer>),
        IngestErrors),
    security(("bearer" = [])))]
pub(super) async fn post_message(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Ingest { app, wait, body } = ingest(&ctx, &sim, app_id, query.as_deref(), &headers, body)?;
    let msg = MessageRequest::from_json(&body)
        .and_then(MessageRequest::into_message)
        .map_err(|e| field_error(&ctx, e))?;
    let mut submitted = sim
        .submit(&app, msg, wait)
        .await
        .map_err(|e| enqueue_error(&ctx, &sim, e))?;
    let answer = MessageAnswer {
        msg_id: std::mem::take(&mut submitted.msg_id),
        accepted: submitted.accepted,
        code: submitted.code.take(),
        error_code: submitted.error_code,
        silently_dropped: submitted.silently_dropped,
        queued: submitted.queued,
        warnings: std::mem::take(&mut submitted.warnings),
        callbacks: callbacks(submitted, wait).await,
    };
    Ok(ctx.ok("/messages", app.config.id.as_str(), answer))
}

/// A catalog event (`GET /catalog`): its REST fields, and `overrides` merged into the wire body
/// before signing.
#[utoipa::path(post, path = "/app-id/{app_id}/events", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id"),
           ("wait" = Option<bool>, Query, description = "Answer only when every callback has its final outcome")),
    request_body = EventRequest,
    responses(
        (status = 200, description = "Queued", body = Envelope<EventAnswer>),
        IngestErrors),
    security(("bearer" = [])))]
pub(super) async fn post_event(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Ingest { app, wait, body } = ingest(&ctx, &sim, app_id, query.as_deref(), &headers, body)?;
    let event = crate::event::parse_request(&body, app.config.dialect()).map_err(|e| field_error(&ctx, e))?;
    let mut submitted = sim
        .submit_event(&app, event, wait)
        .await
        .map_err(|e| enqueue_error(&ctx, &sim, e))?;
    let answer = EventAnswer {
        event_id: std::mem::take(&mut submitted.msg_id),
        accepted: submitted.accepted,
        code: submitted.code.take(),
        queued: submitted.queued,
        warnings: std::mem::take(&mut submitted.warnings),
        callbacks: callbacks(submitted, wait).await,
    };
    Ok(ctx.ok("/events", app.config.id.as_str(), answer))
}

/// The REST body of `POST …/events`, described from the catalog: one schema per event
/// (`type` its name, its fields, `overrides`).
pub(super) struct EventRequest;

impl utoipa::PartialSchema for EventRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};

        use crate::event::fields::Kind;
        let mut one_of = OneOfBuilder::new();
        for def in catalog::all() {
            let mut o = ObjectBuilder::new()
                .description(Some(def.summary))
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([def.name.as_str()])),
                )
                .required("type")
                .property(
                    "overrides",
                    ObjectBuilder::new().schema_type(Type::Object).description(Some(
                        "Deep-merged into the wire body before signing; null removes a key",
                    )),
                )
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)));
            for f in def.fields {
                let id = || {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(crate::message::MAX_ID_CHARS))
                        .pattern(Some("^[^\\u0000-\\u001f\\u007f-\\u009f]*$"))
                };
                let schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> = match f.kind {
                    Kind::Id => id().description(Some(f.doc)).into(),
                    // At most MAX_LIST ids: said in words, as a list that long is bounded by
                    // max_body_bytes first (413).
                    Kind::Ids => ArrayBuilder::new()
                        .items(id())
                        .min_items(Some(1))
                        .description(Some(format!("{} (1 to {} ids)", f.doc, crate::event::fields::MAX_LIST)))
                        .into(),
                    Kind::Text => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(crate::event::fields::MAX_TEXT_CHARS))
                        .description(Some(f.doc))
                        .into(),
                    Kind::Bool => ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .description(Some(f.doc))
                        .into(),
                    Kind::Int => ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .description(Some(f.doc))
                        .into(),
                    Kind::Choice(words) => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(words.iter().copied()))
                        .description(Some(f.doc))
                        .into(),
                    Kind::Ip => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(utoipa::openapi::SchemaFormat::Custom("ip".into())))
                        .description(Some(f.doc))
                        .into(),
                };
                o = o.property(f.name, schema);
                if f.required {
                    o = o.required(f.name);
                }
            }
            one_of = one_of.item(o);
        }
        one_of.into()
    }
}

impl utoipa::ToSchema for EventRequest {}
