//! The yardstick of `scripts/bench-baseline`: the barest axum JSON handler (no middleware,
//! no database), built with the same crates and profile as RenderMart, so a RenderMart
//! route's throughput can be quoted as a share of what the machine can serve at all.
//!
//! `cargo run --release -p rendermart --example bare_json -- 127.0.0.1:18081`

use axum::{routing::get, Json, Router};

/// The same allocator as the `rendermart` binary, so the ratio compares the code, not the
/// allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let app = Router::new().route(
        "/json",
        get(|| async {
            Json(serde_json::json!({
                "id": "019ab9c0-0000-7000-8000-000000000000",
                "email": "someone@example.com",
                "display_name": "Someone",
                "roles": ["customer"],
                "created_at": "2026-11-25T00:00:00Z"
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
