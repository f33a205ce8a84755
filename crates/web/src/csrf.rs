//! CSRF protection for the forms of people who are not signed in yet (sign-up, log-in).
//!
//! Signed-in forms carry the session's own CSRF token (identity issues one per session).
//! Anonymous forms have no session to tie a token to, so they use a double-submit token:
//! rendering the form sets the cookie [`CSRF_COOKIE`] (`HttpOnly; SameSite=Strict`) and puts
//! the same random value in a hidden field; a post is accepted only when both are present
//! and equal. Another site can make a browser post the form, but it can neither read nor
//! set this site's cookie, so it cannot make the two agree.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use http::HeaderMap;
use rand::RngCore;
use rendermart_platform::auth::constant_time_eq;

/// Name of the double-submit cookie.
pub const CSRF_COOKIE: &str = "rm_csrf";

/// Length of a token: 32 random bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;

/// The token an anonymous form is rendered with.
#[derive(Clone, Debug)]
pub struct FormToken {
    value: String,
    /// Minted for this response, so the cookie must be set.
    fresh: bool,
}

impl FormToken {
    /// The visitor's current token (from their cookie), or a new one.
    pub fn for_request(headers: &HeaderMap) -> Self {
        match cookie_value(headers).filter(|v| is_well_formed(v)) {
            Some(value) => Self {
                value,
                fresh: false,
            },
            None => Self {
                value: mint(),
                fresh: true,
            },
        }
    }

    /// The value for the form's hidden `csrf_token` field.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The `Set-Cookie` header to send with the form, when the cookie is not already there.
    pub fn set_cookie(&self, secure: bool) -> Option<String> {
        self.fresh.then(|| {
            format!(
                "{CSRF_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
                self.value,
                if secure { "; Secure" } else { "" }
            )
        })
    }
}

/// Whether an anonymous form post carries the same token in its body as in its cookie.
pub fn anonymous_form_is_genuine(headers: &HeaderMap, submitted: &str) -> bool {
    match cookie_value(headers) {
        Some(cookie) => {
            !submitted.is_empty() && constant_time_eq(cookie.as_bytes(), submitted.as_bytes())
        }
        None => false,
    }
}

fn mint() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn is_well_formed(value: &str) -> bool {
    value.len() == TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    rendermart_platform::auth::cookie(headers, CSRF_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, cookie.parse().expect("valid header"));
        headers
    }

    #[test]
    fn a_new_visitor_gets_a_fresh_random_token_and_a_strict_cookie() {
        let a = FormToken::for_request(&HeaderMap::new());
        let b = FormToken::for_request(&HeaderMap::new());
        assert_ne!(a.value(), b.value());
        assert!(is_well_formed(a.value()));
        let cookie = a.set_cookie(true).expect("a fresh token sets its cookie");
        assert!(cookie.starts_with(&format!("rm_csrf={}; Path=/", a.value())));
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
    }

    #[test]
    fn an_existing_cookie_is_reused_and_a_malformed_one_replaced() {
        let token = mint();
        let reused = FormToken::for_request(&with_cookie(&format!("a=1; rm_csrf={token}")));
        assert_eq!(reused.value(), token);
        assert!(reused.set_cookie(false).is_none());

        let replaced = FormToken::for_request(&with_cookie("rm_csrf=<script>"));
        assert_ne!(replaced.value(), "<script>");
        assert!(replaced.set_cookie(false).is_some());
    }

    #[test]
    fn a_post_needs_the_cookie_and_the_field_to_agree() {
        let token = mint();
        let headers = with_cookie(&format!("rm_csrf={token}"));
        assert!(anonymous_form_is_genuine(&headers, &token));
        assert!(!anonymous_form_is_genuine(&headers, &mint()));
        assert!(!anonymous_form_is_genuine(&headers, ""));
        assert!(!anonymous_form_is_genuine(&HeaderMap::new(), &token));
        assert!(!anonymous_form_is_genuine(&with_cookie("rm_csrf="), ""));
    }
}
