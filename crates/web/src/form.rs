//! Reading posted forms. Every handler that takes a form takes one of these extractors, so
//! its CSRF token is checked before the handler runs, never by hand:
//!
//! * [`MemberForm<T>`]: a form of a signed-in member, carrying the session's CSRF token;
//! * [`GuestForm<T>`]: a form anyone may post (sign-up, log-in), carrying the signed
//!   double-submit token of [`crate::csrf`];
//! * [`HtmlForm<T>`]: the form body alone (rejections are error pages, 400/413/422, never a
//!   500), used by the two above.
//!
//! Form structs give every field a default, so a missing field reads as empty and gets the
//! same friendly message as an empty one; only a body that is not a form at all is rejected.

use axum::{
    extract::{rejection::FormRejection, FromRequest, FromRequestParts, Request},
    response::{IntoResponse, Response},
    Form,
};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{
    chrome::{see_other, ErrorPage, Member, Visitor},
    csrf, Site,
};

/// A form with a hidden `csrf_token` field.
pub trait CsrfField {
    fn csrf_token(&self) -> &str;
    /// Where someone who is not signed in is sent when they post it (member forms).
    const LOG_IN_FIRST: &'static str = "/login";
}

#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlForm<T>(pub T);

impl<T, S> FromRequest<S> for HtmlForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorPage;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let visitor = match Visitor::from_request_parts(&mut parts, state).await {
            Ok(visitor) => visitor,
            Err(never) => match never {},
        };
        match Form::<T>::from_request(Request::from_parts(parts, body), state).await {
            Ok(Form(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejected(visitor, rejection)),
        }
    }
}

/// Why a member or guest form was not handed to its handler.
pub enum FormRejected {
    /// A member form from someone not signed in (or whose session ended).
    NotSignedIn(&'static str),
    /// The CSRF token is missing or wrong: nothing was done.
    Csrf(ErrorPage),
    /// The body is not a readable form.
    Unreadable(ErrorPage),
}

impl IntoResponse for FormRejected {
    fn into_response(self) -> Response {
        match self {
            FormRejected::NotSignedIn(to) => see_other(to),
            FormRejected::Csrf(page) | FormRejected::Unreadable(page) => page.into_response(),
        }
    }
}

/// A form posted by a signed-in member, its token checked against their session.
pub struct MemberForm<T> {
    pub member: Member,
    pub form: T,
}

/// Any state: the session (from `platform::auth::layer`) is all it needs, so other crates'
/// page routers (wallet, studio) take member forms too.
impl<T, S> FromRequest<S> for MemberForm<T>
where
    T: DeserializeOwned + CsrfField + Send,
    S: Send + Sync,
{
    type Rejection = FormRejected;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Ok(visitor) = Visitor::from_request_parts(&mut parts, state).await;
        let chrome = visitor.chrome();
        let Some(member) = visitor.0 else {
            return Err(FormRejected::NotSignedIn(T::LOG_IN_FIRST));
        };
        let HtmlForm(form) = HtmlForm::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(FormRejected::Unreadable)?;
        if !member.csrf_matches(form.csrf_token()) {
            return Err(FormRejected::Csrf(ErrorPage::session_csrf(chrome)));
        }
        Ok(Self { member, form })
    }
}

/// A form anyone may post, its token checked against the signed double-submit cookie.
pub struct GuestForm<T> {
    pub visitor: Visitor,
    pub form: T,
}

/// Where a guest form lives, to send people back to it when its token fails.
pub trait GuestPage {
    const PATH: &'static str;
}

impl<T> FromRequest<Site> for GuestForm<T>
where
    T: DeserializeOwned + CsrfField + GuestPage + Send,
{
    type Rejection = FormRejected;

    async fn from_request(req: Request, site: &Site) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Ok(visitor) = Visitor::from_request_parts(&mut parts, site).await;
        let headers = parts.headers.clone();
        let HtmlForm(form) = HtmlForm::<T>::from_request(Request::from_parts(parts, body), site)
            .await
            .map_err(FormRejected::Unreadable)?;
        if !csrf::anonymous_form_is_genuine(&site.config.form_key, &headers, form.csrf_token()) {
            return Err(FormRejected::Csrf(ErrorPage::anonymous_csrf(
                visitor.chrome(),
                T::PATH,
            )));
        }
        Ok(Self { visitor, form })
    }
}

fn rejected(visitor: Visitor, rejection: FormRejection) -> ErrorPage {
    let chrome = visitor.chrome();
    let (status, title, message) = match &rejection {
        FormRejection::InvalidFormContentType(_) => (
            StatusCode::BAD_REQUEST,
            "This form could not be read",
            "The form was not sent as a web form. Go back, reload the page and try again.",
        ),
        FormRejection::FailedToDeserializeForm(_)
        | FormRejection::FailedToDeserializeFormBody(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "This form could not be read",
            "Some of the form's fields were not what this page expects. Reload the page and \
             try again.",
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "This form is too large",
            "What was sent is larger than this form accepts. Shorten it and try again.",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "This form could not be read",
            "The form arrived incomplete. Reload the page and try again.",
        ),
    };
    tracing::debug!(rejection = %rejection.body_text(), "form rejected");
    ErrorPage::new(chrome, status, title, message).link("/", "Go to the home page")
}
