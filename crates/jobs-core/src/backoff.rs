//! [`Backoff`]: exponential delays with jitter, one rule for every retry in Folio (job
//! attempts in the runtime, page tries in book jobs).

use std::time::Duration;

/// Exponential backoff: `base * 2^(try - 1)`, capped at `max`, with ±25 % jitter, and never
/// shorter than what the cause asked for (a `Retry-After`, itself capped at `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure (before jitter).
    pub base: Duration,
    /// The longest delay before jitter, and the cap on an asked-for delay.
    pub max: Duration,
}

impl Backoff {
    /// Share of the delay that jitter may add or remove.
    pub const JITTER: f64 = 0.25;

    /// A backoff from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay after failure number `failures` (1-based), at least `after` (capped).
    pub fn delay(&self, failures: u32, after: Option<Duration>) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let base = self.base.saturating_mul(1 << exponent).min(self.max);
        let jittered =
            base.mul_f64(1.0 - Self::JITTER + rand::random::<f64>() * 2.0 * Self::JITTER);
        jittered.max(after.unwrap_or_default().min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn delays_double_per_failure_with_jitter_up_to_the_cap_and_at_least_the_asked_delay() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(600));
        for (failures, base) in [
            (1, 2.0),
            (2, 4.0),
            (3, 8.0),
            (9, 512.0),
            (10, 600.0),
            (64, 600.0),
        ] {
            let delays: Vec<f64> = (0..200)
                .map(|_| backoff.delay(failures, None).as_secs_f64())
                .collect();
            for delay in &delays {
                assert!(
                    (base * 0.75..=base * 1.25).contains(delay),
                    "failure {failures}: {delay} s is not within 25 % of {base} s"
                );
            }
            let distinct: HashSet<u64> = delays.iter().map(|delay| delay.to_bits()).collect();
            assert!(distinct.len() > 100, "failure {failures}: no jitter");
        }
        let asked = Duration::from_secs(60);
        assert_eq!(
            backoff.delay(1, Some(asked)),
            asked,
            "a Retry-After is kept"
        );
        assert!(backoff.delay(9, Some(asked)) > asked);
        let short = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(
            short.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2),
            "an asked-for delay is capped"
        );
    }
}
