//! `POST /app-id/{app_id}/messages` (SPEC §8.3): a message into the simulated IM world.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;

use super::{ApiError, AppState, Ctx, body_error, query_pairs};
use crate::dispatch::{CallbackReport, EnqueueError};
use crate::message::MessageRequest;

pub fn router() -> Router<AppState> {
    Router::new().route("/app-id/{app_id}/messages", post(post_message))
}

#[derive(Serialize)]
struct MessageAnswer {
    msg_id: String,
    accepted: bool,
    code: Option<String>,
    queued: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    callbacks: Option<Vec<CallbackReport>>,
}

async fn post_message(
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
    let app_id = app_id.map(|Path(a)| a).unwrap_or_default();
    let app = ctx.authorize(&sim, &app_id, &headers)?;
    if sim.dispatcher.is_stopping() {
        return Err(ctx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the simulator is stopping and takes no new messages",
        ));
    }
    let mut wait = false;
    for (k, v) in query_pairs(&ctx, query.as_deref(), &["wait"])? {
        debug_assert_eq!(k, "wait");
        wait = match v.as_str() {
            "true" | "1" | "" => true,
            "false" | "0" => false,
            _ => {
                return Err(ctx.error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("query parameter wait must be true or false, got {v:?}"),
                ));
            }
        };
    }
    let body = body.map_err(|rej| body_error(&ctx, &rej, max))?;
    let msg = MessageRequest::from_json(&body)
        .and_then(MessageRequest::into_message)
        .map_err(|e| {
            ctx.error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("field `{}`: {}", e.field, e.reason),
            )
        })?;
    let submitted = sim.submit(app, msg, wait).await.map_err(|e| match e {
        EnqueueError::Full => ctx.error(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "the delivery queue is full ({} callbacks, delivery.queue_capacity); retry later",
                sim.config.delivery.queue_capacity
            ),
        ),
        EnqueueError::ShuttingDown => ctx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the simulator is stopping and takes no new messages",
        ),
    })?;
    let (msg_id, accepted, code, queued) = (
        submitted.msg_id.clone(),
        submitted.accepted,
        submitted.code.clone(),
        submitted.queued,
    );
    let callbacks = if wait { Some(submitted.wait().await) } else { None };
    let answer = MessageAnswer {
        msg_id,
        accepted,
        code,
        queued,
        callbacks,
    };
    Ok(ctx.ok("/messages", app.config.id.as_str(), answer, None))
}
