//! The header section of a message from a local program (CRLF lines, as
//! `input` leaves them): where it ends, which fields it has, the fields
//! to drop (`Bcc:`), and the recipients `-t` finds in it.
//!
//! A local program's header may be sloppy: it may be missing, or run
//! into the body without the empty line. The header section here is the
//! run of lines from the start that are fields (`name:` with a printable
//! name, RFC 5322 section 2.2) or continue one (start with white space);
//! the first other line ends it.

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};

/// Where the header section ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderEnd {
    /// The offset just after the last field's CRLF (0: no header).
    pub end: usize,
    /// An empty line follows (it is not counted in `end`).
    pub separated: bool,
}

/// Finds the end of the header section of `content`.
pub fn header_end(content: &[u8]) -> HeaderEnd {
    let mut at = 0;
    let mut in_field = false;
    while at < content.len() {
        let next = content[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(content.len(), |p| at + p + 2);
        let line = &content[at..next];
        let continues = in_field && matches!(line.first(), Some(b' ' | b'\t'));
        if !continues && field_name(line).is_none() {
            return HeaderEnd {
                end: at,
                separated: line == b"\r\n",
            };
        }
        in_field = true;
        at = next;
    }
    HeaderEnd {
        end: at,
        separated: false,
    }
}

/// The name of the field a line starts, if it starts one.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    // RFC 5322 section 4.5 (obsolete syntax) allows white space before
    // the colon; the name itself is printable ASCII.
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(name)
}

/// True when the header has a field of this name (case ignored).
pub fn has_field(content: &[u8], name: &str) -> bool {
    fields(content).any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// Each field of the header: its name and its whole text (continuation
/// lines and CRLFs included), in order.
fn fields(content: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let header = &content[..header_end(content).end];
    let mut starts: Vec<usize> = Vec::new();
    let mut at = 0;
    while at < header.len() {
        if !matches!(header[at], b' ' | b'\t') {
            starts.push(at);
        }
        at = header[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |p| at + p + 2);
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .copied()
        .chain([header.len()])
        .collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        let text = &header[s..e];
        (field_name(text).unwrap_or_default(), text)
    })
}

/// The message without the header fields named (case ignored), and how
/// many went.
pub fn remove_fields(content: &[u8], names: &[&str]) -> (Vec<u8>, usize) {
    let end = header_end(content).end;
    let mut out = Vec::with_capacity(content.len());
    let mut removed = 0;
    for (name, text) in fields(content) {
        if names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            removed += 1;
        } else {
            out.extend_from_slice(text);
        }
    }
    out.extend_from_slice(&content[end..]);
    (out, removed)
}

/// The message with bare login names in its address fields (`From:`,
/// `Sender:`, `Reply-To:`, `To:`, `Cc:`) qualified with `@host`, as
/// Postfix's cleanup rewrites the header of local mail: cron writes
/// `From: root (Cron Daemon)` and `To: root`, which no one elsewhere can
/// answer. Only the plain forms are touched (`name`, `name (comment)`,
/// `Display <name>`), in fields of one line without quotes or groups;
/// anything else is left as written.
pub fn qualify_addresses(content: &[u8], host: &str) -> Vec<u8> {
    const FIELDS: [&str; 5] = ["From", "Sender", "Reply-To", "To", "Cc"];
    let end = header_end(content).end;
    let mut out = Vec::with_capacity(content.len() + 64);
    for (name, text) in fields(content) {
        let wanted = FIELDS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_bytes()));
        match std::str::from_utf8(text) {
            Ok(line) if wanted => out.extend_from_slice(qualify_field(line, host).as_bytes()),
            _ => out.extend_from_slice(text),
        }
    }
    out.extend_from_slice(&content[end..]);
    out
}

/// One field, `Name: value\r\n`, with its bare names qualified.
fn qualify_field(line: &str, host: &str) -> String {
    let Some((name, value)) = line.split_once(':') else {
        return line.to_owned();
    };
    let value = value.strip_suffix("\r\n").unwrap_or(value);
    if value.contains(['\r', '\n', '"', ':', ';', '\\']) {
        return line.to_owned();
    }
    let items: Vec<String> = value
        .split(',')
        .map(|item| qualify_item(item, host))
        .collect();
    format!("{name}:{}\r\n", items.join(","))
}

