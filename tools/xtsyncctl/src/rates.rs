//! Rates and time-of-day windows as operators type them: `20MB/s`, `512KiB/s`,
//! `08:00-18:00=2MB/s` (pure parsing).

use xtsync_api::RateWindow;

/// `N[unit][/s]` with units B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (of 1024);
/// `0` or `unlimited` means no limit.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(0);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a rate (like 20MB/s)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    Ok((value * scale).round() as u64)
}

/// `HH:MM-HH:MM=RATE` (the worker's local time; may wrap midnight).
pub fn parse_window(text: &str) -> Result<RateWindow, String> {
    let (span, rate) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected HH:MM-HH:MM=RATE"))?;
    let (from, to) = span.split_once('-').ok_or_else(|| format!("{text:?}: expected HH:MM-HH:MM=RATE"))?;
    let window = RateWindow { from_minute: minute(from)?, to_minute: minute(to)?, bytes_per_s: parse_rate(rate)? };
    if window.from_minute == window.to_minute {
        return Err(format!("{text:?}: an empty window"));
    }
    Ok(window)
}

fn minute(hhmm: &str) -> Result<u32, String> {
    let (h, m) = hhmm.trim().split_once(':').ok_or_else(|| format!("{hhmm:?} is not HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("{hhmm:?} is not HH:MM"))?,
        m.parse().map_err(|_| format!("{hhmm:?} is not HH:MM"))?,
    );
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("{hhmm:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_the_units_operators_use() {
        assert_eq!(parse_rate("20MB/s"), Ok(20_000_000));
        assert_eq!(parse_rate("512KiB/s"), Ok(524_288));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("unlimited"), Ok(0));
        assert!(parse_rate("fast").unwrap_err().contains("not a rate"));
        assert!(parse_rate("3 parsecs").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn windows_are_minutes_of_the_day() {
        assert_eq!(
            parse_window("08:00-18:30=2MB/s"),
            Ok(RateWindow { from_minute: 480, to_minute: 1110, bytes_per_s: 2_000_000 })
        );
        assert_eq!(parse_window("22:00-06:00=0").map(|w| (w.from_minute, w.to_minute)), Ok((1320, 360)));
        assert_eq!(parse_window("00:00-24:00=1MB").map(|w| w.to_minute), Ok(1440));
        assert!(parse_window("8-18=1MB").is_err());
        assert!(parse_window("25:00-01:00=1MB").unwrap_err().contains("time of day"));
        assert!(parse_window("10:00-10:00=1MB").unwrap_err().contains("empty"));
    }
}
