//! The exception store's routes: the provider's `storage/info` (docs/behaviour.md §8.1) and
//! `storage/retry` (§8.2), and this project's `storage/items` and bucket delete (§8.3).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    ApiError, AppState, Ctx, Envelope, ErrorKind, bad_request, body_error, error_responses, field_error, query_pairs,
    truncate,
};
use crate::clock::rfc3339;
use crate::domain::{CallbackUrl, DateKey, Outcome, mask_password};
use crate::message::parse_json_object;
use crate::replay::ReplayError;
use crate::replay::ReplayOutcome;
use crate::runtime::AppRuntime;
use crate::sim::Simulator;
use crate::store::BucketInfo;
use crate::store::{Bucket, StoreError};

/// `storage/items`: items listed when no `limit` is given, and the most one request may ask.
const DEFAULT_ITEMS: usize = 100;
const MAX_ITEMS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app-id/{app_id}/callbacks/storage/info", get(info))
        .route("/app-id/{app_id}/callbacks/storage/retry", post(retry))
        .route("/app-id/{app_id}/callbacks/storage/items", get(items))
        .route("/app-id/{app_id}/callbacks/storage", delete(delete_bucket))
}

error_responses!(
    /// The errors of `storage/info` (its counts are in memory: it never fails to read).
    StoreReadErrors: AppNotFound, Unauthorized, TooManyRequests, StoreDisabled, BadRequest
);

error_responses!(
    /// The errors of `storage/items`, which reads the store.
    ItemsErrors: AppNotFound, Unauthorized, TooManyRequests, StoreDisabled, BadRequest, StoreUnavailable
);

error_responses!(
    /// The errors of deleting a bucket.
    DeleteErrors: AppNotFound, Unauthorized, TooManyRequests, StoreDisabled, BadRequest, ReplayInProgress, StoreUnavailable
);

error_responses!(
    /// The errors of `storage/retry`.
    RetryErrors: PayloadTooLarge, AppNotFound, Unauthorized, TooManyRequests, StoreDisabled, BadRequest, ReplayInProgress,
        ShuttingDown, StoreUnavailable
);

/// 404 / 401 / 429, then 403 when the app keeps no exception store.
fn store_app<'a>(
    ctx: &Ctx,
    sim: &'a Simulator,
    app_id: &Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
) -> Result<&'a std::sync::Arc<AppRuntime>, ApiError> {
    let app_id = app_id.as_ref().map(|Path(a)| a.as_str()).unwrap_or_default();
    let app = ctx.authorize(sim, app_id, headers)?;
    if !app.config.exception_store {
        return Err(ctx.error(
            ErrorKind::StoreDisabled,
            format!("app {app_id:?} has exception_store = false: failed callbacks are dropped, nothing is stored"),
        ));
    }
    Ok(app)
}

fn store_error(ctx: &Ctx, e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "exception store request failed");
    ctx.error(
        ErrorKind::StoreUnavailable,
        "the exception store could not be read or written; see the simulator's log",
    )
}

/// The app's non-empty buckets, oldest first (the provider's `storage/info`).
#[utoipa::path(get, path = "/app-id/{app_id}/callbacks/storage/info", tag = "provider",
    params(("app_id" = String, Path, description = "The app id")),
    responses(
        (status = 200, description = "The buckets", body = Envelope<Vec<BucketInfo>>),
        StoreReadErrors),
    security(("bearer" = [])))]
pub(super) async fn info(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = store_app(&ctx, &sim, &app_id, &headers)?;
    query_pairs(&ctx, query.as_deref(), &[])?;
    let buckets = sim.store().buckets(&app.config.id);
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), buckets))
}

/// The body of `POST …/storage/retry`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryRequest {
    #[schema(pattern = "^[0-9]{11}0$")]
    date: String,
    #[serde(default)]
    retry: Option<u32>,
    #[serde(rename = "targetUrl", default)]
    target_url: Option<String>,
}

