//! Typed identifiers: every entity gets its own UUID v7 newtype, so a `UserId` can never be
//! passed where a `ListingId` is expected. V7 ids sort by creation time, as text and as
//! bytes, which is what cursor pagination relies on.
//!
//! An id made by [`entity_id!`] is also a column type: bind it and read it with sqlx (it is
//! stored as UUID text on both SQLite and PostgreSQL), and it appears in OpenAPI as a
//! `string` with format `uuid`, so wire types need no annotations.

/// Declares a UUID v7 identifier type for one entity.
///
/// ```
/// rendermart_types::entity_id!(
///     /// A widget.
///     WidgetId
/// );
/// let id = WidgetId::new();
/// assert_eq!(id, id.to_string().parse().unwrap());
/// ```
#[macro_export]
macro_rules! entity_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
                 $crate::__private::serde::Serialize, $crate::__private::serde::Deserialize)]
        #[serde(transparent, crate = "rendermart_types::__private::serde")]
        pub struct $name($crate::__private::uuid::Uuid);

        #[allow(dead_code)]
        impl $name {
            /// A fresh, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self($crate::__private::uuid::Uuid::now_v7())
            }
            pub const fn from_uuid(id: $crate::__private::uuid::Uuid) -> Self {
                Self(id)
            }
            pub const fn as_uuid(&self) -> $crate::__private::uuid::Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::__private::uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Any> for $name {
            fn type_info() -> $crate::__private::sqlx::any::AnyTypeInfo {
                <String as $crate::__private::sqlx::Type<$crate::__private::sqlx::Any>>::type_info()
            }
            fn compatible(ty: &$crate::__private::sqlx::any::AnyTypeInfo) -> bool {
                <String as $crate::__private::sqlx::Type<$crate::__private::sqlx::Any>>::compatible(ty)
            }
        }

        impl<'q> $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <$crate::__private::sqlx::Any as $crate::__private::sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<$crate::__private::sqlx::encode::IsNull, $crate::__private::sqlx::error::BoxDynError> {
                <String as $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Any>>::encode(
                    self.0.to_string(),
                    buf,
                )
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Any> for $name {
            fn decode(
                value: $crate::__private::sqlx::any::AnyValueRef<'r>,
            ) -> Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                let text = <String as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Any>>::decode(value)?;
                Ok(Self(text.parse()?))
            }
        }

        impl $crate::__private::utoipa::PartialSchema for $name {
            fn schema() -> $crate::__private::utoipa::openapi::RefOr<$crate::__private::utoipa::openapi::schema::Schema> {
                use $crate::__private::utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into()
            }
        }

        impl $crate::__private::utoipa::ToSchema for $name {}
    };
}

entity_id!(
    /// A registered user. Owned by identity; every service that names a person uses it.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    entity_id!(ThingId);

    #[test]
    fn ids_round_trip_through_text_and_sort_by_creation() {
        let a = ThingId::new();
        let b = ThingId::new();
        assert_eq!(a, a.to_string().parse().unwrap());
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert!("not-a-uuid".parse::<ThingId>().is_err());
    }

    #[test]
    fn ids_are_plain_uuid_strings_in_json() {
        let id = UserId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<UserId>("\"nope\"").is_err());
    }

    #[tokio::test]
    async fn ids_bind_and_decode_through_sqlx_without_string_parsing() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ids.db").display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        let (id, owner) = (ThingId::new(), Some(UserId::new()));
        sqlx::query("INSERT INTO t (id, owner) VALUES ($1, $2)")
            .bind(id)
            .bind(owner)
            .execute(&pool)
            .await
            .unwrap();
        let (back, back_owner): (ThingId, Option<UserId>) =
            sqlx::query_as("SELECT id, owner FROM t WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((back, back_owner), (id, owner));
        sqlx::query("INSERT INTO t (id) VALUES ('garbage')")
            .execute(&pool)
            .await
            .unwrap();
        let bad: Result<(ThingId,), _> = sqlx::query_as("SELECT id FROM t WHERE id = 'garbage'")
            .fetch_one(&pool)
            .await;
        assert!(
            bad.is_err(),
            "a stored non-UUID is a decode error, not a panic"
        );
    }
}
