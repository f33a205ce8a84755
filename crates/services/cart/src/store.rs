//! Where carts live: one [`CartStore`] trait, two adapters chosen at start — Redis
//! ([`RedisCarts`], when the deployment has one) or the service's database ([`DbCarts`]).
//! The same application tests run on both.
//!
//! The one thing to know: **every change is one atomic step in the store**, so concurrent
//! "+1"s on one line never lose an update and never pass the caps. On Redis each change is
//! one Lua script (read, check, write, refresh the idle TTL, all in one round trip); in the
//! database it is one conditional upsert (`… ON CONFLICT DO UPDATE SET quantity =
//! cart_lines.quantity + excluded.quantity WHERE … <= max`) in a transaction that first
//! touches the cart's row (which also queues concurrent writers to one cart on PostgreSQL,
//! so the line count check holds).

use rendermart_platform::{
    clock,
    db::Db,
    group::{Group, GroupWork},
};
use rendermart_types::Sku;
use sqlx::{Any, Transaction};

use crate::domain::{merged_quantity, CartOwner, Limits, Quantity};

/// One stored line (oldest first when listed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLine {
    pub sku: Sku,
    pub quantity: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The line would hold more than the maximum; nothing changed.
    #[error("the line would hold more than {max} (it holds {current})")]
    QuantityTooLarge { current: u32, max: u32 },
    /// A new line would pass the cart's maximum number of lines; nothing changed.
    #[error("the cart already holds {max} lines")]
    TooManyLines { max: u32 },
    #[error("the cart store is unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// How a line changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add this many to the line (making it if needed).
    Add(Quantity),
    /// Make the line hold exactly this many (making it if needed).
    Set(Quantity),
}

#[async_trait::async_trait]
pub trait CartStore: Send + Sync + 'static {
    /// The cart's lines, oldest first; empty for no cart or an idle (expired) one.
    async fn lines(&self, cart: &CartOwner) -> Result<Vec<StoredLine>, StoreError>;
    /// Changes one line within `limits`, all or nothing; returns its new quantity.
    async fn change(
        &self,
        cart: &CartOwner,
        sku: &Sku,
        change: Change,
        limits: Limits,
    ) -> Result<u32, StoreError>;
    /// Removes one line (no such line: nothing to do).
    async fn remove(&self, cart: &CartOwner, sku: &Sku) -> Result<(), StoreError>;
    /// Empties the cart.
    async fn clear(&self, cart: &CartOwner) -> Result<(), StoreError>;
    /// Takes bought quantities out of lines (a line reaching zero goes).
    async fn take(&self, cart: &CartOwner, lines: &[StoredLine]) -> Result<(), StoreError>;
    /// Adds `lines` back into the cart (summed, capped at the maximum; lines past the
    /// maximum number of lines are dropped), in one step: what a failed checkout took.
    async fn give(
        &self,
        cart: &CartOwner,
        lines: &[StoredLine],
        limits: Limits,
    ) -> Result<(), StoreError>;
    /// Adds every line of `from` into `into` (summed, capped at the maximum; lines past the
    /// maximum number of lines are dropped) and deletes `from`, in one step.
    async fn merge(
        &self,
        from: &CartOwner,
        into: &CartOwner,
        limits: Limits,
    ) -> Result<(), StoreError>;
    /// Deletes carts idle past their time, at most `limit`; returns how many. (Redis
    /// expires keys by itself: nothing to do there.)
    async fn expire_idle(&self, limit: i64) -> Result<u64, StoreError>;
    /// The store's name, for logs and `/readyz`.
    fn kind(&self) -> &'static str;
}

// ------------------------------------------------------------------------------------------
// The database adapter.

/// Carts in the cart service's own tables (SQLite or PostgreSQL).
pub struct DbCarts {
    db: Db,
    idle_micros: i64,
    /// Changes and takes, the writes of every add to cart and checkout: many in one commit
    /// on SQLite (decision 68).
    writes: Group<CartWrites>,
}

impl DbCarts {
    pub fn new(db: Db, idle_ttl_secs: u64) -> Self {
        let idle_micros = i64::try_from(idle_ttl_secs)
            .unwrap_or(i64::MAX / 2_000_000)
            .saturating_mul(1_000_000);
        Self {
            writes: Group::new(db.clone(), CartWrites { idle_micros }),
            db,
            idle_micros,
        }
    }

    fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.idle_micros)
    }

    async fn touch(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        touch(tx, key, now, self.cutoff(now)).await
    }

    /// Adds `lines` into the cart `key` (touched), each summed with what is there and
    /// capped at the maximum; a line that finds the cart full is dropped.
    async fn add_capped(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        lines: &[StoredLine],
        limits: Limits,
    ) -> Result<(), sqlx::Error> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = clock::now_micros();
        self.touch(tx, key, now).await?;
        for line in lines {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT quantity FROM cart_lines WHERE cart_id = $1 AND sku = $2",
            )
            .bind(key)
            .bind(&line.sku)
            .fetch_optional(&mut **tx)
            .await?;
            let current = current.and_then(|q| u32::try_from(q).ok()).unwrap_or(0);
            let merged = merged_quantity(current, line.quantity, limits.max_quantity);
            let Some(q) = Quantity::capped(u64::from(merged), limits.max_quantity) else {
                continue;
            };
            // A full cart keeps its lines: the extra lines are dropped.
            Self::upsert(tx, key, &line.sku, Change::Set(q), limits, now).await?;
        }
        Ok(())
    }

    /// The conditional upsert: adds `q` to the line (or sets it), or makes the line if
    /// the cart has room, never past `max_quantity`. `None`: refused.
    async fn upsert(
        tx: &mut Transaction<'static, Any>,
        key: &str,
        sku: &Sku,
        change: Change,
        limits: Limits,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let (q, on_conflict) = match change {
            Change::Add(q) => (q, "cart_lines.quantity + excluded.quantity"),
            Change::Set(q) => (q, "excluded.quantity"),
        };
        let sql = format!(
            "INSERT INTO cart_lines (cart_id, sku, quantity, added_at) \
             SELECT $1, $2, $3, $4 WHERE $3 <= $5 AND ( \
                 EXISTS (SELECT 1 FROM cart_lines WHERE cart_id = $1 AND sku = $2) \
                 OR (SELECT COUNT(*) FROM cart_lines WHERE cart_id = $1) < $6) \
             ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = {on_conflict} \
             WHERE {on_conflict} <= $5 \
             RETURNING quantity"
        );
        sqlx::query_scalar(&sql)
            .bind(key)
            .bind(sku)
            .bind(i64::from(q.get()))
            .bind(now)
            .bind(i64::from(limits.max_quantity))
            .bind(i64::from(limits.max_lines))
            .fetch_optional(&mut **tx)
            .await
    }
}

/// Touches the cart (making it if needed), after dropping the lines of a cart that was
/// idle past its time (it is a new cart now, whether the worker got to it or not).
async fn touch(
    tx: &mut Transaction<'static, Any>,
    key: &str,
    now: i64,
    cutoff: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM cart_lines WHERE cart_id = $1 \
         AND EXISTS (SELECT 1 FROM carts WHERE id = $1 AND touched_at < $2)",
    )
    .bind(key)
    .bind(cutoff)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO carts (id, touched_at) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET touched_at = excluded.touched_at",
    )
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A change of a line, or a checkout's take.
pub enum CartWrite {
    Change {
        key: String,
        sku: Sku,
        change: Change,
        limits: Limits,
    },
    Take {
        key: String,
        lines: Vec<StoredLine>,
    },
}

/// Applies [`CartWrite`]s, each in the transaction it is given.
pub struct CartWrites {
    idle_micros: i64,
}

#[async_trait::async_trait]
impl GroupWork for CartWrites {
    type Job = CartWrite;
    /// The line's quantity after a change (0 after a take).
    type Output = u32;
    type Error = StoreError;

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &CartWrite,
    ) -> Result<u32, StoreError> {
        let now = clock::now_micros();
        let cutoff = now.saturating_sub(self.idle_micros);
        match job {
            CartWrite::Change {
                key,
                sku,
                change,
                limits,
            } => {
                let (change, limits) = (*change, *limits);
                touch(tx, key, now, cutoff).await?;
                let Some(quantity) = DbCarts::upsert(tx, key, sku, change, limits, now).await?
                else {
                    // Refused: say why (the job is rolled back, so nothing changed).
                    let current: Option<i64> = sqlx::query_scalar(
                        "SELECT quantity FROM cart_lines WHERE cart_id = $1 AND sku = $2",
                    )
                    .bind(key)
                    .bind(sku)
                    .fetch_optional(&mut **tx)
                    .await?;
                    return Err(match current {
                        Some(current) => StoreError::QuantityTooLarge {
                            current: u32::try_from(current).unwrap_or(u32::MAX),
                            max: limits.max_quantity,
                        },
                        None => match change {
                            Change::Add(q) | Change::Set(q) if q.get() > limits.max_quantity => {
                                StoreError::QuantityTooLarge {
                                    current: 0,
                                    max: limits.max_quantity,
                                }
                            }
                            _ => StoreError::TooManyLines {
                                max: limits.max_lines,
                            },
                        },
                    });
                };
                Ok(u32::try_from(quantity).unwrap_or(u32::MAX))
            }
            CartWrite::Take { key, lines } => {
                touch(tx, key, now, cutoff).await?;
                for line in lines {
                    sqlx::query(
                        "UPDATE cart_lines SET quantity = quantity - $1 \
                         WHERE cart_id = $2 AND sku = $3 AND quantity > $1",
                    )
                    .bind(i64::from(line.quantity))
                    .bind(key)
                    .bind(&line.sku)
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query(
                        "DELETE FROM cart_lines WHERE cart_id = $1 AND sku = $2 AND quantity <= $3",
                    )
                    .bind(key)
                    .bind(&line.sku)
                    .bind(i64::from(line.quantity))
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(0)
            }
        }
    }
}

