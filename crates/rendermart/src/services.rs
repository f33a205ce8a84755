//! The one list of services this binary can run. Everything else follows from it: the
//! names `--services` accepts, what `migrate` migrates, what `config` prints, the
//! `--<name>-url` flags, and what a process starts (in dependency order, whatever the order
//! here).
//!
//! Adding a service: its crate under `crates/services/<name>` implementing
//! `rendermart_platform::service::Service`, its dependency in this crate's Cargo.toml, and
//! one line below.

use rendermart_platform::service::ServiceDef;

pub fn all() -> Vec<ServiceDef> {
    vec![
        ServiceDef::of::<rendermart_identity::IdentityService>(),
        ServiceDef::of::<rendermart_studio::StudioService>(),
        ServiceDef::of::<rendermart_wallet::WalletService>(),
        ServiceDef::of::<rendermart_catalog::CatalogService>(),
        ServiceDef::of::<rendermart_inventory::InventoryService>(),
        ServiceDef::of::<rendermart_cart::CartService>(),
        ServiceDef::of::<rendermart_orders::OrdersService>(),
        ServiceDef::of::<rendermart_web::WebService>(),
    ]
}