/// One comma-separated item of an address field, its spacing kept.
fn qualify_item(item: &str, host: &str) -> String {
    let bare = |word: &str| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._%+-=!#$&'*/?^`{|}~".contains(c))
    };
    // `Display <name>`.
    if let Some((before, rest)) = item.split_once('<') {
        if let Some((inside, after)) = rest.split_once('>') {
            if bare(inside) && !after.contains(['<', '>']) {
                return format!("{before}<{inside}@{host}>{after}");
            }
        }
        return item.to_owned();
    }
    // `name` or `name (comment)`.
    let lead = item.len() - item.trim_start().len();
    let word_end = item[lead..]
        .find(|c: char| c.is_whitespace() || c == '(')
        .map_or(item.len(), |i| lead + i);
    let (word, rest) = (&item[lead..word_end], &item[word_end..]);
    let rest_ok = rest.trim().is_empty()
        || (rest.trim_start().starts_with('(') && rest.trim_end().ends_with(')'));
    if bare(word) && rest_ok {
        format!("{}{word}@{host}{rest}", &item[..lead])
    } else {
        item.to_owned()
    }
}

/// The recipients `-t` takes from the header: the addresses of the
/// `Resent-To:`, `Resent-Cc:` and `Resent-Bcc:` fields when there is one
/// of them (a message being resent, RFC 5322 section 3.6.6), else those
/// of `To:`, `Cc:` and `Bcc:`; as written, bare names included (they are
/// qualified later).
pub fn extract_recipients(content: &[u8]) -> Vec<String> {
    let header = &content[..header_end(content).end];
    let Some(message) = MessageParser::default().parse_headers(header) else {
        return Vec::new();
    };
    let resent = [
        HeaderName::ResentTo,
        HeaderName::ResentCc,
        HeaderName::ResentBcc,
    ];
    let plain = [HeaderName::To, HeaderName::Cc, HeaderName::Bcc];
    let is_resent = message.headers().iter().any(|h| resent.contains(&h.name));
    let wanted = if is_resent { &resent } else { &plain };
    let mut found = Vec::new();
    for field in message.headers() {
        if wanted.contains(&field.name) {
            if let HeaderValue::Address(address) = &field.value {
                found.extend(addresses(address));
            }
        }
    }
    found
}

/// The addresses of a command-line recipient argument, which may hold
/// several, comma-separated, with display names (Sendmail reads it as a
/// header field's value).
pub fn parse_address_list(text: &str) -> Vec<String> {
    if !text.contains([',', '<', '(', '"', ':']) {
        // The common case, `root` or `user@example.com`: as given.
        let plain = text.trim();
        return if plain.is_empty() {
            Vec::new()
        } else {
            vec![plain.to_owned()]
        };
    }
    let field = format!("To: {text}\r\n\r\n");
    let Some(message) = MessageParser::default().parse_headers(field.as_bytes()) else {
        return Vec::new();
    };
    message.to().map(addresses).unwrap_or_default()
}

