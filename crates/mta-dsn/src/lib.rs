//! Delivery status notifications (RFC 3464): the bounce, delay and success
//! reports an MTA sends back to the sender of a message.
//!
//! # Overview
//!
//! - [`Action`] says what happened to one recipient (RFC 3464 section
//!   2.3.3): failed, delayed, delivered, relayed or expanded.
//! - [`wants_dsn`] decides whether the sender asked to hear about that
//!   action for that recipient, from the NOTIFY parameter of RCPT (RFC 3461
//!   section 4.1). A message from the null sender `<>` never gets a DSN
//!   (RFC 5321 section 4.5.5), so no bounce can loop.
//! - [`RecipientReport`] holds one recipient's outcome: its status code, the
//!   remote MTA, the [`Diagnostic`] (the remote server's reply, or our own
//!   words when no server replied), the dates of the last attempt and of
//!   the end of retrying.
//! - [`DsnInput`] gathers everything about the original message and the
//!   reports; [`build`] turns it into the whole DSN message, ready to be
//!   spooled and sent to the original sender with `MAIL FROM:<>`.
//!
//! # The message
//!
//! A DSN is a `multipart/report; report-type=delivery-status` message (RFC
//! 6522 section 3) with three parts:
//!
//! 1. a `text/plain` explanation for a human;
//! 2. a `message/delivery-status` part (RFC 3464 section 2): the
//!    per-message fields, then one group of per-recipient fields for each
//!    [`RecipientReport`];
//! 3. the original message: whole as `message/rfc822` when the sender asked
//!    for `RET=FULL`, otherwise only its header section as
//!    `text/rfc822-headers` (RFC 3461 section 4.3, RFC 6522 section 4).
//!
//! When the original came in with SMTPUTF8, the internationalised types of
//! RFC 6533 are used instead: `message/global-delivery-status` (and the
//! matching `report-type`, which RFC 6522 section 3 makes the subtype of the
//! second part), `message/global` and `message/global-headers`, and a
//! non-ASCII recipient is written with the `utf-8` address type (RFC 6533
//! section 3).
//!
//! # Safety rules
//!
//! Part of what goes into a DSN comes from outside: a remote server's reply,
//! the original message. So:
//!
//! - every line written here ends in CRLF and none is longer than 998
//!   octets (RFC 5322 section 2.1.1): long fields and explanation lines are
//!   folded at spaces, and a word too long for any line is cut (the
//!   returned original is copied as stored, which the SMTP server already
//!   held to CRLF lines within the limit);
//! - CR, LF and every other control character in a field value becomes a
//!   space before the value is written, so a reply can never start a header
//!   line of its own;
//! - without SMTPUTF8, non-ASCII characters in a reply become `?`, so the
//!   report stays within what the sender's side agreed to carry;
//! - the MIME boundary is derived from [`DsnInput::boundary_seed`] and is
//!   changed until it occurs in none of the parts (RFC 2046 section 5.1.1).
#![deny(missing_docs)]

use std::fmt;

use mta_envelope::{Envelope, Mailbox, Notify, QueueId, Recipient, Ret, ReversePath};
use mta_smtp::{header_section, rfc5322_date};

/// Length a folded line is kept under when spaces allow it (RFC 5322
/// section 2.1.1: "SHOULD be no more than 78 characters").
const SOFT_LINE: usize = 78;

/// Length no line may exceed, CRLF excluded (RFC 5322 section 2.1.1: "MUST
/// be no more than 998 characters").
const HARD_LINE: usize = 998;

/// What happened to one recipient (RFC 3464 section 2.3.3 Action).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Delivery failed for good; no more attempts will be made.
    Failed,
    /// Delivery failed for now and will be retried.
    Delayed,
    /// Delivered into the recipient's mailbox.
    Delivered,
    /// Handed to a next hop that does not report DSNs itself.
    Relayed,
    /// Delivered to an alias or list, and passed on to several addresses.
    Expanded,
}

