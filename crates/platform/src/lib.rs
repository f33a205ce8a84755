//! Shared plumbing for every RenderMart service.
//!
//! A service crate builds on these pieces and nothing else shared: storage that runs the
//! same code on SQLite and PostgreSQL ([`db`]), events that are never lost and stay in
//! order per aggregate ([`outbox`], [`inbox`], [`bus`], applied through [`consumer`]),
//! sagas ([`saga`], [`timers`]), supervision of long-lived tasks ([`supervise`]), event
//! operations ([`events_ops`]), the HTTP edge ([`http`]), the authentication contract every route
//! relies on ([`auth`]), rate limits ([`ratelimit`]) and telemetry ([`telemetry`]).
//! Nothing here knows about a particular service.

pub mod auth;
pub mod bus;
pub mod clock;
pub mod consumer;
pub mod db;
pub mod events;
pub mod events_ops;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod lease;
pub mod outbox;
pub mod ratelimit;
pub mod saga;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod timers;

pub use uuid;
