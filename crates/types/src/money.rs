//! Money: an integer number of minor units (cents, credits…) and a currency code. Never a
//! float, on the wire or in memory: JSON carries `{"amount": 1250, "currency": "USD"}` and an
//! amount of `12.5` is refused when parsed. Arithmetic is checked: adding two currencies or
//! overflowing is an error the caller must handle, never a wrap-around or a panic.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be three upper-case letters (ISO 4217 style), not {0:?}")]
    BadCurrency(String),
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount out of range")]
    Overflow,
}

/// A currency code: three ASCII upper-case letters, e.g. `USD`, `EUR`, or `CRD` for
/// RenderMart credits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// RenderMart's own credits (two decimal places, like most currencies).
    pub const CREDITS: Currency = Currency(*b"CRD");

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(MoneyError::BadCurrency(code.chars().take(16).collect())),
        }
    }

    pub fn code(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Digits after the decimal point when the amount is shown to a person (ISO 4217's
    /// minor unit for the few currencies that do not use two).
    pub fn exponent(&self) -> u32 {
        match &self.0 {
            b"JPY" | b"KRW" | b"VND" | b"CLP" | b"ISK" | b"XAF" | b"XOF" | b"UGX" => 0,
            b"BHD" | b"KWD" | b"OMR" | b"JOD" | b"TND" | b"LYD" | b"IQD" => 3,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.code().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl std::str::FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An amount of money: minor units (may be negative, e.g. a ledger posting) in a currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Minor units: 1250 is 12.50 in a two-decimal currency.
    amount: i64,
    currency: Currency,
}

impl Money {
    pub const fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// The amount in minor units.
    pub const fn amount(&self) -> i64 {
        self.amount
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    pub const fn is_zero(&self) -> bool {
        self.amount == 0
    }

    pub const fn is_positive(&self) -> bool {
        self.amount > 0
    }

    pub const fn is_negative(&self) -> bool {
        self.amount < 0
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// This amount times a whole quantity (a line of `quantity` items at this unit price).
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// A share of this amount in basis points (1 bp = 0.01 %), rounded toward zero, e.g. a
    /// 2.5 % fee is `share_bps(250)`. What is rounded away stays with the remainder, so
    /// `share + (amount - share) == amount` always holds.
    pub fn share_bps(self, basis_points: u32) -> Result<Money, MoneyError> {
        let share = i128::from(self.amount) * i128::from(basis_points) / 10_000;
        let amount = i64::try_from(share).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// The sum of `amounts`, all in `currency`.
    pub fn sum<'a>(
        currency: Currency,
        amounts: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(*m))
    }
}

/// Why text typed into a form is not an amount of money.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountTextError {
    #[error("enter an amount such as 12.50")]
    NotANumber,
    #[error("use at most {0} digits after the decimal point")]
    TooPrecise(u32),
    #[error("the amount is too large")]
    TooLarge,
}

impl Money {
    /// An amount as a person types it, in major units: `12`, `12.5`, `12.50` (at most the
    /// currency's [`Currency::exponent`] decimals, `.` as the separator, no sign, no
    /// grouping) → `1250` minor units. Parsed as digits, never through a float.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Money, AmountTextError> {
        let text = text.trim();
        let exp = currency.exponent();
        let (whole, frac) = match text.split_once('.') {
            Some((whole, frac)) => (whole, Some(frac)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
            return Err(AmountTextError::NotANumber);
        }
        let frac = frac.unwrap_or("");
        if frac.len() > exp as usize {
            return Err(AmountTextError::TooPrecise(exp));
        }
        let scale = 10i64.pow(exp);
        let whole: i64 = whole.parse().map_err(|_| AmountTextError::TooLarge)?;
        let frac_value: i64 = if frac.is_empty() {
            0
        } else {
            // Right-pad to the exponent: "5" in a two-decimal currency is 50 minor units.
            let padded = format!("{frac:0<width$}", width = exp as usize);
            padded.parse().map_err(|_| AmountTextError::NotANumber)?
        };
        let amount = whole
            .checked_mul(scale)
            .and_then(|a| a.checked_add(frac_value))
            .ok_or(AmountTextError::TooLarge)?;
        Ok(Money::new(amount, currency))
    }
}

impl fmt::Display for Money {
    /// `12.50 USD`, `-0.05 CRD`, `1200 JPY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.exponent();
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = exp as usize
        )
    }
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .description(Some(
                "An amount of money: integer minor units (1250 = 12.50) and a currency code.",
            ))
            .property(
                "amount",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .description(Some("Minor units (cents, credits); never a fraction.")),
            )
            .property(
                "currency",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Z]{3}$"))
                    .examples(["CRD"]),
            )
            .required("amount")
            .required("currency")
            .into()
    }
}

