//! Token-budget windows: a length in seconds, aligned to multiples of that length since the
//! Unix epoch (UTC), so every worker, every reload and a restarted nginx agree on where a
//! window starts without storing it.

/// Longest window accepted: a year and a day, so a yearly budget fits.
pub const MAX_WINDOW_S: u64 = 366 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    per_s: u64,
}

impl Window {
    /// `1..=MAX_WINDOW_S` seconds.
    pub fn from_secs(per_s: u64) -> Option<Window> {
        (1..=MAX_WINDOW_S)
            .contains(&per_s)
            .then_some(Window { per_s })
    }

    /// `<digits><unit>` with unit `s`, `m`, `h` or `d`: `10s`, `1h`, `5h`, `1d`, `7d`, `30d`.
    pub fn parse(text: &str) -> Option<Window> {
        let unit = match text.as_bytes().last()? {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            _ => return None,
        };
        let digits = &text[..text.len() - 1];
        if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        Window::from_secs(n.checked_mul(unit)?)
    }

    pub fn secs(self) -> u64 {
        self.per_s
    }

    /// The window holding `now_s`, numbered from the epoch.
    pub fn index(self, now_s: u64) -> u64 {
        now_s / self.per_s
    }

    pub fn start(self, index: u64) -> u64 {
        index.saturating_mul(self.per_s)
    }

    pub fn end(self, index: u64) -> u64 {
        self.start(index).saturating_add(self.per_s)
    }

    /// The shortest exact spelling: `1d` for 86400 s, `90m` for 5400 s, `61s` for 61 s.
    pub fn label(self) -> String {
        for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm')] {
            if self.per_s % unit == 0 {
                return format!("{}{name}", self.per_s / unit);
            }
        }
        format!("{}s", self.per_s)
    }
}

/// `2026-12-02T16:00:00Z` for Unix seconds (proleptic Gregorian, UTC).
pub fn utc_iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_labels() {
        for (t, s, l) in [
            ("1d", 86_400, "1d"),
            ("24h", 86_400, "1d"),
            ("5h", 18_000, "5h"),
            ("90m", 5_400, "90m"),
            ("10s", 10, "10s"),
            ("7d", 604_800, "7d"),
            ("366d", MAX_WINDOW_S, "366d"),
        ] {
            let w = Window::parse(t).unwrap();
            assert_eq!(w.secs(), s, "{t}");
            assert_eq!(w.label(), l, "{t}");
        }
        for bad in [
            "",
            "d",
            "0s",
            "367d",
            "1w",
            "-1d",
            "1.5h",
            " 1d",
            "1D",
            "999999999d",
        ] {
            assert_eq!(Window::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let d = Window::parse("1d").unwrap();
        let t = 1_764_633_600 + 3_600; // 2025-12-02T01:00:00Z
        let i = d.index(t);
        assert_eq!(d.start(i), 1_764_633_600);
        assert_eq!(d.end(i), 1_764_720_000);
        // The epoch was a Thursday: 7-day windows start on Thursdays.
        let w = Window::parse("7d").unwrap();
        assert_eq!(utc_iso(w.start(w.index(t))), "2025-11-27T00:00:00Z");
    }

    #[test]
    fn iso_dates() {
        assert_eq!(utc_iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_iso(1_796_224_800), "2026-12-02T15:20:00Z");
    }
}
