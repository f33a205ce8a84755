//! The wallet's rules, free of HTTP and SQL: what an amount and an idempotency key are,
//! and what the test payment provider answers.

use std::fmt;

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

/// An amount to move: whole minor units, at least 1, at most the configured maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(raw: i64, max: i64) -> Result<Self, Invalid> {
        if raw <= 0 {
            return Err(Invalid {
                field: "amount",
                message: "must be a positive whole number of minor units".into(),
            });
        }
        if raw > max {
            return Err(Invalid {
                field: "amount",
                message: format!("must be at most {max} minor units"),
            });
        }
        Ok(Self(raw))
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

/// A client's `Idempotency-Key`: 1 to 100 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > 100 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid {
                field: "Idempotency-Key",
                message: "must be 1 to 100 visible ASCII characters".into(),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `test` payment provider: behaves like a card processor in test mode. It settles at
/// once, except for these documented amounts (minor units):
pub mod test_provider {
    /// A top-up of this amount is declined: "card declined".
    pub const DECLINED_CARD: i64 = 4_002;
    /// A top-up of this amount is declined: "insufficient funds on the card".
    pub const DECLINED_FUNDS: i64 = 4_004;
    /// A payout of this amount is reversed by the bank: its hold is released.
    pub const REVERSED_PAYOUT: i64 = 4_005;

    /// `Err(reason)` when the provider declines a charge of `amount`.
    pub fn charge(amount: i64) -> Result<(), &'static str> {
        match amount {
            DECLINED_CARD => Err("card declined"),
            DECLINED_FUNDS => Err("insufficient funds on the card"),
            _ => Ok(()),
        }
    }

    /// Whether the bank settles (true) or reverses (false) a payout of `amount`.
    pub fn payout_settles(amount: i64) -> bool {
        amount != REVERSED_PAYOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert_eq!(Amount::parse(1, 10).unwrap().minor_units(), 1);
        assert_eq!(Amount::parse(10, 10).unwrap().minor_units(), 10);
        for bad in [0, -1, 11, i64::MIN] {
            assert_eq!(Amount::parse(bad, 10).unwrap_err().field, "amount", "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert!(IdempotencyKey::parse("order-42").is_ok());
        for bad in ["", " ", "a b", "é", &"k".repeat(101)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_test_provider_declines_only_its_documented_amounts() {
        assert!(test_provider::charge(5_000).is_ok());
        assert!(test_provider::charge(test_provider::DECLINED_CARD).is_err());
        assert!(test_provider::charge(test_provider::DECLINED_FUNDS).is_err());
        assert!(test_provider::payout_settles(5_000));
        assert!(!test_provider::payout_settles(
            test_provider::REVERSED_PAYOUT
        ));
    }
}
