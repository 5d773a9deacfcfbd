//! Analytics: the follow feed (a continuous fMP4 response from any point, following live),
//! fragment events (server-sent events), and decoded frames.

pub mod decode;
pub mod encode;
pub mod events;
pub mod follow;
pub mod frames;
pub mod gop;
pub mod h264_bits;
pub mod h264_refs;
pub mod openh264;
pub mod picture;