/// Replays a bucket (the provider's `storage/retry`); answers when the replay is done. The
/// replay runs to its end even if the client goes away; a stop cuts it short and it answers
/// what it did (`interrupted`, and a warning saying so).
#[utoipa::path(post, path = "/app-id/{app_id}/callbacks/storage/retry", tag = "provider",
    params(("app_id" = String, Path, description = "The app id")),
    request_body = RetryRequest,
    responses(
        (status = 200, description = "`data` is \"success\" when every callback was delivered, else \"failure\"; beside it the counts `delivered`, `failed` (moved to retry + 1) and `interrupted` (left in the bucket by a stop), and `warnings` saying why callbacks were not delivered when the counts do not (a banned rule, a stop)", body = Envelope<String, ReplayOutcome>),
        RetryErrors),
    security(("bearer" = [])))]
pub(super) async fn retry(
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
    let app = store_app(&ctx, &sim, &app_id, &headers)?;
    query_pairs(&ctx, query.as_deref(), &[])?;
    let body = body.map_err(|rej| body_error(&ctx, &rej, max))?;
    let bad = |msg: String| bad_request(&ctx, msg);
    let req: RetryRequest = parse_json_object(&body).map_err(|e| field_error(&ctx, e))?;
    let date = DateKey::parse(&req.date).map_err(|e| bad(format!("field `date`: {e}")))?;
    let target = match req.target_url.as_deref() {
        None | Some("") => None,
        Some(u) => Some(CallbackUrl::parse(u).map_err(|e| bad(format!("field `targetUrl`: {e}")))?),
    };
    let retry = req.retry.unwrap_or(0);
    let outcome = sim
        .replayer
        .replay(app.clone(), date, retry, target)
        .await
        .map_err(|e| match &e {
            ReplayError::NoSuchBucket { .. } => bad(e.to_string()),
            ReplayError::Busy { .. } => ctx.error(ErrorKind::ReplayInProgress, e.to_string()),
            ReplayError::ShuttingDown => ctx.error(ErrorKind::ShuttingDown, e.to_string()),
            ReplayError::Store(se) => store_error(&ctx, se),
        })?;
    sim.history
        .app(app.config.id.as_str())
        .expect("every app has a history")
        .store_changed();
    let data = if outcome.failed == 0 && outcome.interrupted == 0 {
        "success"
    } else {
        "failure"
    };
    Ok(ctx.ok_with("/callbacks", app.config.id.as_str(), data, outcome))
}

/// One stored callback in `GET …/storage/items`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ItemView {
    #[serde(rename = "callId")]
    call_id: String,
    rule: String,
    /// Where it was meant to go, its password shown as `***`.
    url: String,
    #[serde(rename = "eventType")]
    event_type: crate::domain::EventType,
    to: String,
    outcome: Outcome,
    attempts: u32,
    status: Option<u16>,
    stored_at: String,
    #[schema(value_type = Object)]
    body: Box<RawValue>,
}

/// What a bucket holds, and why each callback was kept; `after` pages through it.
#[utoipa::path(get, path = "/app-id/{app_id}/callbacks/storage/items", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id"),
           ("date" = String, Query, description = "The 10-minute date key", pattern = "^[0-9]{11}0$"),
           ("retry" = Option<u32>, Query, description = "The retry count (default 0)"),
           ("limit" = Option<u32>, Query, description = "At most this many (default 100, max 10000)"),
           ("after" = Option<String>, Query, description = "The items stored after the one with this callId (the last of the previous page); a callId not in the bucket is a 400")),
    responses(
        (status = 200, description = "The items (an empty list for an empty bucket)", body = Envelope<Vec<ItemView>>),
        ItemsErrors),
    security(("bearer" = [])))]