fn addresses(address: &Address<'_>) -> Vec<String> {
    let all: Vec<_> = match address {
        Address::List(list) => list.iter().collect(),
        Address::Group(groups) => groups.iter().flat_map(|g| &g.addresses).collect(),
    };
    all.into_iter()
        .filter_map(|a| {
            // A bare login name (`To: root`) parses as a display name
            // without an address; Sendmail and Postfix take it as a
            // local address, qualified later.
            a.address.as_deref().or_else(|| {
                a.name
                    .as_deref()
                    .filter(|n| !n.trim().contains(char::is_whitespace))
            })
        })
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_the_header_ends() {
        let end = |text: &str| header_end(text.as_bytes());
        assert_eq!(
            end("A: b\r\n\r\nbody\r\n"),
            HeaderEnd {
                end: 6,
                separated: true
            }
        );
        assert_eq!(
            end("A: b\r\n c\r\nD: e\r\n\r\n"),
            HeaderEnd {
                end: 16,
                separated: true
            }
        );
        // The body starts without an empty line.
        assert_eq!(
            end("A: b\r\nno colon here\r\n"),
            HeaderEnd {
                end: 6,
                separated: false
            }
        );
        // No header at all.
        assert_eq!(
            end("just text\r\n"),
            HeaderEnd {
                end: 0,
                separated: false
            }
        );
        assert_eq!(
            end(" indented\r\n"),
            HeaderEnd {
                end: 0,
                separated: false
            }
        );
        assert_eq!(
            end("\r\nbody\r\n"),
            HeaderEnd {
                end: 0,
                separated: true
            }
        );
        // Only a header.
        assert_eq!(
            end("A: b\r\n"),
            HeaderEnd {
                end: 6,
                separated: false
            }
        );
        assert_eq!(
            end(""),
            HeaderEnd {
                end: 0,
                separated: false
            }
        );
    }

    #[test]
    fn bcc_fields_are_removed_with_their_continuations() {
        let text = b"To: a@x.test\r\nBcc: secret@x.test,\r\n\tother@x.test\r\nSubject: s\r\nbcc: again\r\n\r\nBcc: in the body stays\r\n";
        let (out, n) = remove_fields(text, &["Bcc", "Resent-Bcc"]);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            b"To: a@x.test\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n"
        );
        let (same, n) = remove_fields(b"To: a\r\n\r\n", &["Bcc"]);
        assert_eq!((same.as_slice(), n), (&b"To: a\r\n\r\n"[..], 0));
    }

    #[test]
    fn fields_are_found_by_name() {
        let text = b"From : a\r\nSubject: x\r\n Date: folded, not a field\r\n\r\nDate: body\r\n";
        assert!(has_field(text, "from"));
        assert!(has_field(text, "Subject"));
        assert!(!has_field(text, "Date"));
    }

    #[test]
    fn recipients_of_t() {
        let text = b"From: root\r\nTo: Alice <alice@local.test>, bob\r\nCc: team: carol@x.test, dave@x.test;\r\nBcc: eve@x.test\r\nSubject: s\r\n\r\nTo: body@x.test\r\n";
        assert_eq!(
            extract_recipients(text),
            [
                "alice@local.test",
                "bob",
                "carol@x.test",
                "dave@x.test",
                "eve@x.test"
            ]
        );
        let resent =
            b"To: old@x.test\r\nResent-To: new@x.test\r\nResent-Bcc: hidden@x.test\r\n\r\n";
        assert_eq!(extract_recipients(resent), ["new@x.test", "hidden@x.test"]);
        assert!(extract_recipients(b"Subject: none\r\n\r\n").is_empty());
        assert!(extract_recipients(b"no header\r\n").is_empty());
    }

    #[test]
    fn bare_names_in_address_fields_are_qualified() {
        let q =
            |text: &str| String::from_utf8(qualify_addresses(text.as_bytes(), "mx.test")).unwrap();
        assert_eq!(
            q("From: root (Cron Daemon)\r\nTo: root\r\nSubject: root\r\n\r\nTo: root\r\n"),
            "From: root@mx.test (Cron Daemon)\r\nTo: root@mx.test\r\nSubject: root\r\n\r\nTo: root\r\n"
        );
        assert_eq!(
            q("To: alice, Bob <bob>, c@x.test, <d>\r\n\r\n"),
            "To: alice@mx.test, Bob <bob@mx.test>, c@x.test, <d@mx.test>\r\n\r\n"
        );
        for kept in [
            "From: \"Root, the\" <root>\r\n\r\n",
            "To: team: a, b;\r\n\r\n",
            "To: a,\r\n b\r\n\r\n",
            "To: John Smith\r\n\r\n",
            "Cc: a@x.test\r\n\r\n",
        ] {
            assert_eq!(q(kept), kept);
        }
    }

    #[test]
    fn command_line_recipients() {
        assert_eq!(parse_address_list("root"), ["root"]);
        assert_eq!(parse_address_list(" a@b.test "), ["a@b.test"]);
        assert_eq!(
            parse_address_list("a@b.test, C <c@d.test>"),
            ["a@b.test", "c@d.test"]
        );
        assert_eq!(parse_address_list("<x@y.test>"), ["x@y.test"]);
        assert!(parse_address_list("").is_empty());
    }
}
