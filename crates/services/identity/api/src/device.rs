//! The device cookie: a long-lived, opaque token identity hands a browser after a
//! successful log-in, so later log-ins from that browser can be told apart from strangers
//! guessing at the account (the log-in policy in `docs/login-policy.md`). Whoever serves a
//! log-in (identity's API, the web pages) sets and reads it with these helpers.

use http::HeaderMap;

/// Name of the cookie on plain HTTP.
pub const DEVICE_COOKIE: &str = "rm_device";
/// Name of the cookie when cookies are secure.
pub const SECURE_DEVICE_COOKIE: &str = "__Host-rm_device";
/// How long a browser keeps it.
pub const MAX_AGE_DAYS: i64 = 365;

/// The device token the browser presented, if any.
pub fn from_headers(headers: &HeaderMap) -> Option<String> {
    rendermart_platform::auth::cookie(headers, SECURE_DEVICE_COOKIE)
        .or_else(|| rendermart_platform::auth::cookie(headers, DEVICE_COOKIE))
        .filter(|v| v.len() <= 256)
}

/// `Set-Cookie` value that stores a device token.
pub fn set_cookie(token: &str, secure: bool) -> String {
    let name = if secure {
        SECURE_DEVICE_COOKIE
    } else {
        DEVICE_COOKIE
    };
    cookie::Cookie::build((name, token))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .max_age(time::Duration::days(MAX_AGE_DAYS))
        .build()
        .to_string()
}
