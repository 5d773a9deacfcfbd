//! Analytics: the follow feed (a continuous fMP4 response from any point, following live),
//! fragment events (server-sent events), and decoded frames.

pub mod events;
pub mod follow;
