//! A submission, from what the user gave to what goes over SMTP.
//!
//! [`Submission::gather`] keeps what the command line and the message
//! say, as said (a bare `root` stays bare): that is what a drop file
//! holds. [`Submission::complete`] finishes it once the server's host
//! name is known (from its banner, or mtad's own when it imports a drop
//! file), as Postfix's cleanup does for local mail: bare names get
//! `@host` (Postfix's `myorigin`, which defaults to the host name),
//! and a message without `From:`, `Date:` or `Message-ID:` gets them
//! (RFC 5322 section 3.6 wants the first two).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::header::{
    extract_recipients, has_field, header_end, parse_address_list, qualify_addresses, remove_fields,
};
use crate::options::{Options, UsageError};

/// When a submission is made, in seconds since the Unix epoch, and a token
/// unique to it (for its `Message-ID:` and its drop file's name): this
/// process and the moment's nanoseconds.
pub fn stamp() -> (u64, String) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let token = format!("{}.{:09}", std::process::id(), since_epoch.subsec_nanos());
    (since_epoch.as_secs(), token)
}

/// What a user asked to send, before the server's host name is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// `-f`: the envelope sender as given (`""` or `<>`: the null
    /// sender); None: the user's own address.
    pub sender: Option<String>,
    /// The full name for a `From:` the message lacks (`-F`, or the
    /// user database's).
    pub full_name: Option<String>,
    /// The recipients as given, qualified or not, without duplicates.
    pub recipients: Vec<String>,
    /// `-N`: the NOTIFY value for every recipient.
    pub notify: Option<String>,
    /// The ORCPT of the recipients that have one (RFC 3461 section 4.2),
    /// decoded (`rfc822;a@b.test`), by the recipient as `recipients` has
    /// it: keyed by address rather than by position, so that it stays
    /// right through [`Submission::complete`]'s qualification and
    /// dedup. Only a message taken over SMTP (`-bs` with mtad down) has
    /// any; a drop file written before they were kept has no such field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub orcpt: BTreeMap<String, String>,
    /// `-R`: `FULL` or `HDRS`.
    pub ret: Option<String>,
    /// `-V`: the envelope id.
    pub envid: Option<String>,
    /// `-B 8BITMIME`.
    pub eight_bit: bool,
    /// When the user submitted it, in seconds since the Unix epoch: the
    /// `Date:` a message without one gets.
    pub time: u64,
    /// Unique to this submission, for a `Message-ID:` the message lacks.
    pub token: String,
    /// The message: CRLF lines, `Bcc:` removed.
    #[serde(skip)]
    pub content: Vec<u8>,
}

/// A submission ready for SMTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// MAIL FROM (empty: the null sender).
    pub sender: String,
    /// RCPT TO, each once.
    pub recipients: Vec<String>,
    /// The message with the fields it lacked.
    pub content: Vec<u8>,
    /// NOTIFY for every RCPT.
    pub notify: Option<String>,
    /// ORCPT for the RCPT of each recipient that has one, by its
    /// address in `recipients`; decoded, not yet xtext-encoded.
    pub orcpt: BTreeMap<String, String>,
    /// RET.
    pub ret: Option<String>,
    /// ENVID, not yet xtext-encoded.
    pub envid: Option<String>,
    /// BODY=8BITMIME: asked for, or the text has 8-bit octets (RFC 6152).
    pub eight_bit: bool,
    /// SMTPUTF8: an address is not ASCII (RFC 6531).
    pub smtputf8: bool,
}

