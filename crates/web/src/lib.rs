//! The server-rendered site: the pages people use in a browser (home, sign-up, log-in,
//! account with API tokens, log-out), its layout, stylesheet and logo.
//!
//! Pages talk to services only through their client traits ([`IdentityApi`] for now, from
//! `rendermart-identity-api`: the web crate never links identity's storage or hashing), so
//! they work the same whether identity runs in this process or elsewhere. They work without
//! JavaScript. Every form is protected against cross-site requests by its extractor
//! (see [`form`]): signed-in forms carry the session's CSRF token, anonymous ones a signed
//! double-submit cookie (see [`csrf`]). Any service's error becomes a page the same way: its
//! problem (the mapping every service already has for its API) shown in the site's frame.
//! Its public face:
//!
//! * [`WebService`] — the service the binary lists (it uses identity);
//! * [`router`] — every page, with its state; the binary merges it with the API routers and
//!   installs `platform::auth::layer` over the whole app, which is how pages learn who is
//!   signed in;
//! * [`fallback`] / [`not_found_page`] — the app-wide 404: an HTML page for people, a
//!   problem+json for `/api/` paths. Set it once on the merged router
//!   (`app.fallback(rendermart_web::fallback())`); [`router`] sets none, since two merged
//!   routers cannot both have one;
//! * [`WebConfig`] — its settings;
//! * the frame other crates render their pages in (decision 47: each service renders its
//!   own pages): [`chrome`] ([`Visitor`], [`Chrome`], [`page`], [`ErrorPage`],
//!   [`problem_page`], [`security_headers`]…), the `layout.html` their templates extend
//!   (askama `dirs` in their `askama.toml`), and the [`form`] extractors. The stylesheet
//!   and `/static/live.js` (live updates over server-sent events for elements marked
//!   `data-live-src`) are served here.

mod assets;
pub mod chrome;
pub mod csrf;
pub mod form;
mod next;
mod pages;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};
use rendermart_identity_api::IdentityApi;
use rendermart_platform::service::{Context, Service, Started};
use serde::{Deserialize, Serialize};

pub use chrome::{
    no_store, page, problem_page, security_headers, see_other, Chrome, ErrorPage, Member, Visitor,
};
pub use pages::not_found::{fallback, not_found_page};

/// The site's settings.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Mark cookies `Secure` (the site is served over HTTPS). Requests that arrive through a
    /// TLS-terminating proxy (`X-Forwarded-Proto: https`) get secure cookies either way.
    pub cookie_secure: bool,
    /// Signs the anonymous forms' CSRF cookie.
    pub form_key: csrf::FormKey,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            cookie_secure: false,
            form_key: csrf::FormKey::random(),
        }
    }
}

/// The `[web]` section: nothing yet (the site reads the process-wide settings).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSection {}

/// The web service: the pages, for the binary's list of services.
pub struct WebService;

impl Service for WebService {
    const NAME: &'static str = "web";
    const USES: &'static [&'static str] = &[rendermart_identity_api::SERVICE];
    type Config = WebSection;

    async fn start(ctx: Context<WebSection>) -> anyhow::Result<Started> {
        let identity = ctx
            .clients
            .require::<dyn IdentityApi>(rendermart_identity_api::SERVICE)?;
        let form_key = csrf::FormKey::for_process(ctx.shared.service_secret.as_ref());
        let config = WebConfig {
            cookie_secure: ctx.shared.cookie_secure,
            form_key,
        };
        Ok(Started {
            routes: router_with(identity, config, ctx.clients.clone()),
            ..Started::default()
        })
    }
}

/// What every page handler shares.
#[derive(Clone)]
pub(crate) struct Site {
    pub identity: Arc<dyn IdentityApi>,
    pub config: WebConfig,
    /// The process's clients, looked up when a page needs one that starts after web (the
    /// cart, to adopt a guest cart at log-in).
    pub clients: rendermart_platform::service::Clients,
}

/// Every page of the site. No fallback: see [`fallback`].
pub fn router(identity: Arc<dyn IdentityApi>, config: WebConfig) -> Router {
    router_with(
        identity,
        config,
        rendermart_platform::service::Clients::new(),
    )
}

/// [`router`], with the process's clients (the log-in page adopts a guest cart through the
/// cart's client when the cart runs here).
pub fn router_with(
    identity: Arc<dyn IdentityApi>,
    config: WebConfig,
    clients: rendermart_platform::service::Clients,
) -> Router {
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
        .route("/static/live.js", get(assets::live_script))
        .layer(axum::middleware::map_response(chrome::security_headers))
        .with_state(Site {
            identity,
            config,
            clients,
        })
}
