//! Retry delays, shared by everything that retries a remote call (the MCP
//! source's reconnects, Slack deliveries): exponential (×2 from `initial`
//! up to `max`) with ±10 % jitter, so that many runners restarted together
//! do not retry in step, and a server's `Retry-After` honoured as a minimum.
//!
//! Pure: the jitter comes from a caller-supplied source, so the sequence is
//! testable without randomness and without real time.

use std::time::Duration;

/// Relative jitter: a delay `d` becomes a value in `[d·0.9, d·1.1]`.
pub(crate) const JITTER: f64 = 0.10;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failed attempts since the last reset.
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The un-jittered delay before the next attempt: initial·2^n, capped.
    pub(crate) fn base_delay(&self) -> Duration {
        // 2^20 s is far beyond any sane cap: stop doubling there (no overflow).
        let factor = 1u32 << self.attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Next delay with jitter. `unit` must be in `[0, 1)`; 0.5 means no jitter.
    pub(crate) fn next_with(&mut self, unit: f64) -> Duration {
        let base = self.base_delay();
        self.attempt = self.attempt.saturating_add(1);
        let unit = unit.clamp(0.0, 1.0);
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
        base.mul_f64(factor)
    }

    /// Next delay with random jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// The next delay with random jitter, or the server's `Retry-After`
    /// (bounded by `cap`) when that is longer: a server that asks for more
    /// time gets it, one that asks for less does not shorten the backoff.
    pub(crate) fn next_after(&mut self, retry_after: Option<Duration>, cap: Duration) -> Duration {
        let delay = self.next_delay();
        match retry_after {
            Some(after) => delay.max(after.min(cap)),
            None => delay,
        }
    }

    /// After a healthy connection: start again from `initial`.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Parses an HTTP `Retry-After` value: delta-seconds, or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // HTTP-date (IMF-fixdate), e.g. "Wed, 21 Oct 2015 07:28:00 GMT".
    let when = runner_core::date::parse_http_date(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_without_jitter_is_1_2_4_to_60() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let got: Vec<u64> = (0..9).map(|_| b.next_with(0.5).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_with(0.5), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for n in 0..40 {
            let base = b.base_delay().as_secs_f64();
            let lo = b.clone().next_with(0.0).as_secs_f64();
            let hi = b.clone().next_with(1.0).as_secs_f64();
            assert!(
                (lo - base * 0.9).abs() < 1e-9,
                "attempt {n}: {lo} vs {base}"
            );
            assert!(
                (hi - base * 1.1).abs() < 1e-9,
                "attempt {n}: {hi} vs {base}"
            );
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= base * 0.9 - 1e-9 && d <= base * 1.1 + 1e-9,
                "{d} {base}"
            );
        }
        assert_eq!(b.base_delay(), Duration::from_secs(60));
    }

    /// The delays drive real sleeps in the supervisor; with tokio's paused
    /// clock the elapsed (virtual) time must equal the sum of the sequence.
    #[tokio::test(start_paused = true)]
    async fn paused_clock_sleeps_follow_the_sequence() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let mut total = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay();
            let before = tokio::time::Instant::now();
            tokio::time::sleep(d).await;
            // The timer wheel has millisecond resolution.
            let slept = before.elapsed().as_secs_f64();
            assert!((slept - d.as_secs_f64()).abs() < 0.002, "{slept} vs {d:?}");
            seen.push(d);
            total += d;
        }
        assert!((start.elapsed().as_secs_f64() - total.as_secs_f64()).abs() < 0.02);
        let bases = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0];
        for (d, base) in seen.iter().zip(bases) {
            let s = d.as_secs_f64();
            assert!(
                s >= base * 0.9 - 1e-6 && s <= base * 1.1 + 1e-6,
                "{s} vs {base}"
            );
        }
    }

    #[test]
    fn custom_bounds_and_degenerate_input() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(2));
        // max below initial: the cap becomes initial.
        assert_eq!(b.next_with(0.5), Duration::from_secs(5));
        assert_eq!(b.next_with(0.5), Duration::from_secs(5));
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for _ in 0..100 {
            b.next_with(0.5);
        }
        assert_eq!(b.base_delay(), Duration::from_secs(3600));
    }

    #[test]
    fn retry_after_is_a_capped_minimum() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let s = Duration::from_secs;
        assert_eq!(b.next_after(Some(s(3)), s(60)), s(3));
        let d = b.next_after(Some(s(1)), s(60));
        assert!(d >= s(2).mul_f64(0.9) && d <= s(2).mul_f64(1.1), "{d:?}");
        assert_eq!(b.next_after(Some(s(86_400)), s(60)), s(60));
        let d = b.next_after(None, s(60));
        assert!(d >= s(8).mul_f64(0.9) && d <= s(8).mul_f64(1.1), "{d:?}");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
