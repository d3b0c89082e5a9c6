//! The agents' circuit breaker: consecutive failures raise one "degraded"
//! notice, the next success one "recovered".

/// Consecutive-failure tracking: one "degraded" when the count reaches the
/// threshold, one "recovered" at the next success.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    consecutive: u32,
    degraded: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum BreakerSignal {
    Degraded(u32),
    Recovered(u32),
}

impl Breaker {
    pub(super) fn failure(&mut self, threshold: u32) -> Option<BreakerSignal> {
        self.consecutive = self.consecutive.saturating_add(1);
        if !self.degraded && self.consecutive >= threshold.max(1) {
            self.degraded = true;
            return Some(BreakerSignal::Degraded(self.consecutive));
        }
        None
    }

    pub(super) fn success(&mut self) -> Option<BreakerSignal> {
        let n = std::mem::take(&mut self.consecutive);
        if std::mem::take(&mut self.degraded) {
            return Some(BreakerSignal::Recovered(n));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_fires_once_each_way() {
        let mut b = Breaker::default();
        assert_eq!(b.failure(3), None);
        assert_eq!(b.success(), None);
        assert_eq!(b.failure(3), None);
        assert_eq!(b.failure(3), None);
        assert_eq!(b.failure(3), Some(BreakerSignal::Degraded(3)));
        assert_eq!(b.failure(3), None);
        assert_eq!(b.success(), Some(BreakerSignal::Recovered(4)));
        assert_eq!(b.success(), None);
    }
}
