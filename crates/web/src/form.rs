//! `HtmlForm<T>`: axum's `Form` whose rejections are error pages in the site's frame
//! (400 or 422; 413 when over the body limit) instead of text/plain, and never a 500.
//!
//! Form structs give every field a default, so a missing field reads as empty and gets the
//! same friendly message as an empty one; only a body that is not a form at all is rejected.

use axum::{
    extract::{rejection::FormRejection, FromRequest, FromRequestParts, Request},
    Form,
};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::chrome::{ErrorPage, Visitor};

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
