//! The app-wide fallback: people get an HTML 404 in the site's frame, API clients (any
//! `/api/` path) a problem+json 404. The binary sets it once on the merged router.

use axum::{
    extract::OriginalUri,
    response::{IntoResponse, Response},
    routing::{any, MethodRouter},
};
use rendermart_platform::http::Problem;

use crate::chrome::{security_headers, ErrorPage, Visitor};

/// The fallback for the whole app, to set on the merged router:
/// `app.fallback(rendermart_web::fallback())` (or `.fallback_service(..)`).
pub fn fallback() -> MethodRouter {
    any(not_found_page)
}

/// 404 for any path no router matched, in the form the caller reads.
pub async fn not_found_page(visitor: Visitor, OriginalUri(uri): OriginalUri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return Problem::not_found("No such API endpoint.").into_response();
    }
    let page = ErrorPage::not_found(
        visitor.chrome(),
        "There is no page at this address. The link may be mistyped, or the page may have moved.",
    );
    security_headers(page.into_response()).await
}
