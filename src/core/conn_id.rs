//! [`ConnId`]: which connection of a loop something belongs to.

use std::fmt;

/// The id of one connection on an [`EventLoop`](crate::EventLoop), returned by
/// [`Context::connect`](crate::Context::connect).
///
/// An id is a slot of the loop's connection table and that slot's generation. Once a
/// connection is over (it told its state handler `Closed`, and everything that arrived before
/// was delivered), its slot is freed and may hold a later connection, with the next
/// generation: the old id then refers to nothing. Operations on it fail with
/// [`Error::UnknownConnection`](crate::Error::UnknownConnection), queries return `None`, and
/// nothing of the old connection ever reaches the new one's handlers. So a process that opens
/// and closes connections for weeks keeps a table the size of its busiest moment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(index: usize, generation: u32) -> Self {
        ConnId {
            slot: u32::try_from(index).expect("more than 2^32 connections on one loop"),
            generation,
        }
    }

    #[cfg(test)]
    pub(crate) const fn from_raw(raw: u32) -> Self {
        ConnId {
            slot: raw,
            generation: 0,
        }
    }

    /// The connection table's slot.
    pub(crate) fn index(self) -> usize {
        self.slot as usize
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}.{})", self.slot, self.generation)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.generation {
            0 => write!(f, "connection {}", self.slot),
            generation => write!(f, "connection {}.{generation}", self.slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_held_again_is_another_connection() {
        let first = ConnId::new(3, 0);
        let second = ConnId::new(3, 1);
        assert_ne!(first, second);
        assert_eq!(first.index(), second.index());
        assert_eq!(first.to_string(), "connection 3");
        assert_eq!(second.to_string(), "connection 3.1");
        assert_eq!(format!("{second:?}"), "ConnId(3.1)");
    }
}
