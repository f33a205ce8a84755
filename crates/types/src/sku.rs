//! [`Sku`]: the stock-keeping unit of a product variant. Catalog makes them, inventory counts
//! them, carts and orders name them, so all four agree on what one is: 1 to 64 characters,
//! upper-case ASCII letters, digits and `-`, starting with a letter or digit. Parsed once
//! (lower case is accepted and upper-cased); anything else is refused naming the field.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest SKU.
pub const SKU_MAX_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sku must be 1 to {SKU_MAX_LEN} letters, digits and '-', starting with a letter or digit")]
pub struct SkuError;

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, SkuError> {
        let upper = raw.trim().to_ascii_uppercase();
        let ok = !upper.is_empty()
            && upper.len() <= SKU_MAX_LEN
            && upper.as_bytes()[0].is_ascii_alphanumeric()
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(upper))
        } else {
            Err(SkuError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Sku {
    type Err = SkuError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl sqlx::Type<sqlx::Any> for Sku {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for Sku {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, sqlx::Any>>::encode(self.0.clone(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Sku {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <String as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
        Ok(Self::parse(&text)?)
    }
}

impl utoipa::PartialSchema for Sku {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Z0-9][A-Z0-9-]{0,63}$"))
            .description(Some("A stock-keeping unit, e.g. PRINT-LIGHTHOUSE-A3-MATTE"))
            .into()
    }
}

impl utoipa::ToSchema for Sku {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_short_upper_case_letters_digits_and_dashes() {
        assert_eq!(
            Sku::parse("print-a3-matte").unwrap().as_str(),
            "PRINT-A3-MATTE"
        );
        assert_eq!(Sku::parse(" BOOK-42 ").unwrap().as_str(), "BOOK-42");
        for bad in ["", "-A", "A B", "A_B", "É", "A/B", &"A".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Sku>("\"a b\"").is_err());
        assert_eq!(
            serde_json::from_str::<Sku>("\"b-1\"").unwrap(),
            Sku::parse("B-1").unwrap()
        );
    }
}
