//! The stylesheet, the logo and the one script (live updates, an enhancement: every page
//! works without it), compiled into the binary: the site needs no files on disk, no build
//! step and no network.

use axum::response::IntoResponse;
use http::header;

const STYLESHEET: &str = include_str!("../static/app.css");
const LOGO: &str = include_str!("../static/logo.svg");
const LIVE_SCRIPT: &str = include_str!("../static/live.js");

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

/// Live updates over server-sent events; see the file's own header for the contract.
pub async fn live_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        LIVE_SCRIPT,
    )
}
