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
