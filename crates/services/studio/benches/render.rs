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

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p95 = v[(v.len() * 95).div_ceil(100) - 1];
    (median, p95, v[v.len() - 1])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("procedural render, {RUNS} runs per size, single thread");
    println!(
        "{:<10} {:>26} {:>26} {:>9}",
        "size", "paint+png+thumb med / p95", "paint only med / p95", "PNG KiB"
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
        let mut paint = Vec::with_capacity(RUNS);
        let mut bytes = 0usize;
        for i in 0..RUNS {
            let p = Prompt::parse(PROMPTS[i % PROMPTS.len()])?;
            let seed = Seed::new(i as u64 * 7919)?;
            let t = Instant::now();
            let img = render::render(&p, None, size, seed)?;
            full.push(t.elapsed());
            bytes += img.png.len();
            let t = Instant::now();
            std::hint::black_box(render::render_rgb(&p, None, size, seed));
            paint.push(t.elapsed());
        }
        let (fm, fp, fmax) = stats(full);
        let (pm, pp, _) = stats(paint);
        println!(
            "{:<10} {:>11.1?} / {:>11.1?} {:>11.1?} / {:>11.1?} {:>9}   (max {:.1?})",
            size.to_string(),
            fm,
            fp,
            pm,
            pp,
            bytes / RUNS / 1024,
            fmax
        );
    }
    Ok(())
}