impl Action {
    /// The value of the `Action:` field: `failed`, `delayed`, `delivered`,
    /// `relayed` or `expanded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a recipient's report says what it says: the `Diagnostic-Code`
/// field (RFC 3464 section 2.3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diagnostic {
    /// A remote SMTP server's reply, as sent (a multi-line one joined as
    /// Postfix joins it): `Diagnostic-Code: smtp; 550 5.1.1 ...`. The
    /// server goes in [`RecipientReport::remote_mta`].
    Smtp(String),
    /// What this MTA found, where no server replied: a DNS answer, a
    /// connection that failed, a local mailbox. Written `Diagnostic-Code:
    /// X-Local; ...` (RFC 3464 section 2.4: an extension type starts with
    /// "X-"; Postfix writes `X-Postfix;`). Never a file path: the sender
    /// reads it.
    Local(String),
}

impl Diagnostic {
    /// The `Diagnostic-Code` value: the type, `; `, the text.
    pub fn field_value(&self) -> String {
        match self {
            Diagnostic::Smtp(reply) => format!("smtp; {reply}"),
            Diagnostic::Local(text) => format!("X-Local; {text}"),
        }
    }
}

/// One recipient's report: the per-recipient fields of RFC 3464 section
/// 2.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient, written `Final-Recipient: rfc822; <addr>`, or
    /// `utf-8; <addr>` when it is not ASCII (RFC 6533 section 3).
    pub recipient: Mailbox,
    /// The ORCPT parameter as stored, `rfc822;addr`, written as
    /// `Original-Recipient:` (RFC 3464 section 2.3.1).
    pub orcpt: Option<String>,
    /// What happened.
    pub action: Action,
    /// The enhanced status code (RFC 3463), e.g. `5.1.1`, `4.4.7`, `2.0.0`.
    pub status: String,
    /// The host name of the remote MTA, written `Remote-MTA: dns; <host>`.
    pub remote_mta: Option<String>,
    /// The server's reply or our own cause, written `Diagnostic-Code:`;
    /// None leaves the field out (the status says it all).
    pub diagnostic: Option<Diagnostic>,
    /// A sentence for the human-readable part only, before the diagnostic
    /// (e.g. `Delivery time expired.`).
    pub note: Option<String>,
    /// When delivery was last tried, in seconds since the Unix epoch
    /// (`Last-Attempt-Date:`).
    pub last_attempt: Option<u64>,
    /// For [`Action::Delayed`]: when retrying stops, in seconds since the
    /// Unix epoch (`Will-Retry-Until:`).
    pub will_retry_until: Option<u64>,
}

/// Whether `recipient` asked for a DSN reporting `action`, honouring NOTIFY
/// (RFC 3461 section 4.1).
///
/// - No NOTIFY: failures and delays are reported, successes are not.
/// - `NOTIFY=NEVER`: nothing is reported.
/// - A list: only what it names. [`Action::Delivered`], [`Action::Relayed`]
///   and [`Action::Expanded`] all count as SUCCESS (RFC 3461 sections 5.2.2
///   and 6.2.7).
///
/// Always false when the sender is the null path `<>`: a DSN is never sent
/// to it (RFC 5321 section 4.5.5, RFC 3461 section 6.2).
pub fn wants_dsn(envelope: &Envelope, recipient: &Recipient, action: Action) -> bool {
    if envelope.sender == ReversePath::Null {
        return false;
    }
    let (success, failure, delay) = match recipient.notify {
        None => (false, true, true),
        Some(Notify::Never) => return false,
        Some(Notify::On {
            success,
            failure,
            delay,
        }) => (success, failure, delay),
    };
    match action {
        Action::Failed => failure,
        Action::Delayed => delay,
        Action::Delivered | Action::Relayed | Action::Expanded => success,
    }
}

