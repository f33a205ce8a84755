//! Typed identifiers: every entity gets its own UUID v7 newtype, so a `UserId` can never be
//! passed where a `TokenId` is expected. V7 ids sort by creation time, as text and as bytes.

/// Declares a UUID v7 identifier type for one entity.
///
/// ```
/// rendermart_platform::entity_id!(
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
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name($crate::uuid::Uuid);

        #[allow(dead_code)]
        impl $name {
            /// A fresh, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self($crate::uuid::Uuid::now_v7())
            }
            pub fn from_uuid(id: $crate::uuid::Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> $crate::uuid::Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
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
}
