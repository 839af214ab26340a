//! A data budget for metered links (`metered_budget = "2GiB/month"`): each
//! metered network gets so many bytes per day, week or month, counted
//! from a reset day, like a phone plan's allowance. Pure: the caller passes
//! today's local date.

use std::fmt;

use jiff::ToSpan as _;
use jiff::civil::{Date, Weekday};

use super::parse_size;

/// How long a budget lasts before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From local midnight.
    Day,
    /// From Monday.
    Week,
    /// From the reset day of the month.
    Month,
}

impl Period {
    /// `day`, `week` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Bytes per period on each metered network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes allowed per period.
    pub bytes: u64,
    /// The period.
    pub period: Period,
    /// The day of the month a monthly budget starts again (1–31; in a
    /// shorter month, its last day).
    pub reset_day: u8,
}

/// One period of a budget: from `start` (inclusive) to `resets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// Its first day.
    pub start: Date,
    /// The day the count starts again.
    pub resets: Date,
}

impl Budget {
    /// Parses `"2GiB/month"`, `"500MB/day"`, `"1GiB/week"`.
    pub fn parse(text: &str, reset_day: u8) -> Option<Budget> {
        let (size, period) = text.trim().split_once('/')?;
        let period = match period.trim() {
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            _ => return None,
        };
        let bytes = parse_size(size.trim())?;
        (bytes > 0 && (1..=31).contains(&reset_day)).then_some(Budget { bytes, period, reset_day })
    }

    /// The period `today` is in.
    pub fn cycle(&self, today: Date) -> Cycle {
        match self.period {
            Period::Day => Cycle { start: today, resets: today.tomorrow().unwrap_or(today) },
            Period::Week => {
                let back = today.weekday().to_monday_zero_offset();
                let start = today.checked_sub(i64::from(back).days()).unwrap_or(today);
                Cycle { start, resets: start.nth_weekday(1, Weekday::Monday).unwrap_or(today) }
            }
            Period::Month => {
                let this = reset_in(today.year(), today.month(), self.reset_day);
                let start = if today >= this {
                    this
                } else {
                    let last = today.first_of_month().yesterday().unwrap_or(today);
                    reset_in(last.year(), last.month(), self.reset_day)
                };
                let next = start.last_of_month().tomorrow().unwrap_or(start);
                Cycle { start, resets: reset_in(next.year(), next.month(), self.reset_day) }
            }
        }
    }
}

/// The reset day in that month, or its last day when the month is shorter.
fn reset_in(year: i16, month: i8, day: u8) -> Date {
    let first = Date::new(year, month, 1).unwrap_or_default();
    let day = i8::try_from(day).unwrap_or(1).min(first.days_in_month());
    Date::new(year, month, day).unwrap_or(first)
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", indicatif::BinaryBytes(self.bytes), self.period.as_str())
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;

    #[test]
    fn budgets_parse_with_their_period() {
        assert_eq!(
            Budget::parse("2GiB/month", 1),
            Some(Budget { bytes: 2 << 30, period: Period::Month, reset_day: 1 })
        );
        assert_eq!(Budget::parse("500MB / day", 1).map(|b| b.period), Some(Period::Day));
        assert_eq!(Budget::parse("1GiB/week", 1).map(|b| b.bytes), Some(1 << 30));
        for bad in ["2GiB", "2GiB/year", "lots/month", "0/day"] {
            assert_eq!(Budget::parse(bad, 1), None, "{bad}");
        }
        assert_eq!(Budget::parse("2GiB/month", 0), None, "no day 0");
        assert_eq!(Budget::parse("2GiB/month", 32), None, "no day 32");
    }

    #[test]
    fn a_monthly_budget_starts_again_on_its_reset_day() {
        let budget = Budget::parse("2GiB/month", 15).expect("budget");
        let cycle = budget.cycle(date(2026, 12, 3));
        assert_eq!((cycle.start, cycle.resets), (date(2026, 11, 15), date(2026, 12, 15)));
        let cycle = budget.cycle(date(2026, 12, 15));
        assert_eq!((cycle.start, cycle.resets), (date(2026, 12, 15), date(2027, 1, 15)));
        // The 31st in a 28-day February is its last day.
        let late = Budget::parse("2GiB/month", 31).expect("budget");
        let cycle = late.cycle(date(2027, 2, 28));
        assert_eq!((cycle.start, cycle.resets), (date(2027, 2, 28), date(2027, 3, 31)));
        let cycle = late.cycle(date(2027, 2, 10));
        assert_eq!((cycle.start, cycle.resets), (date(2027, 1, 31), date(2027, 2, 28)));
    }

    #[test]
    fn weeks_start_on_monday_and_days_at_midnight() {
        let week = Budget::parse("1GiB/week", 1).expect("budget");
        // 3 December 2026 is a Thursday.
        let cycle = week.cycle(date(2026, 12, 3));
        assert_eq!((cycle.start, cycle.resets), (date(2026, 11, 30), date(2026, 12, 7)));
        assert_eq!(week.cycle(date(2026, 11, 30)).start, date(2026, 11, 30));
        let day = Budget::parse("100MiB/day", 1).expect("budget");
        assert_eq!(day.cycle(date(2026, 12, 31)).resets, date(2027, 1, 1));
        assert_eq!(Budget::parse("2GiB/month", 1).expect("budget").to_string(), "2.00 GiB/month");
    }
}
