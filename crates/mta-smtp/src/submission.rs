//! What a message submission server (RFC 6409) does to and reads from the
//! header of a message its authenticated user hands in, as pure functions
//! for the daemon: the header fields to add ([`submission_fixes`]) and the
//! author addresses its sender rule compares with the user
//! ([`author_addresses`]).

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};
use mta_envelope::QueueId;

use crate::date::{compact_utc, rfc5322_date};
use crate::text::header_section;

/// The header fields to add to a submitted message, each `Name: value`
/// with its CRLF: RFC 6409 section 8.3 (`Date:`) and 8.2 (`Message-ID:`),
/// in that order, each only when the message has none. Nothing else is
/// changed (RFC 6409 section 8 lets a submission server fix no more).
///
/// `content` is the message (or its header section); `now` is the arrival
/// time in seconds since the Unix epoch; the Message-ID is
/// `<YYYYMMDDhhmmss.id@hostname>`, as Postfix makes them: the queue id is
/// unique in one queue and the time keeps it unique if the queue is
/// ever made anew.
pub fn submission_fixes(content: &[u8], hostname: &str, now: u64, id: QueueId) -> Vec<String> {
    let (mut date, mut message_id) = (false, false);
    for name in field_names(header_section(content)) {
        date |= name.eq_ignore_ascii_case(b"Date");
        message_id |= name.eq_ignore_ascii_case(b"Message-ID");
    }
    let mut add = Vec::new();
    if !date {
        add.push(format!("Date: {}\r\n", rfc5322_date(now)));
    }
    if !message_id {
        add.push(format!(
            "Message-ID: <{}.{id}@{hostname}>\r\n",
            compact_utc(now)
        ));
    }
    add
}

/// The names of the fields of a header section: every line that does not
/// start with white space (a folded line continues the field above) and
/// holds a colon, the name being what is before it (RFC 5322 section 2.2),
/// without the white space obsolete syntax allows before the colon
/// (section 4.5).
fn field_names(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header.split(|&b| b == b'\n').filter_map(|line| {
        if line.first().is_none_or(|&b| b == b' ' || b == b'\t') {
            return None;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        Some(line[..colon].trim_ascii_end())
    })
}

/// The author addresses of a message's header (RFC 5322 section 3.6.2),
/// for a check of who the authenticated user may send as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authors {
    /// Every address of every `From:` field, groups flattened, in order;
    /// as written (compare domains without regard to case).
    pub from: Vec<String>,
    /// Every address of every `Sender:` field.
    pub sender: Vec<String>,
}

/// The addresses of the `From:` and `Sender:` fields of `content` (the
/// message, or its header section), parsed with mail-parser. A field the
/// parser finds no address in adds none: an empty `from` means there is
/// no author address to check, which the caller decides about. More than
/// one `From:` field (RFC 5322 allows one) gives all their addresses, so a
/// second one cannot slip past the check.
pub fn author_addresses(content: &[u8]) -> Authors {
    let mut authors = Authors::default();
    let header = header_section(content);
    let Some(message) = MessageParser::default().parse_headers(header) else {
        return authors;
    };
    for field in message.headers() {
        let list = match field.name {
            HeaderName::From => &mut authors.from,
            HeaderName::Sender => &mut authors.sender,
            _ => continue,
        };
        if let HeaderValue::Address(address) = &field.value {
            list.extend(addresses(address));
        }
    }
    authors
}

fn addresses(address: &Address<'_>) -> Vec<String> {
    let all: Vec<_> = match address {
        Address::List(list) => list.iter().collect(),
        Address::Group(groups) => groups.iter().flat_map(|g| &g.addresses).collect(),
    };
    all.into_iter()
        .filter_map(|a| a.address.as_deref())
        .map(str::to_owned)
        .collect()
}

