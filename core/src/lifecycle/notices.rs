//! What tenure tells the people outside the cluster besides the transitions:
//! reminders ahead of a date (a renewal, a trial's end, a scheduled
//! offboarding, a purge) and the final confirmation of a purge. Each is kept
//! in `status.history` with the transitions (so that LifecycleWebhooks
//! deliver it, even after a crash) and goes out as an Event.
//!
//! Reminders follow one rule: a reminder is due `days` before its date, for
//! each of the policy's days; each is sent once, and a controller that comes
//! late (down for a while, or on a fast simulated clock) sends only the
//! latest one due, saying how long is left, never the run it missed.

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::common::HistoryEntry;

type Time = DateTime<Utc>;

/// What a notice is about: its Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// `notifications.reminderDays` before an entitlement's `endsAt`.
    RenewalReminder,
    /// `notifications.trialReminderDays` before the end of an entitlement's
    /// trial (`deadlines.trialEndsAt`).
    TrialReminder,
    /// `notifications.offboardingReminderDays` before an organization's
    /// scheduled `offboarding.effectiveAt`.
    OffboardingReminder,
    /// `notifications.purgeReminderDays` before a purge (`finalPurgeAt`):
    /// the last chance to ask for an export.
    PurgeReminder,
    /// The tombstone is written: what was deleted, and when.
    FinalConfirmation,
}

impl NoticeKind {
    pub fn reason(self) -> &'static str {
        match self {
            NoticeKind::RenewalReminder => "RenewalReminder",
            NoticeKind::TrialReminder => "TrialReminder",
            NoticeKind::OffboardingReminder => "OffboardingReminder",
            NoticeKind::PurgeReminder => "PurgeReminder",
            NoticeKind::FinalConfirmation => "FinalConfirmation",
        }
    }

    /// The history entry's reason: the date it is about.
    fn about(self) -> &'static str {
        match self {
            NoticeKind::RenewalReminder => "EndsAt",
            NoticeKind::TrialReminder => "TrialEndsAt",
            NoticeKind::OffboardingReminder => "EffectiveAt",
            NoticeKind::PurgeReminder => "FinalPurgeAt",
            NoticeKind::FinalConfirmation => "TombstoneWritten",
        }
    }

    /// Whether a history entry's `event` is a notice, not a transition.
    pub fn is_notice(event: &str) -> bool {
        use NoticeKind::*;
        [
            RenewalReminder,
            TrialReminder,
            OffboardingReminder,
            PurgeReminder,
            FinalConfirmation,
        ]
        .iter()
        .any(|kind| kind.reason() == event)
    }
}

/// A notice to send now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    /// When it was due: its date minus one of the reminder days, or the
    /// purge's end for the final confirmation.
    pub due_at: Time,
    /// When it is sent: the decision's `now`.
    pub at: Time,
    pub message: String,
}

impl Notice {
    /// The final confirmation of a purge, sent `now`.
    pub fn final_confirmation(now: Time, message: String) -> Self {
        Self {
            kind: NoticeKind::FinalConfirmation,
            due_at: now,
            at: now,
            message,
        }
    }

    /// How `status.history` keeps it.
    pub fn history_entry(&self) -> HistoryEntry {
        HistoryEntry {
            at: self.at,
            event: self.kind.reason().into(),
            reason: self.kind.about().into(),
            message: self.message.clone(),
            recorded_at: None,
        }
    }
}

/// The reminders of one date at one decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reminders {
    /// The reminder due now and not sent yet (the latest of those due).
    pub due: Option<Time>,
    /// What status keeps: the latest reminder sent, this one included.
    pub sent: Option<Time>,
    /// When the next one is due: the controller wakes then.
    pub upcoming: Option<Time>,
    /// The days ahead of the reminders that came due before `due` could be
    /// sent (the date was set late, the controller was down, or its clock
    /// ran fast), most first: not sent, `due` stands for them.
    pub missed_days: Vec<i64>,
}

impl Reminders {
    /// The reminder due now, as a notice of `kind` sent `now`, saying what
    /// it stands for if earlier ones were missed.
    pub fn notice(&self, kind: NoticeKind, now: Time, message: String) -> Option<Notice> {
        let due_at = self.due?;
        let days: Vec<String> = self.missed_days.iter().map(i64::to_string).collect();
        let message = match days.as_slice() {
            [] => message,
            [one] => format!(
                "{message} (also for the reminder {one} days ahead, which came due before it could be sent)"
            ),
            [earlier @ .., last] => format!(
                "{message} (also for the reminders {} and {last} days ahead, which came due before they could be sent)",
                earlier.join(", ")
            ),
        };
        Some(Notice {
            kind,
            due_at,
            at: now,
            message,
        })
    }
}

/// The reminders `days` before `date`, of which the one due at
/// `already_sent` and those before it were sent. None of them once `date`
/// has passed.
pub fn reminders(date: Time, days: &[i64], already_sent: Option<Time>, now: Time) -> Reminders {
    if now >= date {
        return Reminders {
            sent: already_sent,
            ..Reminders::default()
        };
    }
    let unsent: Vec<(i64, Time)> = days
        .iter()
        .map(|days| (*days, date - TimeDelta::days(*days)))
        .filter(|(_, at)| already_sent.is_none_or(|sent| *at > sent))
        .collect();
    let due = unsent
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at <= now)
        .max();
    let mut missed: Vec<(i64, Time)> = (unsent.iter().copied())
        .filter(|(_, at)| *at <= now && Some(*at) != due)
        .collect();
    missed.sort_by_key(|(_, at)| *at);
    Reminders {
        due,
        sent: due.or(already_sent),
        upcoming: unsent
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| *at > now)
            .min(),
        missed_days: missed.into_iter().map(|(days, _)| days).collect(),
    }
}

/// How long is left until `date`, as a reminder says it: `in 7 days`, or
/// `in 0 days (18 hours)` on the last day.
pub fn time_left(date: Time, now: Time) -> String {
    let left = date - now;
    match left.num_days() {
        0 => format!("in 0 days ({} hours)", left.num_hours()),
        1 => "in 1 day".into(),
        days => format!("in {days} days"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::scenario::day;

    #[test]
    fn each_reminder_is_due_once_and_the_next_one_wakes_the_controller() {
        let first = reminders(day(30), &[7, 3], None, day(23));
        assert_eq!(first.due, Some(day(23)));
        assert_eq!(first.upcoming, Some(day(27)));
        let again = reminders(day(30), &[7, 3], first.sent, day(24));
        assert_eq!(again.due, None);
        assert_eq!(again.sent, Some(day(23)));
        assert_eq!(again.upcoming, Some(day(27)));
    }

    #[test]
    fn a_late_controller_sends_only_the_latest_reminder_due() {
        let late = reminders(day(30), &[30, 7, 3], None, day(28));
        assert_eq!(late.due, Some(day(27)));
        assert_eq!(late.upcoming, None);
        assert_eq!(late.missed_days, [30, 7]);
        let notice = late.notice(NoticeKind::PurgeReminder, day(28), "purged".into());
        assert_eq!(
            notice.unwrap().message,
            "purged (also for the reminders 30 and 7 days ahead, which came due before they could be sent)"
        );
        let past = reminders(day(30), &[30, 7, 3], None, day(31));
        assert_eq!(past, Reminders::default());
    }
}
