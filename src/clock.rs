//! The controller's clock: real time, or a simulated clock that starts at a
//! given instant and runs `rate` times faster, so that tests and demos can live
//! through years in minutes. Everything time-based in the controller reads it.

use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

#[derive(Clone, Debug)]
pub struct Clock {
    /// The simulated instant at `started`.
    origin: DateTime<Utc>,
    started: Instant,
    /// The wall-clock time at `started`.
    started_wall: DateTime<Utc>,
    /// Simulated seconds per real second.
    rate: f64,
}

impl Clock {
    pub fn real() -> Self {
        let mut clock = Self::simulated(Utc::now(), 1.0);
        clock.origin = clock.started_wall;
        clock
    }

    pub fn simulated(origin: DateTime<Utc>, rate: f64) -> Self {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "the clock rate must be positive"
        );
        Self {
            origin,
            started: Instant::now(),
            started_wall: Utc::now(),
            rate,
        }
    }

    /// The time now, in whole seconds (as Kubernetes timestamps are).
    pub fn now(&self) -> DateTime<Utc> {
        self.precise_now().trunc_subsecs(0)
    }

    /// The time now, to the microsecond: what a wait until a deadline is
    /// measured from, so that it ends on the deadline's second, not up to a
    /// second after it.
    fn precise_now(&self) -> DateTime<Utc> {
        let simulated = self.started.elapsed().as_secs_f64() * self.rate;
        self.origin + TimeDelta::microseconds((simulated * 1e6) as i64)
    }

    /// Where a wall-clock instant (an object's creationTimestamp) falls on this
    /// clock. A simulated clock places what happened before it started at its
    /// start, and nothing after its present.
    pub fn observed(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        if !self.is_simulated() {
            return wall.trunc_subsecs(0).min(self.now());
        }
        let elapsed = (wall - self.started_wall).as_seconds_f64() * self.rate;
        let at = self.origin + TimeDelta::microseconds((elapsed * 1e6) as i64);
        at.trunc_subsecs(0)
            .clamp(self.origin.trunc_subsecs(0), self.now())
    }

    /// Real seconds in `simulated` seconds of this clock.
    pub fn real_seconds(&self, simulated: f64) -> f64 {
        simulated / self.rate
    }

    /// How a simulated clock describes itself (None for the real time).
    pub fn simulated_description(&self) -> Option<String> {
        self.is_simulated().then(|| {
            let origin = self
                .origin
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            format!("simulated from {origin} at {}x", self.rate)
        })
    }

    /// Whether the clock runs other than the host's real time.
    pub fn is_simulated(&self) -> bool {
        self.rate != 1.0 || self.origin != self.started_wall
    }

    /// How long to wait in real time until the clock reads `at`; zero if it is
    /// already past.
    pub fn real_duration_until(&self, at: DateTime<Utc>) -> Duration {
        let simulated = (at - self.precise_now()).to_std().unwrap_or(Duration::ZERO);
        simulated.div_f64(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_turns_simulated_days_into_real_seconds() {
        let origin = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::simulated(origin, 86_400.0);
        let wait = clock.real_duration_until(origin + TimeDelta::days(3));
        assert!(
            wait <= Duration::from_secs(3) && wait > Duration::from_millis(2_900),
            "{wait:?}"
        );
    }

    #[test]
    fn a_wait_ends_on_the_deadlines_second_not_up_to_a_second_later() {
        // 0.6 s into a second: the next whole second is 0.4 s away.
        let origin: DateTime<Utc> = "2030-01-01T00:00:00.600Z".parse().unwrap();
        let clock = Clock::simulated(origin, 1.0);
        let wait = clock.real_duration_until("2030-01-01T00:00:01Z".parse().unwrap());
        assert!(wait <= Duration::from_millis(400), "{wait:?}");
    }

    #[test]
    fn a_deadline_in_the_past_needs_no_wait() {
        let clock = Clock::real();
        assert_eq!(
            clock.real_duration_until(Utc::now() - TimeDelta::hours(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_simulated_clock_places_earlier_objects_at_its_start() {
        let origin: DateTime<Utc> = "2030-06-01T12:00:00Z".parse().unwrap();
        let clock = Clock::simulated(origin, 86_400.0);
        assert_eq!(clock.observed(Utc::now() - TimeDelta::hours(1)), origin);
        let real = Clock::real();
        let yesterday = (Utc::now() - TimeDelta::days(1)).trunc_subsecs(0);
        assert_eq!(real.observed(yesterday), yesterday);
    }

    #[test]
    fn a_simulated_clock_starts_where_it_is_told() {
        let origin: DateTime<Utc> = "2030-06-01T12:00:00Z".parse().unwrap();
        let clock = Clock::simulated(origin, 1.0);
        assert!(clock.now() - origin < TimeDelta::seconds(1));
    }
}
