//! The API's errors: every way a request can fail is one [`ErrorKind`], which knows its HTTP
//! status, its `error` code and how the OpenAPI document describes it. Handlers answer an
//! [`ApiError`] (a kind, plus the error body of `docs/behaviour.md §8`); each route's OpenAPI
//! error responses are generated from the kinds it lists ([`error_responses!`]).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::response::{Response as DocResponse, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

/// Why a request failed. The `error` code of the body and the HTTP status follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400 `bad_request`: a malformed body, query, date key, bucket or URL.
    BadRequest,
    /// 401 `unauthorized`: a missing or wrong Bearer token.
    Unauthorized,
    /// 403 `store_disabled`: the app has `exception_store = false`.
    StoreDisabled,
    /// 404 `app_not_found`: no app with that id is configured.
    AppNotFound,
    /// 404 `rule_not_found`: the app has no rule of that name.
    RuleNotFound,
    /// 404 `callback_not_found`: no callback of that callId in the history or the store.
    CallbackNotFound,
    /// 404 `not_found`: no such route.
    NotFound,
    /// 405 `method_not_allowed`: the route does not take that method.
    MethodNotAllowed,
    /// 409 `replay_in_progress`: the bucket is being replayed.
    ReplayInProgress,
    /// 413 `payload_too_large`: a body over `server.max_body_bytes`.
    PayloadTooLarge,
    /// 429 `too_many_requests`: the app's rate limit (`[api] rate_per_sec`, `burst`).
    TooManyRequests,
    /// 429 `queue_full`: the delivery queue is full (`delivery.queue_capacity`).
    QueueFull,
    /// 503 `shutting_down`: the simulator is stopping and takes no new messages.
    ShuttingDown,
    /// 503 `store_unavailable`: the exception store could not be read or written.
    StoreUnavailable,
}

impl ErrorKind {
    /// Every kind, in status order.
    #[cfg(test)]
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::StoreDisabled,
        ErrorKind::AppNotFound,
        ErrorKind::RuleNotFound,
        ErrorKind::CallbackNotFound,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::ReplayInProgress,
        ErrorKind::PayloadTooLarge,
        ErrorKind::TooManyRequests,
        ErrorKind::QueueFull,
        ErrorKind::ShuttingDown,
        ErrorKind::StoreUnavailable,
    ];

    /// The HTTP status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::StoreDisabled => StatusCode::FORBIDDEN,
            ErrorKind::AppNotFound | ErrorKind::RuleNotFound | ErrorKind::CallbackNotFound | ErrorKind::NotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::ReplayInProgress => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooManyRequests | ErrorKind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::ShuttingDown | ErrorKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` field of the body.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::StoreDisabled => "store_disabled",
            ErrorKind::AppNotFound => "app_not_found",
            ErrorKind::RuleNotFound => "rule_not_found",
            ErrorKind::CallbackNotFound => "callback_not_found",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::ReplayInProgress => "replay_in_progress",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::StoreUnavailable => "store_unavailable",
        }
    }

    /// How the OpenAPI document describes the answer. Where a route lists several kinds of one
    /// status, the first one listed describes that status (so the 429 of the rate limit also
    /// says that ingestion answers it for a full queue).
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Malformed request: the description names the field",
            ErrorKind::Unauthorized => "Missing or wrong Bearer token",
            ErrorKind::StoreDisabled => "The app keeps no exception store",
            ErrorKind::AppNotFound => "Unknown app",
            ErrorKind::RuleNotFound => "Unknown app, or the app has no rule of that name",
            ErrorKind::CallbackNotFound => "Unknown app, or no callback of that callId in the history or the store",
            ErrorKind::NotFound => "No such route",
            ErrorKind::MethodNotAllowed => "The route does not take that HTTP method",
            ErrorKind::ReplayInProgress => "This bucket is being replayed",
            ErrorKind::PayloadTooLarge => "Body over server.max_body_bytes",
            ErrorKind::TooManyRequests => "Rate limit (or, on ingestion, a full delivery queue)",
            ErrorKind::QueueFull => "The delivery queue is full (delivery.queue_capacity)",
            ErrorKind::ShuttingDown => "The simulator is stopping",
            ErrorKind::StoreUnavailable => "The exception store could not be read or written",
        }
    }

    /// The OpenAPI responses of a route that can fail with `kinds`: one per status, with the
    /// [`ErrorBody`] schema.
    pub fn responses(kinds: &[ErrorKind]) -> BTreeMap<String, RefOr<DocResponse>> {
        let mut out = BTreeMap::new();
        for kind in kinds {
            out.entry(kind.status().as_u16().to_string()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description(kind.description())
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
        }
        out
    }
}

/// Declares a type whose OpenAPI responses are the errors of `kinds` (for a handler's
/// `#[utoipa::path(responses(...))]`).
macro_rules! error_responses {
    ($(#[$meta:meta])* $name:ident: $($kind:ident),+ $(,)?) => {
        $(#[$meta])*
        pub(crate) struct $name;

        impl $name {
            /// The kinds, in the order they are listed.
            pub(crate) const KINDS: &'static [$crate::api::ErrorKind] = &[$($crate::api::ErrorKind::$kind),+];
        }

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::api::ErrorKind::responses(Self::KINDS)
            }
        }
    };
}
pub(super) use error_responses;

/// The error body (docs/behaviour.md §8).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A short code: `bad_request`, `unauthorized`, `app_not_found`, `too_many_requests`, …
    pub(super) error: &'static str,
    /// What is wrong and what to do, naming the field.
    pub(super) error_description: String,
    /// When the request arrived, Unix ms.
    pub(super) timestamp: u64,
    /// How long the request took, ms.
    pub(super) duration: u64,
}

/// An error answer: its kind (the status) and the error body.
#[derive(Debug)]
pub struct ApiError {
    pub(super) kind: ErrorKind,
    pub(super) body: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.kind.status(), axum::Json(self.body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_an_error_status() {
        let codes: HashSet<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        for k in ErrorKind::ALL {
            assert!(k.status().is_client_error() || k.status().is_server_error(), "{k:?}");
            assert!(k.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{k:?}");
        }
    }

    #[test]
    fn kinds_of_one_status_share_a_response_described_by_the_first() {
        let r = ErrorKind::responses(&[ErrorKind::TooManyRequests, ErrorKind::QueueFull, ErrorKind::BadRequest]);
        assert_eq!(r.keys().collect::<Vec<_>>(), ["400", "429"]);
        let v = serde_json::to_value(&r["429"]).unwrap();
        assert_eq!(v["description"], ErrorKind::TooManyRequests.description());
        assert_eq!(
            v["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
