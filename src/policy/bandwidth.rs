//! Bandwidth limits: an rclone-style timetable (`"2MiB"`, or
//! `"08:00,2MiB 18:00,off"`) and the size parser it shares with the config.

use super::conditions::parse_clock;

/// Parses sizes like `16MiB`, `8MB`, `2M` (binary, as in rclone), `5242880`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Upload rate limits by time of day. Each entry applies from its time until
/// the next; before the first entry of the day the last one still applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timetable {
    /// (minute of day, bytes per second or `None` for unlimited), by minute.
    entries: Vec<(u16, Option<u64>)>,
}

impl Timetable {
    /// No limit at any time.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Parses `"off"`, `"2MiB"` or `"HH:MM,RATE HH:MM,RATE …"`; rates are
    /// per second, `off` means unlimited.
    pub fn parse(text: &str) -> Option<Timetable> {
        let rate = |r: &str| match r.trim() {
            "off" | "0" => Some(None),
            other => parse_size(other).map(Some),
        };
        let text = text.trim();
        if !text.contains(',') {
            return Some(Timetable { entries: vec![(0, rate(text)?)] });
        }
        let mut entries = Vec::new();
        for item in text.split_whitespace() {
            let (time, limit) = item.split_once(',')?;
            entries.push((parse_clock(time)?, rate(limit)?));
        }
        entries.sort_by_key(|(minute, _)| *minute);
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        Some(Timetable { entries })
    }

    /// The limit in force at minute-of-day `minute`, in bytes per second.
    pub fn limit_at(&self, minute: u16) -> Option<u64> {
        let current = self.entries.iter().rev().find(|(start, _)| *start <= minute).or(self.entries.last());
        current.and_then(|(_, rate)| *rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table = [
            ("16MiB", Some(16 << 20)),
            ("2M", Some(2 << 20)),
            ("8MB", Some(8_000_000)),
            ("42", Some(42)),
            ("1 GiB", Some(1 << 30)),
            ("x", None),
            ("", None),
        ];
        for (text, bytes) in table {
            assert_eq!(parse_size(text), bytes, "{text}");
        }
    }

    #[test]
    fn timetables() {
        let day = Timetable::parse("08:00,2MiB 18:00,off").expect("parses");
        let table =
            [(0, None), (7 * 60 + 59, None), (8 * 60, Some(2 << 20)), (17 * 60 + 59, Some(2 << 20)), (18 * 60, None)];
        for (minute, limit) in table {
            assert_eq!(day.limit_at(minute), limit, "minute {minute}");
        }
        let wraps = Timetable::parse("18:00,512KiB 08:00,off").expect("parses");
        assert_eq!(wraps.limit_at(3 * 60), Some(512 << 10), "before the first entry, the last applies");
        assert_eq!(Timetable::parse("1MiB").expect("parses").limit_at(600), Some(1 << 20));
        assert_eq!(Timetable::parse("off").expect("parses").limit_at(600), None);
        assert_eq!(Timetable::unlimited().limit_at(600), None);
        for bad in ["fast", "08:00,2MiB 08:00,off", "25:00,1M", "08:00 2M", "08:00,lots"] {
            assert_eq!(Timetable::parse(bad), None, "{bad}");
        }
    }
}
