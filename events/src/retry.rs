//! Waiting between attempts: one capped exponential backoff for every retry in pc-eventd and
//! its consumers (the daemon's loop, the relay, the webhook client, the remediation policy).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wait before attempt `attempt` (1 for the first retry): `base`, doubled for each attempt
/// after the first, capped at `max`.
pub fn delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max)
}

/// [`delay`] with equal jitter: half of it fixed, half random, so that many daemons restarted
/// together do not retry in lockstep.
pub fn jittered_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let step = delay(attempt, base, max);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    step / 2 + (step / 2).mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(30));
        let delays: Vec<u64> = (0..7).map(|n| delay(n, base, max).as_secs()).collect();
        assert_eq!(delays, [2, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delay(u32::MAX, base, Duration::MAX), base * (1 << 20));
    }

    #[test]
    fn jitter_keeps_at_least_half_of_the_delay() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(30));
        for attempt in 1..40 {
            let step = delay(attempt, base, max);
            let wait = jittered_delay(attempt, base, max);
            assert!(
                wait >= step / 2 && wait <= step,
                "attempt {attempt}: {wait:?}"
            );
        }
    }
}
