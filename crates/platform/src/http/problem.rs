//! RFC 9457 problem details: the one shape every error takes at the HTTP edge.
//!
//! `type` is a stable URI-reference under `/problems/…` that clients can switch on; `title`
//! is the same for every instance of a type; `detail` says what was wrong with this request
//! in a sentence a person can act on. Internal errors say nothing about their cause: that
//! goes to the log, with the request's trace id.
//!
//! The one thing to know: the common problems are defined once, in [`STANDARD`], and both
//! the named constructors (`Problem::not_found`, …) and [`Problem::from_status`] take their
//! slug and title from it, so one `type` always has one title. Every problem has a
//! `detail`: one left without gets its status's standard sentence.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per-field messages for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem of kind `slug`. A standard slug (see [`STANDARD`]) always gets its
    /// standard title, whatever `title` says: one `type`, one title.
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        let title = STANDARD
            .iter()
            .find(|kind| kind.slug == slug)
            .map_or(title, |kind| kind.title);
        Self {
            type_: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: &str, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
        self
    }

    /// Adds a `Retry-After` header (seconds, at least 1).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The `Retry-After` this problem is sent with, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A problem of a standard kind: `type`, title and default detail from [`STANDARD`].
    fn standard(status: StatusCode) -> Self {
        let problem = match standard(status) {
            Some(kind) => Self::new(status, kind.slug, kind.title),
            None => {
                let reason = status.canonical_reason().unwrap_or("Error");
                let slug = reason.to_ascii_lowercase().replace(' ', "-");
                Self::new(status, &slug, &sentence_case(reason))
            }
        };
        problem.detail(default_detail(status))
    }

    // The common problems, so every service words them the same way.

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::standard(StatusCode::BAD_REQUEST).detail(detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::standard(StatusCode::UNPROCESSABLE_ENTITY).detail(detail)
    }

    pub fn unauthorized() -> Self {
        Self::standard(StatusCode::UNAUTHORIZED)
            .detail("Sign in, or send an API token as `Authorization: Bearer <token>`.")
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::standard(StatusCode::FORBIDDEN).detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::standard(StatusCode::NOT_FOUND).detail(detail)
    }

    /// A conflict of a kind the service names (`email-taken`, …).
    pub fn conflict(slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, title).detail(detail)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::standard(StatusCode::TOO_MANY_REQUESTS)
            .detail(format!(
                "Too many attempts. Try again in {} seconds.",
                retry_after_secs.max(1)
            ))
            .retry_after(retry_after_secs)
    }

    /// A dependency is down or overloaded; the client may retry after `retry_after_secs`.
    pub fn unavailable(retry_after_secs: u64, detail: impl Into<String>) -> Self {
        Self::standard(StatusCode::SERVICE_UNAVAILABLE)
            .detail(detail)
            .retry_after(retry_after_secs)
    }

    /// An unexpected failure. The cause is logged here; the client only learns that it
    /// happened and which trace to quote.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::standard(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A plain status turned into a problem, for responses produced by layers (404, 405,
    /// 408, 413, …) that do not speak problem+json themselves. The same `type` and title as
    /// the named constructor of that status, and its standard detail.
    pub fn from_status(status: StatusCode) -> Self {
        Self::standard(status)
    }
}

/// One standard kind of problem: its status, `type` slug, title and the sentence used when
/// nothing more specific is known.
#[derive(Clone, Copy, Debug)]
pub struct StandardProblem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: &'static str,
}