pub(super) async fn items(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = store_app(&ctx, &sim, &app_id, &headers)?;
    let bad = |msg: String| bad_request(&ctx, msg);
    let (mut date, mut retry, mut limit, mut after) = (None, 0u32, DEFAULT_ITEMS, None);
    for (k, v) in query_pairs(&ctx, query.as_deref(), &["date", "retry", "limit", "after"])? {
        match k.as_str() {
            "date" => date = Some(parse_date(&ctx, &v)?),
            "retry" => retry = parse_retry(&ctx, &v)?,
            "after" => after = Some(v),
            _ => {
                limit = v.parse().ok().filter(|n| (1..=MAX_ITEMS).contains(n)).ok_or_else(|| {
                    bad(format!(
                        "query parameter limit must be between 1 and {MAX_ITEMS}, got {:?}",
                        v.chars().take(40).collect::<String>()
                    ))
                })?
            }
        }
    }
    let bucket = Bucket {
        app: app.config.id.clone(),
        date: require_date(&ctx, date)?,
        retry,
    };
    let page = sim
        .store()
        .page(&bucket, after.as_deref(), limit)
        .map_err(|e| store_error(&ctx, &e))?;
    let Some(page) = page else {
        return Err(bad(format!(
            "query parameter after: no callback {:?} in bucket date={} retry={retry} (delivered or moved by a replay since?); list the bucket again without after",
            truncate(after.as_deref().unwrap_or_default()),
            bucket.date
        )));
    };
    let mut out = Vec::new();
    for item in page {
        let body = RawValue::from_string(item.body)
            .map_err(|e| store_error(&ctx, &StoreError::Io(format!("stored body is not JSON: {e}"))))?;
        out.push(ItemView {
            call_id: item.call_id,
            rule: item.rule,
            url: mask_password(&item.url).into_owned(),
            event_type: item.event_type,
            to: item.to,
            outcome: item.outcome,
            attempts: item.attempts,
            status: item.status,
            stored_at: rfc3339(item.stored_at_ms),
            body,
        });
    }
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), out))
}

/// The answer of a bucket delete.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Deleted {
    /// How many callbacks were deleted (0 for an empty or missing bucket).
    deleted: u64,
}

/// Deletes one bucket: its callbacks are gone for good (durably, before the answer).
#[utoipa::path(delete, path = "/app-id/{app_id}/callbacks/storage", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id"),
           ("date" = String, Query, description = "The bucket's 10-minute date key", pattern = "^[0-9]{11}0$"),
           ("retry" = Option<u32>, Query, description = "The bucket's retry count (default 0)")),
    responses(
        (status = 200, description = "`data.deleted`: how many callbacks were deleted (0 for an empty or missing bucket)", body = Envelope<Deleted>),
        DeleteErrors),
    security(("bearer" = [])))]
pub(super) async fn delete_bucket(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = store_app(&ctx, &sim, &app_id, &headers)?;
    let (mut date, mut retry) = (None, 0u32);
    for (k, v) in query_pairs(&ctx, query.as_deref(), &["date", "retry"])? {
        match k.as_str() {
            "date" => date = Some(parse_date(&ctx, &v)?),
            _ => retry = parse_retry(&ctx, &v)?,
        }
    }
    let bucket = Bucket {
        app: app.config.id.clone(),
        date: require_date(&ctx, date)?,
        retry,
    };
    let store = sim.store();
    let Some(slot) = store.begin_replay(&bucket) else {
        return Err(ctx.error(
            ErrorKind::ReplayInProgress,
            format!(
                "bucket date={} retry={retry} is being replayed; delete it when the replay is done",
                bucket.date
            ),
        ));
    };
    let deleted = store.delete_bucket(&slot).await.map_err(|e| store_error(&ctx, &e))?;
    sim.history
        .app(app.config.id.as_str())
        .expect("every app has a history")
        .store_changed();
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), Deleted { deleted }))
}

/// The `date` query parameter: a 10-minute key.
fn parse_date(ctx: &Ctx, v: &str) -> Result<DateKey, ApiError> {
    DateKey::parse(v).map_err(|e| bad_request(ctx, format!("query parameter date: {e}")))
}

/// The `retry` query parameter: a whole number.
fn parse_retry(ctx: &Ctx, v: &str) -> Result<u32, ApiError> {
    v.parse().map_err(|_| {
        bad_request(
            ctx,
            format!(
                "query parameter retry must be a whole number, got {:?}",
                v.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// The `date` query parameter, which the storage routes need.
fn require_date(ctx: &Ctx, date: Option<DateKey>) -> Result<DateKey, ApiError> {
    date.ok_or_else(|| {
        bad_request(
            ctx,
            "query parameter date is required (a 10-minute key such as 202109091440; GET storage/info lists them)"
                .into(),
        )
    })
}