impl utoipa::ToSchema for Money {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_typed_in_major_units_become_minor_units_without_floats() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        for (text, minor) in [
            ("12.50", 1250),
            ("12.5", 1250),
            ("12", 1200),
            (" 0.01 ", 1),
            ("0", 0),
            ("007.10", 710),
        ] {
            assert_eq!(
                Money::parse_major(text, usd).map(|m| m.amount()),
                Ok(minor),
                "{text}"
            );
        }
        assert_eq!(
            Money::parse_major("1200", jpy).map(|m| m.amount()),
            Ok(1200)
        );
        assert_eq!(
            Money::parse_major("12.5", jpy),
            Err(AmountTextError::TooPrecise(0))
        );
        assert_eq!(
            Money::parse_major("1.005", usd),
            Err(AmountTextError::TooPrecise(2))
        );
        for junk in [
            "", " ", "abc", "-1", "+1", "1,50", "1.", ".5", "1e3", "1.2.3", "12 USD", "NaN",
        ] {
            assert_eq!(
                Money::parse_major(junk, usd),
                Err(AmountTextError::NotANumber),
                "{junk:?}"
            );
        }
        assert_eq!(
            Money::parse_major("99999999999999999999", usd),
            Err(AmountTextError::TooLarge)
        );
        assert_eq!(
            Money::parse_major("92233720368547758.07", usd),
            Ok(Money::new(i64::MAX, usd))
        );
        assert_eq!(
            Money::parse_major("92233720368547758.08", usd),
            Err(AmountTextError::TooLarge)
        );
    }

    fn usd(n: i64) -> Money {
        Money::new(n, Currency::parse("USD").unwrap())
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        for bad in ["", "eur", "EURO", "E1R", "€UR", "US"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_amounts_are_integers_and_fractions_are_refused() {
        let m: Money = serde_json::from_str(r#"{"amount":1250,"currency":"USD"}"#).unwrap();
        assert_eq!(m, usd(1250));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"amount":1250,"currency":"USD"}"#
        );
        for bad in [
            r#"{"amount":12.5,"currency":"USD"}"#,
            r#"{"amount":"1250","currency":"USD"}"#,
            r#"{"amount":1250,"currency":"usd"}"#,
            r#"{"amount":1e30,"currency":"USD"}"#,
            r#"{"amount":1250}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_is_checked_and_refuses_mixed_currencies() {
        assert_eq!(usd(5).checked_add(usd(7)).unwrap(), usd(12));
        assert_eq!(usd(5).checked_sub(usd(7)).unwrap(), usd(-2));
        assert!(usd(i64::MAX).checked_add(usd(1)).is_err());
        assert!(usd(i64::MIN).checked_neg().is_err());
        assert!(usd(i64::MAX).checked_mul(2).is_err());
        let eur = Money::new(1, Currency::parse("EUR").unwrap());
        assert!(matches!(
            usd(1).checked_add(eur),
            Err(MoneyError::CurrencyMismatch(..))
        ));
    }

    #[test]
    fn money_displays_with_the_currency_minor_unit() {
        assert_eq!(usd(1250).to_string(), "12.50 USD");
        assert_eq!(usd(-5).to_string(), "-0.05 USD");
        assert_eq!(
            Money::new(1200, Currency::parse("JPY").unwrap()).to_string(),
            "1200 JPY"
        );
        assert_eq!(
            Money::new(1, Currency::parse("KWD").unwrap()).to_string(),
            "0.001 KWD"
        );
    }

    proptest! {
        #[test]
        fn a_share_and_its_remainder_add_up_to_the_whole(amount in -1_000_000_000_000i64..1_000_000_000_000, bps in 0u32..=10_000) {
            let whole = usd(amount);
            let share = whole.share_bps(bps).unwrap();
            let rest = whole.checked_sub(share).unwrap();
            prop_assert_eq!(share.checked_add(rest).unwrap(), whole);
            prop_assert!(share.amount().abs() <= whole.amount().abs());
        }
    }
}