#[async_trait::async_trait]
impl CartStore for DbCarts {
    async fn lines(&self, cart: &CartOwner) -> Result<Vec<StoredLine>, StoreError> {
        let rows: Vec<(Sku, i64)> = sqlx::query_as(
            "SELECT l.sku, l.quantity FROM cart_lines l JOIN carts c ON c.id = l.cart_id \
             WHERE l.cart_id = $1 AND c.touched_at >= $2 ORDER BY l.added_at, l.sku",
        )
        .bind(cart.key())
        .bind(self.cutoff(clock::now_micros()))
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(sku, q)| {
                let quantity = u32::try_from(q).ok()?;
                Some(StoredLine { sku, quantity })
            })
            .collect())
    }

    async fn change(
        &self,
        cart: &CartOwner,
        sku: &Sku,
        change: Change,
        limits: Limits,
    ) -> Result<u32, StoreError> {
        let job = CartWrite::Change {
            key: cart.key(),
            sku: sku.clone(),
            change,
            limits,
        };
        self.writes.run(job).await
    }

    async fn remove(&self, cart: &CartOwner, sku: &Sku) -> Result<(), StoreError> {
        let key = cart.key();
        let mut tx = self.db.begin().await?;
        self.touch(&mut tx, &key, clock::now_micros()).await?;
        sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1 AND sku = $2")
            .bind(&key)
            .bind(sku)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear(&self, cart: &CartOwner) -> Result<(), StoreError> {
        let key = cart.key();
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM carts WHERE id = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take(&self, cart: &CartOwner, lines: &[StoredLine]) -> Result<(), StoreError> {
        let job = CartWrite::Take {
            key: cart.key(),
            lines: lines.to_vec(),
        };
        self.writes.run(job).await.map(|_| ())
    }

    async fn merge(
        &self,
        from: &CartOwner,
        into: &CartOwner,
        limits: Limits,
    ) -> Result<(), StoreError> {
        let guest = self.lines(from).await?;
        let from_key = from.key();
        let mut tx = self.db.begin().await?;
        self.add_capped(&mut tx, &into.key(), &guest, limits)
            .await?;
        sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1")
            .bind(&from_key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM carts WHERE id = $1")
            .bind(&from_key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn give(
        &self,
        cart: &CartOwner,
        lines: &[StoredLine],
        limits: Limits,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        self.add_capped(&mut tx, &cart.key(), lines, limits).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn expire_idle(&self, limit: i64) -> Result<u64, StoreError> {
        let cutoff = self.cutoff(clock::now_micros());
        let idle: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM carts WHERE touched_at < $1 ORDER BY touched_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut deleted = 0;
        for (id,) in idle {
            let mut tx = self.db.begin().await?;
            // Only if still idle: a write since the SELECT keeps the cart.
            let gone = sqlx::query("DELETE FROM carts WHERE id = $1 AND touched_at < $2")
                .bind(&id)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone == 1 {
                sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                deleted += 1;
            }
            tx.commit().await?;
        }
        Ok(deleted)
    }

    fn kind(&self) -> &'static str {
        "database"
    }
}

// ------------------------------------------------------------------------------------------
// The Redis adapter.

/// A cart is one hash, `{namespace}:cart:u:<user uuid>` or `{namespace}:cart:g:<guest id>`:
/// field `q:<SKU>` holds the line's quantity, `o:<SKU>` its place (lines are listed oldest
/// first), `seq` the last place given. Every write refreshes the key's TTL (the idle time).
const CHANGE: &str = r"
local k = KEYS[1]
local qf = 'q:' .. ARGV[1]
local q = tonumber(redis.call('HGET', k, qf) or '0')
local n = tonumber(ARGV[2])
if ARGV[6] == 'add' then n = q + n end
if n > tonumber(ARGV[3]) then return {-1, q} end
if q == 0 then
  if math.floor(redis.call('HLEN', k) / 2) >= tonumber(ARGV[4]) then return {-2, 0} end
  redis.call('HSET', k, 'o:' .. ARGV[1], redis.call('HINCRBY', k, 'seq', 1))
end
redis.call('HSET', k, qf, n)
redis.call('EXPIRE', k, ARGV[5])
return {1, n}
";

/// ARGV: ttl, then (sku, quantity) pairs to take out.
const TAKE: &str = r"
local k = KEYS[1]
for i = 2, #ARGV, 2 do
  local q = tonumber(redis.call('HGET', k, 'q:' .. ARGV[i]) or '0')
  if q > 0 then
    local n = q - tonumber(ARGV[i + 1])
    if n > 0 then redis.call('HSET', k, 'q:' .. ARGV[i], n)
    else redis.call('HDEL', k, 'q:' .. ARGV[i], 'o:' .. ARGV[i]) end
  end
end
if redis.call('HLEN', k) <= 1 then redis.call('DEL', k)
else redis.call('EXPIRE', k, ARGV[1]) end
return 1
";

/// KEYS: the cart; ARGV: max quantity, max lines, ttl, then (sku, quantity) pairs to add
/// back (summed, capped; a line that finds the cart full is dropped).
const GIVE: &str = r"
local k = KEYS[1]
local maxq, maxl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 4, #ARGV, 2 do
  local sku, add = ARGV[i], tonumber(ARGV[i + 1])
  local q = tonumber(redis.call('HGET', k, 'q:' .. sku) or '0')
  if q > 0 then
    redis.call('HSET', k, 'q:' .. sku, math.min(q + add, maxq))
  elseif add > 0 and math.floor(redis.call('HLEN', k) / 2) < maxl then
    local seq = redis.call('HINCRBY', k, 'seq', 1)
    redis.call('HSET', k, 'o:' .. sku, seq, 'q:' .. sku, math.min(add, maxq))
  end
end
if redis.call('EXISTS', k) == 1 then redis.call('EXPIRE', k, ARGV[3]) end
return 1
";

/// KEYS: guest cart, user cart; ARGV: max quantity, max lines, ttl.
const MERGE: &str = r"
local from = redis.call('HGETALL', KEYS[1])
if #from == 0 then return 0 end
local h, lines = {}, {}
for i = 1, #from, 2 do
  h[from[i]] = from[i + 1]
  if string.sub(from[i], 1, 2) == 'o:' then
    table.insert(lines, {string.sub(from[i], 3), tonumber(from[i + 1])})
  end
end
table.sort(lines, function(a, b) return a[2] < b[2] end)
local maxq, maxl = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, line in ipairs(lines) do
  local sku = line[1]
  local add = tonumber(h['q:' .. sku] or '0')
  local q = tonumber(redis.call('HGET', KEYS[2], 'q:' .. sku) or '0')
  if q > 0 then
    redis.call('HSET', KEYS[2], 'q:' .. sku, math.min(q + add, maxq))
  elseif add > 0 and math.floor(redis.call('HLEN', KEYS[2]) / 2) < maxl then
    local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
    redis.call('HSET', KEYS[2], 'o:' .. sku, seq, 'q:' .. sku, math.min(add, maxq))
  end
end
redis.call('DEL', KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return #lines
";

/// A Lua script sent by its SHA-1 (`EVALSHA`); if the server lost its script cache (a
/// restart), sent whole once (`EVAL`, which caches it again).
struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    async fn load(
        conn: &mut redis::aio::ConnectionManager,
        source: &'static str,
    ) -> Result<Self, redis::RedisError> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(source)
            .query_async(conn)
            .await?;
        Ok(Self { source, sha })
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, redis::RedisError> {
        let by_sha = redis::cmd("EVALSHA")
            .arg(&self.sha)
            .arg(keys.len())
            .arg(keys)
            .arg(args)
            .query_async(conn)
            .await;
        match by_sha {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                redis::cmd("EVAL")
                    .arg(self.source)
                    .arg(keys.len())
                    .arg(keys)
                    .arg(args)
                    .query_async(conn)
                    .await
            }
            other => other,
        }
    }
}

/// Carts in Redis.
pub struct RedisCarts {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    ttl_secs: String,
    change: Lua,
    take: Lua,
    give: Lua,
    merge: Lua,
}

impl RedisCarts {
    pub async fn new(
        mut conn: redis::aio::ConnectionManager,
        namespace: &str,
        idle_ttl_secs: u64,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            change: Lua::load(&mut conn, CHANGE).await?,
            take: Lua::load(&mut conn, TAKE).await?,
            give: Lua::load(&mut conn, GIVE).await?,
            merge: Lua::load(&mut conn, MERGE).await?,
            conn,
            prefix: format!("{namespace}:cart:"),
            ttl_secs: idle_ttl_secs.to_string(),
        })
    }

    fn key(&self, cart: &CartOwner) -> String {
        format!("{}{}", self.prefix, cart.key())
    }

    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }
}

