//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 description of every endpoint.
//!
//! The document is written by hand (`openapi.json` beside this file) and embedded at build
//! time. A test here fails when the router and the document disagree about which paths and
//! methods exist, and `tests/openapi.rs` runs schemathesis against a live server to check that
//! answers match what the document says.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Changes with every build that changes the API: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCUMENT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// `METHOD /path` for every route in `routes()`, read from the source of `mod.rs`.
    ///
    /// Why parse source: axum cannot list a router's routes (and `Routes` keeps templates and kinds, not
    /// methods). The routes before `let top = Routes::new()` in `routes()` are nested under
    /// `/api/v1` (asserted below); `{*rest}` wildcards are written `{rest}` in OpenAPI.
    fn router_routes() -> BTreeSet<String> {
        let src = include_str!("mod.rs");
        let start = src.find("fn routes(").expect("routes() in mod.rs");
        let body = &src[start..];
        let body = &body[..body.find("\n}\n").expect("end of routes()")];
        let outer = body
            .rfind("let top = Routes::new()")
            .expect("the outer routes: let top = Routes::new()");
        assert!(
            body[outer..].contains(".nest(API_PREFIX, api)")
                && src.contains("API_PREFIX: &str = \"/api/v1\""),
            "routes() no longer nests the inner routers at /api/v1; update this test"
        );
        let mut out = BTreeSet::new();
        let mut rest = body;
        let mut offset = 0;
        while let Some(i) = rest.find(".route(") {
            let call = &rest[i + ".route(".len()..];
            let q1 = call.find('"').expect("route path literal");
            let q2 = q1 + 1 + call[q1 + 1..].find('"').expect("closing quote");
            let path = call[q1 + 1..q2].replace("{*", "{");
            // The handler expression runs to the `.route(`/`.layer(`/`;` that follows.
            let tail = &call[q2..];
            let end = [".route(", ".layer(", ".nest(", ".fallback(", ";"]
                .iter()
                .filter_map(|m| tail.find(m))
                .min()
                .unwrap_or(tail.len());
            let handlers = &tail[..end];
            let prefix = if offset + i < outer { "/api/v1" } else { "" };
            let mut methods = 0;
            for m in ["get", "post", "put", "patch", "delete"] {
                // `get(h)`, `.post(h)`, `axum::routing::delete(h)`.
                if handlers.contains(&format!("{m}(")) {
                    out.insert(format!("{} {prefix}{path}", m.to_uppercase()));
                    methods += 1;
                }
            }
            assert!(methods > 0, "no method found for route {path}: {handlers}");
            offset += i + ".route(".len();
            rest = &rest[i + ".route(".len()..];
        }
        out
    }

    fn documented_routes(doc: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, _) in item.as_object().expect("path item") {
                if ["get", "post", "put", "patch", "delete", "head", "options"]
                    .contains(&method.as_str())
                {
                    out.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        out
    }

    #[test]
    fn document_is_openapi_3() {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        for key in ["securitySchemes", "schemas", "responses", "parameters"] {
            assert!(doc["components"][key].is_object(), "components.{key}");
        }
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        for s in ["bearerAuth", "basicAuth", "playbackToken"] {
            assert!(schemes.contains_key(s), "security scheme {s}");
        }
        // The error shape of http::error, exactly.
        let err = &doc["components"]["schemas"]["Error"];
        assert_eq!(err["required"], serde_json::json!(["error"]));
        assert_eq!(
            err["properties"]["error"]["required"],
            serde_json::json!(["code", "message"])
        );
        // Every operation has an id and at least one response; every $ref resolves.
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, o) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let id = o["operationId"].as_str().unwrap_or_else(|| {
                    panic!("{method} {path} has no operationId");
                });
                assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
                assert!(
                    o["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path} has no responses"
                );
            }
        }
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local $ref");
            assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc: Value = serde_json::from_str(DOCUMENT).unwrap();
        let routes = router_routes();
        let documented = documented_routes(&doc);
        assert!(routes.contains("GET /api/v1/openapi.json"), "{routes:?}");
        assert!(routes.contains("GET /healthz"), "{routes:?}");
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes in src/http/mod.rs missing from src/http/openapi.json: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(
            extra.is_empty(),
            "operations in src/http/openapi.json that the router does not have: {extra:?}"
        );
    }

    /// Every error kind's code is in the document's `Error.code` enum (a new kind does not
    /// compile here until it is listed, and then fails until it is documented).
    #[test]
    fn every_error_code_is_documented() {
        use crate::error::Kind;
        let all = [
            Kind::InvalidArgument,
            Kind::NotFound,
            Kind::Conflict,
            Kind::FailedPrecondition,
            Kind::TooLarge,
            Kind::UnsupportedMedia,
            Kind::DeadlineExceeded,
            Kind::Unavailable,
            Kind::ResourceExhausted,
            Kind::Unauthenticated,
            Kind::PermissionDenied,
            Kind::Internal,
        ];
        for k in all {
            match k {
                Kind::InvalidArgument
                | Kind::NotFound
                | Kind::Conflict
                | Kind::FailedPrecondition
                | Kind::TooLarge
                | Kind::UnsupportedMedia
                | Kind::DeadlineExceeded
                | Kind::Unavailable
                | Kind::ResourceExhausted
                | Kind::Unauthenticated
                | Kind::PermissionDenied
                | Kind::Internal => {}
            }
        }
        let doc: Value = serde_json::from_str(DOCUMENT).unwrap();
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"];
        for k in all {
            assert!(
                codes.as_array().unwrap().iter().any(|c| c == k.code()),
                "{} is not in the Error.code enum",
                k.code()
            );
        }
    }
}
