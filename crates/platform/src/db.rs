//! One storage code path for SQLite and PostgreSQL.
//!
//! Services write portable SQL (`$1` placeholders, `TEXT`/`BIGINT`/`INTEGER` columns,
//! `ON CONFLICT`, `RETURNING`) against sqlx's `Any` driver and never ask which backend they
//! run on. The few real differences live here and only here:
//!
//! * where a service's tables are: its own SQLite file `<data_dir>/<service>.db`, or its own
//!   PostgreSQL schema named after the service (set as `search_path` on every connection);
//! * how a write transaction starts: on SQLite, on the service's one writing connection
//!   (writers queue for it instead of sleeping in SQLite's busy handler) with
//!   `BEGIN IMMEDIATE`, so a read-then-write transaction takes the single writer lock up
//!   front instead of failing on upgrade;
//! * connection pragmas (WAL, foreign keys, busy timeout) on SQLite;
//! * the database clock ([`Db::now_sql`]), which leases compare against so that replicas
//!   never compare their own wall clocks;
//! * auto-increment columns in platform migrations (the `@AUTO_ID@` token);
//! * which error codes mean "try again" ([`is_transient`]).
//!
//! Timestamps are stored as UTC microseconds (`BIGINT`, see [`crate::clock`]) and ids as
//! UUID text, the representations both backends order and compare identically.

use std::{path::PathBuf, sync::Arc, time::Duration};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{Migration, Migrator},
    Any, AnyPool, ConnectOptions, Executor, Transaction,
};
use tokio::sync::Notify;

/// Where every service's relational data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// One SQLite file per service inside this directory (the embedded default).
    SqliteDir(PathBuf),
    /// One PostgreSQL database, one schema per service.
    Postgres(String),
}

impl DatabaseTarget {
    /// `None` means the embedded default. Anything that is not PostgreSQL is refused here,
    /// at start-up, rather than failing later.
    pub fn from_config(
        database_url: Option<&str>,
        data_dir: impl Into<PathBuf>,
    ) -> Result<Self, DbError> {
        match database_url {
            None => Ok(Self::SqliteDir(data_dir.into())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_owned()))
            }
            Some(_) => Err(DbError::UnsupportedUrl),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::SqliteDir(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "database URL must start with postgres:// (leave it unset for the embedded SQLite default)"
    )]
    UnsupportedUrl,
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What every SQLite connection is set to: WAL, foreign keys, a busy timeout, and how
/// durable a commit is (`FULL` for business data, `NORMAL` for the unsynced pool).
fn sqlite_pragmas(
    synchronous: &'static str,
) -> impl for<'c> Fn(
    &'c mut sqlx::AnyConnection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'c, Result<(), sqlx::Error>>
       + Send
       + Sync
       + 'static {
    move |conn, _| {
        Box::pin(async move {
            let pragmas = format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;"
            );
            conn.execute(pragmas.as_str()).await?;
            Ok(())
        })
    }
}

/// The service's name doubles as its schema/file name, so it must be a plain identifier.
fn check_service_name(service: &str) {
    assert!(
        !service.is_empty()
            && service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "service name {service:?} must be lowercase ascii, digits or _"
    );
}

/// A service's connection pool, bound to that service's schema or file.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// SQLite only: the one connection every write goes through, so writers queue fairly
    /// here instead of sleeping in SQLite's busy handler (which backs off by up to 100 ms
    /// while the lock is free). Each transaction sets how its commit syncs.
    writer: Option<AnyPool>,
    backend: Backend,
    service: &'static str,
    outbox_signal: Arc<Notify>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("service", &self.service)
            .finish()
    }
}

