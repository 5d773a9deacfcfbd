//! A decoded picture as the decoders give it: 8-bit Y'CbCr 4:2:0 in three planes, limited
//! ("TV") range, BT.601 matrix, which is what H.264/H.265 cameras send.
//!
//! Pictures stay in this form until they are encoded: JPEG stores Y'CbCr 4:2:0 itself, so a
//! JPEG needs only a range expansion of the planes (no RGB round trip, half the memory per
//! cached picture); PNG converts to RGB at the end.

use std::collections::BTreeMap;

use image::{GrayImage, RgbImage};

/// Decoded pictures by sample index (the index the caller named each wanted sample by).
pub type Decoded = BTreeMap<usize, Picture>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// `width * height` luma samples, row by row.
    pub y: Vec<u8>,
    /// `chroma_width * chroma_height` samples each.
    pub cb: Vec<u8>,
    pub cr: Vec<u8>,
}

impl Picture {
    /// Chroma plane size for a `width` x `height` picture (4:2:0 rounds up).
    pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
        (width.div_ceil(2), height.div_ceil(2))
    }

    /// Bytes of a packed I420 picture (`yuv420p`): Y plane, then Cb, then Cr.
    pub fn i420_len(width: u32, height: u32) -> usize {
        let (cw, ch) = Picture::chroma_size(width, height);
        width as usize * height as usize + 2 * cw as usize * ch as usize
    }

    /// From packed I420 bytes (ffmpeg's `-pix_fmt yuv420p` output); None if the length is wrong.
    pub fn from_i420(width: u32, height: u32, bytes: &[u8]) -> Option<Picture> {
        if bytes.len() != Picture::i420_len(width, height) {
            return None;
        }
        let luma = width as usize * height as usize;
        let (cw, ch) = Picture::chroma_size(width, height);
        let chroma = cw as usize * ch as usize;
        Some(Picture {
            width,
            height,
            y: bytes[..luma].to_vec(),
            cb: bytes[luma..luma + chroma].to_vec(),
            cr: bytes[luma + chroma..].to_vec(),
        })
    }

    /// Copies planes that have row strides (a decoder's buffers) into a packed picture.
    pub fn from_planes(
        width: u32,
        height: u32,
        planes: [&[u8]; 3],
        strides: [usize; 3],
    ) -> Option<Picture> {
        let (cw, ch) = Picture::chroma_size(width, height);
        let pack = |plane: &[u8], stride: usize, w: u32, h: u32| -> Option<Vec<u8>> {
            let (w, h) = (w as usize, h as usize);
            let mut out = Vec::with_capacity(w * h);
            for row in 0..h {
                out.extend_from_slice(plane.get(row * stride..row * stride + w)?);
            }
            Some(out)
        };
        Some(Picture {
            width,
            height,
            y: pack(planes[0], strides[0], width, height)?,
            cb: pack(planes[1], strides[1], cw, ch)?,
            cr: pack(planes[2], strides[2], cw, ch)?,
        })
    }

    /// The picture scaled to `width` x `height` (each plane filtered on its own, which is how
    /// scalers treat Y'CbCr).
    pub fn resized(&self, width: u32, height: u32) -> Picture {
        let (cw, ch) = Picture::chroma_size(self.width, self.height);
        let (tcw, tch) = Picture::chroma_size(width, height);
        let scale = |plane: &[u8], w: u32, h: u32, tw: u32, th: u32| -> Vec<u8> {
            match GrayImage::from_raw(w, h, plane.to_vec()) {
                Some(img) => {
                    image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle)
                        .into_raw()
                }
                None => vec![0; tw as usize * th as usize],
            }
        };
        Picture {
            width,
            height,
            y: scale(&self.y, self.width, self.height, width, height),
            cb: scale(&self.cb, cw, ch, tcw, tch),
            cr: scale(&self.cr, cw, ch, tcw, tch),
        }
    }

    /// Full-range RGB (BT.601 matrix, limited-range input), chroma taken from the nearest
    /// sample. Fixed point with 16 fractional bits.
    pub fn to_rgb(&self) -> RgbImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let cw = w.div_ceil(2);
        let mut rgb = vec![0u8; w * h * 3];
        let clamp = |v: i32| (v >> 16).clamp(0, 255) as u8;
        for row in 0..h {
            let yr = &self.y[row * w..row * w + w];
            let cbr = &self.cb[(row / 2) * cw..(row / 2) * cw + cw];
            let crr = &self.cr[(row / 2) * cw..(row / 2) * cw + cw];
            let out = &mut rgb[row * w * 3..(row + 1) * w * 3];
            for x in 0..w {
                let c = 76_309 * (i32::from(yr[x]) - 16) + (1 << 15);
                let d = i32::from(cbr[x / 2]) - 128;
                let e = i32::from(crr[x / 2]) - 128;
                out[x * 3] = clamp(c + 104_597 * e);
                out[x * 3 + 1] = clamp(c - 25_675 * d - 53_279 * e);
                out[x * 3 + 2] = clamp(c + 132_201 * d);
            }
        }
        RgbImage::from_raw(self.width, self.height, rgb).unwrap_or_default()
    }
}

/// Limited-range luma (16-235) to full range (0-255), as JPEG (JFIF) expects.
pub fn full_range_luma() -> [u8; 256] {
    std::array::from_fn(|v| {
        ((v as f64 - 16.0) * 255.0 / 219.0)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// Limited-range chroma (16-240 around 128) to full range (0-255 around 128).
pub fn full_range_chroma() -> [u8; 256] {
    std::array::from_fn(|v| {
        ((v as f64 - 128.0) * 255.0 / 224.0 + 128.0)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_and_rgb() {
        // 3x3: chroma 2x2. Mid grey, with a red-ish chroma in the top-left chroma sample.
        let y = [126u8; 9];
        let mut bytes = y.to_vec();
        bytes.extend_from_slice(&[128, 128, 128, 128]); // Cb
        bytes.extend_from_slice(&[200, 128, 128, 128]); // Cr
        let p = Picture::from_i420(3, 3, &bytes).unwrap();
        assert!(Picture::from_i420(3, 3, &bytes[1..]).is_none());
        let rgb = p.to_rgb();
        assert_eq!(
            rgb.get_pixel(2, 2).0,
            [128, 128, 128],
            "(126-16)*255/219 = 128"
        );
        let red = rgb.get_pixel(0, 0).0;
        assert!(red[0] > 200 && red[1] < 128 && red[2] == 128, "{red:?}");
        // Strided planes pack to the same picture.
        let padded_y: Vec<u8> = y
            .chunks(3)
            .flat_map(|r| [r, &[0, 0][..]].concat())
            .collect();
        let q = Picture::from_planes(3, 3, [&padded_y, &bytes[9..13], &bytes[13..]], [5, 2, 2])
            .unwrap();
        assert_eq!(p, q);
        let half = p.resized(2, 2);
        assert_eq!((half.y.len(), half.cb.len()), (4, 1));
    }

    #[test]
    fn range_tables() {
        let l = full_range_luma();
        assert_eq!((l[0], l[16], l[235], l[255]), (0, 0, 255, 255));
        let c = full_range_chroma();
        assert!(c[16] <= 1);
        assert_eq!((c[128], c[240]), (128, 255));
    }
}
