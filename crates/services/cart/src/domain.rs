//! The cart's rules, free of HTTP, SQL and Redis: what a quantity is (a JSON integer from 1
//! to the configured maximum — never a string, a fraction or a huge number), whose cart it
//! is (a user's, or a guest's named by a random id the server made), and how a guest cart
//! merges into a user's.

use std::fmt;

use rendermart_types::UserId;

/// Default most units of one SKU one cart line may hold (`cart.max_quantity`).
pub const DEFAULT_MAX_QUANTITY: u32 = 999;
/// Default most distinct SKUs one cart may hold (`cart.max_lines`).
pub const DEFAULT_MAX_LINES: u32 = 50;
/// The largest `cart.max_quantity` a deployment may configure.
pub const MAX_QUANTITY_LIMIT: u32 = 1_000_000_000;

/// A field that failed to parse, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

pub fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// The bounds of one cart (from the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most units of one SKU on a line.
    pub max_quantity: u32,
    /// Most distinct SKUs in a cart.
    pub max_lines: u32,
}

/// A number of units on a cart line: 1 to the cart's `max_quantity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    /// From a JSON value: only an integer (`3`, not `"3"`, `3.0`, `1.5` or `1e20`) from 1
    /// to `max` is a quantity.
    pub fn from_json(value: &serde_json::Value, max: u32) -> Result<Self, Invalid> {
        let must = || {
            invalid(
                "quantity",
                format!("must be a whole number from 1 to {max}"),
            )
        };
        match value {
            serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(q), _) => Self::bounded(q, max),
                (None, Some(_)) => Err(must()),
                // A float: 1.5, 3.0, 1e20. JSON says nothing about 3.0 being 3; we refuse it.
                (None, None) => Err(must()),
            },
            serde_json::Value::Null => Err(invalid("quantity", "is required")),
            _ => Err(must()),
        }
    }

    /// From a form field: digits only (surrounding spaces allowed), 1 to `max`.
    pub fn from_text(text: &str, max: u32) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "quantity",
                format!("must be a whole number from 1 to {max}"),
            ));
        }
        Self::bounded(text.parse::<u64>().unwrap_or(u64::MAX), max)
    }

    /// A count a store holds (a line's quantity, a merge's sum) capped at `max`; `None` for 0.
    pub fn capped(count: u64, max: u32) -> Option<Self> {
        (count > 0).then(|| Self(count.min(u64::from(max)) as u32))
    }

    fn bounded(q: u64, max: u32) -> Result<Self, Invalid> {
        if q == 0 {
            return Err(invalid("quantity", "must be at least 1"));
        }
        if q > u64::from(max) {
            return Err(invalid("quantity", format!("must be at most {max}")));
        }
        Ok(Self(q as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A guest cart's id: 128 random bits made by the server, as 32 lower-case hex digits, kept
/// in the `rm_cart` cookie. A cookie that is anything else is ignored (the guest starts a new
/// cart), so no storage key is ever made from text a client chose.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GuestId(String);

impl GuestId {
    pub fn new() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
    }

    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for GuestId {
    fn default() -> Self {
        Self::new()
    }
}

/// Whose cart: a signed-in user's, or a guest's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CartOwner {
    User(UserId),
    Guest(GuestId),
}

impl CartOwner {
    /// The cart's name in storage: `u:<user uuid>` or `g:<guest id>`.
    pub fn key(&self) -> String {
        match self {
            CartOwner::User(user) => format!("u:{}", user.as_uuid()),
            CartOwner::Guest(guest) => format!("g:{}", guest.as_str()),
        }
    }
}

/// What a line holds after a guest cart is merged into a user's: the sum, capped.
pub fn merged_quantity(user: u32, guest: u32, max: u32) -> u32 {
    user.saturating_add(guest).min(max)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_quantity_is_a_json_integer_within_bounds() {
        assert_eq!(Quantity::from_json(&json!(3), 999).unwrap().get(), 3);
        assert_eq!(Quantity::from_json(&json!(999), 999).unwrap().get(), 999);
        for bad in [
            json!(0),
            json!(-1),
            json!(1000),
            json!(1.5),
            json!(3.0),
            json!(1e20),
            json!("3"),
            json!(null),
            json!([1]),
            json!(u64::MAX),
            json!(i64::MIN),
        ] {
            let err = Quantity::from_json(&bad, 999).unwrap_err();
            assert_eq!(err.field, "quantity", "{bad}");
        }
    }

    #[test]
    fn a_form_quantity_is_digits_within_bounds() {
        assert_eq!(Quantity::from_text(" 7 ", 999).unwrap().get(), 7);
        for bad in [
            "",
            "0",
            "-1",
            "1.5",
            "1e3",
            "abc",
            "99999999999999999999",
            "1000",
        ] {
            assert!(Quantity::from_text(bad, 999).is_err(), "{bad}");
        }
    }

    #[test]
    fn guest_ids_are_made_here_and_anything_else_is_ignored() {
        let id = GuestId::new();
        assert_eq!(GuestId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(GuestId::new(), id);
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"0".repeat(33),
            "../../etc/passwd0000000000000000",
        ] {
            assert_eq!(GuestId::parse(bad), None, "{bad}");
        }
        assert!(CartOwner::Guest(id.clone()).key().starts_with("g:"));
    }

    #[test]
    fn merged_lines_are_summed_and_capped() {
        assert_eq!(merged_quantity(2, 3, 999), 5);
        assert_eq!(merged_quantity(900, 200, 999), 999);
        assert_eq!(merged_quantity(u32::MAX, 1, 999), 999);
        assert_eq!(Quantity::capped(5000, 999).unwrap().get(), 999);
        assert_eq!(Quantity::capped(0, 999), None);
    }
}
