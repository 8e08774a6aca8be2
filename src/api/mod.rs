//! The REST API (docs/behaviour.md §8): the provider's envelope, its error body, Bearer auth,
//! the per-app rate limit, and one `router()` per area merged in [`router`].
//!
//! Checks run in the order of docs/behaviour.md §8: body over `max_body_bytes` → 413, unknown
//! app → 404, token → 401, rate limit → 429, store off → 403 (on ingestion: stopping → 503),
//! then the request itself → 400. Every error is an [`ErrorKind`] (`error.rs`), which also
//! writes the routes' error responses in the OpenAPI document.

mod console;
mod error;
mod history;
mod messages;
mod openapi;
mod ops;
mod rules;
mod storage;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;

use error::error_responses;
pub use error::{ApiError, ErrorBody, ErrorKind};

use crate::runtime::AppRuntime;
use crate::sim::Simulator;

/// The shared state of every handler.
pub type AppState = Arc<Simulator>;

/// The whole API.
pub fn router(sim: Arc<Simulator>) -> Router {
    let limit = sim.config.server.max_body_bytes;
    Router::new()
        .merge(messages::router())
        .merge(rules::router())
        .merge(storage::router())
        .merge(ops::router())
        .merge(history::router())
        .merge(console::router())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(sim)
}

/// What every answer needs from its request: when it started (by the simulator's clock, for
/// `timestamp`, and by a monotonic one, for `duration`), and where it was sent.
#[derive(Debug, Clone)]
pub struct Ctx {
    started: Instant,
    timestamp: u64,
    action: String,
    uri: String,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, sim: &AppState) -> Result<Self, Self::Rejection> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        Ok(Ctx {
            started: Instant::now(),
            timestamp: sim.clock.now_ms(),
            action: parts.method.as_str().to_ascii_lowercase(),
            uri: format!("http://{host}{pq}"),
        })
    }
}

impl Ctx {
    fn duration_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// An error answer of `kind`, with `description` saying what is wrong and what to do.
    pub fn error(&self, kind: ErrorKind, description: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            body: ErrorBody {
                error: kind.code(),
                error_description: description.into(),
                timestamp: self.timestamp,
                duration: self.duration_ms(),
            },
        }
    }

    /// A success answer in the provider's envelope.
    pub fn ok<D: Serialize>(&self, path: &'static str, app: &str, data: D) -> Response {
        self.ok_with(path, app, data, NoExtra {})
    }

    /// A success answer in the provider's envelope, with `extra`'s fields beside `data`.
    pub fn ok_with<D: Serialize, E: Serialize>(&self, path: &'static str, app: &str, data: D, extra: E) -> Response {
        let env = Envelope {
            path: path.to_string(),
            uri: self.uri.clone(),
            timestamp: self.timestamp,
            action: self.action.clone(),
            application: app.to_string(),
            data,
            duration: self.duration_ms(),
            extra,
        };
        axum::Json(env).into_response()
    }

    /// 404 / 401 / 429 for an app-scoped route (the order of docs/behaviour.md §8), or the app.
    pub fn authorize<'a>(
        &self,
        sim: &'a Simulator,
        app_id: &str,
        headers: &HeaderMap,
    ) -> Result<&'a Arc<AppRuntime>, ApiError> {
        let Some(app) = sim.apps.get(app_id) else {
            return Err(self.error(
                ErrorKind::AppNotFound,
                format!(
                    "no app {:?} is configured; check the app id in the URL",
                    truncate(app_id)
                ),
            ));
        };
        let Some(given) = bearer(headers) else {
            return Err(self.error(
                ErrorKind::Unauthorized,
                "missing `Authorization: Bearer <token>` header",
            ));
        };
        let expected = app.config.token.expose().as_bytes();
        if !bool::from(given.as_bytes().ct_eq(expected)) {
            return Err(self.error(
                ErrorKind::Unauthorized,
                format!("the Bearer token is not valid for app {:?}", app_id),
            ));
        }
        if app.limiter.check().is_err() {
            return Err(self.error(
                ErrorKind::TooManyRequests,
                format!(
                    "more than {} requests per second for app {:?}; slow down (see [api] rate_per_sec and burst)",
                    sim.config.api.rate_per_sec, app_id
                ),
            ));
        }
        Ok(app)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Echoing user input in errors is useful; echoing a megabyte of it is not.
fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// The provider's success envelope (docs/behaviour.md §8), `extra` flattened beside `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<D, E = NoExtra> {
    /// The route family: `/messages`, `/events` or `/callbacks`.
    pub path: String,
    /// The full request URI.
    pub uri: String,
    /// When the request arrived, Unix ms.
    pub timestamp: u64,
    /// The HTTP method, lowercase.
    pub action: String,
    /// The app id.
    pub application: String,
    /// The answer itself.
    pub data: D,
    /// How long the request took, ms.
    pub duration: u64,
    /// Route-specific fields beside `data` (storage/retry: `delivered`, `failed`).
    #[serde(flatten)]
    pub extra: E,
}

error_responses!(
    /// The errors of every app route: malformed request, token, unknown app, rate limit.
    AppErrors: BadRequest, Unauthorized, AppNotFound, TooManyRequests
);

/// No fields beside `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NoExtra {}

/// 400 `bad_request` with this description.
fn bad_request(ctx: &Ctx, msg: String) -> ApiError {
    ctx.error(ErrorKind::BadRequest, msg)
}

/// 400 naming the field of a request body that is wrong, and why.
fn field_error(ctx: &Ctx, e: crate::message::MessageError) -> ApiError {
    bad_request(ctx, format!("field `{}`: {}", e.field, e.reason))
}

/// Maps a body that could not be read: too large → 413, anything else → 400.
fn body_error(ctx: &Ctx, rejection: &axum::extract::rejection::BytesRejection, max: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ctx.error(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than {max} bytes (server.max_body_bytes)"),
        )
    } else {
        bad_request(
            ctx,
            format!("the request body could not be read: {}", rejection.body_text()),
        )
    }
}

/// Parses a query string into pairs, refusing keys not in `allowed`.
fn query_pairs(ctx: &Ctx, raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| bad_request(ctx, format!("malformed query string: {e}")))?;
    for (k, _) in &pairs {
        if !allowed.contains(&k.as_str()) {
            let hint = if allowed.is_empty() {
                "this route takes no query parameters".to_string()
            } else {
                format!("expected one of: {}", allowed.join(", "))
            };
            return Err(bad_request(
                ctx,
                format!("unknown query parameter {:?}; {hint}", truncate(k)),
            ));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower_service::Service;

    use crate::clock::ManualClock;
    use crate::config::{AppBuilder, Config, RuleBuilder};
    use crate::sim::Simulator;

    async fn get(router: &mut axum::Router, uri: &str) -> (u16, Value) {
        let req = Request::get(uri)
            .header("authorization", "Bearer tok")
            .body(Body::empty())
            .unwrap();
        let resp = router.call(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn answers_carry_the_simulators_clock() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::builder()
            .data_dir(dir.path())
            .app(AppBuilder::new("app", "tok").rule(RuleBuilder::post_send("sync", "http://127.0.0.1:9/cb", "s")))
            .build()
            .unwrap();
        let clock = Arc::new(ManualClock::new(1_500_000_000_123));
        let sim = Arc::new(Simulator::build_with(config, clock.clone(), None).unwrap());
        let mut router = super::router(sim.clone());
        let (status, ok) = get(&mut router, "/app-id/app/callbacks/rules").await;
        assert_eq!((status, &ok["timestamp"]), (200, &Value::from(1_500_000_000_123u64)));
        clock.advance(1000);
        let (status, err) = get(&mut router, "/app-id/nope/callbacks/rules").await;
        assert_eq!(status, 404);
        assert_eq!(err["error"], "app_not_found");
        assert_eq!(err["timestamp"], 1_500_000_001_123u64);
        let (status, err) = get(&mut router, "/no/such/route").await;
        assert_eq!((status, &err["error"]), (404, &Value::from("not_found")));
        assert_eq!(err["timestamp"], 1_500_000_001_123u64);
        sim.store().close().await;
    }
}
