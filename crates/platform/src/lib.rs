//! Shared plumbing for every RenderMart service.
//!
//! A service crate builds on these pieces (and on the shared types in `rendermart-types`)
//! and nothing else shared: the contract it implements to be started by the binary
//! ([`service`]), storage that runs the same code on SQLite and PostgreSQL ([`db`]),
//! events that are never lost and stay in order per aggregate ([`outbox`], [`inbox`],
//! [`bus`], applied through [`consumer`]), sagas ([`saga`], [`timers`]), supervision of
//! long-lived tasks ([`supervise`]), event operations ([`events_ops`]), objects such as
//! images ([`objects`]), calls to other services and their authentication ([`client`],
//! [`internal`]), the HTTP edge ([`http`]), the authentication contract every route relies
//! on ([`auth`]: principal, roles, session cookie), rate limits ([`ratelimit`]) and
//! telemetry ([`telemetry`]).
//!
//! Nothing here knows a particular service's rules or tables: roles and the session cookie
//! are here because every service's routes depend on them, not because platform decides
//! who has them.

pub mod auth;
pub mod bus;
pub mod client;
pub mod clock;
pub mod consumer;
pub mod db;
pub mod events;
pub mod events_ops;
pub mod group;
pub mod http;
pub mod inbox;
pub mod internal;
pub mod lease;
pub mod live;
pub mod objects;
pub mod outbox;
pub mod ratelimit;
pub mod recent;
pub mod saga;
pub mod service;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod timers;

pub use uuid;
