//! The orders service's rules, free of HTTP and SQL: what a checkout request must hold, an
//! idempotency key, an order's statuses and which moves between them are allowed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A field of a request that does not hold: which one, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A client's `Idempotency-Key`: 1 to 100 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > 100 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::new(
                "Idempotency-Key",
                "must be 1 to 100 visible ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a physical order goes, every part trimmed and checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShippingAddress {
    /// The recipient, 1–100 characters.
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    /// 1–200 characters.
    #[schema(example = "12 St James's Square")]
    pub line1: String,
    /// Up to 200 characters.
    #[serde(default)]
    pub line2: String,
    /// 1–100 characters.
    #[schema(example = "London")]
    pub city: String,
    /// 1–20 characters: letters, digits, spaces and dashes.
    #[schema(example = "SW1Y 4JH")]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `GB`.
    #[schema(example = "GB")]
    pub country: String,
}

/// The raw parts of an address as a client sent them.
pub struct AddressInput<'a> {
    pub name: &'a str,
    pub line1: &'a str,
    pub line2: &'a str,
    pub city: &'a str,
    pub postal_code: &'a str,
    pub country: &'a str,
}

fn text(field: &str, raw: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let t = raw.trim();
    let n = t.chars().count();
    if n < min {
        return Err(Invalid::new(field, "is required"));
    }
    if n > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(t.to_owned())
}

impl ShippingAddress {
    pub fn parse(raw: &AddressInput<'_>) -> Result<Self, Invalid> {
        let postal_code = text("shipping_address.postal_code", raw.postal_code, 1, 20)?;
        if !postal_code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
        {
            return Err(Invalid::new(
                "shipping_address.postal_code",
                "may hold only letters, digits, spaces and dashes",
            ));
        }
        let country = raw.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Invalid::new(
                "shipping_address.country",
                "must be a two-letter country code (ISO 3166-1), e.g. GB",
            ));
        }
        Ok(Self {
            name: text("shipping_address.name", raw.name, 1, 100)?,
            line1: text("shipping_address.line1", raw.line1, 1, 200)?,
            line2: text("shipping_address.line2", raw.line2, 0, 200)?,
            city: text("shipping_address.city", raw.city, 1, 100)?,
            postal_code,
            country,
        })
    }
}

/// An order's status, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Confirmed,
    Cancelled,
    Shipped,
    Delivered,
    Refunded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "confirmed" => Self::Confirmed,
            "cancelled" => Self::Cancelled,
            "shipped" => Self::Shipped,
            "delivered" => Self::Delivered,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }

    /// A buyer may cancel before fulfilment: while pending or confirmed.
    pub fn buyer_may_cancel(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
    }

    /// An administrator refunds a paid order: confirmed, shipped or delivered.
    pub fn may_refund(self) -> bool {
        matches!(self, Self::Confirmed | Self::Shipped | Self::Delivered)
    }

    /// No step of the saga or of fulfilment follows.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Delivered | Self::Refunded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address<'a>() -> AddressInput<'a> {
        AddressInput {
            name: " Ada Lovelace ",
            line1: "12 St James's Square",
            line2: "",
            city: "London",
            postal_code: "SW1Y 4JH",
            country: "gb",
        }
    }

    #[test]
    fn an_address_is_trimmed_and_its_country_upper_cased() {
        let a = ShippingAddress::parse(&address()).unwrap();
        assert_eq!(a.name, "Ada Lovelace");
        assert_eq!(a.country, "GB");
    }

    #[test]
    fn a_bad_address_names_its_field() {
        let mut raw = address();
        raw.city = "  ";
        assert_eq!(
            ShippingAddress::parse(&raw).unwrap_err().field,
            "shipping_address.city"
        );
        let mut raw = address();
        raw.country = "GBR";
        assert_eq!(
            ShippingAddress::parse(&raw).unwrap_err().field,
            "shipping_address.country"
        );
        let mut raw = address();
        raw.postal_code = "<script>";
        assert_eq!(
            ShippingAddress::parse(&raw).unwrap_err().field,
            "shipping_address.postal_code"
        );
        let long = "x".repeat(201);
        let mut raw = address();
        raw.line1 = &long;
        assert_eq!(
            ShippingAddress::parse(&raw).unwrap_err().field,
            "shipping_address.line1"
        );
    }

    #[test]
    fn keys_are_visible_ascii_up_to_100() {
        assert!(IdempotencyKey::parse("order-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(101)).is_err());
    }

    #[test]
    fn only_unfulfilled_orders_can_be_cancelled_and_only_paid_ones_refunded() {
        assert!(Status::Pending.buyer_may_cancel());
        assert!(Status::Confirmed.buyer_may_cancel());
        assert!(!Status::Shipped.buyer_may_cancel());
        assert!(!Status::Pending.may_refund());
        assert!(Status::Shipped.may_refund());
        assert!(!Status::Refunded.may_refund());
        for s in [
            "pending",
            "confirmed",
            "cancelled",
            "shipped",
            "delivered",
            "refunded",
        ] {
            assert_eq!(Status::parse(s).unwrap().as_str(), s);
        }
    }
}
