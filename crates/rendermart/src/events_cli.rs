//! `rendermart events …`: the operator's commands for the event machinery, on whichever
//! bus the configuration names — dead letters (list, show, redrive), parked outbox rows
//! (list, redrive) and replaying a consumer's history.
//!
//! The one thing to know: the commands reach each producing service's outbox through the
//! binary's list of services (every service with migrations has an outbox), and its
//! consumers are named `<service>.<name>` on the bus.

use anyhow::Context;
use clap::{Args, Subcommand};
use rendermart_platform::{
    bus::DeadLetter,
    db::Db,
    events_ops::{self, OpsError},
};
use sqlx::migrate::Migrator;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{app::Backends, Settings};

/// Services whose databases have an outbox: their name and migrations.
fn outbox_services() -> Vec<(&'static str, &'static Migrator)> {
    crate::services::all()
        .into_iter()
        .filter_map(|def| def.migrations.map(|m| (def.name, m)))
        .collect()
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// A consumer's dead-letter queue (on the embedded bus: its dead messages).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Outbox rows the relay parked because the bus kept refusing them.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Feed one consumer the events its bindings match that the outboxes kept since TIME.
    Replay {
        /// The consumer, `<service>.<name>`.
        #[arg(long)]
        consumer: String,
        /// RFC 3339 time (`2026-11-24T10:00:00Z`) or an age (`90m`, `12h`, `3d`).
        #[arg(long, value_parser = parse_since)]
        since: OffsetDateTime,
        /// Binding patterns to match (default: those the bus remembers for the consumer).
        #[arg(long = "pattern")]
        patterns: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        consumer: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one dead letter with its body.
    Show {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        id: String,
    },
    /// Put dead letters back on the consumer's queue with fresh attempts.
    Redrive(RedriveArgs),
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// List parked rows of every service (or one).
    Parked {
        #[arg(long)]
        service: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Give parked rows back to the relay.
    Redrive {
        #[arg(long)]
        service: Option<String>,
        /// One row by event id; without it, `--all` is required.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
pub struct RedriveArgs {
    #[arg(long)]
    consumer: String,
    /// One dead letter by event id; without it, `--all` is required.
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    all: bool,
}

/// Runs one `events` command against the configured backends.
pub async fn run(command: EventsCommand, settings: &Settings) -> anyhow::Result<()> {
    let backends = Backends::connect(settings).await?;
    let bus = backends.bus.as_ref();
    match command {
        EventsCommand::Dlq(DlqCommand::List { consumer, limit }) => {
            let letters = events_ops::dlq_list(bus, &consumer, limit).await?;
            if letters.is_empty() {
                println!("{consumer}: no dead letters");
            }
            for letter in letters {
                print_letter(&letter, false);
            }
        }
        EventsCommand::Dlq(DlqCommand::Show { consumer, id }) => {
            let letter = events_ops::dlq_show(bus, &consumer, &id).await?;
            print_letter(&letter, true);
        }
        EventsCommand::Dlq(DlqCommand::Redrive(RedriveArgs { consumer, id, all })) => {
            anyhow::ensure!(
                id.is_some() || all,
                "name a dead letter with --id, or redrive them all with --all"
            );
            let moved = events_ops::dlq_redrive(bus, &consumer, id.as_deref()).await?;
            println!("{consumer}: {moved} dead letter(s) redriven");
        }
        EventsCommand::Outbox(OutboxCommand::Parked { service, limit }) => {
            for db in outboxes(&backends, service.as_deref()).await? {
                let rows = events_ops::outbox_parked(&db, limit).await?;
                if rows.is_empty() {
                    println!("{}: no parked rows", db.service());
                }
                for row in rows {
                    println!(
                        "{} {} {} to={} attempts={} parked_at={} error={}",
                        db.service(),
                        row.id,
                        row.event_type,
                        row.destination.as_deref().unwrap_or("(published)"),
                        row.attempts,
                        row.parked_at.format(&Rfc3339).unwrap_or_default(),
                        row.last_error.as_deref().unwrap_or("")
                    );
                }
                db.close().await;
            }
        }
        EventsCommand::Outbox(OutboxCommand::Redrive { service, id, all }) => {
            anyhow::ensure!(
                id.is_some() || all,
                "name a row with --id, or redrive them all with --all"
            );
            for db in outboxes(&backends, service.as_deref()).await? {
                let moved = events_ops::outbox_redrive(&db, id.as_deref()).await?;
                println!(
                    "{}: {moved} parked row(s) given back to the relay",
                    db.service()
                );
                db.close().await;
            }
        }
        EventsCommand::Replay {
            consumer,
            since,
            patterns,
        } => {
            let dbs = outboxes(&backends, None).await?;
            let patterns = (!patterns.is_empty()).then_some(patterns);
            let replayed = match events_ops::replay(&dbs, bus, &consumer, patterns, since).await {
                Err(OpsError::NoBindings(c)) => anyhow::bail!(
                    "the bus has no bindings recorded for {c}; pass its patterns with --pattern"
                ),
                other => other?,
            };
            println!(
                "{consumer}: {} event(s) replayed, {} kept event(s) not matching its bindings",
                replayed.sent, replayed.skipped
            );
            for db in dbs {
                db.close().await;
            }
        }
    }
    Ok(())
}

/// The outbox databases (all, or the one named), migrated.
async fn outboxes(backends: &Backends, only: Option<&str>) -> anyhow::Result<Vec<Db>> {
    let known = outbox_services();
    if let Some(name) = only {
        anyhow::ensure!(
            known.iter().any(|(s, _)| *s == name),
            "unknown service {name:?} (known: {})",
            known.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
        );
    }
    let mut dbs = Vec::new();
    for (service, migrator) in known
        .into_iter()
        .filter(|(s, _)| only.is_none_or(|o| o == *s))
    {
        dbs.push(
            backends
                .database(service, migrator)
                .await
                .with_context(|| format!("opening {service}'s outbox"))?,
        );
    }
    Ok(dbs)
}

fn print_letter(letter: &DeadLetter, with_body: bool) {
    println!(
        "{} {} attempts={} error={}",
        letter.event_id,
        letter.event_type,
        letter.attempts,
        letter.error.as_deref().unwrap_or("")
    );
    if with_body {
        println!("{}", letter.body);
    }
}

/// An RFC 3339 time, or an age before now: `90m`, `12h`, `3d`, `45s`.
fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time nor an age like 90m, 12h, 3d")
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {text:?}: use s, m, h or d")),
    };
    let age = n
        .checked_mul(seconds)
        .filter(|s| (0..=366 * 86_400).contains(s))
        .ok_or_else(|| format!("{text:?} is out of range (at most a year)"))?;
    Ok(OffsetDateTime::now_utc() - time::Duration::seconds(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_ages_and_refuses_the_rest() {
        assert_eq!(
            parse_since("2026-11-24T10:00:00Z")
                .unwrap()
                .unix_timestamp(),
            1_795_514_400
        );
        let two_hours_ago = parse_since("2h").unwrap();
        let delta = OffsetDateTime::now_utc() - two_hours_ago;
        assert!((delta.whole_seconds() - 7200).abs() < 5);
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("5w").is_err());
        assert!(parse_since("99999999d").is_err());
    }
}
