//! The stylesheet and the logo, compiled into the binary: the site needs no files on disk,
//! no build step and no network.

use axum::response::IntoResponse;
use http::header;

const STYLESHEET: &str = include_str!("../static/app.css");
const LOGO: &str = include_str!("../static/logo.svg");

/// An hour: short enough that a deploy shows up soon, long enough to spare most requests.
const CACHE: &str = "public, max-age=3600";

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        STYLESHEET,
    )
}

/// Also the favicon.
pub async fn logo() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, CACHE),
        ],
        LOGO,
    )
}
