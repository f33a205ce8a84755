//! Group commit: many small write transactions of a service as one, on SQLite.
//!
//! SQLite takes one writer at a time, and a commit that waits for the disk costs more than
//! most transactions' statements. A [`Group`] runs jobs (each a piece of work written
//! through a transaction) so that the jobs waiting for the writer when it comes free are
//! done together by whoever gets it: one transaction, a savepoint per job (a job that fails
//! rolls back alone and leaves the others be), one commit; every caller is answered after
//! that commit, never before. On PostgreSQL, where writers of different rows run side by
//! side, each job is its own transaction.
//!
//! The one thing to know: **a job must write only through the transaction it is given**
//! (asking for the service's writer inside a job waits for itself). The group runs on its
//! own task, so a caller who goes away (a client hanging up) cancels nobody's job.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::{Any, Transaction};
use tokio::sync::oneshot;

use crate::db::{Backend, Db};

/// The work a group does for one job.
#[async_trait]
pub trait GroupWork: Send + Sync + 'static {
    type Job: Send + Sync + 'static;
    type Output: Send + 'static;
    /// Also what a job gets when the group's transaction cannot begin or commit.
    type Error: From<sqlx::Error> + Send + 'static;

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &Self::Job,
    ) -> Result<Self::Output, Self::Error>;
}

/// Jobs waiting for the writer, and where each answer goes.
type Waiting<W> = (
    <W as GroupWork>::Job,
    oneshot::Sender<Result<<W as GroupWork>::Output, <W as GroupWork>::Error>>,
);

/// Runs [`GroupWork`] jobs with group commit on SQLite (see the module).
pub struct Group<W: GroupWork> {
    db: Db,
    work: Arc<W>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    queue: Arc<Mutex<Vec<Waiting<W>>>>,
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The most jobs in one transaction: bounds how long one group holds the writer.
pub const MAX_GROUP: usize = 256;

const SAVEPOINT: &str = "SAVEPOINT rm_group_job";
/// A job's savepoint is released before the next job's is opened, in the same round trip
/// to the database (the commit ends the last one): savepoints left open nest, and SQLite
/// then keeps every page a later job changes in its sub-journal for each of them
/// (measured: buys 17 % slower).
const RELEASE_AND_SAVEPOINT: &str = "RELEASE SAVEPOINT rm_group_job; SAVEPOINT rm_group_job";
/// A failed job's effect rolled back and its savepoint released, in one round trip.
const ROLLBACK_AND_RELEASE: &str =
    "ROLLBACK TO SAVEPOINT rm_group_job; RELEASE SAVEPOINT rm_group_job";

/// A failure of the group's transaction (it could not begin, a savepoint or the commit
/// failed, the group's task died), as each of its jobs gets it: always transient (an I/O
/// error, [`crate::db::is_transient`]), so a caller answers "try again" (503), never 500.
#[derive(Clone)]
struct Broken(String);

impl Broken {
    fn of(e: &sqlx::Error) -> Self {
        Self(e.to_string())
    }
    fn error(&self) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::other(self.0.clone()))
    }
}

fn unfinished() -> sqlx::Error {
    Broken("the grouped transaction did not finish".into()).error()
}

