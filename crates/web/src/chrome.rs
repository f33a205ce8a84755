//! What every page shares: who is looking at it ([`Visitor`]), the frame around the content
//! ([`Chrome`]: header, nav, log-out button), how a template becomes a response, and the
//! error pages ([`ErrorPage`]). Public: the wallet's and studio's pages use the same frame
//! (their templates extend this crate's `layout.html`).
//!
//! The site is for browsers: only a session signs someone in here. A request carrying an API
//! token is a program; it is treated as anonymous by the pages (programs use `/api/v1`).

use askama::Template;
use axum::{
    extract::FromRequestParts,
    response::{Html, IntoResponse, Response},
};
use http::{header, request::Parts, HeaderValue, StatusCode};
use rendermart_identity_api::{SessionId, UserId};
use rendermart_platform::{
    auth::{OptionalPrincipal, Principal, Via},
    http::Problem,
};

/// Someone signed in with a browser session.
#[derive(Clone, Debug)]
pub struct Member {
    pub principal: Principal,
    pub session_id: SessionId,
}

impl Member {
    pub fn user_id(&self) -> UserId {
        self.principal.user_id
    }

    /// The token signed-in forms carry in their hidden `csrf_token` field.
    pub fn csrf_token(&self) -> &str {
        self.principal.csrf_token().unwrap_or_default()
    }

    /// Constant-time check of a submitted form's token against the session's.
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        !submitted.is_empty() && self.principal.csrf_matches(submitted)
    }
}

/// Who is looking at the page: a signed-in member or nobody.
#[derive(Clone, Debug)]
pub struct Visitor(pub Option<Member>);

impl Visitor {
    pub fn chrome(&self) -> Chrome {
        Chrome {
            member: self.0.as_ref().map(|m| ChromeMember {
                display_name: m.principal.display_name.clone(),
                csrf_token: m.csrf_token().to_owned(),
            }),
            current: "",
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let OptionalPrincipal(principal) =
            OptionalPrincipal::from_request_parts(parts, state).await?;
        Ok(Self(principal.and_then(|principal| match principal.via {
            Via::Session { session_id, .. } => Some(Member {
                session_id: SessionId::from_uuid(session_id),
                principal,
            }),
            Via::ApiToken { .. } => None,
        })))
    }
}

/// A link in the header's navigation.
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    /// Shown only to signed-in members.
    pub members_only: bool,
}

/// The site's sections, in header order. A service's pages get a line here when they exist
/// (Orders next), never before: the nav must not lead to a 404. Store, Studio, Market,
/// Wallet and Offers are rendered by their services with this frame (decision 47).
const NAV: &[NavLink] = &[
    NavLink {
        href: "/",
        label: "Home",
        members_only: false,
    },
    NavLink {
        href: "/store",
        label: "Store",
        members_only: false,
    },
    NavLink {
        href: "/studio",
        label: "Studio",
        members_only: false,
    },
    NavLink {
        href: "/market",
        label: "Market",
        members_only: false,
    },
    NavLink {
        href: "/cart",
        label: "Cart",
        members_only: false,
    },
    NavLink {
        href: "/wallet",
        label: "Wallet",
        members_only: true,
    },
    NavLink {
        href: "/offers",
        label: "Offers",
        members_only: true,
    },
    NavLink {
        href: "/account",
        label: "Account",
        members_only: true,
    },
];

/// The frame around every page: what `layout.html` needs.
#[derive(Clone, Debug, Default)]
pub struct Chrome {
    pub member: Option<ChromeMember>,
    /// The nav link of the page being shown (marked `aria-current`), if it has one.
    pub current: &'static str,
}

#[derive(Clone, Debug)]
pub struct ChromeMember {
    pub display_name: String,
    /// For the header's log-out form.
    pub csrf_token: String,
}

impl Chrome {
    /// The same frame, for the page at nav link `href`.
    pub fn at(mut self, href: &'static str) -> Self {
        self.current = href;
        self
    }

    /// The nav links this visitor may follow.
    pub fn nav(&self) -> Vec<&'static NavLink> {
        NAV.iter()
            .filter(|link| !link.members_only || self.member.is_some())
            .collect()
    }
}

