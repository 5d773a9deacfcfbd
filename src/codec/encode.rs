//! Decoded frames to files: optional resize (aspect kept), then JPEG or PNG. Blocking CPU work.
//!
//! JPEG is written straight from the decoder's Y'CbCr 4:2:0 planes (range-expanded to JFIF's full
//! range), so a 1080p frame costs no RGB conversion and no chroma resampling.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use jpeg_encoder::{ImageBuffer, JpegColorType, SamplingFactor};

use super::picture::{full_range_chroma, full_range_luma, Picture};

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
pub fn encode(frame: &Picture, enc: &Encoding) -> Result<(Vec<u8>, u32, u32), String> {
    let (w, h) = target_size((frame.width, frame.height), enc.width, enc.height);
    let resized;
    let pic = if (w, h) == (frame.width, frame.height) {
        frame
    } else {
        resized = frame.resized(w, h);
        &resized
    };
    let mut out = Vec::with_capacity((w * h) as usize / 4);
    match enc.format {
        ImageFormat::Jpeg => {
            let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
                return Err(format!("a {w}x{h} frame is too large for JPEG"));
            };
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, enc.quality.clamp(1, 100));
            // The source has 4:2:0 chroma already; more chroma resolution would be made up.
            encoder.set_sampling_factor(SamplingFactor::F_2_2);
            encoder
                .encode_image(JfifRows {
                    pic,
                    width: w16,
                    height: h16,
                    luma: full_range_luma(),
                    chroma: full_range_chroma(),
                })
                .map_err(|e| format!("cannot encode the frame as JPEG: {e}"))?;
        }
        // Fast compression: frames are fetched live; a few percent of size is not worth 3x time.
        ImageFormat::Png => {
            let rgb = pic.to_rgb();
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                .write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8)
                .map_err(|e| format!("cannot encode the frame as PNG: {e}"))?;
        }
    }
    Ok((out, w, h))
}

/// Feeds a picture's rows to the JPEG encoder as full-range Y'CbCr, chroma repeated per pixel
/// (the encoder's 2x2 subsampling then gets back exactly the decoder's chroma samples).
struct JfifRows<'a> {
    pic: &'a Picture,
    width: u16,
    height: u16,
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl ImageBuffer for JfifRows<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let w = usize::from(self.width);
        let cw = w.div_ceil(2);
        let row = usize::from(row);
        let y = &self.pic.y[row * w..(row + 1) * w];
        let c = (row / 2) * cw;
        let (cb, cr) = (&self.pic.cb[c..c + cw], &self.pic.cr[c..c + cw]);
        buffers[0].extend(y.iter().map(|&v| self.luma[usize::from(v)]));
        // Each chroma sample twice, written into place: a push per pixel (a capacity check
        // each) was a third of a cached frame's encode time at 1080p.
        for (buf, plane) in [(1, cb), (2, cr)] {
            let buf = &mut buffers[buf];
            let start = buf.len();
            buf.resize(start + w, 0);
            let row = &mut buf[start..];
            let mut pairs = row.chunks_exact_mut(2);
            for (pair, &v) in (&mut pairs).zip(plane) {
                let full = self.chroma[usize::from(v)];
                pair[0] = full;
                pair[1] = full;
            }
            if let ([last], Some(&v)) = (pairs.into_remainder(), plane.last()) {
                *last = self.chroma[usize::from(v)];
            }
        }
    }
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

    /// Rows handed to the JPEG encoder repeat each chroma sample for the two pixels it covers,
    /// odd widths included (the last pixel has a chroma sample of its own).
    #[test]
    fn rows_repeat_chroma_per_pixel() {
        for (w, h) in [(7u32, 3u32), (8, 2), (1, 1)] {
            let (cw, ch) = Picture::chroma_size(w, h);
            let pic = Picture {
                width: w,
                height: h,
                y: (0..w * h).map(|i| (16 + i) as u8).collect(),
                cb: (0..cw * ch).map(|i| (100 + i) as u8).collect(),
                cr: (0..cw * ch).map(|i| (200 - i) as u8).collect(),
            };
            let rows = JfifRows {
                pic: &pic,
                width: w as u16,
                height: h as u16,
                luma: full_range_luma(),
                chroma: full_range_chroma(),
            };
            for row in 0..h as usize {
                let mut got: [Vec<u8>; 4] = Default::default();
                rows.fill_buffers(row as u16, &mut got);
                let c = |plane: &[u8], x: usize| {
                    rows.chroma[usize::from(plane[(row / 2) * cw as usize + x / 2])]
                };
                let w = w as usize;
                let want_y: Vec<u8> = (0..w)
                    .map(|x| rows.luma[usize::from(pic.y[row * w + x])])
                    .collect();
                assert_eq!(got[0], want_y, "{w}x{h} row {row}");
                assert_eq!(got[1], (0..w).map(|x| c(&pic.cb, x)).collect::<Vec<_>>());
                assert_eq!(got[2], (0..w).map(|x| c(&pic.cr, x)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn jpeg_and_png_round_trip() {
        // A gradient picture, 64x36.
        let (w, h) = (64u32, 36u32);
        let mut bytes = Vec::new();
        bytes.extend((0..w * h).map(|i| (16 + (i % w) * 3) as u8));
        bytes.extend((0..(w / 2) * (h / 2)).map(|i| (100 + (i / 32) * 2) as u8));
        bytes.extend((0..(w / 2) * (h / 2)).map(|i| (150 - (i % 32)) as u8));
        let frame = Picture::from_i420(w, h, &bytes).unwrap();
        let enc = Encoding {
            format: ImageFormat::Png,
            quality: 90,
            width: None,
            height: None,
        };
        let (png, pw, ph) = encode(&frame, &enc).unwrap();
        assert_eq!((pw, ph), (64, 36));
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(back, frame.to_rgb(), "PNG is lossless");
        // JPEG at full size decodes to (nearly) the same RGB as the PNG path.
        let jpeg_enc = Encoding {
            format: ImageFormat::Jpeg,
            ..enc
        };
        let (jpeg, jw, jh) = encode(&frame, &jpeg_enc).unwrap();
        assert_eq!((jw, jh), (64, 36));
        assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff]);
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let diff: f64 = decoded
            .as_raw()
            .iter()
            .zip(back.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / back.as_raw().len() as f64;
        assert!(
            diff < 3.0,
            "JPEG differs from the exact RGB by {diff} on average"
        );
        // Resized.
        let small = Encoding {
            width: Some(32),
            ..jpeg_enc
        };
        let (jpeg, w, h) = encode(&frame, &small).unwrap();
        assert_eq!((w, h), (32, 18));
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (32, 18));
    }
}
