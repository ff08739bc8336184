//! How the plugin writes for people (80 columns, colour only on a terminal)
//! and for scripts (JSON, YAML), and how it reads times and durations.

use std::io::IsTerminal;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use clap::ValueEnum;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// The width text output is laid out for.
pub const WIDTH: usize = 80;

/// Prints `report` as JSON or YAML; false for text (the caller writes it).
pub fn structured(output: Output, report: &impl Serialize) -> anyhow::Result<bool> {
    match output {
        Output::Text => return Ok(false),
        Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(report)?),
    }
    Ok(true)
}

/// `30d`, `12h`, `2w`, `1y` (365 days), `90m`, `45s`, or a sum (`1y30d`).
pub fn parse_duration(value: &str) -> Result<TimeDelta, String> {
    let invalid = || {
        format!("{value:?} is not a duration: a number and a unit, s m h d w y (e.g. 30d, 2y, 12h)")
    };
    let mut total = TimeDelta::zero();
    let mut digits = String::new();
    for c in value.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total += match c {
            's' => TimeDelta::seconds(n),
            'm' => TimeDelta::minutes(n),
            'h' => TimeDelta::hours(n),
            'd' => TimeDelta::days(n),
            'w' => TimeDelta::weeks(n),
            'y' => TimeDelta::days(365 * n),
            _ => return Err(invalid()),
        };
    }
    if !digits.is_empty() || total <= TimeDelta::zero() {
        return Err(invalid());
    }
    Ok(total)
}

/// RFC 3339 (`2027-01-01T00:00:00Z`) or a date (`2027-01-01`, midnight UTC).
pub fn parse_instant(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        .map_err(|_| {
            format!(
                "{value:?} is not a time: RFC 3339 (2027-01-01T00:00:00Z) or a date (2027-01-01)"
            )
        })
}

/// A time given as a duration from a start (`90d`) or as an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    After(TimeDelta),
    At(DateTime<Utc>),
}

impl Until {
    pub fn from(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Until::After(duration) => start + duration,
            Until::At(at) => at,
        }
    }
}

/// A duration (`2y`, `90d`) or a time (RFC 3339 or a date).
pub fn parse_until(value: &str) -> Result<Until, String> {
    parse_duration(value)
        .map(Until::After)
        .or_else(|_| parse_instant(value).map(Until::At))
        .map_err(|_| {
            format!("{value:?} is neither a duration (90d, 2y) nor a time (RFC 3339 or a date)")
        })
}

/// An instant as people read it in a table: `2027-03-04 13:00`.
pub fn date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}

/// RFC 3339, to the second, as manifests write it.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How far `at` is from `now`: `in 12 days`, `3 hours ago`, `now`.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = at - now;
    let ahead = delta > TimeDelta::zero();
    // Rounded to the nearest unit: a deadline 12 days away, read a few
    // seconds later, is still "in 12 days".
    let seconds = delta.abs().num_seconds();
    let nearest = |unit: i64| (seconds + unit / 2) / unit;
    let (day, hour, minute) = (86_400, 3_600, 60);
    let amount = if nearest(day) >= 2 * 365 {
        format!("{} years", nearest(day) / 365)
    } else if nearest(day) >= 2 {
        format!("{} days", nearest(day))
    } else if nearest(hour) >= 2 {
        format!("{} hours", nearest(hour))
    } else if nearest(minute) >= 2 {
        format!("{} minutes", nearest(minute))
    } else if seconds >= 60 {
        "a minute".into()
    } else {
        return "now".into();
    };
    if ahead {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// Colour for a terminal; plain text otherwise (a pipe, a file, NO_COLOR).
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn for_stdout() -> Self {
        Paint {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn code(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.code("1", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.code("2", text)
    }

    pub fn red(&self, text: &str) -> String {
        self.code("31", text)
    }

    pub fn yellow(&self, text: &str) -> String {
        self.code("33", text)
    }

    pub fn green(&self, text: &str) -> String {
        self.code("32", text)
    }

    /// A phase in the colour of what it means.
    pub fn phase(&self, phase: &str) -> String {
        match phase {
            "Active" | "Trialing" => self.green(phase),
            "Suspended" | "Expired" | "Disabled" | "Archived" | "PurgeScheduled" | "Stalled" => {
                self.yellow(phase)
            }
            "Cancelled" | "Purging" | "Purged" | "Deleted" => self.red(phase),
            _ => phase.to_string(),
        }
    }
}

/// `text` wrapped to lines of at most `WIDTH` columns, every line after the
/// first indented by `indent` columns, the first starting at column `start`.
pub fn wrap(text: &str, start: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut column = start;
    let mut line_empty = true;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if !line_empty && column + 1 + len > WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            column = indent;
            line_empty = true;
        }
        if !line_empty {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
        line_empty = false;
    }
    out
}

/// `text` cut to `width` columns, with an ellipsis when it was longer.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Kind -> count as `ConfigMap 3, Deployment 1`, or `nothing`.
pub fn counts(objects: &std::collections::BTreeMap<String, i64>) -> String {
    if objects.is_empty() {
        return "nothing counted".into();
    }
    objects
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30d"), Ok(TimeDelta::days(30)));
        assert_eq!(parse_duration("2y"), Ok(TimeDelta::days(730)));
        assert_eq!(parse_duration("1y30d"), Ok(TimeDelta::days(395)));
        assert_eq!(parse_duration("12h"), Ok(TimeDelta::hours(12)));
        assert!(parse_duration("30").unwrap_err().contains("\"30\""));
        assert!(parse_duration("3 months").is_err());
        assert!(parse_duration("0d").is_err());
    }

    #[test]
    fn times_are_told_relative_to_now() {
        let now = parse_instant("2026-12-04").unwrap();
        assert_eq!(relative(now + TimeDelta::days(12), now), "in 12 days");
        assert_eq!(relative(now - TimeDelta::days(3), now), "3 days ago");
        assert_eq!(relative(now + TimeDelta::hours(5), now), "in 5 hours");
        assert_eq!(relative(now + TimeDelta::days(800), now), "in 2 years");
        assert_eq!(relative(now, now), "now");
        let moments_later = now + TimeDelta::seconds(5);
        assert_eq!(
            relative(now + TimeDelta::days(12), moments_later),
            "in 12 days"
        );
    }

    #[test]
    fn long_messages_wrap_inside_80_columns() {
        let text = "the purge runs at 2027-03-11T00:00:00Z; review status.purgePlan and place a RetentionHold to stop it";
        let wrapped = wrap(text, 30, 30);
        for line in wrapped.lines().skip(1) {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
            assert!(line.starts_with(&" ".repeat(30)));
        }
        assert!(30 + wrapped.lines().next().unwrap().chars().count() <= WIDTH);
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>().join(" "),
            text
        );
    }
}
