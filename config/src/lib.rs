//! tandem's resource model: the Dapr resource kinds, reading them from
//! resources directories, and the sidecar's options. Pure: parsing and
//! validation only, no I/O beyond reading the files, no async.
#![forbid(unsafe_code)]

pub mod duration;
pub mod load;
pub mod options;
pub mod resources;
pub mod schedule;
pub mod validate;

pub use duration::{GoDuration, parse_duration, parse_quantity};
pub use load::{
    LoadContext, LoadError, Loaded, ResourceSet, SourceRef, load_configuration,
    load_configuration_str, load_dirs, load_str,
};
pub use options::{AppProtocol, LogLevel, SidecarOptions};
pub use resources::*;
