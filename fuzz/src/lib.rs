//! The parsers under fuzzing, compiled from the project's own files.

#[path = "../../proxy/src/path.rs"]
pub mod path;

#[path = "../../proxy/src/access.rs"]
pub mod access;

#[path = "../../proxy/src/detect.rs"]
pub mod detect;

#[path = "../../control/src/clock.rs"]
pub mod clock;

#[path = "../../control/src/cloudevent.rs"]
pub mod cloudevent;
