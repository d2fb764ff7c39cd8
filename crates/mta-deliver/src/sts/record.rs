//! The `_mta-sts.<domain>` TXT record (RFC 8461 section 3.1): which policy
//! a domain publishes now, by its `id`.
//!
//! Written here rather than taken from mail-auth: its parser would pull
//! the whole crate into delivery for ten lines, and section 3.1's rule
//! for several records (only one may start with `v=STSv1;`) is the
//! caller's anyway.

/// What the TXT records of `_mta-sts.<domain>` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Exactly one valid `v=STSv1` record, with this policy id.
    Published(String),
    /// No record, several, or one that does not parse: no policy is
    /// announced (section 3.1).
    Absent,
}

/// Reads the TXT strings of `_mta-sts.<domain>` (each record's strings
/// already joined). Records not starting with `v=STSv1;` are discarded;
/// unless exactly one is left and it parses, there is no record.
pub fn parse_records<S: AsRef<str>>(records: &[S]) -> Record {
    let mut sts = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| starts_v_stsv1(r));
    match (sts.next(), sts.next()) {
        (Some(only), None) => parse_one(only).map_or(Record::Absent, Record::Published),
        _ => Record::Absent,
    }
}

/// `v=STSv1` then `;` (section 3.1's ABNF: `sts-version field-delim`).
fn starts_v_stsv1(record: &str) -> bool {
    record
        .strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.trim_start().starts_with(';'))
}

/// The id of one record: `v=STSv1; id=<1-32 alphanumerics>` and
/// extensions, fields separated by `;` with optional spaces.
fn parse_one(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim);
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields.filter(|f| !f.is_empty()) {
        let (name, value) = field.split_once('=')?;
        if name.trim() == "id" && id.is_none() {
            let value = value.trim();
            let valid =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !valid {
                return None;
            }
            id = Some(value.to_owned());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(id: &str) -> Record {
        Record::Published(id.to_owned())
    }

    #[test]
    fn the_records_of_rfc_8461() {
        assert_eq!(
            parse_records(&["v=STSv1; id=20160831085700Z;"]),
            published("20160831085700Z")
        );
        assert_eq!(parse_records(&["v=STSv1;id=abc"]), published("abc"));
        assert_eq!(
            parse_records(&["v=STSv1; id=1; ext=whatever"]),
            published("1")
        );
    }

    #[test]
    fn other_records_are_discarded_but_two_sts_records_are_none() {
        assert_eq!(
            parse_records(&["v=spf1 -all", "v=STSv1; id=x1"]),
            published("x1")
        );
        assert_eq!(
            parse_records(&["v=STSv1; id=a", "v=STSv1; id=b"]),
            Record::Absent
        );
        assert_eq!(parse_records::<&str>(&[]), Record::Absent);
    }

    #[test]
    fn a_bad_record_is_none() {
        for bad in [
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=has-dash",
            "v=STSv1; id=123456789012345678901234567890123",
            "v=STSv2; id=1",
            "v=STSv1 id=1",
            "id=1; v=STSv1;",
        ] {
            assert_eq!(parse_records(&[bad]), Record::Absent, "{bad}");
        }
    }
}
