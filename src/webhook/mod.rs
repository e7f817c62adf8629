//! Plex webhook parsing: pure functions with no I/O. [`multipart`] extracts the `payload` part
//! from a streamed multipart/form-data body; [`payload`] models the JSON and decides whether it
//! is a watched episode.

pub mod multipart;
pub mod payload;
