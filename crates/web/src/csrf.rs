//! CSRF protection for every form, checked by the form extractors (`form::MemberForm`,
//! `form::GuestForm`), never by hand in a handler.
//!
//! Signed-in forms carry the session's own CSRF token (identity issues one per session).
//! Anonymous forms (sign-up, log-in) have no session to tie a token to, so they use a
//! *signed* double-submit token: rendering the form sets the cookie [`CSRF_COOKIE`]
//! (`HttpOnly; SameSite=Strict`, and `__Host-`-prefixed when secure) to
//! `<random>.<HMAC(key, random)>` and puts the same value in a hidden field; a post is
//! accepted only when both are present, equal, and the signature is this site's. Another
//! site can make a browser post the form, but can neither read this site's cookie nor mint
//! a value that verifies, so a cookie it manages to plant (from a sibling subdomain, say)
//! does not pass.
//!
//! The key comes from the shared `service_secret` when the deployment has one (so every
//! web replica accepts the others' forms), else it is random per process, one for every
//! service of the process ([`FormKey::for_process`]).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Name of the double-submit cookie on plain HTTP.
pub const CSRF_COOKIE: &str = "rm_csrf";
/// Name of the double-submit cookie when cookies are secure.
pub const SECURE_CSRF_COOKIE: &str = "__Host-rm_csrf";

const NONCE_BYTES: usize = 32;

/// The key anonymous form tokens are signed with.
#[derive(Clone)]
pub struct FormKey([u8; 32]);

impl std::fmt::Debug for FormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormKey(..)")
    }
}

impl FormKey {
    /// Derived from the deployment's shared secret (never the secret itself).
    pub fn derive(secret: &rendermart_types::Secret) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"rendermart web form tokens v1");
        Self(mac.finalize().into_bytes().into())
    }

    /// The key every service of this process signs and checks anonymous forms with: derived
    /// from the deployment's shared secret when there is one (so every replica and every
    /// service accepts the others' forms), else one random key for the whole process (so a
    /// form one service renders, e.g. the store's "Add to cart", is accepted by the
    /// `GuestForm` of another in the same process).
    pub fn for_process(secret: Option<&rendermart_types::Secret>) -> Self {
        static PROCESS_KEY: std::sync::OnceLock<FormKey> = std::sync::OnceLock::new();
        match secret {
            Some(secret) => Self::derive(secret),
            None => PROCESS_KEY.get_or_init(Self::random).clone(),
        }
    }

    /// A key of this process only.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    fn sign(&self, nonce: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn mint(&self) -> String {
        let mut bytes = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let nonce = URL_SAFE_NO_PAD.encode(bytes);
        let sig = self.sign(&nonce);
        format!("{nonce}.{sig}")
    }

    /// Whether `token` is one this key minted.
    fn verifies(&self, token: &str) -> bool {
        let Some((nonce, sig)) = token.split_once('.') else {
            return false;
        };
        nonce.len() == 43 && bool::from(self.sign(nonce).as_bytes().ct_eq(sig.as_bytes()))
    }
}

/// The token an anonymous form is rendered with.
#[derive(Clone, Debug)]
pub struct FormToken {
    value: String,
    /// Minted for this response, so the cookie must be set.
    fresh: bool,
}

impl FormToken {
    /// The visitor's current token (from their cookie, if it verifies), or a new one.
    pub fn for_request(key: &FormKey, headers: &HeaderMap) -> Self {
        match cookie_value(headers).filter(|v| key.verifies(v)) {
            Some(value) => Self {
                value,
                fresh: false,
            },
            None => Self {
                value: key.mint(),
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
            let name = if secure {
                SECURE_CSRF_COOKIE
            } else {
                CSRF_COOKIE
            };
            cookie::Cookie::build((name, self.value.as_str()))
                .path("/")
                .http_only(true)
                .same_site(cookie::SameSite::Strict)
                .secure(secure)
                .build()
                .to_string()
        })
    }
}

/// Whether an anonymous form post carries, in its body, the same token as in its cookie,
/// and that token is one this site signed.
pub fn anonymous_form_is_genuine(key: &FormKey, headers: &HeaderMap, submitted: &str) -> bool {
    match cookie_value(headers) {
        Some(cookie) => {
            !submitted.is_empty()
                && bool::from(cookie.as_bytes().ct_eq(submitted.as_bytes()))
                && key.verifies(&cookie)
        }
        None => false,
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    rendermart_platform::auth::cookie(headers, SECURE_CSRF_COOKIE)
        .or_else(|| rendermart_platform::auth::cookie(headers, CSRF_COOKIE))
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
    fn services_of_one_process_share_the_key() {
        let token = FormKey::for_process(None).mint();
        assert!(FormKey::for_process(None).verifies(&token));
        let secret = rendermart_types::Secret::new("s3cret".to_owned());
        assert!(!FormKey::for_process(Some(&secret)).verifies(&token));
    }

    #[test]
    fn a_new_visitor_gets_a_fresh_signed_token_and_a_strict_cookie() {
        let key = FormKey::random();
        let a = FormToken::for_request(&key, &HeaderMap::new());
        let b = FormToken::for_request(&key, &HeaderMap::new());
        assert_ne!(a.value(), b.value());
        assert!(key.verifies(a.value()));
        let cookie = a.set_cookie(true).expect("a fresh token sets its cookie");
        assert!(
            cookie.starts_with(&format!("__Host-rm_csrf={}", a.value())),
            "{cookie}"
        );
        for part in ["Path=/", "HttpOnly", "SameSite=Strict", "Secure"] {
            assert!(cookie.contains(part), "{cookie} lacks {part}");
        }
        let plain = a.set_cookie(false).unwrap();
        assert!(
            plain.starts_with("rm_csrf=") && !plain.contains("Secure"),
            "{plain}"
        );
    }

    #[test]
    fn an_existing_signed_cookie_is_reused_and_anything_else_replaced() {
        let key = FormKey::random();
        let token = key.mint();
        let reused = FormToken::for_request(&key, &with_cookie(&format!("a=1; rm_csrf={token}")));
        assert_eq!(reused.value(), token);
        assert!(reused.set_cookie(false).is_none());

        for planted in ["<script>", "AAAA", &FormKey::random().mint()] {
            let replaced =
                FormToken::for_request(&key, &with_cookie(&format!("rm_csrf={planted}")));
            assert_ne!(replaced.value(), planted);
            assert!(replaced.set_cookie(false).is_some());
        }
    }

    #[test]
    fn a_post_needs_the_cookie_and_the_field_to_agree_and_the_signature_to_verify() {
        let key = FormKey::random();
        let token = key.mint();
        let headers = with_cookie(&format!("rm_csrf={token}"));
        assert!(anonymous_form_is_genuine(&key, &headers, &token));
        assert!(!anonymous_form_is_genuine(&key, &headers, &key.mint()));
        assert!(!anonymous_form_is_genuine(&key, &headers, ""));
        assert!(!anonymous_form_is_genuine(&key, &HeaderMap::new(), &token));
        assert!(!anonymous_form_is_genuine(
            &key,
            &with_cookie("rm_csrf="),
            ""
        ));
        // An attacker who plants a cookie of their choosing and posts the same value in the
        // form still fails: the value is not signed by this site.
        let planted = "x".repeat(43) + ".forged";
        assert!(!anonymous_form_is_genuine(
            &key,
            &with_cookie(&format!("rm_csrf={planted}")),
            &planted
        ));
        let other_site = FormKey::random().mint();
        assert!(!anonymous_form_is_genuine(
            &key,
            &with_cookie(&format!("rm_csrf={other_site}")),
            &other_site
        ));
    }
}
