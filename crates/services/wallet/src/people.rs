//! People's display names, a local projection of identity's `UserRegistered` (consumer
//! `wallet.people`), read by the wallet's pages. Someone registered before the projection
//! existed has no row; pages then name them by a short handle.

use std::collections::HashMap;

use async_trait::async_trait;
use rendermart_identity_api::UserRegistered;
use rendermart_platform::{
    bus::HandlerError,
    clock,
    consumer::{EventHandler, HandlerContext},
    db::Db,
};
use rendermart_types::UserId;

pub struct PeopleIn;

#[async_trait]
impl EventHandler for PeopleIn {
    type Message = UserRegistered;

    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        user: UserRegistered,
    ) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO people (user_id, display_name, registered_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.user_id)
        .bind(&user.display_name)
        .bind(clock::to_micros(user.registered_at))
        .execute(cx.conn())
        .await?;
        Ok(())
    }
}

/// The display names of `ids` that are known (at most 200 are looked up: a page's worth).
pub async fn names(
    db: &Db,
    ids: impl IntoIterator<Item = UserId>,
) -> Result<HashMap<UserId, String>, sqlx::Error> {
    let mut ids: Vec<UserId> = ids.into_iter().collect();
    ids.sort();
    ids.dedup();
    ids.truncate(200);
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT user_id, display_name FROM people WHERE user_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (UserId, String)>(&sql);
    for id in &ids {
        query = query.bind(*id);
    }
    let mut conn = db.pool().acquire().await?;
    Ok(query.fetch_all(&mut *conn).await?.into_iter().collect())
}
