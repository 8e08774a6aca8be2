//! `GET /app-id/{app_id}/callbacks/rules` (docs/behaviour.md §8.3): each rule with its live
//! state and counts.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::{ApiError, AppErrors, AppState, Ctx, Envelope, query_pairs};
use crate::clock::rfc3339;
use crate::domain::{CallbackUrl, RuleKind, RuleName, RuleStatus};
use crate::runtime::StatsSnapshot;

pub fn router() -> Router<AppState> {
    Router::new().route("/app-id/{app_id}/callbacks/rules", get(get_rules))
}

/// One rule in `GET …/callbacks/rules`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RuleView<'a> {
    #[schema(value_type = RuleName)]
    name: &'a RuleName,
    kind: RuleKind,
    #[schema(value_type = CallbackUrl)]
    url: &'a CallbackUrl,
    enabled: bool,
    state: RuleStatus,
    banned_until: Option<String>,
    ban_level: u32,
    failures_in_window: u32,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

/// Each rule with its live state and counts per outcome.
#[utoipa::path(get, path = "/app-id/{app_id}/callbacks/rules", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id")),
    responses(
        (status = 200, description = "The app's rules", body = Envelope<Vec<RuleView>>),
        AppErrors),
    security(("bearer" = [])))]
pub(super) async fn get_rules(
    State(sim): State<AppState>,
    ctx: Ctx,
    app_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app_id = app_id.map(|Path(a)| a).unwrap_or_default();
    let app = ctx.authorize(&sim, &app_id, &headers)?;
    query_pairs(&ctx, query.as_deref(), &[])?;
    let now = sim.clock.now_ms();
    let rules: Vec<RuleView> = app
        .rules
        .iter()
        .map(|r| {
            let ban = r.ban_view(now);
            RuleView {
                name: &r.config.name,
                kind: r.config.kind,
                url: &r.config.url,
                enabled: r.config.enabled,
                state: r.status(now),
                banned_until: ban.banned_until_ms.map(rfc3339),
                ban_level: ban.level,
                failures_in_window: ban.failures_in_window,
                stats: r.stats.snapshot(),
            }
        })
        .collect();
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), rules))
}
