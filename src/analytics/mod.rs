//! Analytics: the follow feed (a continuous fMP4 response from any point, following live),
//! fragment events (server-sent events), and decoded frames (the frame service, on
//! [`crate::codec`]).

pub mod decode;
pub mod events;
pub mod follow;
pub mod frames;
pub mod gop;
