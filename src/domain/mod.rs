//! Domain types: validated names, the callback URL, the store's date key and the closed
//! vocabularies of `docs/behaviour.md §1` to `§5`.
//!
//! Everything here is parsed once at the edge (config, REST bodies) and trusted inside:
//! an `AppId` or a `RuleName` that exists is valid.
//!
//! - `names`: [`AppId`], [`RuleName`];
//! - `url`: [`CallbackUrl`], with the request URI, `Authorization` and `Host` each attempt sends;
//! - `date_key`: [`DateKey`], the 10-minute bucket key of the exception store;
//! - `vocabulary`: the `vocabulary!` macro and every closed vocabulary ([`Outcome`],
//!   [`Dialect`], [`ChatType`], …).

/// Describes a validated string type in the OpenAPI document (`GET /openapi.json`).
macro_rules! string_schema {
    ($name:ident, $desc:literal) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($desc))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

mod date_key;
mod names;
mod url;
mod vocabulary;

pub use date_key::DateKey;
pub use names::{AppId, RuleName};
pub(crate) use url::http1_host;
pub use url::{CallbackUrl, mask_password};
pub use vocabulary::{
    ChatType, Dialect, EventType, FinalOutcome, GroupType, JoinType, MessageType, OnFailure, Outcome, Platform,
    RuleKind, RuleStatus, Source,
};

/// Why a value could not become a domain type; the caller adds where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);
