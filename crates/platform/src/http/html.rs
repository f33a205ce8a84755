//! What the edge adds to responses meant for people: the security headers every HTML
//! response carries, and a plain HTML page for errors that no page handler rendered
//! (a 405 from the router, a 408 from the timeout, a 413 from the body limit).
//!
//! The one thing to know: these pages must not depend on any service, so they are
//! self-contained (no stylesheet, no script) and say only what the status means.

use axum::response::{Html, IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// No framing (clickjacking), no sniffing, no script or remote resource at all, forms post
/// only to this site, and no full URLs leaked to other sites.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a response is an HTML document.
pub(crate) fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
}

/// Adds the page security headers a handler did not set itself.
pub(crate) fn add_page_security_headers(headers: &mut HeaderMap) {
    let wanted = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in wanted {
        headers.entry(name).or_insert(value);
    }
}

/// A self-contained HTML error page for `status`, saying `detail` (or what the status
/// means). Never stored by caches.
pub fn error_page(status: StatusCode, detail: Option<&str>) -> Response {
    let (title, default_detail) = page_wording(status);
    let detail = detail.unwrap_or(default_detail);
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · RenderMart</title></head>\n<body><main>\
         <h1>{title}</h1><p>{detail}</p><p><a href=\"/\">Go to the home page</a></p>\
         </main></body></html>\n",
        title = escape(title),
        detail = escape(detail),
    );
    let mut response = (status, Html(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page_wording(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => (
            "Bad request",
            "The browser sent something this site could not read. Go back and try again.",
        ),
        StatusCode::NOT_FOUND => (
            "Page not found",
            "There is no page at this address. The link may be mistyped, or the page may have moved.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Not available this way",
            "This address cannot be used like that. Follow a link or use the form on the site.",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "That took too long",
            "The request was not completed in time. Go back and try again.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "Too large",
            "What was sent is larger than this site accepts. Go back and shorten what you entered.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "Unsupported form",
            "The form was sent in a way this site does not read. Go back and try again.",
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "Too many attempts",
            "There have been too many attempts. Wait a moment and try again.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "Temporarily unavailable",
            "This part of the site is busy or unavailable. Try again in a moment.",
        ),
        s if s.is_server_error() => (
            "Something went wrong",
            "Something went wrong on our side. It has been logged; please try again in a moment.",
        ),
        _ => (
            "This request cannot be served",
            "The site could not do what was asked. Go back and try again.",
        ),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_pages_are_html_escape_what_they_say_and_are_not_stored() {
        let response = error_page(StatusCode::PAYLOAD_TOO_LARGE, Some("<b>64</b> bytes"));
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(is_html(response.headers()));
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("<h1>Too large</h1>"), "{body}");
        assert!(body.contains("&lt;b&gt;64&lt;/b&gt; bytes"), "{body}");
    }

    #[test]
    fn security_headers_keep_what_a_handler_set() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        add_page_security_headers(&mut headers);
        assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
        assert!(headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
