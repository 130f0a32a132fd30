//! [`ConnId`]: which connection of a loop something belongs to.

use std::fmt;

/// The id of one connection on an [`EventLoop`](crate::EventLoop), returned by
/// [`Context::connect`](crate::Context::connect).
///
/// It stays valid after the connection closes (the loop then reports its final state and fails
/// new calls on it at once), and an id is never reused for another connection of the same loop.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

impl ConnId {
    pub(crate) fn new(index: usize) -> Self {
        ConnId(u32::try_from(index).expect("more than 2^32 connections on one loop"))
    }

    #[cfg(test)]
    pub(crate) const fn from_raw(raw: u32) -> Self {
        ConnId(raw)
    }

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({})", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection {}", self.0)
    }
}
