//! Writes sample renders (and thumbnails) to a directory, with timings:
//! `cargo run --release -p rendermart-studio --example samples -- /tmp/studio-samples`.

use std::time::Instant;

use rendermart_studio::{render, ImageSize, NegativePrompt, Prompt, Seed};

type Sample = (&'static str, Option<&'static str>, ImageSize, u64);

const SAMPLES: &[Sample] = &[
    ("a mountain lake at dusk", None, ImageSize::Square768, 7),
    (
        "city skyline at night by the sea",
        None,
        ImageSize::Landscape1024x576,
        3,
    ),
    (
        "misty pine forest in winter snow",
        None,
        ImageSize::Square768,
        11,
    ),
    (
        "desert dunes under a red sun",
        None,
        ImageSize::Square768,
        5,
    ),
    (
        "a meadow of flowers on rolling hills at dawn",
        None,
        ImageSize::Square768,
        2,
    ),
    (
        "abstract geometric shapes in teal and orange",
        None,
        ImageSize::Square768,
        9,
    ),
    (
        "aurora over a frozen lake",
        None,
        ImageSize::Portrait576x1024,
        4,
    ),
    (
        "portrait of my grandmother's cat",
        None,
        ImageSize::Square768,
        1,
    ),
    (
        "ocean at night with stars",
        Some("moon"),
        ImageSize::Square768,
        8,
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/studio-samples".into());
    std::fs::create_dir_all(&dir)?;
    for (i, (p, n, size, seed)) in SAMPLES.iter().enumerate() {
        let prompt = Prompt::parse(p)?;
        let neg = n.map(NegativePrompt::parse).transpose()?;
        let seed = Seed::new(*seed)?;
        let t = Instant::now();
        let rgb = render::render_rgb(&prompt, neg.as_ref(), *size, seed);
        let paint = t.elapsed();
        drop(rgb);
        let t = Instant::now();
        let img = render::render(&prompt, neg.as_ref(), *size, seed)?;
        let full = t.elapsed();
        let name = format!(
            "{dir}/{:02}-{}.png",
            i + 1,
            p.replace(' ', "-").replace('\'', "")
        );
        std::fs::write(&name, &img.png)?;
        std::fs::write(name.replace(".png", ".thumb.png"), &img.thumbnail_png)?;
        let scene = render::describe(&prompt, neg.as_ref(), seed);
        println!(
            "{name}: {} KiB, paint {paint:.1?}, paint+png+thumbnail {full:.1?}, {scene:?}",
            img.png.len() / 1024
        );
    }
    Ok(())
}
