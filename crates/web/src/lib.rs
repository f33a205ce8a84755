//! The server-rendered site: the pages people use in a browser (home, sign-up, log-in,
//! account with API tokens, log-out), its layout, stylesheet and logo.
//!
//! Pages talk to services only through their client traits ([`IdentityApi`] for now), and
//! work without JavaScript. Every form is protected against cross-site requests: signed-in
//! forms carry the session's CSRF token, anonymous ones a double-submit cookie
//! (see [`csrf`]). Its public face:
//!
//! * [`router`] — every page, with its state; the binary merges it with the API routers and
//!   installs `platform::auth::layer` over the whole app, which is how pages learn who is
//!   signed in;
//! * [`fallback`] / [`not_found_page`] — the app-wide 404: an HTML page for people, a
//!   problem+json for `/api/` paths. Set it once on the merged router
//!   (`app.fallback(rendermart_web::fallback())`); [`router`] sets none, since two merged
//!   routers cannot both have one;
//! * [`WebConfig`] — its settings.

mod assets;
mod chrome;
pub mod csrf;
mod form;
mod next;
mod pages;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};
use rendermart_identity::IdentityApi;

pub use pages::not_found::{fallback, not_found_page};

/// The site's settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebConfig {
    /// Mark cookies `Secure` (the site is served over HTTPS). Requests that arrive through a
    /// TLS-terminating proxy (`X-Forwarded-Proto: https`) get secure cookies either way.
    pub cookie_secure: bool,
}

/// What every page handler shares.
#[derive(Clone)]
pub(crate) struct Site {
    pub identity: Arc<dyn IdentityApi>,
    pub config: WebConfig,
}

/// Every page of the site. No fallback: see [`fallback`].
pub fn router(identity: Arc<dyn IdentityApi>, config: WebConfig) -> Router {
    Router::new()
        .route("/", get(pages::home::show))
        .route(
            "/signup",
            get(pages::signup::show).post(pages::signup::submit),
        )
        .route("/login", get(pages::login::show).post(pages::login::submit))
        .route("/logout", post(pages::logout::submit))
        .route("/account", get(pages::account::show))
        .route("/account/tokens", post(pages::account::create_token))
        .route(
            "/account/tokens/{id}/revoke",
            post(pages::account::revoke_token),
        )
        .route("/static/app.css", get(assets::stylesheet))
        .route("/static/logo.svg", get(assets::logo))
        .layer(axum::middleware::map_response(chrome::security_headers))
        .with_state(Site { identity, config })
}
