//! The injectable clock. Every timestamp a store writes comes from one of these.

use std::fmt::Debug;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::job::truncate_to_micros;

/// A source of the current time, injected so tests can move time by hand.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time, truncated to microseconds (the precision both stores keep).
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, `Utc::now` truncated to microseconds: the clock outside tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }
}

/// A clock that only moves when told to: for tests of stale detection and timeouts.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(truncate_to_micros(start)),
        }
    }

    /// A clock standing at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    /// Moves the clock forward by `by`. Only times read from the clock move: a worker's
    /// heartbeat and poll intervals run on tokio's timer, in real time.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).expect("duration fits in chrono::Duration");
        let mut now = self.now.lock().expect("clock mutex poisoned");
        *now += by;
    }

    /// Sets the clock to `to` (truncated to microseconds), backwards as well as forwards.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().expect("clock mutex poisoned") = truncate_to_micros(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock mutex poisoned")
    }
}
