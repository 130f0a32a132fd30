//! rpcloop (crate guide comes later)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod core;
mod error;

pub use crate::core::call_id::CallId;
pub use crate::core::conn_id::ConnId;
pub use error::{DisconnectReason, Error};
pub use crate::core::codec::{Codec, Decoded, Envelope};
pub use crate::core::response::Response;
pub use crate::core::unmatched::{Unmatched, UnmatchedReason};
