//! The REST API (SPEC §8): the provider's envelope, its error body, Bearer auth, the per-app
//! rate limit, and one `router()` per area merged in [`router`].
//!
//! Checks run in the SPEC's order: body over `max_body_bytes` → 413, unknown app → 404, token
//! → 401, rate limit → 429, store off → 403, then the request itself → 400.

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

use crate::clock::{Clock, SystemClock};
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
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(sim)
}

/// What every answer needs from its request: when it started, and where it was sent.
#[derive(Debug, Clone)]
pub struct Ctx {
    started: Instant,
    timestamp: u64,
    action: String,
    uri: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        Ok(Ctx {
            started: Instant::now(),
            timestamp: SystemClock.now_ms(),
            action: parts.method.as_str().to_ascii_lowercase(),
            uri: format!("http://{host}{pq}"),
        })
    }
}

impl Ctx {
    fn duration_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// An error answer (SPEC §8 error body).
    pub fn error(&self, status: StatusCode, code: &'static str, description: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: code,
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

    /// 404 / 401 / 429 for an app-scoped route (SPEC §8 order), or the app.
    pub fn authorize<'a>(
        &self,
        sim: &'a Simulator,
        app_id: &str,
        headers: &HeaderMap,
    ) -> Result<&'a Arc<AppRuntime>, ApiError> {
        let Some(app) = sim.apps.get(app_id) else {
            return Err(self.error(
                StatusCode::NOT_FOUND,
                "app_not_found",
                format!(
                    "no app {:?} is configured; check the app id in the URL",
                    truncate(app_id)
                ),
            ));
        };
        let Some(given) = bearer(headers) else {
            return Err(self.error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `Authorization: Bearer <token>` header",
            ));
        };
        let expected = app.config.token.expose().as_bytes();
        if !bool::from(given.as_bytes().ct_eq(expected)) {
            return Err(self.error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("the Bearer token is not valid for app {:?}", app_id),
            ));
        }
        if app.limiter.check().is_err() {
            return Err(self.error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
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

/// The provider's success envelope (SPEC §8), `extra` flattened beside `data`.
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

/// The answers every app route can give, in the SPEC §8 order, for the OpenAPI document
/// (the variants describe; `ApiError` builds the actual answers).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AppErrors {
    /// Malformed body, query, date key, bucket or URL: the description names the field.
    #[response(status = 400, description = "Malformed request: the description names the field")]
    BadRequest(ErrorBody),
    /// Missing or wrong `Authorization: Bearer {token}`.
    #[response(status = 401, description = "Missing or wrong Bearer token")]
    Unauthorized(ErrorBody),
    /// No such app.
    #[response(status = 404, description = "Unknown app")]
    UnknownApp(ErrorBody),
    /// The app's rate limit (and, on ingestion, a full delivery queue).
    #[response(status = 429, description = "Rate limit (or, on ingestion, a full delivery queue)")]
    TooManyRequests(ErrorBody),
}

/// No fields beside `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NoExtra {}

/// The error body (SPEC §8).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A short code: `bad_request`, `unauthorized`, `app_not_found`, `too_many_requests`, …
    error: &'static str,
    /// What is wrong and what to do, naming the field.
    error_description: String,
    /// When the request arrived, Unix ms.
    timestamp: u64,
    /// How long the request took, ms.
    duration: u64,
}

/// An error answer: status plus the SPEC §8 error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Maps a body that could not be read: too large → 413, anything else → 400.
/// 400 `bad_request` with this description.
fn bad_request(ctx: &Ctx, msg: String) -> ApiError {
    ctx.error(StatusCode::BAD_REQUEST, "bad_request", msg)
}

/// 400 naming the field of a request body that is wrong, and why.
fn field_error(ctx: &Ctx, e: crate::message::MessageError) -> ApiError {
    bad_request(ctx, format!("field `{}`: {}", e.field, e.reason))
}

fn body_error(ctx: &Ctx, rejection: &axum::extract::rejection::BytesRejection, max: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ctx.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
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
