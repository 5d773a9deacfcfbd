//! A small safe wrapper over openh264's decoder (through `openh264-sys2`'s raw bindings).
//!
//! Why not the `openh264` crate's `Decoder`: it cannot tag an access unit and tell which one a
//! picture came from, and it sets the thread count after initialising (which breaks the decoder).
//!
//! Decoders are not reused between requests: after a GOP decoded only part way and flushed,
//! openh264 runs out of free pictures a few frames into the next GOP ("out of memory"). A fresh
//! decoder per request costs its allocations instead. The server fixes glibc's mmap threshold at
//! 128 KiB (`main.rs`, so a thousand cameras' fragment buffers go back to the system), which makes
//! those allocations fresh mappings that openh264 zeroes page by page: about 10 ms more per 1080p
//! decode (keyframe-only `frame.jpg` 33 -> 45 ms in BENCHMARKS.md, issue 14), paid for RSS.

use std::ffi::c_void;
use std::ptr::null_mut;

use openh264_sys2::source::APILoader;
use openh264_sys2::{
    ISVCDecoder, SBufferInfo, SDecodingParam, DECODER_OPTION,
    DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER, DECODER_OPTION_TRACE_LEVEL,
    ERROR_CON_DISABLE, VIDEO_BITSTREAM_AVC, WELS_LOG_QUIET,
};

/// What openh264 refused or reported, in words (the decoding callers add which sample).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Openh264Error(String);

impl std::fmt::Display for Openh264Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Openh264Error {}

/// `dsFramePending`: more input is needed before a picture comes out. Not an error.
const STATE_FRAME_PENDING: i32 = 0x01;

/// One decoded picture, borrowed from the decoder until the next call into it.
pub struct PictureView<'a> {
    pub width: u32,
    pub height: u32,
    pub planes: [&'a [u8]; 3],
    pub strides: [usize; 3],
}

/// An openh264 decoder (single-threaded: openh264's own threading gives wrong pictures).
pub struct H264Decoder {
    raw: *mut ISVCDecoder,
}

// SAFETY: the decoder is plain heap state owned by this value; openh264 in single-threaded mode
// keeps no thread affinity, and `&mut self` on every call keeps use to one thread at a time.
unsafe impl Send for H264Decoder {}

impl H264Decoder {
    pub fn new() -> Result<Self, Openh264Error> {
        let mut raw: *mut ISVCDecoder = null_mut();
        // SAFETY: WelsCreateDecoder writes a new decoder pointer (or leaves null on failure).
        let rc = unsafe { APILoader::WelsCreateDecoder(&mut raw) };
        if rc != 0 || raw.is_null() {
            return Err(Openh264Error(format!(
                "cannot create the H.264 decoder (openh264 returned {rc})"
            )));
        }
        let mut dec = Self { raw };
        let mut quiet = WELS_LOG_QUIET;
        dec.set_option(DECODER_OPTION_TRACE_LEVEL, &mut quiet)?;
        // SAFETY: zeroed is a valid SDecodingParam (null file name, no parse-only, defaults).
        let mut param: SDecodingParam = unsafe { std::mem::zeroed() };
        param.sVideoProperty.eVideoBsType = VIDEO_BITSTREAM_AVC;
        param.eEcActiveIdc = ERROR_CON_DISABLE;
        // SAFETY: `raw` is a live decoder; Initialize reads `param` only during the call.
        let rc = unsafe { (vtable(raw).Initialize.expect("openh264 Initialize"))(raw, &param) };
        if rc != 0 {
            return Err(Openh264Error(format!(
                "cannot start the H.264 decoder (openh264 returned {rc})"
            )));
        }
        Ok(dec)
    }

    fn set_option(&mut self, option: DECODER_OPTION, value: &mut i32) -> Result<(), Openh264Error> {
        // SAFETY: `raw` is live; the option reads one int through the pointer during the call.
        let rc = unsafe {
            (vtable(self.raw).SetOption.expect("openh264 SetOption"))(
                self.raw,
                option,
                (value as *mut i32).cast::<c_void>(),
            )
        };
        if rc != 0 {
            return Err(Openh264Error(format!(
                "openh264 refused option {option} (returned {rc})"
            )));
        }
        Ok(())
    }

