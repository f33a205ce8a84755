//! The RenderMart binary's library half: configuration, the list of services and the
//! wiring, so tests can build the same application `main` runs
//! (`Application::build(settings)` on port 0).

pub mod app;
pub mod config;
pub mod events_cli;
mod openapi;
pub mod seed;
pub mod services;

pub use app::Application;
pub use config::{ServiceSet, Settings};
