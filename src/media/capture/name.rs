//! Dates in file names, as phones, cameras and messengers write them:
//! `IMG_20190615_142233.jpg`, `PXL_20230102_123456789.jpg`,
//! `Screenshot_2019-06-15-14-22-33.png`, `Screenshot 2019-06-15 at
//! 14.22.33.png`, `IMG-20190615-WA0001.jpg` (a date alone), and
//! `2019-06-15 14.22.33.jpg`.

use jiff::civil::{Date, DateTime, Time};

/// The date and time in `stem`, if it holds one: eight digits of a valid
/// date (`YYYYMMDD`, or separated by one `-`, `_` or `.` throughout), then
/// optionally six digits of a valid time. A time that is not there reads as
/// midnight.
pub(super) fn date_in(stem: &str) -> Option<DateTime> {
    let bytes = stem.as_bytes();
    (0..bytes.len())
        .filter(|&i| bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()))
        .find_map(|i| at(bytes, i))
}

fn at(bytes: &[u8], start: usize) -> Option<DateTime> {
    let mut c = Scan { bytes, at: start };
    let year = c.digits(4)?;
    let separator = c.separator(b"-_.");
    let month = c.digits(2)?;
    if separator.is_some() {
        c.expect(separator?)?;
    }
    let day = c.digits(2)?;
    if c.peek().is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    if !(1900..=2099).contains(&year) {
        return None;
    }
    let date = Date::new(year as i16, month as i8, day as i8).ok()?;
    let time = c.time().unwrap_or(Time::midnight());
    Some(date.to_datetime(time))
}

struct Scan<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn digits(&mut self, n: usize) -> Option<u32> {
        let run = self.bytes.get(self.at..self.at + n)?;
        if !run.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += n;
        Some(run.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
    }

    fn separator(&mut self, allowed: &[u8]) -> Option<u8> {
        let b = self.peek().filter(|b| allowed.contains(b))?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    /// `_142233`, `-14-22-33`, ` 14.22.33`, ` at 14.22.33`, `T142233`,
    /// `_123456789` (milliseconds after the seconds).
    fn time(&mut self) -> Option<Time> {
        self.separator(b"_- T")?;
        if self.bytes[self.at..].starts_with(b"at ") {
            self.at += 3;
        }
        let hour = self.digits(2)?;
        let separator = self.separator(b"-_.:");
        let minute = self.digits(2)?;
        if let Some(separator) = separator {
            self.expect(separator)?;
        }
        let second = self.digits(2)?;
        if separator.is_none() && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            // Only milliseconds may follow: exactly three more digits.
            self.digits(3)?;
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        Time::new(hour as i8, minute as i8, second as i8, 0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_phones_and_apps_write_into_names() {
        let table = [
            ("IMG_20190615_142233", Some("2019-06-15T14:22:33")),
            ("VID_20190615_142233_HDR", Some("2019-06-15T14:22:33")),
            ("PXL_20230102_123456789", Some("2023-01-02T12:34:56")),
            ("PXL_20230102_123456789.MP", Some("2023-01-02T12:34:56")),
            ("Screenshot_2019-06-15-14-22-33", Some("2019-06-15T14:22:33")),
            ("Screenshot 2019-06-15 at 14.22.33", Some("2019-06-15T14:22:33")),
            ("2019-06-15 14.22.33", Some("2019-06-15T14:22:33")),
            ("20190615_142233", Some("2019-06-15T14:22:33")),
            ("IMG-20190615-WA0001", Some("2019-06-15T00:00:00")),
            ("signal-2023-01-02-123456", Some("2023-01-02T12:34:56")),
            ("IMG_1234", None),
            ("DSC01234", None),
            ("IMG_20191345_142233", None),
            ("123201906151", None),
            ("2019-06_15", None),
            ("IMG_20190615_256161", Some("2019-06-15T00:00:00")),
        ];
        for (stem, expected) in table {
            let got = date_in(stem).map(|d| d.to_string());
            assert_eq!(got.as_deref(), expected, "{stem}");
        }
    }
}