    /// Feeds one access unit (Annex B) tagged `tag`; a picture that comes out is handed to
    /// `on_picture` with the tag of the access unit it was decoded from.
    pub fn decode(
        &mut self,
        access_unit: &[u8],
        tag: u64,
        on_picture: &mut dyn FnMut(u64, &PictureView<'_>),
    ) -> Result<(), Openh264Error> {
        let len = i32::try_from(access_unit.len())
            .map_err(|_| Openh264Error("an access unit over 2 GiB".into()))?;
        let mut dst: [*mut u8; 3] = [null_mut(); 3];
        // SAFETY: zeroed SBufferInfo is the documented initial state.
        let mut info: SBufferInfo = unsafe { std::mem::zeroed() };
        info.uiInBsTimeStamp = tag;
        // SAFETY: `raw` is live, the input slice outlives the call (single-threaded openh264
        // copies what it keeps), `dst` and `info` are written during the call only.
        let state = unsafe {
            (vtable(self.raw)
                .DecodeFrameNoDelay
                .expect("openh264 DecodeFrameNoDelay"))(
                self.raw,
                access_unit.as_ptr(),
                len,
                dst.as_mut_ptr(),
                &mut info,
            )
        };
        self.check(state)?;
        emit(&dst, &info, on_picture);
        Ok(())
    }

    /// Hands out every picture still held for reordering.
    pub fn flush(
        &mut self,
        on_picture: &mut dyn FnMut(u64, &PictureView<'_>),
    ) -> Result<(), Openh264Error> {
        loop {
            let mut left = 0i32;
            // SAFETY: `raw` is live; the option writes one int.
            let rc = unsafe {
                (vtable(self.raw).GetOption.expect("openh264 GetOption"))(
                    self.raw,
                    DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER,
                    (&mut left as *mut i32).cast::<c_void>(),
                )
            };
            if rc != 0 || left <= 0 {
                return Ok(());
            }
            let mut dst: [*mut u8; 3] = [null_mut(); 3];
            // SAFETY: as in `decode`.
            let mut info: SBufferInfo = unsafe { std::mem::zeroed() };
            // SAFETY: `raw` is live; `dst`/`info` are written during the call only.
            let state = unsafe {
                (vtable(self.raw).FlushFrame.expect("openh264 FlushFrame"))(
                    self.raw,
                    dst.as_mut_ptr(),
                    &mut info,
                )
            };
            self.check(state)?;
            if info.iBufferStatus != 1 {
                return Err(Openh264Error(format!(
                    "openh264 said {left} pictures were left but gave none"
                )));
            }
            emit(&dst, &info, on_picture);
        }
    }

    fn check(&self, state: i32) -> Result<(), Openh264Error> {
        if state & !STATE_FRAME_PENDING != 0 {
            return Err(Openh264Error(format!(
                "openh264 decoding state {state:#x} ({})",
                describe_state(state)
            )));
        }
        Ok(())
    }
}

impl Drop for H264Decoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from WelsCreateDecoder and is released exactly once, here.
        unsafe {
            if let Some(uninit) = vtable(self.raw).Uninitialize {
                uninit(self.raw);
            }
            APILoader::WelsDestroyDecoder(self.raw);
        }
    }
}

/// The decoder's function table.
fn vtable(raw: *mut ISVCDecoder) -> &'static openh264_sys2::ISVCDecoderVtbl {
    // SAFETY: an ISVCDecoder is a pointer to its (static) vtable, valid while the decoder lives;
    // callers only use it while `raw` is live.
    unsafe { &**raw }
}

fn emit(dst: &[*mut u8; 3], info: &SBufferInfo, on_picture: &mut dyn FnMut(u64, &PictureView<'_>)) {
    if info.iBufferStatus != 1 || dst.iter().any(|p| p.is_null()) {
        return;
    }
    // SAFETY: with iBufferStatus 1 the system-buffer description is the active union member.
    let buf = unsafe { info.UsrData.sSystemBuffer };
    let (Ok(w), Ok(h), Ok(sy), Ok(suv)) = (
        usize::try_from(buf.iWidth),
        usize::try_from(buf.iHeight),
        usize::try_from(buf.iStride[0]),
        usize::try_from(buf.iStride[1]),
    ) else {
        return;
    };
    // SAFETY: openh264 hands out planes of `height` rows of `stride` bytes (chroma: half the
    // rows), valid until the next call into the decoder; the view does not outlive this call.
    let planes = unsafe {
        [
            std::slice::from_raw_parts(dst[0], h * sy),
            std::slice::from_raw_parts(dst[1], h.div_ceil(2) * suv),
            std::slice::from_raw_parts(dst[2], h.div_ceil(2) * suv),
        ]
    };
    let view = PictureView {
        width: w as u32,
        height: h as u32,
        planes,
        strides: [sy, suv, suv],
    };
    on_picture(info.uiOutYuvTimeStamp, &view);
}

fn describe_state(state: i32) -> String {
    let names = [
        (0x02, "reference lost"),
        (0x04, "bitstream error"),
        (0x08, "dependent layer lost"),
        (0x10, "no parameter sets"),
        (0x20, "data error concealed"),
        (0x40, "reference list has null pointers"),
        (0x1000, "invalid argument"),
        (0x2000, "not initialised"),
        (0x4000, "out of memory"),
        (0x8000, "picture larger than the buffer"),
    ];
    let found: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if found.is_empty() {
        "unknown".into()
    } else {
        found.join(", ")
    }
}
