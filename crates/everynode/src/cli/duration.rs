//! kubectl-style durations for `--timeout`: Go's `time.ParseDuration` syntax (`90s`, `5m`,
//! `1h30m`, `1.5h`), and a bare number of seconds as before (`0`: no limit).

use std::time::Duration;

/// The units Go accepts, in nanoseconds.
const UNITS: [(&str, f64); 7] = [
    ("ns", 1.0),
    ("us", 1e3),
    ("µs", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("h", 3_600e9),
];

/// Parses `5m`, `1h30m`, `2.5s` or `30` (seconds). For clap's `value_parser`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let invalid = || {
        format!("invalid duration {text:?}: use e.g. 30s, 5m or 1h30m (or seconds, 0 for no limit)")
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut nanos = 0.0_f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let value: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = UNITS
            .iter()
            .find(|(unit, _)| *unit == &rest[..unit_end])
            .map(|(_, factor)| *factor)
            .ok_or_else(invalid)?;
        nanos += value * factor;
        rest = &rest[unit_end..];
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(invalid());
    }
    // Whole nanoseconds are what Go keeps too.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_bare_seconds_parse() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m0.5s"), Ok(Duration::from_millis(120_500)));
    }

    #[test]
    fn a_bad_duration_says_what_to_write() {
        for bad in ["", "5x", "m", "1h-5m", "-1s", "five minutes"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("use e.g. 30s, 5m or 1h30m"), "{bad}: {err}");
        }
    }
}