impl<W: GroupWork> Group<W> {
    pub fn new(db: Db, work: W) -> Self {
        Self {
            db,
            work: Arc::new(work),
            commits: Arc::default(),
            queue: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// Transactions this group committed (on PostgreSQL: one per job).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Does `job` and answers once its effect is committed (or why not).
    pub async fn run(&self, job: W::Job) -> Result<W::Output, W::Error> {
        if self.db.backend() == Backend::Postgres {
            let mut tx = self.db.begin().await?;
            let output = self.work.apply(&mut tx, &job).await?;
            tx.commit().await?;
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(output);
        }
        let (answer, mut answered) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((job, answer));
        loop {
            let gate = self.gate.clone().lock_owned().await;
            if let Ok(outcome) = answered.try_recv() {
                return outcome; // done by the group before this one
            }
            let jobs: Vec<Waiting<W>> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let n = queue.len().min(MAX_GROUP);
                queue.drain(..n).collect()
            };
            let (db, work, commits) = (self.db.clone(), self.work.clone(), self.commits.clone());
            // Its own task: the group finishes whoever of its callers goes away.
            let done = tokio::spawn(async move {
                if run_group(&db, work.as_ref(), jobs).await {
                    commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                drop(gate);
            });
            let _ = done.await;
            match answered.try_recv() {
                Ok(outcome) => return outcome,
                Err(oneshot::error::TryRecvError::Closed) => return Err(unfinished().into()),
                // Beyond this group's size: in the next one.
                Err(oneshot::error::TryRecvError::Empty) => continue,
            }
        }
    }
}

/// Runs savepoint statements (several, without arguments) in one call.
async fn control(conn: &mut sqlx::AnyConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    conn.execute(sqlx::raw_sql(sql)).await.map(|_| ())
}

/// One transaction, a savepoint per job, the answers after the commit; whether it committed.
async fn run_group<W: GroupWork>(db: &Db, work: &W, jobs: Vec<Waiting<W>>) -> bool {
    let mut tx = match db.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let broken = Broken::of(&e);
            for (_, answer) in jobs {
                let _ = answer.send(Err(broken.error().into()));
            }
            return false;
        }
    };
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut broken: Option<Broken> = None;
    // Whether the last job's savepoint is still open (it succeeded).
    let mut open = false;
    for (job, answer) in jobs {
        if broken.is_some() {
            outcomes.push((answer, None));
            continue;
        }
        // Several statements without arguments: `raw_sql` runs them in one call on both
        // backends. If this fails, nothing of the group commits, so it does not matter
        // which of the two failed.
        let begin = if open {
            RELEASE_AND_SAVEPOINT
        } else {
            SAVEPOINT
        };
        if let Err(e) = control(&mut tx, begin).await {
            broken = Some(Broken::of(&e));
            outcomes.push((answer, None));
            continue;
        }
        let outcome = work.apply(&mut tx, &job).await;
        open = outcome.is_ok();
        if outcome.is_err() {
            if let Err(e) = control(&mut tx, ROLLBACK_AND_RELEASE).await {
                broken = Some(Broken::of(&e));
                outcomes.push((answer, None));
                continue;
            }
        }
        outcomes.push((answer, Some(outcome)));
    }
    let committed = match broken {
        Some(why) => Err(why),
        None => tx.commit().await.map_err(|e| Broken::of(&e)),
    };
    for (answer, outcome) in outcomes {
        let outcome = match (&committed, outcome) {
            // A job that failed answers with its own error, whatever became of the rest.
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(outcome)) => outcome,
            (Err(broken), _) => Err(broken.error().into()),
            (Ok(()), None) => Err(unfinished().into()),
        };
        let _ = answer.send(outcome);
    }
    committed.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DatabaseTarget;

    /// Adds `n` to the total and records it; refuses 13, after writing it.
    struct Add;

    #[async_trait]
    impl GroupWork for Add {
        type Job = i64;
        type Output = i64;
        type Error = sqlx::Error;

        async fn apply(
            &self,
            tx: &mut Transaction<'static, Any>,
            n: &i64,
        ) -> Result<i64, sqlx::Error> {
            sqlx::query("INSERT INTO added (n) VALUES ($1)")
                .bind(*n)
                .execute(&mut **tx)
                .await?;
            if *n == 13 {
                return Err(sqlx::Error::Protocol("13 is refused".into()));
            }
            sqlx::query("UPDATE total SET n = n + $1")
                .bind(*n)
                .execute(&mut **tx)
                .await?;
            Ok(*n)
        }
    }

    async fn jobs_answer_after_their_commit_and_a_refused_one_rolls_back_alone(db: Db) {
        for sql in [
            "DROP TABLE IF EXISTS added",
            "DROP TABLE IF EXISTS total",
            "CREATE TABLE added (n BIGINT NOT NULL)",
            "CREATE TABLE total (n BIGINT NOT NULL)",
            "INSERT INTO total (n) VALUES (0)",
        ] {
            sqlx::query(sql).execute(db.writer()).await.unwrap();
        }
        let group = Arc::new(Group::new(db.clone(), Add));
        let tasks: Vec<_> = (1..=64i64)
            .map(|n| {
                let (group, db) = (group.clone(), db.clone());
                tokio::spawn(async move {
                    let outcome = group.run(n).await;
                    // Answered only once committed: another connection sees it at once.
                    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM added WHERE n = $1")
                        .bind(n)
                        .fetch_one(db.pool())
                        .await
                        .unwrap();
                    (n, outcome.is_ok(), seen)
                })
            })
            .collect();
        for task in tasks {
            let (n, ok, seen) = task.await.unwrap();
            assert_eq!(ok, n != 13, "job {n}");
            assert_eq!(
                seen,
                i64::from(ok),
                "job {n} answered before its commit or kept"
            );
        }
        let total: i64 = sqlx::query_scalar("SELECT n FROM total")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            total,
            (1..=64).sum::<i64>() - 13,
            "every other job applied once"
        );
        match db.backend() {
            Backend::Sqlite => assert!(
                group.commits() < 64,
                "jobs waiting together committed together ({} commits)",
                group.commits()
            ),
            Backend::Postgres => assert_eq!(group.commits(), 63, "one transaction per job"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite_jobs_waiting_together_commit_together_and_answer_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::SqliteDir(dir.path().to_owned());
        let db = Db::connect(&target, "grouped").await.unwrap();
        jobs_answer_after_their_commit_and_a_refused_one_rolls_back_alone(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres_each_job_is_its_own_transaction_with_the_same_outcomes() {
        let Ok(url) = std::env::var("RENDERMART_TEST_DATABASE_URL") else {
            eprintln!("skipped: RENDERMART_TEST_DATABASE_URL is not set");
            return;
        };
        let target = DatabaseTarget::Postgres(url);
        let db = Db::connect(&target, "rm_group_test").await.unwrap();
        jobs_answer_after_their_commit_and_a_refused_one_rolls_back_alone(db.clone()).await;
        sqlx::query("DROP SCHEMA rm_group_test CASCADE")
            .execute(db.pool())
            .await
            .unwrap();
    }
}
