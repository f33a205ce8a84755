//! The root OpenAPI document: API-wide info and security schemes. Each service's own
//! document (generated from its handlers by utoipa) is merged into it at start-up, for the
//! services this process runs, and served at `/api/v1/openapi.json`.

use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RenderMart API",
        description = "Generate images, own them, trade them; and a store for prints and goods. \
                       Errors are RFC 9457 problem+json. Session-cookie requests that change \
                       state must send X-CSRF-Token.",
        version = "1"
    ),
    modifiers(&SecuritySchemes)
)]
struct RootDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from POST /api/v1/tokens"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                rendermart_platform::auth::SESSION_COOKIE,
            ))),
        );
    }
}

pub fn root() -> utoipa::openapi::OpenApi {
    RootDoc::openapi()
}

/// Declares the problems the shared edge can answer on any route, so each handler lists
/// only its own: every operation with a JSON body can get 400 (not JSON), 413 (too large),
/// 415 (not `application/json`) and 422 (wrong fields); every operation with a security
/// requirement can get 401. Run once on the merged document.
pub fn add_edge_problems(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{path::Operation, ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
    fn problem(description: &str) -> RefOr<Response> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    }
    fn add(op: &mut Operation) {
        let mut missing = |status: &str, description: &str| {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| problem(description));
        };
        if op.request_body.is_some() {
            missing("400", "The body is not valid JSON");
            missing("413", "The body is larger than the API accepts");
            missing("415", "The body is not sent as application/json");
            missing(
                "422",
                "The body's fields are missing, of the wrong type or invalid",
            );
        }
        if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
            missing("401", "Not signed in, or the token is unknown or revoked");
        }
    }
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add(op);
        }
    }
}
