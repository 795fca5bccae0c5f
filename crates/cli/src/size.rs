//! Byte sizes and durations as people type them: `10240`, `8MiB`, `64k`,
//! `1GB`; `500ms`, `30s`, `5m`, `24h`.

/// Splits `text` into its leading whole number and the unit after it;
/// `what` names the kind of value for the error.
fn split<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number = number
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))?;
    Ok((number, unit))
}

/// Parses a size: a whole number, optionally followed by a unit. Binary units
/// (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`) are powers of 1024; decimal ones
/// (`KB`, `MB`, `GB`) powers of 1000. Units are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split(text, "a size (try 10240, 64KiB or 8MiB)")?;
    let text = text.trim();
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a positive duration: a whole number and a unit, `ms`, `s`, `m` or
/// `h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = split(text, "a duration (try 500ms, 30s, 5m or 24h)")?;
    let text = text.trim();
    let millis: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("{text:?} needs a unit: ms, s, m or h")),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    match number.checked_mul(millis) {
        Some(0) => Err("must be longer than zero".into()),
        Some(ms) => Ok(std::time::Duration::from_millis(ms)),
        None => Err(format!("{text:?} is too long")),
    }
}

/// Parses a size that must be at least one byte.
pub fn parse_positive_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("must be at least 1 byte".into()),
        n => Ok(n),
    }
}

/// Parses a block size: as [`parse_size`], but a number under 1024 without
/// a unit is refused, as a unit forgotten (`--block-size 8` would send a
/// 20 MiB file in 2.6 million requests).
pub fn parse_block_size(text: &str) -> Result<u64, String> {
    let size = parse_positive_size(text)?;
    let (_, unit) = split(text, "a size")?;
    if unit.trim().is_empty() && size < 1024 {
        return Err(format!(
            "{size} bytes per block is tiny: did you mean {size}KiB or {size}MiB? (write {size}B to mean bytes)"
        ));
    }
    Ok(size)
}

/// A size for people: `64.0 MiB`.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["30", "0s", "s", "3d", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10240"), Ok(10240));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184GiB").is_err(), "overflow");
        assert!(parse_positive_size("0").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(64.0 * 1024.0 * 1024.0), "64.0 MiB");
    }
}
