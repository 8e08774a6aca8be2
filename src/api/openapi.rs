//! `GET /openapi.json`: the OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the request/response types — never written by hand beside them.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "callback-sim", description = "The REST API of callback-sim: the provider's storage routes and the simulation's own."),
    paths(
        super::messages::post_message,
        super::messages::post_event,
        super::rules::get_rules,
        super::rules::reset_rule,
        super::storage::info,
        super::storage::retry,
        super::storage::items,
        super::storage::delete_bucket,
        super::history::history,
        super::history::stream,
        super::history::resend,
        super::ops::healthz,
        super::ops::metrics,
        super::ops::openapi,
        super::ops::catalog,
    ),
    components(schemas(super::NoExtra, super::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Every app route takes `Authorization: Bearer {token}` of its app.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_described() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/app-id/{app_id}/messages",
            "/app-id/{app_id}/events",
            "/app-id/{app_id}/callbacks/rules",
            "/app-id/{app_id}/callbacks/rules/{rule}/reset",
            "/app-id/{app_id}/callbacks/storage",
            "/app-id/{app_id}/callbacks/storage/info",
            "/app-id/{app_id}/callbacks/storage/retry",
            "/app-id/{app_id}/callbacks/storage/items",
            "/app-id/{app_id}/callbacks/history",
            "/app-id/{app_id}/callbacks/stream",
            "/app-id/{app_id}/callbacks/resend",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/catalog",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for s in [
            "MessageRequest",
            "EventRequest",
            "CallbackReport",
            "ErrorBody",
            "BucketInfo",
            "EntryView",
            "AttemptView",
            "RequestView",
            "ResendRequest",
        ] {
            assert!(
                schemas.contains_key(s),
                "schema {s} missing: {:?}",
                schemas.keys().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn each_route_documents_the_errors_it_answers() {
        let doc = serde_json::to_value(super::document()).unwrap();
        for (path, method, statuses) in [
            ("/app-id/{app_id}/messages", "post", "200 400 401 404 413 429 503"),
            ("/app-id/{app_id}/events", "post", "200 400 401 404 413 429 503"),
            ("/app-id/{app_id}/callbacks/rules", "get", "200 400 401 404 429"),
            (
                "/app-id/{app_id}/callbacks/rules/{rule}/reset",
                "post",
                "200 400 401 404 429 503",
            ),
            (
                "/app-id/{app_id}/callbacks/storage",
                "delete",
                "200 400 401 403 404 409 429 503",
            ),
            (
                "/app-id/{app_id}/callbacks/storage/info",
                "get",
                "200 400 401 403 404 429",
            ),
            (
                "/app-id/{app_id}/callbacks/storage/items",
                "get",
                "200 400 401 403 404 429 503",
            ),
            ("/app-id/{app_id}/callbacks/history", "get", "200 400 401 404 429"),
            ("/app-id/{app_id}/callbacks/stream", "get", "200 400 401 404 429"),
            (
                "/app-id/{app_id}/callbacks/resend",
                "post",
                "200 400 401 404 413 429 503",
            ),
            (
                "/app-id/{app_id}/callbacks/storage/retry",
                "post",
                "200 400 401 403 404 409 413 429 503",
            ),
        ] {
            let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
            let got: Vec<&str> = responses.keys().map(String::as_str).collect();
            assert_eq!(got.join(" "), statuses, "{method} {path}");
            if path.ends_with("/reset") {
                assert_eq!(
                    responses["404"]["description"],
                    super::super::ErrorKind::RuleNotFound.description(),
                    "the 404 of a reset also means an unknown rule"
                );
            }
            for (status, r) in responses.iter().filter(|(s, _)| *s != "200") {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}
