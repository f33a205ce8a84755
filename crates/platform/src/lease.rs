//! Leader leases: one holder at a time for a named job of one service (its outbox relay,
//! its timer worker), kept in the service's own `platform_leases` table.
//!
//! The one thing to know: expiry is computed and compared **by the database's clock**
//! ([`Db::now_sql`]), never a process's wall clock, so replicas with skewed clocks agree on
//! who holds a lease. Each acquisition gets a fresh token; work done under a lease is
//! committed only while the row still carries that token ([`Lease::holds`] inside the
//! committing statement), so a holder that lost its lease cannot overwrite its successor.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::db::Db;

/// A lease held (or sought) on `name` by this process.
#[derive(Debug)]
pub struct Lease {
    db: Db,
    name: &'static str,
    holder: String,
    token: Option<String>,
    /// When this process last extended the lease; a renewal within a third of the TTL is
    /// skipped, so a busy holder does not write on every round.
    renewed: Option<Instant>,
}

impl Lease {
    /// A handle on the lease `name`; nothing is taken until [`Lease::acquire`].
    pub fn new(db: Db, name: &'static str) -> Self {
        Self {
            db,
            name,
            holder: format!("{}-{}", std::process::id(), Uuid::now_v7().simple()),
            token: None,
            renewed: None,
        }
    }

    /// Takes the lease if it is free or expired, or extends it if we hold it; returns
    /// whether we hold it now, for `ttl` from the database's "now".
    pub async fn acquire(&mut self, ttl: Duration) -> Result<bool, sqlx::Error> {
        let now = self.db.now_sql();
        if let (Some(_), Some(renewed)) = (&self.token, self.renewed) {
            if renewed.elapsed() < ttl / 3 {
                return Ok(true);
            }
        }
        let started = Instant::now();
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 4);
        if let Some(token) = &self.token {
            let renewed = sqlx::query(&format!(
                "UPDATE platform_leases SET expires_at = {now} + $1 \
                 WHERE name = $2 AND token = $3"
            ))
            .bind(ttl)
            .bind(self.name)
            .bind(token)
            .execute(self.db.writer())
            .await?;
            if renewed.rows_affected() == 1 {
                self.renewed = Some(started);
                return Ok(true);
            }
            self.token = None;
            self.renewed = None;
        }
        let token = Uuid::now_v7().simple().to_string();
        // Insert if absent; take over only an expired row. One statement, so two contenders
        // cannot both win.
        let taken = sqlx::query(&format!(
            "INSERT INTO platform_leases (name, holder, token, expires_at) \
             VALUES ($1, $2, $3, {now} + $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, \
                 expires_at = excluded.expires_at \
             WHERE platform_leases.expires_at < {now}"
        ))
        .bind(self.name)
        .bind(&self.holder)
        .bind(&token)
        .bind(ttl)
        .execute(self.db.writer())
        .await?;
        if taken.rows_affected() == 1 {
            self.token = Some(token);
            self.renewed = Some(started);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The token of the current acquisition, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A SQL condition (using placeholder `$n`, to be bound to [`Lease::token`]) that holds
    /// only while this acquisition still owns the lease.
    pub fn holds(&self, n: usize) -> String {
        format!(
            "EXISTS (SELECT 1 FROM platform_leases WHERE name = '{}' AND token = ${n})",
            self.name
        )
    }

    /// Gives the lease up (shutdown), so a successor need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), sqlx::Error> {
        self.renewed = None;
        if let Some(token) = self.token.take() {
            sqlx::query("DELETE FROM platform_leases WHERE name = $1 AND token = $2")
                .bind(self.name)
                .bind(token)
                .execute(self.db.writer())
                .await?;
        }
        Ok(())
    }

    /// Forgets the acquisition (after the holder learnt it lost the lease).
    pub fn lost(&mut self) {
        self.token = None;
        self.renewed = None;
    }
}
