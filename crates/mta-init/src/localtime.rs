//! Times as the operator's clock on the wall shows them: in the local
//! time zone that `TZ` names, or `/etc/localtime` when it is unset.
//!
//! The C library already knows the zone rules and reads the time zone
//! database, daylight saving time included, so `localtime_r(3)` does the
//! conversion; a time zone crate would duplicate that database. Should
//! the C library fail (a time beyond its range), the time is shown in
//! UTC, saying so.

use std::ffi::CStr;
use std::time::{Duration, UNIX_EPOCH};

use nix::libc;

extern "C" {
    // POSIX, in every C library; the `libc` crate does not declare it.
    fn tzset();
}

/// A moment broken down in the local time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Local {
    date_time: String,
    /// Seconds east of UTC.
    offset: i64,
    /// The zone's abbreviation (`CET`, `IST`); may be empty.
    zone: String,
}

fn local(unix: u64) -> Option<Local> {
    let t = libc::time_t::try_from(unix).ok()?;
    // SAFETY: tm is plain data, all zeros is a valid value; tzset reads
    // TZ (nothing in mta-init changes the environment); localtime_r
    // writes only into `tm`, which lives through the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tzset();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string of the C library's, valid
        // until the next tzset; copied at once.
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Some(Local {
        date_time: format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        // c_long: 32 bits on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        offset: i64::from(tm.tm_gmtoff),
        zone,
    })
}

fn utc(unix: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// `2026-03-02 09:13:40`, local time: for columns, where the zone is
/// said once elsewhere.
pub fn short(unix: u64) -> String {
    match local(unix) {
        Some(l) => l.date_time,
        None => format!("{} UTC", utc(unix)),
    }
}

/// `2026-03-02 09:13:40 +0100 (CET)`: local time with its offset from
/// UTC and the zone's name.
pub fn full(unix: u64) -> String {
    match local(unix) {
        Some(l) => {
            let sign = if l.offset < 0 { '-' } else { '+' };
            let minutes = l.offset.abs() / 60;
            let mut s = format!(
                "{} {sign}{:02}{:02}",
                l.date_time,
                minutes / 60,
                minutes % 60
            );
            if !l.zone.is_empty() {
                s.push_str(&format!(" ({})", l.zone));
            }
            s
        }
        None => format!("{} +0000 (UTC)", utc(unix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // TZ is read from the environment of the process: these tests rely
    // on `full` giving some valid rendering whatever the zone, and on
    // the integration tests (tests/integration/init_text.rs) to set TZ
    // and compare with date(1).
    #[test]
    fn renders_a_date_an_offset_and_a_zone() {
        let s = full(1_772_442_820);
        // "YYYY-MM-DD HH:MM:SS +HHMM (ZONE)"
        let bytes = s.as_bytes();
        assert!(s.len() >= 25, "{s}");
        assert_eq!(&s[4..5], "-", "{s}");
        assert_eq!(&s[10..11], " ", "{s}");
        assert!(matches!(bytes[20], b'+' | b'-'), "{s}");
        assert!(s[21..25].bytes().all(|b| b.is_ascii_digit()), "{s}");
        assert!(short(1_772_442_820).len() == 19);
    }

    #[test]
    fn utc_fallback_is_plain() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_772_442_820), "2026-03-02 09:13:40");
    }
}