/// Everything [`build`] needs to write one DSN.
#[derive(Clone, Copy, Debug)]
pub struct DsnInput<'a> {
    /// Our host name, for `Reporting-MTA: dns; <name>` and the Message-ID.
    pub reporting_mta: &'a str,
    /// The queue id of the original message, quoted in the explanation and
    /// in the `X-Queue-ID:` extension field (RFC 3464 section 2.4).
    pub original_id: QueueId,
    /// The envelope of the original message.
    pub original: &'a Envelope,
    /// The stored original message (CRLF line endings), header section and
    /// body.
    pub original_content: &'a [u8],
    /// The recipients to report, already filtered with [`wants_dsn`]; RFC
    /// 3464 section 2.1 wants at least one.
    pub recipients: &'a [RecipientReport],
    /// The current time in seconds since the Unix epoch, for `Date:`.
    pub now: u64,
    /// The address the DSN comes from, e.g. `MAILER-DAEMON@host`; written
    /// `From: Mail Delivery System <address>`.
    pub postmaster: &'a str,
    /// Makes the MIME boundary and the Message-ID unique: the caller passes
    /// e.g. the queue id the DSN will be stored under.
    pub boundary_seed: u64,
}

/// Builds the whole DSN message (RFC 3464, RFC 6522), to be sent to the
/// original sender with `MAIL FROM:<>`.
///
/// See the [crate documentation](crate) for its layout and the rules it
/// keeps. The result is 8-bit (and labelled `Content-Transfer-Encoding:
/// 8bit`) only when some part is: the original returned with 8-bit content,
/// or UTF-8 text of an SMTPUTF8 message.
///
/// The sender should never be `<>` here ([`wants_dsn`] is false for it); if
/// it is anyway, `To:` names an empty group.
pub fn build(input: &DsnInput) -> Vec<u8> {
    let envelope = input.original;
    // RFC 6533: a UTF-8 address may only appear in the global types.
    let utf8 = envelope.smtputf8 || input.recipients.iter().any(|r| r.recipient.is_utf8());

    let text = explanation(input, utf8);
    let status = delivery_status(input, utf8);
    let (status_type, report_type) = if utf8 {
        // RFC 6533 section 6.2; RFC 6522 section 3 ties report-type to it.
        ("message/global-delivery-status", "global-delivery-status")
    } else {
        ("message/delivery-status", "delivery-status")
    };
    // RFC 3461 section 4.3: RET=HDRS, or no RET at all, returns only the
    // header section (RFC 6522 section 4: text/rfc822-headers).
    let (original_type, original_description, original) = match (envelope.ret, utf8) {
        (Some(Ret::Full), false) => ("message/rfc822", "Original message", input.original_content),
        (Some(Ret::Full), true) => ("message/global", "Original message", input.original_content),
        (_, false) => (
            "text/rfc822-headers",
            "Original message headers",
            header_section(input.original_content),
        ),
        (_, true) => (
            "message/global-headers",
            "Original message headers",
            header_section(input.original_content),
        ),
    };
    let parts: [(&str, &str, &[u8]); 3] = [
        ("text/plain; charset=utf-8", "Notification", text.as_bytes()),
        (status_type, "Delivery report", status.as_bytes()),
        (original_type, original_description, original),
    ];
    let bodies = parts.map(|part| part.2);
    let boundary = boundary(input.boundary_seed, &bodies);
    let eight_bit = bodies.iter().any(|body| !body.is_ascii());

    let subject = if input.recipients.iter().any(|r| r.action == Action::Failed) {
        "Undelivered Mail Returned to Sender"
    } else if input.recipients.iter().any(|r| r.action == Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    let to = match &envelope.sender {
        ReversePath::Mailbox(sender) => format!("<{sender}>"),
        ReversePath::Null => "undisclosed-recipients:;".to_owned(),
    };

    let mut head = String::new();
    let mut header = |name: &str, value: &str| field(&mut head, name, value, utf8);
    header(
        "From",
        &format!("Mail Delivery System <{}>", input.postmaster),
    );
    header("To", &to);
    header("Subject", subject);
    header("Date", &rfc5322_date(input.now));
    header(
        "Message-ID",
        &format!("<dsn.{:016x}@{}>", input.boundary_seed, input.reporting_mta),
    );
    // RFC 3834 section 5: a DSN is an automatic response.
    header("Auto-Submitted", "auto-replied");
    header("MIME-Version", "1.0");
    header(
        "Content-Type",
        &format!("multipart/report; report-type={report_type}; boundary=\"{boundary}\""),
    );
    if eight_bit {
        // RFC 2045 section 6.4: a multipart is labelled with the widest
        // encoding of what it holds.
        header("Content-Transfer-Encoding", "8bit");
    }
    head.push_str("\r\nThis is a MIME-encapsulated message.\r\n");

    let mut out = head.into_bytes();
    for (content_type, description, body) in parts {
        // RFC 2046 section 5.1.1: the CRLF before "--" belongs to the
        // delimiter, not to the part before it.
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        let mut part_head = String::new();
        field(&mut part_head, "Content-Type", content_type, utf8);
        field(&mut part_head, "Content-Description", description, utf8);
        if !body.is_ascii() {
            field(&mut part_head, "Content-Transfer-Encoding", "8bit", utf8);
        }
        part_head.push_str("\r\n");
        out.extend_from_slice(part_head.as_bytes());
        out.extend_from_slice(body);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The first part: what happened, in words.
fn explanation(input: &DsnInput, utf8: bool) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line(
        &mut out,
        &format!("This is the mail system at host {}.", input.reporting_mta),
    );
    line(&mut out, "");
    line(
        &mut out,
        &format!(
            "This report concerns your message with queue id {}.",
            input.original_id
        ),
    );

    let groups: [(&[Action], &str); 3] = [
        (
            &[Action::Failed],
            "Your message could not be delivered to the following recipients.\r\n\
             No further attempts will be made:",
        ),
        (
            &[Action::Delayed],
            "Delivery to the following recipients has been delayed. The mail\r\n\
             system will keep trying; you do not need to send the message again:",
        ),
        (
            &[Action::Delivered, Action::Relayed, Action::Expanded],
            "Your message was delivered to the following recipients:",
        ),
    ];
    for (actions, intro) in groups {
        let mut reports = input
            .recipients
            .iter()
            .filter(|r| actions.contains(&r.action))
            .peekable();
        if reports.peek().is_none() {
            continue;
        }
        line(&mut out, "");
        line(&mut out, intro);
        for report in reports {
            line(&mut out, "");
            let mut summary = format!(
                "<{}>: {} ({})",
                report.recipient, report.action, report.status
            );
            if let Some(host) = &report.remote_mta {
                summary.push_str(&format!(", remote server {host}"));
            }
            // fold() adds a space after the indent it is given.
            fold(&mut out, " ", &summary, "   ", utf8);
            if let Some(note) = &report.note {
                fold(&mut out, "   ", note, "   ", utf8);
            }
            match &report.diagnostic {
                Some(Diagnostic::Smtp(reply)) => {
                    let said = format!("The server said: {reply}");
                    fold(&mut out, "   ", &said, "   ", utf8);
                }
                Some(Diagnostic::Local(text)) => {
                    fold(&mut out, "   ", text, "   ", utf8);
                }
                None => {}
            }
            if let Some(until) = report.will_retry_until {
                fold(
                    &mut out,
                    "   ",
                    &format!("Delivery will be retried until {}.", rfc5322_date(until)),
                    "   ",
                    utf8,
                );
            }
        }
    }
    out
}

/// The second part: the fields of RFC 3464 section 2.1, per message, then
/// per recipient, groups separated by blank lines.
fn delivery_status(input: &DsnInput, utf8: bool) -> String {
    let envelope = input.original;
    let mut out = String::new();
    let put = |out: &mut String, name: &str, value: &str| field(out, name, value, utf8);

    // RFC 3464 section 2.2, in its order.
    if let Some(envid) = &envelope.envid {
        put(&mut out, "Original-Envelope-Id", envid);
    }
    put(
        &mut out,
        "Reporting-MTA",
        &format!("dns; {}", input.reporting_mta),
    );
    // RFC 3464 section 2.4: extension fields start with "X-".
    put(&mut out, "X-Queue-ID", &input.original_id.to_string());
    put(&mut out, "Arrival-Date", &rfc5322_date(envelope.arrival));

    // RFC 3464 section 2.3, in its order.
    for report in input.recipients {
        out.push_str("\r\n");
        if let Some(orcpt) = &report.orcpt {
            put(&mut out, "Original-Recipient", orcpt);
        }
        let address_type = if report.recipient.is_utf8() {
            "utf-8" // RFC 6533 section 3
        } else {
            "rfc822"
        };
        put(
            &mut out,
            "Final-Recipient",
            &format!("{address_type}; {}", report.recipient),
        );
        put(&mut out, "Action", report.action.as_str());
        put(&mut out, "Status", &report.status);
        if let Some(host) = &report.remote_mta {
            put(&mut out, "Remote-MTA", &format!("dns; {host}"));
        }
        if let Some(diagnostic) = &report.diagnostic {
            put(&mut out, "Diagnostic-Code", &diagnostic.field_value());
        }
        if let Some(when) = report.last_attempt {
            put(&mut out, "Last-Attempt-Date", &rfc5322_date(when));
        }
        if let Some(when) = report.will_retry_until {
            put(&mut out, "Will-Retry-Until", &rfc5322_date(when));
        }
    }
    out
}

/// A MIME boundary made from `seed` that occurs in none of `parts` (RFC
/// 2046 section 5.1.1). `=_` cannot appear in quoted-printable text, which
/// makes a clash unlikely from the start.
fn boundary(seed: u64, parts: &[&[u8]]) -> String {
    let base = format!("=_dsn_{seed:016x}");
    let mut candidate = base.clone();
    let mut attempt = 0u64;
    while parts.iter().any(|part| {
        part.windows(candidate.len())
            .any(|w| w == candidate.as_bytes())
    }) {
        attempt += 1;
        candidate = format!("{base}.{attempt}");
    }
    candidate
}

/// Writes the header-style field `name: value` and its CRLF.
fn field(out: &mut String, name: &str, value: &str, utf8: bool) {
    fold(out, &format!("{name}:"), value, "", utf8);
}

/// Writes `head`, a space and `value`, folded (RFC 5322 section 2.2.3)
/// into lines of at most [`SOFT_LINE`] octets where spaces allow and never
/// more than [`HARD_LINE`], each ending in CRLF.
///
/// A line is broken before the space that precedes a word, so a header
/// field unfolds to the same value; `indent` goes at the start of each
/// continuation line ahead of that space (empty for header fields, spaces
/// for text). A word too long for any line is cut, and its next line starts
/// with `indent` and a space.
///
/// Control characters in `value` (CR and LF among them) become spaces, and
/// without `utf8` non-ASCII ones become `?`: no value can end a line early
/// or add one of its own.
fn fold(out: &mut String, head: &str, value: &str, indent: &str, utf8: bool) {
    let value: String = value
        .chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            c if !utf8 && !c.is_ascii() => '?',
            c => c,
        })
        .collect();
    let padded = format!(" {}", value.trim());

    out.push_str(head);
    let mut line = head.len();
    let mut rest = padded.as_str();
    let mut first = true;
    while !rest.is_empty() {
        // The next word, with the spaces before it.
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        let end = rest[spaces..].find(' ').map_or(rest.len(), |i| spaces + i);
        let (mut word, tail) = rest.split_at(end);
        rest = tail;
        if !first && line + word.len() > SOFT_LINE {
            out.push_str("\r\n");
            out.push_str(indent);
            line = indent.len();
        }
        first = false;
        // Longer than any line: cut, on a character boundary.
        while line + word.len() > HARD_LINE {
            let mut cut = HARD_LINE - line;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&word[..cut]);
            out.push_str("\r\n");
            out.push_str(indent);
            out.push(' ');
            line = indent.len() + 1;
            word = &word[cut..];
        }
        out.push_str(word);
        line += word.len();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests;
