//! Object store figures: what storing and linking an image costs, per backend.
//!
//! ```sh
//! cargo run --release -p rendermart-platform --example objects_bench [ITERATIONS]
//! RENDERMART_TEST_S3_URL=http://127.0.0.1:5000 \
//!   cargo run --release -p rendermart-platform --features s3 --example objects_bench
//! ```
//!
//! Prints mean / p50 / p99 for `put` of an image-sized (600 KiB) and a thumbnail-sized
//! (30 KiB) object, `get`, `signed_url`, and a signed-link fetch over loopback HTTP (local
//! store). The local `put` includes its two fsyncs, so the figure depends on the disk.
//! The S3 figures measure moto (a Python server), not S3: they show our overhead at most.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rendermart_platform::objects::{
    self, ContentType, LocalStore, ObjectKey, ObjectStore, Objects, SigningKey,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let local = Arc::new(
        LocalStore::open(dir.path().join("objects"), SigningKey::random(), 32 << 20).await?,
    );
    let objects = Objects::local(local.clone(), Duration::from_secs(900));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = objects.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    println!("object store benchmark, {iterations} iterations per figure (ms: mean / p50 / p99)");
    bench_store("local", objects.store(), Some(&base), iterations).await?;

    match std::env::var("RENDERMART_TEST_S3_URL") {
        Ok(endpoint) if cfg!(feature = "s3") => {
            let mut config = objects::ObjectsConfig {
                backend: objects::Backend::S3,
                ..objects::ObjectsConfig::default()
            };
            config.s3.bucket = format!("rendermart-bench-{}", uuid::Uuid::now_v7().simple());
            config.s3.endpoint = Some(endpoint);
            config.s3.path_style = true;
            config.s3.access_key_id = Some("bench".into());
            config.s3.secret_access_key = Some(objects::Secret::new("bench-secret"));
            config.s3.create_bucket = true;
            let s3 = objects::open(&config, Path::new("/nonexistent")).await?;
            bench_store("s3 (moto)", s3.store(), None, iterations.min(50)).await?;
        }
        _ => println!("s3: skipped (set RENDERMART_TEST_S3_URL and build with --features s3)"),
    }
    Ok(())
}

async fn bench_store(
    name: &str,
    store: Arc<dyn ObjectStore>,
    base: Option<&str>,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let image = Bytes::from(vec![0x5a; 600 * 1024]);
    let thumb = Bytes::from(vec![0xa5; 30 * 1024]);
    let keys: Vec<ObjectKey> = (0..n)
        .map(|i| ObjectKey::parse(format!("images/bench-{i}.png")))
        .collect::<Result<_, _>>()?;

    let mut put_image = Vec::with_capacity(n);
    let mut put_thumb = Vec::with_capacity(n);
    let mut get = Vec::with_capacity(n);
    let mut sign = Vec::with_capacity(n);
    let mut fetch = Vec::with_capacity(n);
    let client = reqwest::Client::new();
    for key in &keys {
        let t = Instant::now();
        store.put(key, image.clone(), &ContentType::png()).await?;
        put_image.push(t.elapsed());

        let thumb_key = ObjectKey::parse(key.as_str().replace("images/", "thumbs/"))?;
        let t = Instant::now();
        store
            .put(&thumb_key, thumb.clone(), &ContentType::png())
            .await?;
        put_thumb.push(t.elapsed());

        let t = Instant::now();
        let object = store.get(key).await?;
        get.push(t.elapsed());
        assert_eq!(object.bytes.len(), image.len());

        let t = Instant::now();
        let url = store.signed_url(key, Duration::from_secs(60), None).await?;
        sign.push(t.elapsed());

        if let Some(base) = base {
            let t = Instant::now();
            let body = client
                .get(format!("{base}{}", url.as_str()))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            fetch.push(t.elapsed());
            assert_eq!(body.len(), image.len());
        }
    }
    println!("{name}:");
    print_figure("  put 600 KiB image", &mut put_image);
    print_figure("  put 30 KiB thumbnail", &mut put_thumb);
    print_figure("  get 600 KiB", &mut get);
    print_figure("  signed_url", &mut sign);
    if !fetch.is_empty() {
        print_figure("  GET signed link (HTTP)", &mut fetch);
    }
    Ok(())
}

fn print_figure(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len().max(1) as f64;
    let at = |q: f64| ms(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    println!(
        "{what:<28} {mean:>8.3} / {:>8.3} / {:>8.3}",
        at(0.5),
        at(0.99)
    );
}
