//! Whose cart a request is about. A signed-in caller (session or API token) has their
//! user cart; anyone else a guest cart named by the `rm_cart` cookie — a random id the
//! server made (`HttpOnly`, `SameSite=Lax`, `Secure` on HTTPS), refreshed on each change
//! to last as long as the cart's idle time. A cookie that is not one of ours is ignored.
//! A request carrying both a signed-in caller and a guest cart merges the guest cart into
//! the user's (summed, capped) and clears the cookie. Log-in merges it at once
//! (`CartApi::adopt_guest_cart`); this is the fallback when that merge failed.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue};
use rendermart_platform::auth::{self, Principal};

use crate::{
    cart::{CartError, Carts},
    domain::{CartOwner, GuestId},
};

/// Name of the guest cart cookie.
pub const CART_COOKIE: &str = rendermart_cart_api::GUEST_COOKIE;

/// The cart a request is about, and the cookie changes its response must carry.
pub struct Shopper {
    /// `None`: a guest without a cart yet who only reads (nothing is made for them).
    pub owner: Option<CartOwner>,
    cookies: Vec<String>,
}

impl Shopper {
    /// Resolves the request's cart. `writes`: the request will change the cart, so a guest
    /// without one gets a new id (and its cookie).
    pub async fn resolve(
        carts: &Carts,
        principal: Option<&Principal>,
        headers: &HeaderMap,
        secure: bool,
        writes: bool,
    ) -> Result<Self, CartError> {
        let guest = auth::cookie(headers, CART_COOKIE).and_then(|v| GuestId::parse(&v));
        let ttl = carts.config().idle_ttl_secs;
        let mut cookies = Vec::new();
        let owner = match (principal, guest) {
            (Some(principal), Some(guest)) => {
                carts.adopt(&guest, principal.user_id).await?;
                cookies.push(cart_cookie("", 0, secure));
                Some(CartOwner::User(principal.user_id))
            }
            (Some(principal), None) => Some(CartOwner::User(principal.user_id)),
            (None, Some(guest)) => {
                if writes {
                    cookies.push(cart_cookie(guest.as_str(), ttl, secure));
                }
                Some(CartOwner::Guest(guest))
            }
            (None, None) if writes => {
                let guest = GuestId::new();
                cookies.push(cart_cookie(guest.as_str(), ttl, secure));
                Some(CartOwner::Guest(guest))
            }
            (None, None) => None,
        };
        Ok(Self { owner, cookies })
    }

    /// The cart to change (resolved with `writes`, so there always is one).
    pub fn cart(&self) -> Result<&CartOwner, CartError> {
        self.owner
            .as_ref()
            .ok_or_else(|| CartError::Unavailable("no cart resolved for a change".into()))
    }

    /// `response` with the cookie changes this request needs.
    pub fn respond(self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        for cookie in self.cookies {
            if let Ok(value) = HeaderValue::try_from(cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// `Set-Cookie` for the guest cart: `max_age` 0 removes it.
fn cart_cookie(value: &str, max_age_secs: u64, secure: bool) -> String {
    cookie::Cookie::build((CART_COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age_secs).unwrap_or(i64::MAX),
        ))
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cart_cookie_is_http_only_lax_and_secure_when_asked() {
        let c = cart_cookie("abc", 60, true);
        for part in [
            "rm_cart=abc",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Max-Age=60",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(!cart_cookie("abc", 60, false).contains("Secure"));
    }
}
