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
    /// When a purge date was first shown (`purgeAnnouncedAt`).
    pub since: Time,
}

impl Announced {
    /// The purge as status recorded it: the date shown, when it was first
    /// shown, the final grace then, and what made it due then (the latest of
    /// `dues`). None when no date was shown.
    pub fn from_status(
        at: Option<Time>,
        since: Option<Time>,
        grace: Option<TimeDelta>,
        dues: impl IntoIterator<Item = Option<Time>>,
    ) -> Option<Self> {
        let (at, grace) = (at?, grace?);
        let due = dues.into_iter().flatten().max()?;
        Some(Self {
            due_plus_grace: due + grace,
            grace,
            at,
            since: since.unwrap_or(at - grace),
        })
    }
}

/// When a purge runs, and since when that is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// `finalPurgeAt`.
    pub at: Time,
    /// `purgeAnnouncedAt`: when a purge date was first shown.
    pub since: Time,
}

/// When a purge due at `due` runs under final grace `grace`, given what was
/// announced before (None: this is its first announcement). Never sooner
/// than the final grace after it was first announced.
pub fn final_purge_at(
    due: Time,
    grace: TimeDelta,
    announced: Option<Announced>,
    now: Time,
) -> Schedule {
    let wanted = due + grace;
    let since = announced.map_or(now, |before| before.since);
    let at = match announced {
        None => wanted,
        // Nothing changed since the announcement: it stands.
        Some(before) if before.due_plus_grace == wanted && before.grace == grace => before.at,
        Some(before) if wanted >= before.at => wanted,
        Some(before) => wanted.max(before.at.min(now + grace.max(before.grace))),
    };
    Schedule {
        at: at.max(since + grace),
        since,
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

    fn at(due: Time, grace: TimeDelta, announced: Option<Announced>, now: Time) -> Time {
        final_purge_at(due, grace, announced, now).at
    }

    #[test]
    fn a_first_announcement_gives_a_full_final_grace_even_when_long_overdue() {
        assert_eq!(at(day(-400), days(7), None, day(0)), day(7));
        assert_eq!(at(day(100), days(7), None, day(0)), day(107));
    }

    #[test]
    fn a_retention_cut_moves_the_purge_earlier_but_never_sooner_than_the_longer_grace_after_it() {
        let announced = Announced {
            due_plus_grace: day(372),
            grace: days(7),
            at: day(372),
            since: day(0),
        };
        // Retention cut from 365 to 30 days on day 100, grace cut to 0.
        let moved = final_purge_at(day(30), days(0), Some(announced), day(100));
        assert_eq!(moved.at, day(107), "the old grace of 7 days counts");
        assert_eq!(moved.since, day(0));
        // Decided again later with the same facts: it stands.
        let again = Announced {
            due_plus_grace: day(30),
            grace: days(0),
            at: moved.at,
            since: moved.since,
        };
        assert_eq!(at(day(30), days(0), Some(again), day(103)), moved.at);
    }

    #[test]
    fn a_later_date_takes_effect_at_once() {
        let announced = Announced {
            due_plus_grace: day(372),
            grace: days(7),
            at: day(372),
            since: day(0),
        };
        assert_eq!(at(day(500), days(7), Some(announced), day(370)), day(507));
    }

    #[test]
    fn a_longer_final_grace_reaches_an_overdue_purge_already_announced() {
        // Long overdue, announced on day 0 for day 7; on day 1 a lock raises
        // the final grace to 30 days: 30 days from the first announcement.
        let announced = Announced {
            due_plus_grace: day(-393),
            grace: days(7),
            at: day(7),
            since: day(0),
        };
        assert_eq!(at(day(-400), days(30), Some(announced), day(1)), day(30));
    }

    proptest! {
        /// Whatever the facts do, an announced purge never runs sooner than a
        /// full final grace after it was first announced, never moves earlier
        /// than the moment it moved plus the longer of the old and the new
        /// grace, and never earlier than its facts allow.
        #[test]
        fn an_announced_purge_never_moves_earlier_than_the_change_plus_a_full_grace(
            changes in proptest::collection::vec((0i64..600, 0i64..60, 1i64..40), 1..12)
        ) {
            let mut now = day(0);
            let mut announced: Option<Announced> = None;
            for (due_day, grace_days, step) in changes {
                now += days(step);
                let (due, grace) = (day(due_day), days(grace_days));
                let Schedule { at, since } = final_purge_at(due, grace, announced, now);
                prop_assert!(at >= due + grace, "before the facts allow");
                prop_assert!(at >= since + grace, "less than a full grace after the announcement");
                match announced {
                    None => prop_assert!(at >= now + grace),
                    Some(before) if at < before.at => {
                        prop_assert!(at >= now + grace.max(before.grace), "moved earlier too soon");
                    }
                    Some(_) => {}
                }
                announced = Some(Announced { due_plus_grace: due + grace, grace, at, since });
            }
        }
    }
}
