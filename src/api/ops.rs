//! Operational routes: `GET /healthz`, and the JSON answers for unknown routes and methods.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{ApiError, AppState, Ctx, ErrorKind, bad_request, query_pairs};
use crate::domain::Dialect;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/catalog", get(catalog))
}

/// The event catalog (docs/behaviour.md §11.2): every event, its REST fields, and for each
/// provider that has it how a receiver tells it apart and a complete signed example body. No
/// auth; plain JSON. `?dialect=agora|tencent` keeps one provider's events.
#[utoipa::path(get, path = "/catalog", tag = "simulation",
    params(("dialect" = Option<String>, Query, description = "agora or tencent: only that provider's events")),
    responses(
        (status = 200, description = "`{\"events\": [{\"name\", \"summary\", \"fields\", \"dialects\"}]}`"),
        (status = 400, description = "Unknown query parameter or dialect", body = super::ErrorBody)))]
pub(super) async fn catalog(ctx: Ctx, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let mut only = None;
    for (_, v) in query_pairs(&ctx, query.as_deref(), &["dialect"])? {
        only = Some(Dialect::parse(&v).map_err(|e| bad_request(&ctx, format!("query parameter dialect: {}", e.0)))?);
    }
    Ok(axum::Json(crate::dialect::examples::document(only)).into_response())
}

/// Prometheus text: callbacks and attempts by app/rule/outcome, attempt latency, queue depth,
/// in flight, bans, store size by app, replays.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(super) async fn metrics(State(sim): State<AppState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sim.render_metrics(),
    )
        .into_response()
}

/// The OpenAPI document of every route, generated from the handlers and types.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub(super) async fn openapi() -> Response {
    axum::Json(super::openapi::document()).into_response()
}

/// 200 `{"status":"ok","store":"ok","queued":N,"in_flight":N}` while serving; 503 `stopping` in
/// a graceful stop, 503 `degraded` with `"store":"failing"` while the store cannot write.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses(
    (status = 200, description = "`{\"status\": \"ok\", \"store\": \"ok\", \"queued\": N, \"in_flight\": N}`"),
    (status = 503, description = "Stopping (`\"status\": \"stopping\"`), or the exception store cannot write (`\"status\": \"degraded\", \"store\": \"failing\"`)")))]
pub(super) async fn healthz(State(sim): State<AppState>) -> Response {
    let d = &sim.dispatcher;
    // A store that fails to write is a 503 too (docs/behaviour.md §7): callbacks that need it
    // are dropped until it writes again.
    let store = if d.store().is_failing() { "failing" } else { "ok" };
    let (code, status) = if d.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if store == "failing" {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        axum::Json(json!({ "status": status, "store": store, "queued": d.queued(), "in_flight": d.in_flight() })),
    )
        .into_response()
}

/// Any other route: 404 `not_found`.
pub async fn not_found(ctx: Ctx) -> ApiError {
    ctx.error(ErrorKind::NotFound, "no such route; see the README for the REST API")
}

/// A known route with another method: 405 `method_not_allowed`.
pub async fn method_not_allowed(ctx: Ctx) -> ApiError {
    ctx.error(ErrorKind::MethodNotAllowed, "this route does not take that HTTP method")
}
