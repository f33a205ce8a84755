//! Identity's SQL. Rows are private structs; what leaves this module is a domain or
//! client type. All statements are portable between SQLite and PostgreSQL.

use rendermart_identity_api::{SessionId, TokenInfo, User};
use rendermart_platform::{auth::Role, clock};
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::domain::{TokenId, UserId};

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: UserId,
    email: String,
    display_name: String,
    roles: String,
    created_at: i64,
}

pub(crate) fn encode_roles(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_roles(s: &str) -> Vec<Role> {
    s.split(',').filter_map(|r| r.parse().ok()).collect()
}

impl UserRow {
    pub(crate) fn into_user(self) -> anyhow::Result<User> {
        Ok(User {
            id: self.id,
            email: self.email,
            display_name: self.display_name,
            roles: decode_roles(&self.roles),
            created_at: clock::from_micros(self.created_at),
        })
    }
}

const USER_COLUMNS: &str = "id, email, display_name, roles, created_at";

pub(crate) struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub email_key: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub roles: &'a [Role],
    pub created_at: i64,
}

/// Inserts a user; a taken email surfaces as a unique violation.
pub(crate) async fn insert_user(
    conn: &mut AnyConnection,
    user: &NewUser<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, email, email_lookalike_key, display_name, password_hash, roles, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.id)
    .bind(user.email)
    .bind(user.email_key)
    .bind(user.display_name)
    .bind(user.password_hash)
    .bind(encode_roles(user.roles))
    .bind(user.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn user_by_id(
    conn: &mut AnyConnection,
    id: UserId,
) -> anyhow::Result<Option<User>> {
    let row: Option<UserRow> =
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.map(UserRow::into_user).transpose()
}

/// The user and their password hash, for log-in only.
pub(crate) async fn credentials_by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> anyhow::Result<Option<(User, String)>> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRow,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.user.into_user()?, r.password_hash)))
        .transpose()
}

/// Users whose look-alike key is not computed yet (rows older than the column), a batch.
pub(crate) async fn users_without_email_key(
    conn: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<(UserId, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email FROM users WHERE email_lookalike_key IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub(crate) async fn set_email_key(
    conn: &mut AnyConnection,
    id: UserId,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email_lookalike_key = $1 WHERE id = $2")
        .bind(key)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Browsers remembered per account (the log-in policy's device cookies).
const MAX_DEVICES_PER_USER: i64 = 20;

pub(crate) async fn insert_device(
    conn: &mut AnyConnection,
    token_hash: &str,
    user: UserId,
    created_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO login_devices (token_hash, user_id, created_at) VALUES ($1, $2, $3)")
        .bind(token_hash)
        .bind(user)
        .bind(created_at)
        .execute(&mut *conn)
        .await?;
    // An account remembers its most recent browsers only: the table does not grow with
    // how often someone logs in without the cookie.
    sqlx::query(
        "DELETE FROM login_devices WHERE user_id = $1 AND token_hash NOT IN \
         (SELECT token_hash FROM login_devices WHERE user_id = $1 \
          ORDER BY created_at DESC LIMIT $2)",
    )
    .bind(user)
    .bind(MAX_DEVICES_PER_USER)
    .execute(conn)
    .await?;
    Ok(())
}

/// The account a device token was issued for, if it is known and younger than `since`.
pub(crate) async fn device_user(
    conn: &mut AnyConnection,
    token_hash: &str,
    since: i64,
) -> Result<Option<UserId>, sqlx::Error> {
    let row: Option<(UserId,)> = sqlx::query_as(
        "SELECT user_id FROM login_devices WHERE token_hash = $1 AND created_at >= $2",
    )
    .bind(token_hash)
    .bind(since)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(id,)| id))
}

pub(crate) async fn delete_devices_before(
    conn: &mut AnyConnection,
    before: i64,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM login_devices WHERE created_at < $1")
            .bind(before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

pub(crate) async fn insert_session(
    conn: &mut AnyConnection,
    id: SessionId,
    token_hash: &str,
    user: UserId,
    csrf_token: &str,
    created_at: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, csrf_token, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(token_hash)
    .bind(user)
    .bind(csrf_token)
    .bind(created_at)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_session(
    conn: &mut AnyConnection,
    id: SessionId,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected())
}

pub(crate) async fn delete_expired_sessions(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected())
}

/// A live session by its cookie digest: (session id, csrf token, user).
pub(crate) async fn live_session(
    conn: &mut AnyConnection,
    token_hash: &str,
    now: i64,
) -> anyhow::Result<Option<(Uuid, String, User)>> {
    #[derive(FromRow)]
    struct Row {
        session_id: SessionId,
        csrf_token: String,
        #[sqlx(flatten)]
        user: UserRow,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.id AS session_id, s.csrf_token, \
                u.id, u.email, u.display_name, u.roles, u.created_at \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.session_id.as_uuid(), r.csrf_token, r.user.into_user()?)))
        .transpose()
}

pub(crate) struct NewTokenRow<'a> {
    pub id: TokenId,
    pub user: UserId,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub prefix: &'a str,
    pub created_at: i64,
}

pub(crate) async fn insert_token(
    conn: &mut AnyConnection,
    t: &NewTokenRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id)
    .bind(t.user)
    .bind(t.name)
    .bind(t.token_hash)
    .bind(t.prefix)
    .bind(t.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct TokenRow {
    id: TokenId,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl TokenRow {
    fn into_info(self) -> anyhow::Result<TokenInfo> {
        Ok(TokenInfo {
            id: self.id,
            name: self.name,
            prefix: self.prefix,
            created_at: clock::from_micros(self.created_at),
            last_used_at: self.last_used_at.map(clock::from_micros),
        })
    }
}

/// The user's live tokens after `after` (cursor), oldest first, at most `limit`.
pub(crate) async fn tokens_of(
    conn: &mut AnyConnection,
    user: UserId,
    after: Option<TokenId>,
    limit: i64,
) -> anyhow::Result<Vec<TokenInfo>> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_tokens \
         WHERE user_id = $1 AND revoked_at IS NULL AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(user)
    .bind(after.map(|t| t.to_string()).unwrap_or_default())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TokenRow::into_info).collect()
}

/// Marks the token revoked if it is the user's and live. Returns whether it existed for
/// this user (revoked now or before).
pub(crate) async fn revoke_token(
    conn: &mut AnyConnection,
    user: UserId,
    token: TokenId,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let found: Option<(String,)> = sqlx::query_as(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE id = $2 AND user_id = $3 RETURNING id",
    )
    .bind(now)
    .bind(token)
    .bind(user)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// A live token by its digest: (token id, last used, user).
pub(crate) async fn live_token(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> anyhow::Result<Option<(TokenId, Option<i64>, User)>> {
    #[derive(FromRow)]
    struct Row {
        token_id: TokenId,
        last_used_at: Option<i64>,
        #[sqlx(flatten)]
        user: UserRow,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.id AS token_id, t.last_used_at, \
                u.id, u.email, u.display_name, u.roles, u.created_at \
         FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.token_id, r.last_used_at, r.user.into_user()?)))
        .transpose()
}

pub(crate) async fn touch_token(
    conn: &mut AnyConnection,
    token: TokenId,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(token)
        .execute(conn)
        .await?;
    Ok(())
}
