//! Byte sizes as people write them: `16MiB`, `500 KB`, `1GiB`, or bytes.

/// Parses `text` as a byte count: a whole number of bytes, or a number
/// with a unit (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`; KB is 1000, KiB
/// 1024; case-insensitive, a space allowed before the unit).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || format!("bad size `{text}`: try `16MiB`, `500KB` or a number of bytes");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

/// `bytes` in the largest binary unit that holds it whole (`16MiB`,
/// `1GiB`, `1000`): how a default size is shown, read back by
/// [`parse_byte_size`].
pub fn format_byte_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (multiplier, unit) in UNITS {
        if bytes != 0 && bytes.is_multiple_of(multiplier) {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_sizes_read_back() {
        assert_eq!(format_byte_size(16 * 1024 * 1024), "16MiB");
        assert_eq!(format_byte_size(512 * 1024 * 1024), "512MiB");
        assert_eq!(format_byte_size(2 << 30), "2GiB");
        assert_eq!(format_byte_size(1000), "1000");
        assert_eq!(format_byte_size(0), "0");
        for bytes in [0, 1, 1000, 1024, 1536 * 1024, 16 << 20, 3 << 30] {
            assert_eq!(parse_byte_size(&format_byte_size(bytes)), Ok(bytes));
        }
    }

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_byte_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_byte_size("16MiB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_byte_size("500 KB"), Ok(500_000));
        assert_eq!(parse_byte_size("1gib"), Ok(1 << 30));
        assert!(parse_byte_size("ten MB").is_err());
        assert!(parse_byte_size("5 parsecs").is_err());
        assert!(parse_byte_size("99999999999999999999GiB").is_err());
    }
}
