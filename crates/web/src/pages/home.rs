//! `GET /`: what RenderMart is, and the way in (sign up, log in) or on (your account).

use askama::Template;
use axum::response::Response;
use http::StatusCode;

use crate::chrome::{no_store, page, Chrome, Visitor};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
}

pub async fn show(visitor: Visitor) -> Response {
    let signed_in = visitor.0.is_some();
    let response = page(
        StatusCode::OK,
        &HomePage {
            chrome: visitor.chrome().at("/"),
        },
    );
    // The header names a signed-in member: not for shared caches.
    if signed_in {
        no_store(response)
    } else {
        response
    }
}
