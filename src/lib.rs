//! rpcloop (crate guide comes later)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod core;
mod driver;
mod error;
mod stats;

pub use crate::config::{CallOptions, ConnectionConfig};
pub use crate::core::call_id::CallId;
pub use crate::core::codec::{Codec, Decoded, Envelope};
pub use crate::core::conn_id::ConnId;
pub use crate::core::response::Response;
pub use crate::core::unmatched::{Unmatched, UnmatchedReason};
pub use crate::driver::connection::ConnState;
pub use crate::driver::context::Context;
pub use crate::driver::event_loop::EventLoop;
pub use crate::error::{DisconnectReason, Error};
pub use crate::stats::ConnStats;
