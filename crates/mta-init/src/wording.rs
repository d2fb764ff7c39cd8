//! Small pieces of the text mta-init prints for people: a count with its
//! noun in the right number ("1 attempt", "2 attempts"), and a duration
//! in the units an operator reads at a glance.

use std::time::Duration;

/// `n` and its noun, singular for exactly one: `count(1, "message",
/// "messages")` is "1 message", with 0 or 2 it is "0 messages".
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The noun for `n` things, without the number: for "1 of 3 messages".
pub fn noun<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A duration in its two largest units: `45s`, `3m12s`, `2h13m`, `4d1h`.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.as_millis() > 0 => format!("{:.1}s", d.as_secs_f64()),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1u32, "attempt", "attempts"), "1 attempt");
        assert_eq!(count(0u32, "attempt", "attempts"), "0 attempts");
        assert_eq!(count(2u64, "delivery", "deliveries"), "2 deliveries");
        assert_eq!(noun(1, "message", "messages"), "message");
        assert_eq!(noun(11, "message", "messages"), "messages");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(humanize(Duration::from_millis(300)), "0.3s");
        assert_eq!(humanize(Duration::from_secs(59)), "59s");
        assert_eq!(humanize(Duration::from_secs(192)), "3m12s");
        assert_eq!(humanize(Duration::from_secs(2 * 3600 + 13 * 60)), "2h13m");
        assert_eq!(humanize(Duration::from_secs(97 * 3600)), "4d1h");
    }
}
