//! Sizes in octets, written as a number or as a string with a unit.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A size in octets: `1048576`, `"1MiB"`, `"512KiB"`, `"2GiB"` or `"10MB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in octets.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn parse(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse(&t).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a size (a number of octets, or e.g. \"10MiB\", \"512KiB\")"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units() {
        assert_eq!(parse("10"), Some(10));
        assert_eq!(parse("1KiB"), Some(1024));
        assert_eq!(parse("3 MiB"), Some(3 << 20));
        assert_eq!(parse("2MB"), Some(2_000_000));
        assert_eq!(parse("1TiB"), None);
        assert_eq!(parse("x"), None);
    }
}