impl Db {
    /// Opens (creating if needed) the storage of `service`.
    pub async fn connect(target: &DatabaseTarget, service: &'static str) -> Result<Self, DbError> {
        check_service_name(service);
        sqlx::any::install_default_drivers();
        let mut writer_pool = None;
        let (pool, backend) = match target {
            DatabaseTarget::SqliteDir(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(format!("{service}.db"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let options: AnyConnectOptions = url.parse()?;
                let options = options.disable_statement_logging();
                // No ping before each use: a local file does not go away, and the ping is
                // a round trip to SQLite's worker thread on every query.
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .test_before_acquire(false)
                    .after_connect(sqlite_pragmas("FULL"))
                    .connect_with(options.clone())
                    .await?;
                // As long as the busy timeout: a writer that waits longer is stuck.
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(sqlite_pragmas("FULL"))
                    .connect_with(options)
                    .await?;
                writer_pool = Some(writer);
                (pool, Backend::Sqlite)
            }
            DatabaseTarget::Postgres(url) => {
                let options: AnyConnectOptions = url.parse()?;
                let options = options.disable_statement_logging();
                create_schema(&options, service).await?;
                // No ping before each use either: a connection the server dropped fails
                // its query and is discarded by the pool, and the caller's error is
                // classified transient (see `is_transient`), so it is retried where that
                // is safe.
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            let set_path = format!("SET search_path TO \"{service}\"");
                            conn.execute(set_path.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                (pool, Backend::Postgres)
            }
        };
        Ok(Self {
            pool,
            writer: writer_pool,
            backend,
            service,
            outbox_signal: Arc::new(Notify::new()),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Where a write outside [`Db::begin`]'s transactions goes (`.execute(db.writer())`):
    /// on SQLite the one writing connection, on PostgreSQL the pool. On SQLite such a
    /// write syncs as the last transaction on the connection set (`FULL` or `NORMAL`): use
    /// it for bookkeeping that may be redone, and a transaction for anything else.
    pub fn writer(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Starts a transaction that will write. On SQLite it runs on the one writing
    /// connection (writers queue for it) and takes the writer lock at once
    /// (`BEGIN IMMEDIATE`), so concurrent read-modify-write transactions queue instead of
    /// failing, and its commit waits for the disk; PostgreSQL's default `BEGIN` already
    /// behaves. A task must not start a second one on the same `Db` while it holds one.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let started = std::time::Instant::now();
        let tx = match self.backend {
            Backend::Sqlite => {
                self.writer()
                    .begin_with("PRAGMA synchronous = FULL; BEGIN IMMEDIATE")
                    .await
            }
            Backend::Postgres => self.pool.begin().await,
        };
        metrics::histogram!("db_begin_wait_seconds", "service" => self.service)
            .record(started.elapsed().as_secs_f64());
        tx
    }

    /// A write transaction whose commit need not wait for the disk: for bookkeeping whose
    /// loss in a crash is harmless (the relay marking rows sent: a lost mark republishes,
    /// and consumers' inboxes absorb the copy). PostgreSQL: `synchronous_commit = off` for
    /// this transaction; SQLite: `synchronous = NORMAL` on the writing connection for it
    /// (in WAL mode a process crash loses none of it; a power cut may lose the last ones).
    pub async fn begin_unsynced(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let mut tx = match self.backend {
            Backend::Sqlite => {
                self.writer()
                    .begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
                    .await?
            }
            Backend::Postgres => self.pool.begin().await?,
        };
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// SQL for "now" by the database's own clock, in UTC microseconds (`BIGINT`). Leases
    /// written by one replica and read by another compare against this, never against a
    /// process's wall clock.
    pub fn now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        }
    }

    /// Applies the platform's tables (outbox, inbox) and then the service's own migrations.
    /// Safe to run from several processes at once: sqlx takes an advisory lock on PostgreSQL.
    pub async fn migrate(&self, service_migrations: &Migrator) -> Result<(), DbError> {
        let mut all: Vec<Migration> = PLATFORM_MIGRATIONS
            .iter()
            .map(|m| platform_migration(m, self.backend))
            .collect();
        all.extend(service_migrations.iter().cloned());
        all.sort_by_key(|m| m.version);
        let migrator = Migrator {
            migrations: all.into(),
            ..Migrator::DEFAULT
        };
        migrator.run(self.writer()).await?;
        Ok(())
    }

    /// Readiness: can we run a query right now?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Tells this service's outbox relay that events were just committed, so it publishes
    /// them now rather than at its next poll.
    pub fn outbox_committed(&self) {
        self.outbox_signal.notify_one();
    }

    pub(crate) fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_signal.clone()
    }

    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }
}

/// The outbox and inbox tables every service schema carries. Versions 1..=999 are the
/// platform's; services number their migrations by date (`YYYYMMDDHHMMSS`), above them.
static PLATFORM_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A platform migration in this backend's dialect: the one token `@AUTO_ID@` becomes an
/// auto-increment primary key. The checksum is of the rewritten text, stable per backend.
fn platform_migration(m: &Migration, backend: Backend) -> Migration {
    if !m.sql.contains("@AUTO_ID@") {
        return m.clone();
    }
    let column = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    Migration::new(
        m.version,
        m.description.clone(),
        m.migration_type,
        std::borrow::Cow::Owned(m.sql.replace("@AUTO_ID@", column)),
        m.no_tx,
    )
}

async fn create_schema(options: &AnyConnectOptions, service: &str) -> Result<(), DbError> {
    let mut conn = options.connect().await?;
    match conn
        .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{service}\"").as_str())
        .await
    {
        Ok(_) => Ok(()),
        // Two processes creating the schema at once: the loser sees a unique violation.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Which backend a connection (or a transaction, through `&mut *tx`) talks to.
pub fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name() == "SQLite" {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

/// What one statement of a [`script`] did: its rows, then how many rows it changed.
#[derive(Default)]
pub struct Step {
    pub rows: Vec<sqlx::any::AnyRow>,
    pub rows_affected: u64,
}

/// **SQLite only:** runs several `;`-separated statements that share one argument list
/// (each names the arguments it uses by number, `$n`) in one call to the connection, and
/// returns what each statement did, in order. It stops at the first statement that fails;
/// the ones before it stay done, so a caller inside a transaction rolls back (to a
/// savepoint) as it would after any failed statement.
///
/// Why: sqlx runs each SQLite connection on its own thread, and every statement is a
/// round trip to that thread and back (two thread wake-ups). On the checkout path those
/// wake-ups, not SQLite, took most of the CPU (decision 69). PostgreSQL's protocol takes
/// one statement per prepared query, so callers send the statements one by one there.
///
/// sqlx 0.8 marks several statements in one prepared query as SQLite behaviour it may drop;
/// `script_runs_statements_in_order_with_shared_numbered_arguments` fails if it does.
pub async fn script<'q>(
    conn: &mut sqlx::AnyConnection,
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
) -> Result<Vec<Step>, sqlx::Error> {
    use futures_util::TryStreamExt;
    let mut steps = Vec::new();
    let mut current = Step::default();
    let mut results = conn.fetch_many(query);
    while let Some(item) = results.try_next().await? {
        match item {
            sqlx::Either::Left(done) => {
                current.rows_affected = done.rows_affected();
                steps.push(std::mem::take(&mut current));
            }
            sqlx::Either::Right(row) => current.rows.push(row),
        }
    }
    Ok(steps)
}

/// Whether an error is a unique-constraint violation, on either backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(e) => matches!(
            e.code().as_deref(),
            // PostgreSQL unique_violation; SQLite SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY.
            Some("23505") | Some("2067") | Some("1555")
        ),
        _ => false,
    }
}