/// A rendered page with its status. Rendering cannot fail for our templates short of a bug;
/// if it does, the visitor gets a bare 500 rather than a panic.
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>Something went wrong on our side."),
            )
                .into_response()
        }
    }
}

/// Marks a response as never to be stored (personal data, forms with tokens).
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A `303 See Other` to a local path: the answer to a successful form post.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::try_from(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
    }
}

/// The pages' content security policy: only this site's stylesheet, images and one
/// same-origin script (`/static/live.js`, which opens same-origin event streams); no inline
/// script or style, no remote resource; forms post only here; no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every page gets: no framing (clickjacking), no sniffing, no inline script and no
/// remote resource, forms post only to this site, and no full URLs leaked to other sites.
/// Every service's page router installs it (`axum::middleware::map_response`).
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// An error shown as a page in the site's frame.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    /// Where to go from here: (href, label).
    pub link: Option<(&'static str, &'static str)>,
    pub retry_after_secs: Option<u64>,
}

impl ErrorPage {
    pub fn new(
        chrome: Chrome,
        status: StatusCode,
        title: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            chrome,
            status,
            title,
            message: message.into(),
            link: None,
            retry_after_secs: None,
        }
    }

    pub fn link(mut self, href: &'static str, label: &'static str) -> Self {
        self.link = Some((href, label));
        self
    }

    pub fn not_found(chrome: Chrome, message: impl Into<String>) -> Self {
        Self::new(chrome, StatusCode::NOT_FOUND, "Page not found", message)
            .link("/", "Go to the home page")
    }

    /// A signed-in form whose token does not match the session (a forged cross-site post,
    /// or a form left open across a log-in).
    pub fn session_csrf(chrome: Chrome) -> Self {
        Self::new(
            chrome,
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form was sent without a valid security token, so nothing was changed. \
             Reload the page and try again.",
        )
        .link("/account", "Back to your account")
    }

    /// An anonymous form without a matching double-submit cookie.
    pub fn anonymous_csrf(chrome: Chrome, form: &'static str) -> Self {
        Self::new(
            chrome,
            StatusCode::FORBIDDEN,
            "Please reload the form",
            "The form was sent without a valid security token (it may have been open too \
             long, or cookies are blocked), so nothing was sent. Reload the form and try again.",
        )
        .link(form, "Reload the form")
    }

    /// A service's problem as a page: its title, its sentence for the person, its status
    /// and `Retry-After`. (Internal errors carry only a generic sentence; the cause was
    /// logged where the problem was made.)
    pub fn from_problem(chrome: Chrome, problem: Problem) -> Self {
        let status = problem.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Self::rate_limited(chrome, problem.retry_after_secs().unwrap_or(1));
        }
        let title: &'static str = match status.as_u16() {
            400 | 422 => "Please check what you entered",
            401 => "Please log in",
            403 => "Not allowed",
            404 => "Not found",
            409 => "That cannot be done right now",
            503 => "Temporarily unavailable",
            s if s >= 500 => "Something went wrong",
            _ => "That did not work",
        };
        let message = problem
            .detail
            .clone()
            .unwrap_or_else(|| problem.title.clone());
        let mut page = Self::new(chrome, status, title, message).link("/", "Go to the home page");
        page.retry_after_secs = problem.retry_after_secs();
        page
    }

    pub fn rate_limited(chrome: Chrome, retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        let mut page = Self::new(
            chrome,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            format!(
                "There have been too many attempts. Wait {} and try again.",
                wait_label(secs)
            ),
        );
        page.retry_after_secs = Some(secs);
        page
    }

    /// An unexpected failure: logged with its cause; the visitor learns only that it happened.
    pub fn internal(chrome: Chrome, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "page failed");
        Self::new(
            chrome,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Something went wrong on our side. It has been logged; please try again in a moment.",
        )
        .link("/", "Go to the home page")
    }
}

/// Any service's error, as a page in the site's frame: its problem (status, title, the
/// sentence for the person, `Retry-After`), with a way on.
pub fn problem_page(chrome: Chrome, err: impl Into<Problem>) -> Response {
    ErrorPage::from_problem(chrome, err.into()).into_response()
}

fn wait_label(secs: u64) -> String {
    match secs {
        1 => "1 second".to_owned(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let mut response = no_store(page(self.status, &self));
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
