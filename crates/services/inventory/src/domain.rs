//! Inventory's rules, free of HTTP and SQL: what an order's lines to reserve, an
//! adjustment's delta and reason are, how a rejection reads, and which availability lines
//! a change of stock crosses.

use std::{collections::BTreeMap, fmt};

use rendermart_inventory_api::ShortLine;
use rendermart_orders_api::OrderLine;
use rendermart_types::Sku;

/// Most distinct SKUs one order may reserve.
pub const MAX_LINES: usize = 100;
/// Most units of one SKU one order may reserve.
pub const MAX_LINE_QUANTITY: u32 = 1_000_000;
/// Most units of one SKU inventory keeps on hand (far above any real stock; it keeps
/// arithmetic away from overflow whatever admins do).
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;
/// Longest adjustment reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;

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

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// An order's lines as inventory reserves them: at least one, one per SKU (an order naming
/// a SKU twice asks for the sum), sorted by SKU (so concurrent reservations lock rows in
/// one order and cannot deadlock), each quantity 1..=[`MAX_LINE_QUANTITY`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationLines(Vec<(Sku, u32)>);

impl ReservationLines {
    pub fn parse(lines: &[OrderLine]) -> Result<Self, Invalid> {
        if lines.is_empty() {
            return Err(invalid("lines", "must name at least one SKU"));
        }
        let mut merged: BTreeMap<Sku, u64> = BTreeMap::new();
        for line in lines {
            if line.quantity == 0 {
                return Err(invalid(
                    "quantity",
                    format!("of {} must be at least 1", line.sku),
                ));
            }
            *merged.entry(line.sku.clone()).or_default() += u64::from(line.quantity);
        }
        if merged.len() > MAX_LINES {
            return Err(invalid(
                "lines",
                format!("must name at most {MAX_LINES} SKUs"),
            ));
        }
        let mut out = Vec::with_capacity(merged.len());
        for (sku, quantity) in merged {
            match u32::try_from(quantity) {
                Ok(q) if q <= MAX_LINE_QUANTITY => out.push((sku, q)),
                _ => {
                    return Err(invalid(
                        "quantity",
                        format!("of {sku} must be at most {MAX_LINE_QUANTITY}"),
                    ))
                }
            }
        }
        Ok(Self(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Sku, u32)> {
        self.0.iter()
    }

    pub fn to_order_lines(&self) -> Vec<OrderLine> {
        self.0
            .iter()
            .map(|(sku, quantity)| OrderLine {
                sku: sku.clone(),
                quantity: *quantity,
            })
            .collect()
    }
}

/// The buyer-readable reason an order's reservation was refused:
/// "out of stock: PRINT-A3 (2 asked, 1 left), BOOK-7 (1 asked, none left)".
pub fn rejection_reason(short: &[ShortLine]) -> String {
    let lines: Vec<String> = short
        .iter()
        .map(|s| match s.available {
            a if a <= 0 => format!("{} ({} asked, none left)", s.sku, s.requested),
            a => format!("{} ({} asked, {a} left)", s.sku, s.requested),
        })
        .collect();
    format!("out of stock: {}", lines.join(", "))
}

/// An admin's change of on-hand stock: non-zero, at most `max` either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta(i64);

impl Delta {
    pub fn parse(raw: i64, max: i64) -> Result<Self, Invalid> {
        if raw == 0 {
            return Err(invalid("delta", "must not be 0"));
        }
        if raw.checked_abs().is_none_or(|a| a > max) {
            return Err(invalid(
                "delta",
                format!("must be between -{max} and {max}"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// Why an admin adjusted stock: 1 to [`MAX_REASON_CHARS`] characters after trimming, no
/// control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("reason", "is required"));
        }
        if trimmed.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("reason", "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which availability lines one change of a SKU's available stock crossed. Every change
/// of a SKU's row is serialised by the database, so each crossing is seen by exactly one
/// change and published once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crossings {
    /// Fell from above the threshold to at or below it (a threshold of 0 never fires).
    pub low: bool,
    /// Fell to zero.
    pub out: bool,
    /// Rose from zero.
    pub back: bool,
}

pub fn crossings(before: i64, after: i64, threshold: i64) -> Crossings {
    Crossings {
        low: threshold > 0 && before > threshold && after <= threshold,
        out: before > 0 && after <= 0,
        back: before <= 0 && after > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity,
        }
    }

    #[test]
    fn lines_are_merged_per_sku_sorted_and_bounded() {
        let lines = ReservationLines::parse(&[line("B", 1), line("A", 2), line("B", 3)]).unwrap();
        assert_eq!(lines.to_order_lines(), vec![line("A", 2), line("B", 4)]);
        assert_eq!(ReservationLines::parse(&[]).unwrap_err().field, "lines");
        assert_eq!(
            ReservationLines::parse(&[line("A", 0)]).unwrap_err().field,
            "quantity"
        );
        assert_eq!(
            ReservationLines::parse(&[line("A", MAX_LINE_QUANTITY), line("A", 1)])
                .unwrap_err()
                .field,
            "quantity"
        );
        let many: Vec<_> = (0..=MAX_LINES).map(|i| line(&format!("S{i}"), 1)).collect();
        assert_eq!(ReservationLines::parse(&many).unwrap_err().field, "lines");
    }

    #[test]
    fn a_rejection_names_every_short_line() {
        let short = vec![
            ShortLine {
                sku: Sku::parse("PRINT-A3").unwrap(),
                requested: 2,
                available: 1,
            },
            ShortLine {
                sku: Sku::parse("BOOK-7").unwrap(),
                requested: 1,
                available: 0,
            },
        ];
        assert_eq!(
            rejection_reason(&short),
            "out of stock: PRINT-A3 (2 asked, 1 left), BOOK-7 (1 asked, none left)"
        );
    }

    #[test]
    fn deltas_are_non_zero_and_bounded_and_reasons_are_required() {
        assert_eq!(Delta::parse(-5, 10).unwrap().value(), -5);
        for bad in [0, 11, -11, i64::MIN, i64::MAX] {
            assert!(Delta::parse(bad, 10).is_err(), "{bad}");
        }
        assert_eq!(Reason::parse("  recount ").unwrap().as_str(), "recount");
        assert!(Reason::parse("   ").is_err());
        assert!(Reason::parse(&"x".repeat(201)).is_err());
        assert!(Reason::parse(&"é".repeat(200)).is_ok());
        assert!(Reason::parse("a\u{0}b").is_err());
    }

    #[test]
    fn each_line_is_crossed_only_by_the_change_that_crosses_it() {
        let t = 5;
        assert_eq!(crossings(10, 6, t), Crossings::default());
        assert!(crossings(6, 5, t).low);
        assert!(!crossings(5, 4, t).low);
        assert_eq!(
            crossings(6, 0, t),
            Crossings {
                low: true,
                out: true,
                back: false
            }
        );
        assert!(!crossings(0, 0, t).out);
        assert!(crossings(0, 3, t).back);
        assert!(!crossings(3, 4, t).back);
        assert!(!crossings(1, 0, 0).low);
    }
}
