//! Shared plumbing for every RenderMart service.
//!
//! A service crate builds on these pieces and nothing else shared: storage that runs the
//! same code on SQLite and PostgreSQL ([`db`]), events that are never lost ([`outbox`],
//! [`inbox`], [`bus`]), the HTTP edge ([`http`]), the authentication contract every route
//! relies on ([`auth`]), rate limits ([`ratelimit`]) and telemetry ([`telemetry`]).
//! Nothing here knows about a particular service.

pub mod auth;
pub mod bus;
pub mod clock;
pub mod db;
pub mod events;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod objects;
pub mod outbox;
pub mod ratelimit;
pub mod shutdown;
pub mod telemetry;

pub use uuid;