/// What the daemon decides about an authenticated user's mail (RFC 6409
/// section 6.1 lets a submission server check the sender): the session
/// asks it at MAIL and at the end of the message text. Cheap and
/// non-blocking by contract: it runs inside the session's poll.
pub trait SenderPolicy: Send + Sync + std::fmt::Debug {
    /// May `user` use `address` as the envelope sender (never asked for
    /// `<>`)?
    fn may_send_as(&self, user: &str, address: &str) -> bool;
    /// May `user` write `address` in From: or Sender: (its domain must
    /// be one the user owns)?
    fn may_write_as(&self, user: &str, address: &str) -> bool;
    /// Counts one more message for `user`; `Err(limit)` (messages per
    /// hour) when it is over its rate and the message is refused.
    fn admit_message(&self, user: &str) -> Result<(), u32>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_319_280; // Sun, 22 Nov 2026 03:48:00 +0000
    const ID: QueueId = QueueId::new(0xabc);

    fn fixes(message: &str) -> Vec<String> {
        submission_fixes(message.as_bytes(), "mx.test", NOW, ID)
    }

    #[test]
    fn fixes_add_only_what_is_missing() {
        let id = "Message-ID: <20261122034800.0000000000000abc@mx.test>\r\n";
        let date = "Date: Sun, 22 Nov 2026 03:48:00 +0000\r\n";
        let table: &[(&str, &[&str])] = &[
            ("Subject: x\r\n\r\nbody\r\n", &[date, id]),
            (
                "Subject: x\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n",
                &[id],
            ),
            ("Message-ID: <a@b>\r\nSubject: x\r\n\r\n", &[date]),
            ("DATE: x\r\nmessage-id: <a@b>\r\n\r\n", &[]),
            ("date : x\r\nMessage-Id:<a@b>\r\n\r\n", &[]),
            // Folded: the continuation is not a field of its own.
            (
                "Subject: a\r\n Date: no\r\n\tMessage-ID: no\r\n\r\n",
                &[date, id],
            ),
            (
                "Subject: x\r\nX-Date: y\r\nResent-Message-ID: <z@y>\r\n\r\n",
                &[date, id],
            ),
            // Only the header counts, not a body line that looks like one.
            ("Subject: x\r\n\r\nDate: in the body\r\n", &[date, id]),
            ("Subject: x\r\n", &[date, id]),
        ];
        for (message, want) in table {
            assert_eq!(fixes(message), *want, "{message:?}");
        }
    }

    #[test]
    fn message_ids_differ_by_queue_id_and_time() {
        let a = submission_fixes(b"Subject: x\r\n\r\n", "h", NOW, QueueId::new(1));
        let b = submission_fixes(b"Subject: x\r\n\r\n", "h", NOW, QueueId::new(2));
        let c = submission_fixes(b"Subject: x\r\n\r\n", "h", NOW + 1, QueueId::new(1));
        assert_ne!(a[1], b[1]);
        assert_ne!(a[1], c[1]);
    }

    fn authors(message: &str) -> (Vec<String>, Vec<String>) {
        let a = author_addresses(message.as_bytes());
        (a.from, a.sender)
    }

    #[test]
    fn author_addresses_from_and_sender() {
        let s = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "From: alice@example.test\r\n\r\n",
                &["alice@example.test"],
                &[],
            ),
            (
                "From: \"Alice A.\" <alice@example.test>\r\nSender: bob@example.test\r\n\r\n",
                &["alice@example.test"],
                &["bob@example.test"],
            ),
            (
                "From: Alice <a@x.test>, b@y.test\r\n\r\n",
                &["a@x.test", "b@y.test"],
                &[],
            ),
            (
                "From: Alice\r\n <a@x.test>,\r\n\tBob <b@y.test>\r\n\r\n",
                &["a@x.test", "b@y.test"],
                &[],
            ),
            (
                "From: Team: a@x.test, Bob <b@y.test>;\r\n\r\n",
                &["a@x.test", "b@y.test"],
                &[],
            ),
            ("Subject: no author\r\n\r\n", &[], &[]),
            (
                "From: a@x.test\r\nSubject: s\r\nFrom: evil@z.test\r\n\r\n",
                &["a@x.test", "evil@z.test"],
                &[],
            ),
            (
                "from: a@x.test\r\nSENDER: <s@x.test>\r\n\r\n",
                &["a@x.test"],
                &["s@x.test"],
            ),
            // The body is not looked at.
            ("Subject: s\r\n\r\nFrom: body@x.test\r\n", &[], &[]),
        ];
        for (message, from, sender) in table {
            assert_eq!(authors(message), (s(from), s(sender)), "{message:?}");
        }
    }
}
