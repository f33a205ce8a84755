//! The procedural renderer's promises: same input → same bytes; different prompts →
//! different pictures; the negative prompt takes motifs out; every offered size renders
//! with a thumbnail of the right size.

use rendermart_studio::{
    render::{self, Motif, TimeOfDay},
    thumbnail_size, ImageSize, NegativePrompt, Prompt, Seed,
};

fn prompt(s: &str) -> Prompt {
    Prompt::parse(s).unwrap()
}

fn seed(n: u64) -> Seed {
    Seed::new(n).unwrap()
}

fn png_size(png: &[u8]) -> (u32, u32) {
    // IHDR: width and height are the first two big-endian u32 after the chunk header.
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

/// Mean absolute difference per channel, 0..=255.
fn difference(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (i32::from(*x) - i32::from(*y)).unsigned_abs() as u64)
        .sum::<u64>() as f64
        / a.len() as f64
}

#[test]
fn the_same_prompt_and_seed_give_byte_identical_pngs() {
    let p = prompt("a mountain lake at dusk with pine trees");
    let neg = NegativePrompt::parse("fog").unwrap();
    let a = render::render(&p, Some(&neg), ImageSize::Square512, seed(99)).unwrap();
    let b = render::render(&p, Some(&neg), ImageSize::Square512, seed(99)).unwrap();
    assert_eq!(a.png, b.png);
    assert_eq!(a.thumbnail_png, b.thumbnail_png);
}

#[test]
fn different_prompts_give_visibly_different_pictures() {
    let prompts = [
        "a mountain lake at dusk",
        "city skyline at night",
        "desert dunes at noon",
        "abstract geometric shapes",
        "quarterly revenue report",
        "quarterly revenue reports",
    ];
    let images: Vec<Vec<u8>> = prompts
        .iter()
        .map(|p| render::render_rgb(&prompt(p), None, ImageSize::Square512, seed(1)))
        .collect();
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            let d = difference(&images[i], &images[j]);
            // Grain alone differs by ~1 level; a different picture by far more.
            assert!(
                d > 4.0,
                "{:?} vs {:?}: only {d:.2} apart",
                prompts[i],
                prompts[j]
            );
        }
    }
}

#[test]
fn another_seed_varies_the_picture_but_keeps_what_it_shows() {
    let p = prompt("snowy mountains at dawn");
    let a = render::render_rgb(&p, None, ImageSize::Square512, seed(1));
    let b = render::render_rgb(&p, None, ImageSize::Square512, seed(2));
    assert!(difference(&a, &b) > 2.0);
    assert_eq!(
        render::describe(&p, None, seed(1)),
        render::describe(&p, None, seed(2))
    );
}

#[test]
fn words_choose_the_scene() {
    let s = render::describe(
        &prompt("a misty ocean at dusk with mountains"),
        None,
        seed(5),
    );
    assert_eq!(s.time, TimeOfDay::Dusk);
    for m in [Motif::Water, Motif::Mountains, Motif::Fog, Motif::Sun] {
        assert!(s.motifs.contains(&m), "{m:?} missing from {s:?}");
    }
    let s = render::describe(&prompt("city at night"), None, seed(5));
    assert_eq!(s.time, TimeOfDay::Night);
    assert!(s.motifs.contains(&Motif::Stars) && s.motifs.contains(&Motif::City));
    assert!(!s.motifs.contains(&Motif::Sun));
}

#[test]
fn negative_prompt_words_suppress_motifs_in_the_picture() {
    let p = prompt("a lake under the stars with a big moon at night");
    let neg = NegativePrompt::parse("moon, stars").unwrap();
    let with = render::describe(&p, None, seed(4));
    let without = render::describe(&p, Some(&neg), seed(4));
    assert!(with.motifs.contains(&Motif::Moon) && with.motifs.contains(&Motif::Stars));
    assert!(!without.motifs.contains(&Motif::Moon) && !without.motifs.contains(&Motif::Stars));
    // And the pixels change accordingly: the sky loses its points of light.
    let a = render::render_rgb(&p, None, ImageSize::Square512, seed(4));
    let b = render::render_rgb(&p, Some(&neg), ImageSize::Square512, seed(4));
    let bright = |rgb: &[u8]| {
        // Count very bright pixels in the top third (stars and the moon live there).
        rgb[..rgb.len() / 3]
            .chunks(3)
            .filter(|px| px.iter().all(|c| *c > 200))
            .count()
    };
    assert!(
        bright(&a) > 10 * bright(&b).max(1),
        "bright sky pixels with {} vs without {}",
        bright(&a),
        bright(&b)
    );
}

#[test]
fn every_offered_size_renders_at_that_size_with_its_thumbnail() {
    for size in ImageSize::ALL {
        let img = render::render(&prompt("hills and a forest"), None, size, seed(8)).unwrap();
        assert_eq!(png_size(&img.png), size.dimensions());
        assert_eq!((img.width, img.height), size.dimensions());
        let thumb = png_size(&img.thumbnail_png);
        assert_eq!(thumb, thumbnail_size(size.width(), size.height()));
        assert_eq!(thumb.0.max(thumb.1), 256);
    }
}

#[test]
fn a_picture_is_not_noise() {
    // Neighbouring pixels of a picture are close; in noise they are not. Mean horizontal
    // neighbour difference stays small (grain and edges included).
    let rgb = render::render_rgb(
        &prompt("a forest by a lake"),
        None,
        ImageSize::Square512,
        seed(3),
    );
    let w = 512 * 3;
    let mut total = 0u64;
    let mut n = 0u64;
    for row in rgb.chunks(w) {
        for i in 3..row.len() {
            total += (i32::from(row[i]) - i32::from(row[i - 3])).unsigned_abs() as u64;
            n += 1;
        }
    }
    let mean = total as f64 / n as f64;
    assert!(
        mean < 8.0,
        "mean neighbour difference {mean:.2}: that is noise, not a picture"
    );
    // And it is not a flat fill either.
    let (min, max) = rgb
        .iter()
        .fold((255u8, 0u8), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    assert!(max - min > 120, "contrast {min}..{max}");
}