/// An address that cannot be sent to or from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad address {address:?}: {why}")]
pub struct BadAddress {
    /// The address as given.
    pub address: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Submission {
    /// Gathers a submission from the command line and the message read
    /// from standard input: the recipients of the command line and,
    /// with `-t`, of the header; `Bcc:` and `Resent-Bcc:` removed from
    /// the message (Sendmail and Postfix never show them to the
    /// recipients). No recipient at all is Postfix's usage error.
    pub fn gather(
        options: &Options,
        content: Vec<u8>,
        full_name: Option<String>,
        time: u64,
        token: String,
    ) -> Result<Submission, UsageError> {
        let mut recipients: Vec<String> = options
            .recipients
            .iter()
            .flat_map(|arg| parse_address_list(arg))
            .collect();
        if options.extract {
            recipients.extend(extract_recipients(&content));
        }
        if recipients.is_empty() {
            return Err(UsageError(if options.extract {
                "No recipient addresses found in message header".into()
            } else {
                "Recipient addresses must be specified on the command line or via the -t option"
                    .into()
            }));
        }
        let (content, _) = remove_fields(&content, &["Bcc", "Resent-Bcc"]);
        // `-f "Name <a@b>"`: the address, as Postfix takes the first
        // one it finds (`<>` and nothing stay the null sender).
        let sender = options.sender.as_deref().map(|given| match given.trim() {
            "" | "<>" => given.trim().to_owned(),
            trimmed => parse_address_list(trimmed)
                .into_iter()
                .next()
                .unwrap_or_else(|| trimmed.to_owned()),
        });
        Ok(Submission {
            sender,
            full_name: options.full_name.clone().or(full_name),
            recipients: dedup(recipients),
            notify: options.notify.as_ref().map(|n| n.value()),
            // The command line has no ORCPT.
            orcpt: BTreeMap::new(),
            ret: options.ret.clone(),
            envid: options.envid.clone(),
            eight_bit: options.eight_bit,
            time,
            token,
            content,
        })
    }

    /// Finishes the submission of local user `login` for a server named
    /// `host`: addresses qualified with `@host` (in the envelope, and
    /// the plain ones of the header's address fields), the user's own
    /// address (`login@host`) as the sender unless `-f` gave one, and `From:`
    /// (with the full name), `Date:` and `Message-ID:` added at the end
    /// of the header when missing. A message without a header gets one.
    pub fn complete(&self, host: &str, login: &str) -> Result<Prepared, BadAddress> {
        let own = format!("{login}@{host}");
        let sender = match self.sender.as_deref().map(str::trim) {
            None => own.clone(),
            Some("" | "<>") => String::new(),
            Some(given) => qualify(given, host)?,
        };
        let (recipients, orcpt) = self.qualified_recipients(host)?;
        let mut added = String::new();
        if !has_field(&self.content, "From") {
            let address = if sender.is_empty() { &own } else { &sender };
            match self
                .full_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                Some(name) => {
                    added.push_str(&format!("From: {} <{address}>\r\n", display_name(name)))
                }
                None => added.push_str(&format!("From: {address}\r\n")),
            }
        }
        if !has_field(&self.content, "Date") {
            added.push_str(&format!("Date: {}\r\n", mta_smtp::rfc5322_date(self.time)));
        }
        if !has_field(&self.content, "Message-ID") {
            added.push_str(&format!(
                "Message-ID: <{}.{}@{host}>\r\n",
                self.time, self.token
            ));
        }
        let original = qualify_addresses(&self.content, host);
        let end = header_end(&original);
        let mut content = Vec::with_capacity(original.len() + added.len() + 2);
        content.extend_from_slice(&original[..end.end]);
        content.extend_from_slice(added.as_bytes());
        if !end.separated && end.end < original.len() {
            // The body ran into the header (or there was no header): the
            // empty line that separates them (RFC 5322 section 2.1).
            content.extend_from_slice(b"\r\n");
        }
        content.extend_from_slice(&original[end.end..]);
        let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        Ok(Prepared {
            eight_bit: self.eight_bit || !content.is_ascii(),
            smtputf8,
            sender,
            recipients,
            content,
            notify: self.notify.clone(),
            orcpt,
            ret: self.ret.clone(),
            envid: self.envid.clone(),
        })
    }

    /// The recipients qualified with `@host`, each once, and the ORCPT
    /// of each that has one, by its qualified address: an ORCPT goes
    /// with the recipient it was given for, whatever qualification
    /// made of its address (of duplicates, the first one's is kept).
    fn qualified_recipients(
        &self,
        host: &str,
    ) -> Result<(Vec<String>, BTreeMap<String, String>), BadAddress> {
        let qualified = self
            .recipients
            .iter()
            .map(|r| Ok((qualify(r, host)?, self.orcpt.get(r))))
            .collect::<Result<Vec<_>, BadAddress>>()?;
        let kept = dedup_by(qualified, |(address, _)| address);
        let orcpt = kept
            .iter()
            .filter_map(|(address, orcpt)| Some((address.clone(), (*orcpt)?.clone())))
            .collect();
        Ok((
            kept.into_iter().map(|(address, _)| address).collect(),
            orcpt,
        ))
    }

    /// This submission for `recipients` only (the ones still to be
    /// sent, for a drop file), each with its ORCPT: a recipient is as
    /// `prepared` completed it once the server was known, else as given
    /// (`prepared` None). The drop file's check wants every ORCPT to be
    /// for one of its recipients, as they are written.
    pub fn for_recipients(
        &self,
        recipients: Vec<String>,
        prepared: Option<&Prepared>,
    ) -> Submission {
        let orcpt = recipients
            .iter()
            .filter_map(|r| {
                let orcpt = match prepared {
                    Some(p) => p.orcpt.get(r),
                    None => self.orcpt.get(r),
                }?;
                Some((r.clone(), orcpt.clone()))
            })
            .collect();
        Submission {
            recipients,
            orcpt,
            ..self.clone()
        }
    }
}

