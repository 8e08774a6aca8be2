//! `GET /app-id/{app_id}/callbacks/rules` (docs/behaviour.md §8.3): each rule with its live
//! state and counts; `POST …/callbacks/rules/{rule}/reset`: a rule's ban and failure history
//! forgotten (§6).

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;

use super::{ApiError, AppErrors, AppState, Ctx, Envelope, ErrorKind, error_responses, query_pairs, truncate};
use crate::clock::rfc3339;
use crate::domain::{CallbackUrl, RuleKind, RuleName, RuleStatus};
use crate::runtime::{RuleRuntime, StatsSnapshot};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app-id/{app_id}/callbacks/rules", get(get_rules))
        .route("/app-id/{app_id}/callbacks/rules/{rule}/reset", post(reset_rule))
}

error_responses!(
    /// The errors of `rules/{rule}/reset`.
    ResetErrors: RuleNotFound, AppNotFound, Unauthorized, TooManyRequests, BadRequest, StoreUnavailable
);

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

impl<'a> RuleView<'a> {
    /// The rule as it is at `now` (Unix ms).
    pub(super) fn of(r: &'a RuleRuntime, now: u64) -> Self {
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
    }
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
    let rules: Vec<RuleView> = app.rules.iter().map(|r| RuleView::of(r, now)).collect();
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), rules))
}

/// Resets a rule: lifts its ban, empties its failure window and forgets its ban history (the
/// next ban is of level 1), durably. Answers the rule's new state.
#[utoipa::path(post, path = "/app-id/{app_id}/callbacks/rules/{rule}/reset", tag = "simulation",
    params(("app_id" = String, Path, description = "The app id"),
           ("rule" = String, Path, description = "The rule's name")),
    responses(
        (status = 200, description = "The rule's new state, as in `GET …/callbacks/rules`", body = Envelope<RuleView>),
        ResetErrors),
    security(("bearer" = [])))]
pub(super) async fn reset_rule(
    State(sim): State<AppState>,
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (app_id, rule_name) = path.map(|Path(p)| p).unwrap_or_default();
    let app = ctx.authorize(&sim, &app_id, &headers)?;
    query_pairs(&ctx, query.as_deref(), &[])?;
    let Some(rule) = app.rule(&rule_name) else {
        let names: Vec<&str> = app.rules.iter().map(|r| r.config.name.as_str()).collect();
        return Err(ctx.error(
            ErrorKind::RuleNotFound,
            format!(
                "app {:?} has no rule {:?}; its rules: {}",
                app.config.id.as_str(),
                truncate(&rule_name),
                names.join(", ")
            ),
        ));
    };
    sim.reset_rule(rule).await.map_err(|e| {
        tracing::error!(error = %e, "could not persist a rule reset");
        ctx.error(
            ErrorKind::StoreUnavailable,
            "the rule was reset, but its ban record could not be removed from the exception store; see the simulator's log",
        )
    })?;
    let view = RuleView::of(rule, sim.clock.now_ms());
    Ok(ctx.ok("/callbacks", app.config.id.as_str(), view))
}
