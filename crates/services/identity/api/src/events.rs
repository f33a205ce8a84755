//! Events identity publishes. Each is versioned; consumers decode with
//! `Envelope::decode::<T>()`. Documented in `docs/events.md`.

use rendermart_platform::events::Event;
use rendermart_types::UserId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A person created an account (sign-up, or an admin created from the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: UserId,
    /// Normalised email, for the welcome message.
    pub email: String,
    pub display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
}

impl Event for UserRegistered {
    const TYPE: &'static str = "identity.UserRegistered";
    const VERSION: u32 = 1;
}