/// Whether an error is worth retrying as is: the database was unreachable, busy, or chose
/// this transaction as the loser of a conflict. Everything else (constraint violations,
/// bad SQL, decoding) fails the same way again.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => {
            let Some(code) = e.code() else { return false };
            let code = code.as_ref();
            // PostgreSQL: serialization failure, deadlock, connection exceptions (08…),
            // admin/crash shutdown and cannot-connect-now (57P0x), too many connections,
            // lock not available.
            if code == "40001"
                || code == "40P01"
                || code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code == "55P03"
            {
                return true;
            }
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes
            // (the primary code is the low byte).
            match code.parse::<i64>() {
                Ok(n) => matches!(n & 0xff, 5 | 6),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_accepted() {
        assert_eq!(
            DatabaseTarget::from_config(None, "/tmp/x").unwrap(),
            DatabaseTarget::SqliteDir("/tmp/x".into())
        );
        assert_eq!(
            DatabaseTarget::from_config(Some("postgres://h/db"), "d")
                .unwrap()
                .backend(),
            Backend::Postgres
        );
        assert!(DatabaseTarget::from_config(Some("mysql://h/db"), "d").is_err());
    }

    #[tokio::test]
    async fn sqlite_service_gets_its_own_file_with_platform_tables() {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::SqliteDir(dir.path().to_owned());
        let db = Db::connect(&target, "alpha").await.unwrap();
        db.migrate(&Migrator::DEFAULT).await.unwrap();
        db.migrate(&Migrator::DEFAULT).await.unwrap(); // idempotent
        assert!(dir.path().join("alpha.db").exists());
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn script_runs_statements_in_order_with_shared_numbered_arguments() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::SqliteDir(dir.path().to_owned());
        let db = Db::connect(&target, "alpha").await.unwrap();
        sqlx::query("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(db.writer())
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        let steps = script(
            &mut tx,
            sqlx::query(
                "INSERT INTO kv (k, v) VALUES ($1, $2), ($3, $2); \
                 UPDATE kv SET v = v + 1 WHERE k = $3; \
                 INSERT INTO kv (k, v) VALUES ($1, 0) ON CONFLICT (k) DO NOTHING; \
                 SELECT k, v FROM kv ORDER BY k",
            )
            .bind("a")
            .bind(10_i64)
            .bind("b"),
        )
        .await
        .unwrap();
        let affected: Vec<u64> = steps.iter().map(|s| s.rows_affected).collect();
        assert_eq!(affected, [2, 1, 0, 0]);
        let rows: Vec<(String, i64)> = steps[3].rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(rows, [("a".to_owned(), 10), ("b".to_owned(), 11)]);

        // A failing statement stops the script; the ones before it are done (in the
        // transaction), the ones after it are not.
        let failed = script(
            &mut tx,
            sqlx::query(
                "UPDATE kv SET v = 0 WHERE k = $1; INSERT INTO kv (k, v) VALUES ($1, 1); \
                 UPDATE kv SET v = 99 WHERE k = $2",
            )
            .bind("a")
            .bind("b"),
        )
        .await;
        assert!(matches!(&failed, Err(e) if is_unique_violation(e)));
        let now: Vec<(String, i64)> = sqlx::query_as("SELECT k, v FROM kv ORDER BY k")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(now, [("a".to_owned(), 0), ("b".to_owned(), 11)]);
        tx.commit().await.unwrap();
    }

    /// `PRAGMA synchronous` inside a transaction: 2 is FULL, 1 NORMAL.
    async fn synchronous(tx: &mut Transaction<'static, Any>) -> i64 {
        let level: i32 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **tx)
            .await
            .unwrap();
        i64::from(level)
    }

    #[tokio::test]
    async fn sqlite_writes_queue_on_one_connection_and_only_unsynced_ones_skip_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::SqliteDir(dir.path().to_owned());
        let db = Db::connect(&target, "alpha").await.unwrap();
        sqlx::query("CREATE TABLE counter (n INTEGER NOT NULL)")
            .execute(db.writer())
            .await
            .unwrap();
        sqlx::query("INSERT INTO counter (n) VALUES (0)")
            .execute(db.writer())
            .await
            .unwrap();

        // The level is set per transaction on the shared connection, whichever came before.
        let mut tx = db.begin_unsynced().await.unwrap();
        assert_eq!(synchronous(&mut tx).await, 1);
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert_eq!(synchronous(&mut tx).await, 2);
        tx.commit().await.unwrap();

        // Many read-modify-write transactions at once: each waits its turn, none fails
        // busy, none is lost.
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut tx = if i % 2 == 0 {
                        db.begin().await?
                    } else {
                        db.begin_unsynced().await?
                    };
                    let n: i64 = sqlx::query_scalar("SELECT n FROM counter")
                        .fetch_one(&mut *tx)
                        .await?;
                    tokio::task::yield_now().await;
                    sqlx::query("UPDATE counter SET n = $1")
                        .bind(n + 1)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT n FROM counter")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 64);
    }
}
