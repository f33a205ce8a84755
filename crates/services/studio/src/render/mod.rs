//! The `procedural` provider's renderer: prompt + seed → a deterministic landscape (or
//! abstract composition) as a PNG, plus its thumbnail.
//!
//! It is not a model and never claims to be one: [`PROVIDER_NAME`] and [`MODEL_NAME`] are
//! what studio records as provenance. The same prompt, negative prompt, size and seed give
//! byte-identical PNGs with the same build on the same platform (floating-point `sin`/`exp`
//! may differ across CPU architectures, and a newer `image`/`png` crate may encode the same
//! pixels differently). Single-threaded on purpose: the service bounds how many renders run
//! at once.

mod canvas;
mod paint;
mod scene;

use crate::domain::{ImageSize, NegativePrompt, Prompt, Seed};
use crate::image_io::{encode_png, thumbnail_png, ImageIoError};

pub use scene::{Motif, TimeOfDay};

/// The provider name shown with every procedural image.
pub const PROVIDER_NAME: &str = "procedural";
/// The honest "model" name: a versioned renderer. Bump the number when a change to the
/// renderer changes the pictures, so provenance says which renderer made an image.
pub const MODEL_NAME: &str = "rendermart-procedural-1";

/// A rendered image: the PNG, its thumbnail PNG, and the original's size.
#[derive(Debug, Clone)]
pub struct RenderedImage {
    pub png: Vec<u8>,
    pub thumbnail_png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// What the renderer made of the words (for the studio page's "how was this drawn" and for
/// tests): the time of day and the motifs, after the negative prompt took its share out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneSummary {
    pub time: TimeOfDay,
    pub motifs: Vec<Motif>,
}

/// Describes the scene a prompt would produce, without painting it.
pub fn describe(prompt: &Prompt, negative: Option<&NegativePrompt>, seed: Seed) -> SceneSummary {
    let s = scene::Scene::from_prompt(
        prompt.as_str(),
        negative.map(NegativePrompt::as_str),
        seed.value(),
    );
    let all = [
        Motif::Sun,
        Motif::Moon,
        Motif::Stars,
        Motif::Clouds,
        Motif::Water,
        Motif::Mountains,
        Motif::Hills,
        Motif::Forest,
        Motif::City,
        Motif::Desert,
        Motif::Snow,
        Motif::Fog,
        Motif::Flowers,
        Motif::Abstract,
        Motif::Aurora,
        Motif::Birds,
        Motif::Boat,
    ];
    SceneSummary {
        time: s.time,
        motifs: all.into_iter().filter(|m| s.motifs.has(*m)).collect(),
    }
}

/// Paints the picture and encodes it and its thumbnail as PNG. CPU-bound (tens of
/// milliseconds in release): call it from a blocking thread, not an async task.
pub fn render(
    prompt: &Prompt,
    negative: Option<&NegativePrompt>,
    size: ImageSize,
    seed: Seed,
) -> Result<RenderedImage, ImageIoError> {
    let (w, h) = size.dimensions();
    let rgb = render_rgb(prompt, negative, size, seed);
    let png = encode_png(&rgb, w, h)?;
    let thumbnail_png = thumbnail_png(&rgb, w, h)?;
    Ok(RenderedImage {
        png,
        thumbnail_png,
        width: w,
        height: h,
    })
}

/// The raw RGB8 pixels (row-major), before PNG encoding.
pub fn render_rgb(
    prompt: &Prompt,
    negative: Option<&NegativePrompt>,
    size: ImageSize,
    seed: Seed,
) -> Vec<u8> {
    let (w, h) = size.dimensions();
    let scene = scene::Scene::from_prompt(
        prompt.as_str(),
        negative.map(NegativePrompt::as_str),
        seed.value(),
    );
    paint::paint_rgb8(&scene, w as usize, h as usize)
}