#[async_trait::async_trait]
impl CartStore for RedisCarts {
    async fn lines(&self, cart: &CartOwner) -> Result<Vec<StoredLine>, StoreError> {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key(cart))
            .query_async(&mut self.conn.clone())
            .await?;
        let mut quantities = std::collections::HashMap::new();
        let mut places = Vec::new();
        for (field, value) in fields {
            let Ok(n) = value.parse::<u64>() else {
                continue;
            };
            if let Some(sku) = field.strip_prefix("q:") {
                quantities.insert(sku.to_owned(), n);
            } else if let Some(sku) = field.strip_prefix("o:") {
                places.push((n, sku.to_owned()));
            }
        }
        places.sort();
        Ok(places
            .into_iter()
            .filter_map(|(_, sku)| {
                let quantity = u32::try_from(*quantities.get(&sku)?).ok()?;
                Some(StoredLine {
                    sku: Sku::parse(&sku).ok()?,
                    quantity,
                })
            })
            .collect())
    }

    async fn change(
        &self,
        cart: &CartOwner,
        sku: &Sku,
        change: Change,
        limits: Limits,
    ) -> Result<u32, StoreError> {
        let (q, mode) = match change {
            Change::Add(q) => (q, "add"),
            Change::Set(q) => (q, "set"),
        };
        let args = [
            sku.as_str().to_owned(),
            q.get().to_string(),
            limits.max_quantity.to_string(),
            limits.max_lines.to_string(),
            self.ttl_secs.clone(),
            mode.to_owned(),
        ];
        let (code, n): (i64, i64) = self
            .change
            .run(&mut self.conn.clone(), &[&self.key(cart)], &args)
            .await?;
        match code {
            1 => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            -1 => Err(StoreError::QuantityTooLarge {
                current: u32::try_from(n).unwrap_or(u32::MAX),
                max: limits.max_quantity,
            }),
            _ => Err(StoreError::TooManyLines {
                max: limits.max_lines,
            }),
        }
    }

    async fn remove(&self, cart: &CartOwner, sku: &Sku) -> Result<(), StoreError> {
        let args = [
            self.ttl_secs.clone(),
            sku.as_str().to_owned(),
            u32::MAX.to_string(),
        ];
        let _: i64 = self
            .take
            .run(&mut self.conn.clone(), &[&self.key(cart)], &args)
            .await?;
        Ok(())
    }

    async fn clear(&self, cart: &CartOwner) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(cart))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn take(&self, cart: &CartOwner, lines: &[StoredLine]) -> Result<(), StoreError> {
        let mut args = vec![self.ttl_secs.clone()];
        push_lines(&mut args, lines);
        let _: i64 = self
            .take
            .run(&mut self.conn.clone(), &[&self.key(cart)], &args)
            .await?;
        Ok(())
    }

    async fn merge(
        &self,
        from: &CartOwner,
        into: &CartOwner,
        limits: Limits,
    ) -> Result<(), StoreError> {
        let args = [
            limits.max_quantity.to_string(),
            limits.max_lines.to_string(),
            self.ttl_secs.clone(),
        ];
        let _: i64 = self
            .merge
            .run(
                &mut self.conn.clone(),
                &[&self.key(from), &self.key(into)],
                &args,
            )
            .await?;
        Ok(())
    }

    async fn give(
        &self,
        cart: &CartOwner,
        lines: &[StoredLine],
        limits: Limits,
    ) -> Result<(), StoreError> {
        let mut args = vec![
            limits.max_quantity.to_string(),
            limits.max_lines.to_string(),
            self.ttl_secs.clone(),
        ];
        push_lines(&mut args, lines);
        let _: i64 = self
            .give
            .run(&mut self.conn.clone(), &[&self.key(cart)], &args)
            .await?;
        Ok(())
    }

    async fn expire_idle(&self, _limit: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Appends (sku, quantity) pairs to a script's ARGV, as TAKE and GIVE read them.
fn push_lines(args: &mut Vec<String>, lines: &[StoredLine]) {
    for line in lines {
        args.push(line.sku.as_str().to_owned());
        args.push(line.quantity.to_string());
    }
}
