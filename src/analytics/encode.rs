//! Decoded frames to files: optional resize (aspect kept), then JPEG or PNG. Blocking CPU work.

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::imageops;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

/// Largest `width`/`height` a request may ask for: 4K, so one request cannot make the server
/// hold a huge bitmap per frame.
pub const MAX_DIMENSION: u32 = 4096;
/// Smallest `width`/`height`: below this a frame says nothing.
pub const MIN_DIMENSION: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }
}

/// How a request wants its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub format: ImageFormat,
    /// JPEG quality 1-100 (ignored for PNG).
    pub quality: u8,
    /// Resize to this width and/or height, keeping the aspect ratio; with both, fit inside.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The output size for a `src` frame: the frame's own size, or scaled to `width` or `height`
/// with the aspect ratio kept, or (both given) the largest size that fits inside both.
pub fn target_size(src: (u32, u32), width: Option<u32>, height: Option<u32>) -> (u32, u32) {
    let (w, h) = (f64::from(src.0.max(1)), f64::from(src.1.max(1)));
    let scale = match (width, height) {
        (None, None) => return src,
        (Some(tw), None) => f64::from(tw) / w,
        (None, Some(th)) => f64::from(th) / h,
        (Some(tw), Some(th)) => (f64::from(tw) / w).min(f64::from(th) / h),
    };
    let scaled = |v: f64, exact: Option<u32>| exact.unwrap_or(((v * scale).round() as u32).max(1));
    match (width, height) {
        (Some(tw), None) => (tw, scaled(h, None)),
        (None, Some(th)) => (scaled(w, None), th),
        _ => (scaled(w, None), scaled(h, None)),
    }
}

/// Resizes (when asked) and encodes `frame`; returns the file and its dimensions.
pub fn encode(frame: &RgbImage, enc: &Encoding) -> Result<(Vec<u8>, u32, u32), String> {
    let (w, h) = target_size(frame.dimensions(), enc.width, enc.height);
    let resized;
    let img = if (w, h) == frame.dimensions() {
        frame
    } else {
        resized = imageops::resize(frame, w, h, imageops::FilterType::Triangle);
        &resized
    };
    let mut out = Vec::with_capacity((w * h) as usize / 4);
    let result = match enc.format {
        ImageFormat::Jpeg => JpegEncoder::new_with_quality(&mut out, enc.quality.clamp(1, 100))
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8),
        // Fast compression: frames are fetched live; a few percent of size is not worth 3x time.
        ImageFormat::Png => {
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
        }
    };
    result.map_err(|e| format!("cannot encode the frame: {e}"))?;
    Ok((out, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_aspect() {
        assert_eq!(target_size((640, 360), None, None), (640, 360));
        assert_eq!(target_size((640, 360), Some(320), None), (320, 180));
        assert_eq!(target_size((640, 360), None, Some(90)), (160, 90));
        assert_eq!(target_size((640, 360), Some(100), Some(100)), (100, 56));
        assert_eq!(target_size((640, 360), Some(1000), Some(90)), (160, 90));
        assert_eq!(target_size((1920, 1080), Some(16), None), (16, 9));
    }

    #[test]
    fn jpeg_and_png_round_trip() {
        let frame = RgbImage::from_fn(64, 36, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 7) as u8, 99])
        });
        let enc = Encoding {
            format: ImageFormat::Png,
            quality: 80,
            width: None,
            height: None,
        };
        let (png, w, h) = encode(&frame, &enc).unwrap();
        assert_eq!((w, h), (64, 36));
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(back, frame, "PNG is lossless");
        let enc = Encoding {
            format: ImageFormat::Jpeg,
            width: Some(32),
            ..enc
        };
        let (jpeg, w, h) = encode(&frame, &enc).unwrap();
        assert_eq!((w, h), (32, 18));
        assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff]);
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (32, 18));
    }
}