/// `address@host` for a bare name; the address as given otherwise, once
/// checked for what no SMTP path may hold (the server checks the rest).
fn qualify(given: &str, host: &str) -> Result<String, BadAddress> {
    let bad = |why| BadAddress {
        address: given.to_owned(),
        why,
    };
    let address = given.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    if address.is_empty() {
        return Err(bad("empty"));
    }
    if address
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ','))
    {
        return Err(bad("white space, a control character or <>, in it"));
    }
    match address.rsplit_once('@') {
        None => Ok(format!("{address}@{host}")),
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(address.to_owned()),
        Some(_) => Err(bad("nothing before or after the @")),
    }
}

/// The addresses in order, each once (the domain's case ignored).
fn dedup(addresses: Vec<String>) -> Vec<String> {
    dedup_by(addresses, |a| a)
}

/// The items in order, the first of each address `address_of` gives
/// (the domain's case ignored).
fn dedup_by<T>(items: Vec<T>, address_of: impl Fn(&T) -> &String) -> Vec<T> {
    let key = |a: &str| match a.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => a.to_owned(),
    };
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(key(address_of(item))))
        .collect()
}

/// A full name as a `From:` display name: a quoted string (RFC 5322
/// section 3.2.4) when ASCII, else RFC 2047 encoded words.
fn display_name(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    if name.is_ascii() {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        return format!("\"{escaped}\"");
    }
    // RFC 2047 section 2: an encoded word is at most 75 characters, so a
    // long name takes several, each of whole characters.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in name.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(encoded_word(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(encoded_word(&chunk));
    }
    words.join(" ")
}

fn encoded_word(text: &str) -> String {
    format!("=?UTF-8?B?{}?=", base64(text.as_bytes()))
}

