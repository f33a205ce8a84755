//! Procedural render benchmark: `cargo bench -p rendermart-studio --bench render`.
//!
//! For each square size, 50 renders of varied prompts and seeds; prints the median and
//! p95 of the whole job studio runs per image (paint + PNG encode + thumbnail) and of the
//! paint alone. Single-threaded, like the provider. The target is < 100 ms for
//! 768×768 including storing the object, so this figure needs headroom below that.

use std::time::{Duration, Instant};

use rendermart_studio::{render, ImageSize, Prompt, Seed};

const PROMPTS: &[&str] = &[
    "a mountain lake at dusk",
    "city skyline at night by the sea",
    "misty pine forest in winter snow",
    "desert dunes under a red sun",
    "a meadow of flowers on rolling hills at dawn",
    "abstract geometric shapes in teal and orange",
    "aurora over a frozen lake",
    "portrait of my grandmother's cat",
    "ocean at night with stars and a boat",
    "foggy valley with birds at sunrise",
];

const RUNS: usize = 50;

/// This thread's CPU time (Linux `/proc/thread-self/schedstat`), so the figure means
/// something on a machine shared with other builds; `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p95 = v[(v.len() * 95).div_ceil(100) - 1];
    (median, p95, v[v.len() - 1])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("procedural render, {RUNS} runs per size, single thread");
    println!(
        "{:<10} {:>26} {:>26} {:>26} {:>8}",
        "size", "wall: paint+png+thumb", "CPU: paint+png+thumb", "CPU: paint only", "PNG KiB"
    );
    println!(
        "{:<10} {:>26} {:>26} {:>26}",
        "", "median / p95", "median / p95", "median / p95"
    );
    for size in [
        ImageSize::Square512,
        ImageSize::Square768,
        ImageSize::Square1024,
    ] {
        // One warm-up render per size.
        let p = Prompt::parse(PROMPTS[0])?;
        render::render(&p, None, size, Seed::new(0)?)?;
        let mut full = Vec::with_capacity(RUNS);
        let mut full_cpu = Vec::with_capacity(RUNS);
        let mut paint = Vec::with_capacity(RUNS);
        let mut bytes = 0usize;
        for i in 0..RUNS {
            let p = Prompt::parse(PROMPTS[i % PROMPTS.len()])?;
            let seed = Seed::new(i as u64 * 7919)?;
            let (t, c) = (Instant::now(), thread_cpu());
            let img = render::render(&p, None, size, seed)?;
            full.push(t.elapsed());
            full_cpu.push(thread_cpu().zip(c).map_or(t.elapsed(), |(b, a)| b - a));
            bytes += img.png.len();
            let (t, c) = (Instant::now(), thread_cpu());
            std::hint::black_box(render::render_rgb(&p, None, size, seed));
            paint.push(thread_cpu().zip(c).map_or(t.elapsed(), |(b, a)| b - a));
        }
        let (fm, fp, _) = stats(full);
        let (cm, cp, _) = stats(full_cpu);
        let (pm, pp, _) = stats(paint);
        println!(
            "{:<10} {:>12.1?} / {:>11.1?} {:>12.1?} / {:>11.1?} {:>12.1?} / {:>11.1?} {:>8}",
            size.to_string(),
            fm,
            fp,
            cm,
            cp,
            pm,
            pp,
            bytes / RUNS / 1024,
        );
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average while measuring: {}", load.trim());
    }
    Ok(())
}
