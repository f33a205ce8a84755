//! PNG in and out, and thumbnails: the one place that touches the `image` crate.
//!
//! Bytes from remote providers are untrusted: they are decoded under size and memory limits
//! (no decompression bombs), must be PNG, and are re-checked by a full decode before studio
//! accepts them.

use std::io::Cursor;

use image::{
    codecs::png::{CompressionType, FilterType, PngEncoder},
    imageops, ExtendedColorType, ImageEncoder, ImageFormat, ImageReader, Limits, RgbImage,
    RgbaImage,
};

/// The thumbnail's long side in pixels.
pub const THUMBNAIL_LONG_SIDE: u32 = 256;

/// The largest image (per side) accepted from a provider.
pub const MAX_PROVIDER_SIDE: u32 = 4096;

const PNG_MAGIC: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    #[error("the image is not a PNG")]
    NotPng,
    #[error("the PNG could not be read: {0}")]
    Decode(String),
    #[error("the image could not be encoded: {0}")]
    Encode(String),
}

/// Encodes RGB8 pixels as PNG. `Fast` compression with the `Sub` filter: a 768² render
/// encodes in ~5 ms; the default level takes ~300 ms for files only ~10 % smaller, and the
/// adaptive filter costs ~40 % more time for the same size (measured on our renders).
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ImageIoError> {
    let mut out = Vec::with_capacity(rgb.len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub)
        .write_image(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| ImageIoError::Encode(e.to_string()))?;
    Ok(out)
}

/// The size of a thumbnail of a `width`×`height` image: long side
/// [`THUMBNAIL_LONG_SIDE`], aspect ratio kept, never upscaled.
pub fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    let long = width.max(height).max(1);
    if long <= THUMBNAIL_LONG_SIDE {
        return (width.max(1), height.max(1));
    }
    let k = THUMBNAIL_LONG_SIDE as f64 / long as f64;
    (
        ((width as f64 * k).round() as u32).max(1),
        ((height as f64 * k).round() as u32).max(1),
    )
}

/// Makes the thumbnail PNG of RGB8 pixels (area-averaging downscale: sharp and fast).
pub fn thumbnail_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ImageIoError> {
    let img = RgbImage::from_raw(width, height, rgb.to_vec())
        .ok_or_else(|| ImageIoError::Encode("pixel buffer does not match its size".into()))?;
    let (tw, th) = thumbnail_size(width, height);
    let thumb = imageops::thumbnail(&img, tw, th);
    encode_png(thumb.as_raw(), tw, th)
}

/// A PNG that was fully decoded under limits: its bytes, size and thumbnail.
pub struct CheckedPng {
    pub png: Vec<u8>,
    pub thumbnail_png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Checks that untrusted bytes are a PNG of sane size, decodes them fully (a truncated or
/// corrupt file fails here, not in a buyer's browser) and makes the thumbnail. The original
/// bytes are kept as they are.
pub fn check_png(bytes: Vec<u8>) -> Result<CheckedPng, ImageIoError> {
    if !bytes.starts_with(PNG_MAGIC) {
        return Err(ImageIoError::NotPng);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_PROVIDER_SIDE);
    limits.max_image_height = Some(MAX_PROVIDER_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    let mut reader = ImageReader::with_format(Cursor::new(&bytes), ImageFormat::Png);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageIoError::Decode(e.to_string()))?;
    let (width, height) = (img.width(), img.height());
    let (tw, th) = thumbnail_size(width, height);
    // Keep transparency if the provider sent any (Titan's background removal can).
    let thumbnail_png = if img.color().has_alpha() {
        let rgba: RgbaImage = img.to_rgba8();
        let t = imageops::thumbnail(&rgba, tw, th);
        let mut out = Vec::new();
        PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
            .write_image(t.as_raw(), tw, th, ExtendedColorType::Rgba8)
            .map_err(|e| ImageIoError::Encode(e.to_string()))?;
        out
    } else {
        let rgb = img.to_rgb8();
        let t = imageops::thumbnail(&rgb, tw, th);
        encode_png(t.as_raw(), tw, th)?
    };
    Ok(CheckedPng {
        png: bytes,
        thumbnail_png,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_ratio_and_never_upscale() {
        assert_eq!(thumbnail_size(768, 768), (256, 256));
        assert_eq!(thumbnail_size(1024, 576), (256, 144));
        assert_eq!(thumbnail_size(576, 1024), (144, 256));
        assert_eq!(thumbnail_size(100, 50), (100, 50));
    }

    #[test]
    fn a_png_round_trips_and_junk_is_refused() {
        let rgb: Vec<u8> = (0..64 * 32 * 3).map(|i| (i % 251) as u8).collect();
        let png = encode_png(&rgb, 64, 32).unwrap();
        let checked = check_png(png.clone()).unwrap();
        assert_eq!((checked.width, checked.height), (64, 32));
        assert_eq!(checked.png, png);
        assert!(checked.thumbnail_png.starts_with(PNG_MAGIC));

        assert!(matches!(
            check_png(b"GIF89a....".to_vec()),
            Err(ImageIoError::NotPng)
        ));
        let truncated = png[..png.len() / 2].to_vec();
        assert!(matches!(check_png(truncated), Err(ImageIoError::Decode(_))));
    }
}
