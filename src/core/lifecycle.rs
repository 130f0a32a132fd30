//! [`Lifecycle`]: the legal order of a connection's state changes, checked as they happen.
//!
//! A connection is told to its state handler as a sequence of [`StateChange`]s, and that
//! sequence has a grammar ([`StateChange`]'s docs give it in prose):
//!
//! ```text
//! Connecting (Open? Disconnected Reconnecting Connecting)* ... then one of:
//!   Connecting -> Open | Disconnected | Closed
//!   Open       -> Disconnected | Closed
//!   Disconnected -> Reconnecting | Closed
//!   Reconnecting -> Connecting | Closed
//!   Closed     -> nothing, ever
//! ```
//!
//! The first change is `Connecting`, and `Closed` is always the last. Every change goes
//! through [`Lifecycle::handle_change`], which refuses one the grammar does not allow; the
//! driver asserts on that in debug builds, so every test checks the grammar on every
//! connection it makes.

use std::fmt;

use super::event::StateChange;

/// A state change that may not follow the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IllegalChange {
    /// The last change told, `None` before the first.
    pub(crate) after: Option<&'static str>,
    /// The change refused.
    pub(crate) change: &'static str,
}

impl fmt::Display for IllegalChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.after {
            Some(after) => write!(f, "{} may not follow {after}", self.change),
            None => write!(
                f,
                "{} may not be a connection's first state change",
                self.change
            ),
        }
    }
}

/// Where a connection's sequence of state changes stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lifecycle {
    last: Option<Phase>,
}

/// A [`StateChange`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Disconnected,
    Reconnecting,
    Closed,
}

impl Phase {
    fn of(change: &StateChange) -> Phase {
        match change {
            StateChange::Connecting => Phase::Connecting,
            StateChange::Open => Phase::Open,
            StateChange::Disconnected(_) => Phase::Disconnected,
            StateChange::Reconnecting { .. } => Phase::Reconnecting,
            StateChange::Closed => Phase::Closed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "Connecting",
            Phase::Open => "Open",
            Phase::Disconnected => "Disconnected",
            Phase::Reconnecting => "Reconnecting",
            Phase::Closed => "Closed",
        }
    }

    /// Whether `next` may follow this phase (`None`: at the start).
    fn allows(this: Option<Phase>, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (this, next),
            (None, Connecting)
                | (Some(Connecting), Open | Disconnected | Closed)
                | (Some(Open), Disconnected | Closed)
                | (Some(Disconnected), Reconnecting | Closed)
                | (Some(Reconnecting), Connecting | Closed)
        )
    }
}

impl Lifecycle {
    /// Takes the next state change; refuses (and ignores) one that may not follow the last.
    pub(crate) fn handle_change(&mut self, change: &StateChange) -> Result<(), IllegalChange> {
        let next = Phase::of(change);
        if !Phase::allows(self.last, next) {
            return Err(IllegalChange {
                after: self.last.map(Phase::name),
                change: next.name(),
            });
        }
        self.last = Some(next);
        Ok(())
    }

    /// Whether `Closed` was told: nothing follows.
    #[cfg(test)]
    pub(crate) fn is_over(&self) -> bool {
        self.last == Some(Phase::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DisconnectReason;
    use std::time::Duration;

    fn tell(changes: &[StateChange]) -> Result<Lifecycle, IllegalChange> {
        let mut life = Lifecycle::default();
        for change in changes {
            life.handle_change(change)?;
        }
        Ok(life)
    }

    const LOST: StateChange = StateChange::Disconnected(DisconnectReason::Reset);
    const AGAIN: StateChange = StateChange::Reconnecting {
        attempt: 1,
        delay: Duration::ZERO,
    };
    use StateChange::{Closed, Connecting, Open};

    #[test]
    fn the_sequences_a_connection_goes_through_are_legal() {
        for sequence in [
            vec![Connecting, Open, Closed],
            vec![Connecting, Closed],
            vec![Connecting, LOST, Closed],
            vec![Connecting, Open, LOST, AGAIN, Connecting, Open, Closed],
            vec![Connecting, LOST, AGAIN, Connecting, LOST, AGAIN, Closed],
            vec![Connecting, Open, LOST, AGAIN, Connecting, LOST, Closed],
        ] {
            let life = tell(&sequence).unwrap_or_else(|e| panic!("{sequence:?}: {e}"));
            assert!(life.is_over());
        }
    }

    #[test]
    fn anything_after_closed_or_out_of_order_is_refused() {
        let refused = |sequence: &[StateChange]| tell(sequence).unwrap_err().to_string();
        assert_eq!(
            refused(&[Connecting, Closed, Connecting]),
            "Connecting may not follow Closed"
        );
        assert_eq!(
            refused(&[Open]),
            "Open may not be a connection's first state change"
        );
        assert_eq!(
            refused(&[Connecting, Open, Open]),
            "Open may not follow Open"
        );
        assert_eq!(
            refused(&[Connecting, AGAIN]),
            "Reconnecting may not follow Connecting"
        );
        assert_eq!(
            refused(&[Connecting, LOST, Open]),
            "Open may not follow Disconnected"
        );
        assert_eq!(
            refused(&[Connecting, Closed, Closed]),
            "Closed may not follow Closed"
        );
    }

    #[test]
    fn a_refused_change_leaves_the_sequence_where_it_was() {
        let mut life = tell(&[Connecting, Open]).unwrap();
        assert!(life.handle_change(&AGAIN).is_err());
        assert!(life.handle_change(&Closed).is_ok());
    }
}