/// Standard base64 (RFC 4648 section 4), for encoded words.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse;

    fn submission(line: &str, content: &str) -> Result<Submission, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let options = parse("sendmail", &args).unwrap();
        Submission::gather(
            &options,
            content.as_bytes().to_vec(),
            None,
            1_795_319_280,
            "t1".into(),
        )
    }

    #[test]
    fn no_recipient_is_postfixs_usage_error() {
        let e = submission("-i", "Subject: s\r\n\r\n").unwrap_err();
        assert_eq!(
            e.0,
            "Recipient addresses must be specified on the command line or via the -t option"
        );
        let e = submission("-t -i", "Subject: s\r\n\r\n").unwrap_err();
        assert_eq!(e.0, "No recipient addresses found in message header");
    }

    #[test]
    fn t_adds_the_header_recipients_and_bcc_goes() {
        let s = submission(
            "-t -i extra@x.test",
            "To: a@x.test, extra@X.TEST\r\nBcc: hidden\r\nSubject: s\r\n\r\nbody\r\n",
        )
        .unwrap();
        assert_eq!(s.recipients, ["extra@x.test", "a@x.test", "hidden"]);
        assert_eq!(
            s.content,
            b"To: a@x.test, extra@X.TEST\r\nSubject: s\r\n\r\nbody\r\n"
        );
        // Without -t, the header's recipients are not added, but Bcc
        // still never reaches anyone.
        let s = submission("-i u@x.test", "To: a@x.test\r\nBcc: b@x.test\r\n\r\n").unwrap();
        assert_eq!(s.recipients, ["u@x.test"]);
        assert_eq!(s.content, b"To: a@x.test\r\n\r\n");
    }

    #[test]
    fn complete_qualifies_and_adds_what_is_missing() {
        let s = submission(
            "-i root bob@Local.test bob@local.TEST",
            "Subject: hi\r\n\r\nbody\r\n",
        )
        .unwrap();
        let p = s.complete("mx.test", "alice").unwrap();
        assert_eq!(p.sender, "alice@mx.test");
        assert_eq!(p.recipients, ["root@mx.test", "bob@Local.test"]);
        assert_eq!(
            String::from_utf8(p.content).unwrap(),
            "Subject: hi\r\nFrom: alice@mx.test\r\nDate: Sun, 22 Nov 2026 03:48:00 +0000\r\n\
             Message-ID: <1795319280.t1@mx.test>\r\n\r\nbody\r\n"
        );
        assert!(!p.eight_bit && !p.smtputf8);
    }

    /// An ORCPT stays with its recipient through the qualification of
    /// bare names and the dedup (the first duplicate's is kept), and a
    /// submission cut down to some recipients keeps theirs.
    #[test]
    fn orcpt_follows_its_recipient_through_complete() {
        let mut s = submission("-i u", "S: s\r\n\r\n").unwrap();
        s.recipients = ["root", "bob@Local.test", "carol", "root@mx.test"]
            .map(str::to_owned)
            .to_vec();
        let orcpt = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(r, o)| (r.to_string(), o.to_string()))
                .collect()
        };
        s.orcpt = orcpt(&[
            ("root", "rfc822;root@old.test"),
            ("bob@Local.test", "rfc822;bob@old.test"),
            ("root@mx.test", "rfc822;dup@old.test"),
        ]);
        let p = s.complete("mx.test", "alice").unwrap();
        assert_eq!(
            p.recipients,
            ["root@mx.test", "bob@Local.test", "carol@mx.test"]
        );
        assert_eq!(
            p.orcpt,
            orcpt(&[
                ("root@mx.test", "rfc822;root@old.test"),
                ("bob@Local.test", "rfc822;bob@old.test"),
            ])
        );
        // The ones left for later: as completed, or as given.
        let rest = s.for_recipients(
            vec!["root@mx.test".into(), "carol@mx.test".into()],
            Some(&p),
        );
        assert_eq!(rest.recipients, ["root@mx.test", "carol@mx.test"]);
        assert_eq!(
            rest.orcpt,
            orcpt(&[("root@mx.test", "rfc822;root@old.test")])
        );
        let rest = s.for_recipients(vec!["root".into(), "carol".into()], None);
        assert_eq!(rest.orcpt, orcpt(&[("root", "rfc822;root@old.test")]));
        assert_eq!((rest.content, rest.token), (s.content, s.token));
    }

    #[test]
    fn f_and_full_names() {
        let text = "Subject: hi\r\nDate: x\r\nMessage-ID: <a@b>\r\n\r\n";
        let s = submission("-i -f daemon -F Cron\"Daemon\" u", text).unwrap();
        let p = s.complete("mx.test", "root").unwrap();
        assert_eq!(p.sender, "daemon@mx.test");
        assert!(
            p.content
                .ends_with(b"From: \"Cron\\\"Daemon\\\"\" <daemon@mx.test>\r\n\r\n"),
            "{}",
            String::from_utf8_lossy(&p.content)
        );
        let s = submission("-i -f Daemon<daemon@x.test> u", text).unwrap();
        assert_eq!(s.sender.as_deref(), Some("daemon@x.test"));
        let s = submission("-i -f <> -F Zoë u", text).unwrap();
        let p = s.complete("mx.test", "root").unwrap();
        assert_eq!(p.sender, "");
        assert!(
            String::from_utf8_lossy(&p.content)
                .contains("From: =?UTF-8?B?Wm/Dqw==?= <root@mx.test>\r\n"),
            "{}",
            String::from_utf8_lossy(&p.content)
        );
        // A From: already there is kept as it is.
        let s = submission("-i -F Name u", "From: me@x.test\r\n\r\n").unwrap();
        let p = s.complete("mx.test", "root").unwrap();
        assert!(p.content.starts_with(b"From: me@x.test\r\nDate: "));
        assert_eq!(p.content.windows(5).filter(|w| w == b"From:").count(), 1);
    }

    #[test]
    fn a_message_without_a_proper_header_gets_one() {
        let s = submission("-i u", "just a line\r\n").unwrap();
        let p = s.complete("h.test", "me").unwrap();
        let text = String::from_utf8(p.content).unwrap();
        assert!(text.starts_with("From: me@h.test\r\nDate: "), "{text}");
        assert!(text.ends_with(">\r\n\r\njust a line\r\n"), "{text}");
        let s = submission("-i u", "Subject: s\r\nbody without the empty line\r\n").unwrap();
        let text = String::from_utf8(s.complete("h.test", "me").unwrap().content).unwrap();
        assert!(
            text.starts_with("Subject: s\r\nFrom: me@h.test\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("@h.test>\r\n\r\nbody without the empty line\r\n"),
            "{text}"
        );
        let s = submission("-i u", "").unwrap();
        let text = String::from_utf8(s.complete("h.test", "me").unwrap().content).unwrap();
        assert!(
            text.starts_with("From: me@h.test\r\n") && text.ends_with("@h.test>\r\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_addresses_and_eight_bits() {
        let s = submission("-i -f a\u{7f}b u", "S: s\r\n\r\n").unwrap();
        assert!(s.complete("h.test", "me").is_err());
        for bad in ["a@", "@b.test", "a b@c.test"] {
            let mut s = submission("-i u", "S: s\r\n\r\n").unwrap();
            s.recipients = vec![bad.into()];
            assert!(s.complete("h.test", "me").is_err(), "{bad}");
        }
        let s = submission("-i ü@h.test", "S: é\r\n\r\n").unwrap();
        let p = s.complete("h.test", "me").unwrap();
        assert!(p.eight_bit && p.smtputf8);
    }

    #[test]
    fn base64_as_rfc_4648_section_10() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
