//! Durations written the way people write them: `500ms`, `5s`, `1.5s`, `2m`, `1h`, and
//! Akka's long forms (`5 seconds`, `500 millis`) so Akka users can paste their values.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

const HELP: &str = "use a number with a unit: 500ms, 5s, 1.5s, 2m, 1h";

/// Parses a duration; the error says what is allowed.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{input}` has no unit; {HELP}"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{input}` is not a duration; {HELP}"))?;
    let seconds_per_unit = match unit.trim() {
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 0.001,
        "s" | "second" | "seconds" => 1.0,
        "m" | "min" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        other => return Err(format!("`{input}` has unknown unit `{other}`; {HELP}")),
    };
    let secs = value * seconds_per_unit;
    if !secs.is_finite() || secs > 365.0 * 24.0 * 3600.0 {
        return Err(format!("`{input}` is out of range (at most a year)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats with the largest unit that keeps it exact (`1500ms`, `5s`, `2m`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `#[serde(with = "duration")]`
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    match v {
        serde_yaml::Value::String(s) => parse(&s).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "`{}` is not a duration; {HELP}",
            super::show_value(&other)
        ))),
    }
}

/// `#[serde(with = "duration::or_off")]`: a duration, or `off` for "never".
pub mod or_off {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        match v {
            serde_yaml::Value::Bool(false) => Ok(None),
            serde_yaml::Value::String(s) if s.trim() == "off" => Ok(None),
            serde_yaml::Value::String(s) => parse(&s)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("{e}, or `off`"))),
            other => Err(serde::de::Error::custom(format!(
                "`{}` is not a duration; {HELP}, or `off`",
                super::super::show_value(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_akka_forms() {
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("5 seconds").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("1 second").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("100 millis").unwrap(), Duration::from_millis(100));
    }

    #[test]
    fn rejects_with_a_hint() {
        for bad in ["5", "five seconds", "5 fortnights", "", "1e9h", "-1s"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("500ms") || e.contains("range"), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [0, 1, 999, 1000, 1500, 60_000, 3_600_000, 5_400_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