/// The common problems. A status listed here always produces this `type` and title.
pub const STANDARD: &[StandardProblem] = &[
    StandardProblem {
        status: StatusCode::BAD_REQUEST,
        slug: "bad-request",
        title: "Bad request",
        detail: "The request could not be read.",
    },
    StandardProblem {
        status: StatusCode::UNAUTHORIZED,
        slug: "unauthorized",
        title: "Authentication required",
        detail: "Sign in, or send an API token as `Authorization: Bearer <token>`.",
    },
    StandardProblem {
        status: StatusCode::FORBIDDEN,
        slug: "forbidden",
        title: "Forbidden",
        detail: "You may not do this.",
    },
    StandardProblem {
        status: StatusCode::NOT_FOUND,
        slug: "not-found",
        title: "Not found",
        detail: "No such API endpoint or resource.",
    },
    StandardProblem {
        status: StatusCode::METHOD_NOT_ALLOWED,
        slug: "method-not-allowed",
        title: "Method not allowed",
        detail: "This endpoint does not accept that HTTP method; the Allow header lists those it does.",
    },
    StandardProblem {
        status: StatusCode::REQUEST_TIMEOUT,
        slug: "request-timeout",
        title: "Request timeout",
        detail: "The request was not completed in time (a body that stopped arriving, or work that took too long).",
    },
    StandardProblem {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        slug: "payload-too-large",
        title: "Payload too large",
        detail: "The request body is larger than this endpoint accepts.",
    },
    StandardProblem {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        slug: "unsupported-media-type",
        title: "Unsupported media type",
        detail: "Send the body as JSON with `Content-Type: application/json`.",
    },
    StandardProblem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        slug: "validation",
        title: "The request is not valid",
        detail: "The request is well-formed but its values are not valid.",
    },
    StandardProblem {
        status: StatusCode::TOO_MANY_REQUESTS,
        slug: "rate-limited",
        title: "Too many requests",
        detail: "Too many requests. Try again later.",
    },
    StandardProblem {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        slug: "internal",
        title: "Internal error",
        detail: "Something went wrong on our side. It has been logged.",
    },
    StandardProblem {
        status: StatusCode::SERVICE_UNAVAILABLE,
        slug: "unavailable",
        title: "Service unavailable",
        detail: "The service is busy or a dependency is down. Try again later.",
    },
];

/// The standard kind of problem for `status`, if it has one.
pub fn standard(status: StatusCode) -> Option<&'static StandardProblem> {
    STANDARD.iter().find(|kind| kind.status == status)
}

/// The sentence a problem of `status` says when nothing more specific is known.
fn default_detail(status: StatusCode) -> String {
    match standard(status) {
        Some(kind) => kind.detail.to_owned(),
        None if status.is_server_error() => "The server could not complete the request.".into(),
        None => "The request cannot be served as sent.".into(),
    }
}

/// "Payload Too Large" → "Payload too large": the titles' house style.
fn sentence_case(reason: &str) -> String {
    let lower = reason.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => lower,
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let status = self.status();
        if self.detail.is_none() {
            self.detail = Some(default_detail(status));
        }
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_render_as_rfc9457_with_retry_after() {
        let response = Problem::rate_limited(30).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }

    #[test]
    fn status_problems_get_a_slug() {
        let p = Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(p.type_, "/problems/payload-too-large");
        assert_eq!(p.status, 413);
        let p = Problem::from_status(StatusCode::NOT_IMPLEMENTED);
        assert_eq!(p.type_, "/problems/not-implemented");
        assert_eq!(p.title, "Not implemented");
        assert!(p.detail.is_some());
    }

    #[test]
    fn one_type_has_one_title_whichever_constructor_made_it() {
        let named = [
            Problem::bad_request("x"),
            Problem::validation("x"),
            Problem::unauthorized(),
            Problem::forbidden("x"),
            Problem::not_found("x"),
            Problem::rate_limited(3),
            Problem::unavailable(3, "x"),
            Problem::internal(&"cause"),
        ];
        for problem in named {
            let from_status = Problem::from_status(problem.status());
            assert_eq!(problem.type_, from_status.type_, "{problem:?}");
            assert_eq!(problem.title, from_status.title, "{problem:?}");
        }
        let mut seen = std::collections::HashMap::new();
        for kind in STANDARD {
            assert!(
                seen.insert(kind.slug, kind.title).is_none(),
                "{} listed twice",
                kind.slug
            );
        }
    }

    #[tokio::test]
    async fn every_problem_has_a_detail_even_when_none_was_given() {
        let bare = Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad Request");
        assert!(bare.detail.is_none());
        assert_eq!(bare.title, "Bad request", "a standard slug keeps its title");
        let response = bare.into_response();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["detail"], "The request could not be read.");
        for kind in STANDARD {
            let p = Problem::from_status(kind.status);
            assert_eq!(p.detail.as_deref(), Some(kind.detail));
        }
    }
}
