//! The one rule that times every purge, of an organization or of an
//! entitlement: it is announced in status first, and runs no earlier than a
//! full final grace after that, so that a person can review what it deletes.
//!
//! Facts and policy may move an announced purge. Later is always safe and
//! takes effect at once. Earlier is legitimate too (a deliberate retention
//! cut), but it never comes sooner than the change plus the longer of the old
//! and the new final grace, and never later than the date already announced:
//! however a deletion is triggered, a reviewer sees it coming for a full
//! final grace.

use chrono::{DateTime, TimeDelta, Utc};

type Time = DateTime<Utc>;

/// The purge as the last decision announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    /// The date the facts gave then: when the purge became due, plus the
    /// final grace of then.
    pub due_plus_grace: Time,
    /// The final grace of then.
    pub grace: TimeDelta,
    /// The date announced (`finalPurgeAt`).
    pub at: Time,
}

/// When a purge due at `due` runs under final grace `grace`, given what was
/// announced before (None: this is its first announcement).
pub fn final_purge_at(
    due: Time,
    grace: TimeDelta,
    announced: Option<Announced>,
    now: Time,
) -> Time {
    let wanted = due + grace;
    match announced {
        None => wanted.max(now + grace),
        // Nothing changed since the announcement: it stands.
        Some(before) if before.due_plus_grace == wanted && before.grace == grace => before.at,
        Some(before) if wanted >= before.at => wanted,
        Some(before) => wanted.max(before.at.min(now + grace.max(before.grace))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::scenario::day;
    use proptest::prelude::*;

    fn days(n: i64) -> TimeDelta {
        TimeDelta::days(n)
    }

    #[test]
    fn a_first_announcement_gives_a_full_final_grace_even_when_long_overdue() {
        assert_eq!(final_purge_at(day(-400), days(7), None, day(0)), day(7));
        assert_eq!(final_purge_at(day(100), days(7), None, day(0)), day(107));
    }

    #[test]
    fn a_retention_cut_moves_the_purge_earlier_but_never_sooner_than_the_longer_grace_after_it() {
        let announced = Announced {
            due_plus_grace: day(372),
            grace: days(7),
            at: day(372),
        };
        // Retention cut from 365 to 30 days on day 100, grace cut to 0.
        let moved = final_purge_at(day(30), days(0), Some(announced), day(100));
        assert_eq!(moved, day(107), "the old grace of 7 days counts");
        // Decided again later with the same facts: it stands.
        let again = Announced {
            due_plus_grace: day(30),
            grace: days(0),
            at: moved,
        };
        assert_eq!(
            final_purge_at(day(30), days(0), Some(again), day(103)),
            moved
        );
    }

    #[test]
    fn a_later_date_takes_effect_at_once() {
        let announced = Announced {
            due_plus_grace: day(372),
            grace: days(7),
            at: day(372),
        };
        assert_eq!(
            final_purge_at(day(500), days(7), Some(announced), day(370)),
            day(507)
        );
    }

    proptest! {
        /// Whatever the facts do, an announced purge never moves earlier than
        /// the moment it moved plus the longer of the old and the new grace,
        /// and never earlier than its facts allow.
        #[test]
        fn an_announced_purge_never_moves_earlier_than_the_change_plus_a_full_grace(
            changes in proptest::collection::vec((0i64..600, 0i64..60, 1i64..40), 1..12)
        ) {
            let mut now = day(0);
            let mut announced: Option<Announced> = None;
            for (due_day, grace_days, step) in changes {
                now += days(step);
                let (due, grace) = (day(due_day), days(grace_days));
                let at = final_purge_at(due, grace, announced, now);
                prop_assert!(at >= due + grace, "before the facts allow");
                match announced {
                    None => prop_assert!(at >= now + grace),
                    Some(before) if at < before.at => {
                        prop_assert!(at >= now + grace.max(before.grace), "moved earlier too soon");
                    }
                    Some(_) => {}
                }
                announced = Some(Announced { due_plus_grace: due + grace, grace, at });
            }
        }
    }
}
