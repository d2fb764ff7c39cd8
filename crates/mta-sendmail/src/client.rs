//! Hands a [`Submission`] to mtad's local session over SMTP (RFC 5321),
//! one command at a time.
//!
//! The banner names the server (`220 mx.example.com ESMTP mtad`): that
//! host name completes the submission. Recipients the server refuses
//! for good are reported; past its per-transaction limit (`452 4.5.3`,
//! RFC 5321 section 4.5.3.1.10) the rest go in another transaction; and
//! whatever could not be handed over now (a temporary refusal, a
//! connection lost, a deadline) is returned as pending, for the drop
//! directory. A recipient is only ever in one of: queued, refused,
//! pending.
//!
//! The same client runs in mtad when it imports a drop file, over a
//! socket pair into its own local session.

use std::io::{BufRead, BufReader, Read, Write};

use crate::compose::{Prepared, Submission};
use crate::Exit;

/// One reply: its code and lines (without the code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as one line of text, for messages.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }

    fn enhanced_is(&self, status: &str) -> bool {
        self.lines
            .last()
            .is_some_and(|l| l.split(' ').next() == Some(status))
    }
}

/// What became of a submission.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The queue ids of the transactions the server took, with the
    /// recipients of each.
    pub queued: Vec<(String, Vec<String>)>,
    /// Recipients refused for good, with the reply.
    pub refused: Vec<(String, Reply)>,
    /// Recipients not handed over now, and why: they may go to the drop
    /// directory (the address as completed).
    pub pending: Vec<String>,
    /// Why `pending` is not empty.
    pub pending_why: Option<String>,
    /// The whole message refused for good (before anything was queued,
    /// or in a later transaction): the exit status and why.
    pub failed: Option<(Exit, String)>,
    /// The name the server gave in its banner.
    pub server: Option<String>,
    /// The submission as sent (addresses completed with the server's
    /// name, the fields it lacked added), once the banner came.
    pub prepared: Option<Prepared>,
}

impl Report {
    fn pend(&mut self, recipients: impl IntoIterator<Item = String>, why: String) {
        self.pending.extend(recipients);
        self.pending_why.get_or_insert(why);
    }
}

/// Runs the SMTP dialogue over `stream` for the submission of local
/// user `login`. The caller bounds every read and write (socket
/// timeouts): a timeout is an I/O error, and leaves the rest pending.
pub fn submit<S: Read + Write>(stream: S, submission: &Submission, login: &str) -> Report {
    let mut report = Report::default();
    let mut conn = Conn {
        stream: BufReader::new(stream),
    };
    // Until the server's name is known, the recipients are as given.
    let as_given = || submission.recipients.clone();
    let banner = match conn.reply() {
        Ok(r) if r.code == 220 => r,
        Ok(r) => {
            report.pend(as_given(), format!("the server said {}", r.text()));
            return report;
        }
        Err(e) => {
            report.pend(as_given(), format!("no greeting from the server: {e}"));
            return report;
        }
    };
    let host = banner
        .lines
        .first()
        .and_then(|l| l.split(' ').next())
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost")
        .to_owned();
    report.server = Some(host.clone());
    let prepared = match submission.complete(&host, login) {
        Ok(p) => p,
        Err(e) => {
            report.failed = Some((Exit::DataErr, e.to_string()));
            return report;
        }
    };
    let mut rest = prepared.recipients.clone();
    match conn.transactions(&prepared, &mut rest, &mut report) {
        Ok(()) => {
            let _ = conn.command("QUIT");
        }
        Err(e) => report.pend(rest, format!("the connection to the server failed: {e}")),
    }
    report.prepared = Some(prepared);
    report
}

/// The MAIL command of `p`'s transactions.
pub fn mail_line(p: &Prepared) -> String {
    let mut mail = format!("MAIL FROM:<{}> SIZE={}", p.sender, p.content.len());
    if p.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if p.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if let Some(ret) = &p.ret {
        mail.push_str(&format!(" RET={ret}"));
    }
    if let Some(envid) = &p.envid {
        mail.push_str(&format!(" ENVID={}", xtext(envid)));
    }
    mail
}

/// The RCPT command for `rcpt` in `p`'s transactions, with its DSN
/// parameters. Like NOTIFY, ORCPT goes whatever EHLO said: this client
/// only speaks to mtad's local session, which always offers DSN.
pub fn rcpt_line(p: &Prepared, rcpt: &str) -> String {
    let mut line = format!("RCPT TO:<{rcpt}>");
    if let Some(notify) = &p.notify {
        line.push_str(&format!(" NOTIFY={notify}"));
    }
    if let Some(orcpt) = p.orcpt.get(rcpt) {
        // addr-type ";" xtext: the addr-type is letters, digits and
        // hyphens and `;` is printable, so xtext leaves both as they are.
        line.push_str(&format!(" ORCPT={}", xtext(orcpt)));
    }
    line
}

/// The connection.
struct Conn<S> {
    stream: BufReader<S>,
}

impl<S: Read + Write> Conn<S> {
    /// EHLO, then transactions until every recipient is queued, refused
    /// or pending. On an I/O error, `rest` holds the recipients not yet
    /// queued.
    fn transactions(
        &mut self,
        p: &Prepared,
        rest: &mut Vec<String>,
        report: &mut Report,
    ) -> std::io::Result<()> {
        let ehlo = self.command("EHLO localhost")?;
        if ehlo.code != 250 {
            report.pend(rest.drain(..), format!("EHLO: {}", ehlo.text()));
            return Ok(());
        }
        let size_limit = ehlo.lines.iter().find_map(|l| {
            l.strip_prefix("SIZE ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .filter(|&n| n > 0)
        });
        if let Some(limit) = size_limit {
            if p.content.len() as u64 > limit {
                // Refused for good, each recipient with the reply MAIL
                // would have had (mtad bounces a drop file's to its sender).
                let too_big = Reply {
                    code: 552,
                    lines: vec![format!(
                        "5.3.4 Message size exceeds fixed maximum message size ({limit} octets)"
                    )],
                };
                report.failed = Some((
                    Exit::DataErr,
                    format!(
                        "the message is {} octets, the server takes at most {limit}",
                        p.content.len()
                    ),
                ));
                report
                    .refused
                    .extend(rest.drain(..).map(|rcpt| (rcpt, too_big.clone())));
                return Ok(());
            }
        }
        while !rest.is_empty() {
            let r = self.command(&mail_line(p))?;
            if r.code != 250 {
                refused_whole(r, rest, report);
                return Ok(());
            }
            let mut accepted = Vec::new();
            let mut overflow = Vec::new();
            let candidates = std::mem::take(rest);
            let mut iter = candidates.into_iter();
            for rcpt in iter.by_ref() {
                let r = match self.command(&rcpt_line(p, &rcpt)) {
                    Ok(r) => r,
                    Err(e) => {
                        rest.extend(accepted);
                        rest.push(rcpt);
                        rest.extend(iter);
                        return Err(e);
                    }
                };
                match r.code {
                    250 | 251 => accepted.push(rcpt),
                    452 if r.enhanced_is("4.5.3") && !accepted.is_empty() => {
                        // The rest in the next transaction.
                        overflow.push(rcpt);
                        break;
                    }
                    400..=499 => report.pend([rcpt], format!("RCPT: {}", r.text())),
                    _ => report.refused.push((rcpt, r)),
                }
            }
            overflow.extend(iter);
            if accepted.is_empty() {
                let _ = self.command("RSET")?;
                // Nothing accepted, so the overflow has no better chance
                // in another transaction.
                report.pend(overflow, "no recipient accepted".into());
                return Ok(());
            }
            // Until DATA ends, this transaction's recipients are not
            // queued: an I/O error leaves them pending.
            *rest = accepted
                .iter()
                .cloned()
                .chain(overflow.iter().cloned())
                .collect();
            let r = self.command("DATA")?;
            if r.code != 354 {
                refused_whole(r, rest, report);
                return Ok(());
            }
            self.send_text(&p.content)?;
            let r = self.reply()?;
            if r.code != 250 {
                refused_whole(r, rest, report);
                return Ok(());
            }
            let id = r
                .lines
                .last()
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_default()
                .to_owned();
            report.queued.push((id, accepted));
            *rest = overflow;
        }
        Ok(())
    }

    /// Sends one command line and reads the reply.
    fn command(&mut self, line: &str) -> std::io::Result<Reply> {
        let w = self.stream.get_mut();
        w.write_all(line.as_bytes())?;
        w.write_all(b"\r\n")?;
        w.flush()?;
        self.reply()
    }

    /// The message text, dot-stuffed (RFC 5321 section 4.5.2), and the
    /// final `.`.
    fn send_text(&mut self, content: &[u8]) -> std::io::Result<()> {
        let w = self.stream.get_mut();
        let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 8);
        let mut line_start = true;
        for &b in content {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        if !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        w.write_all(&out)?;
        w.flush()
    }

    /// Reads one reply, of one line or several.
    fn reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            // A reply line is short; a server that sends endless text is
            // not ours.
            let n = (&mut self.stream).take(4096).read_line(&mut line)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not an SMTP reply: {line:?}"),
                    )
                })?;
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }
}

/// A reply to MAIL, DATA or the text: a temporary one leaves `rest`
/// pending; a permanent one refuses the message to all of them.
fn refused_whole(r: Reply, rest: &mut Vec<String>, report: &mut Report) {
    if (400..500).contains(&r.code) {
        report.pend(rest.drain(..), r.text());
    } else {
        let exit = if r.code == 552 || r.code == 554 || r.code == 501 || r.code == 553 {
            Exit::DataErr
        } else {
            Exit::Unavailable
        };
        report.failed = Some((exit, r.text()));
        for rcpt in rest.drain(..) {
            report.refused.push((rcpt, r.clone()));
        }
    }
}

/// xtext (RFC 3461 section 4): `+XX` for `+`, `=` and what is not
/// printable ASCII.
fn xtext(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if (0x21..0x7f).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A scripted server: the replies it gives, in order, and what the
    /// client wrote.
    struct Script {
        replies: Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.replies.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run(replies: &str, submission: &Submission) -> (Report, String) {
        let mut script = Script {
            replies: Cursor::new(replies.as_bytes().to_vec()),
            written: Vec::new(),
        };
        let report = submit(&mut script, submission, "alice");
        (report, String::from_utf8(script.written).unwrap())
    }

    fn submission(recipients: &[&str], content: &str) -> Submission {
        Submission {
            sender: None,
            full_name: None,
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            notify: Some("NEVER".into()),
            orcpt: Default::default(),
            ret: None,
            envid: Some("a+b=c".into()),
            eight_bit: false,
            time: 1,
            token: "t".into(),
            content: content.as_bytes().to_vec(),
        }
    }

    const GREETING: &str =
        "220 mx.test ESMTP mtad\r\n250-mx.test\r\n250-SIZE 100000\r\n250 HELP\r\n";

    #[test]
    fn a_whole_dialogue() {
        let replies = format!(
            "{GREETING}250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n354 go\r\n250 2.0.0 Ok: queued as 00000000000000a1\r\n221 bye\r\n"
        );
        let s = submission(
            &["root", "nobody@local.test"],
            "Subject: s\r\n\r\n.hidden\r\n.\r\n",
        );
        let (report, written) = run(&replies, &s);
        assert_eq!(report.server.as_deref(), Some("mx.test"));
        assert_eq!(
            report.queued,
            [(
                "00000000000000a1".to_owned(),
                vec!["root@mx.test".to_owned()]
            )]
        );
        assert_eq!(report.refused.len(), 1);
        assert_eq!(report.refused[0].0, "nobody@local.test");
        assert!(report.pending.is_empty() && report.failed.is_none());
        let lines: Vec<&str> = written.split("\r\n").collect();
        assert_eq!(lines[0], "EHLO localhost");
        assert!(
            lines[1].starts_with("MAIL FROM:<alice@mx.test> SIZE="),
            "{written}"
        );
        assert!(lines[1].ends_with(" ENVID=a+2Bb+3Dc"), "{written}");
        assert_eq!(lines[2], "RCPT TO:<root@mx.test> NOTIFY=NEVER");
        assert!(
            written.contains("\r\n..hidden\r\n..\r\n.\r\nQUIT\r\n"),
            "dot-stuffed: {written}"
        );
    }

    /// ORCPT goes on the RCPT line of its recipient (found by its
    /// address once completed), xtext-encoded, after NOTIFY; and in the
    /// envelope a session makes of that line it reads as it was given.
    #[test]
    fn orcpt_goes_on_its_recipients_rcpt_line() {
        let replies = format!(
            "{GREETING}250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 Ok: queued as 1\r\n221 bye\r\n"
        );
        let mut s = submission(&["root", "bob@x.test"], "S: s\r\n\r\n");
        let orcpt = "rfc822;original+root=1@example.test";
        s.orcpt = [("root".to_owned(), orcpt.to_owned())].into();
        let (report, written) = run(&replies, &s);
        assert_eq!(report.queued.len(), 1, "{written}");
        let lines: Vec<&str> = written.split("\r\n").collect();
        let rcpt =
            "RCPT TO:<root@mx.test> NOTIFY=NEVER ORCPT=rfc822;original+2Broot+3D1@example.test";
        assert_eq!(lines[2], rcpt);
        assert_eq!(lines[3], "RCPT TO:<bob@x.test> NOTIFY=NEVER");
        let origin = crate::test_origin();
        let e =
            mta_smtp::envelope_of_commands(lines[1], &[lines[2].to_owned()], origin, 1).unwrap();
        assert_eq!(e.recipients[0].orcpt.as_deref(), Some(orcpt));
    }

    #[test]
    fn over_the_recipient_limit_the_rest_goes_in_another_transaction() {
        let replies = format!(
            "{GREETING}250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n354 go\r\n250 2.0.0 Ok: queued as 1\r\n\
             250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 Ok: queued as 2\r\n221 bye\r\n"
        );
        let (report, written) = run(&replies, &submission(&["a", "b"], "S: s\r\n\r\n"));
        assert_eq!(report.queued.len(), 2);
        assert_eq!(
            report.queued[1],
            ("2".to_owned(), vec!["b@mx.test".to_owned()])
        );
        assert_eq!(written.matches("MAIL FROM").count(), 2);
        assert!(report.pending.is_empty());
    }

    #[test]
    fn what_was_not_queued_is_pending() {
        // The server goes away after DATA: nothing was queued.
        let replies = format!("{GREETING}250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
        let (report, _) = run(&replies, &submission(&["a", "b@x.test"], "S: s\r\n\r\n"));
        assert!(report.queued.is_empty());
        assert_eq!(report.pending, ["a@mx.test", "b@x.test"]);
        // Shutting down.
        let (report, _) = run(
            "421 4.3.2 mx.test shutting down\r\n",
            &submission(&["a"], "S: s\r\n\r\n"),
        );
        assert_eq!(report.pending, ["a"], "as given: the host is not known");
        // Out of space at MAIL.
        let replies = format!("{GREETING}452 4.3.1 Insufficient system storage\r\n221 bye\r\n");
        let (report, _) = run(&replies, &submission(&["a"], "S: s\r\n\r\n"));
        assert_eq!(report.pending, ["a@mx.test"]);
        assert!(report.pending_why.unwrap().contains("4.3.1"));
        // Nothing at all.
        let (report, _) = run("", &submission(&["a"], "S: s\r\n\r\n"));
        assert_eq!(report.pending, ["a"]);
    }

    #[test]
    fn permanent_refusals_fail_the_message() {
        let replies = format!(
            "{GREETING}250 ok\r\n250 ok\r\n354 go\r\n554 5.6.0 Message rejected: bare LF\r\n221 bye\r\n"
        );
        let (report, _) = run(&replies, &submission(&["a"], "S: s\r\n\r\n"));
        assert_eq!(report.failed.as_ref().map(|f| f.0), Some(Exit::DataErr));
        assert_eq!(report.refused.len(), 1);
        // Too big for the server's SIZE: not even tried.
        let big = format!("S: s\r\n\r\n{}\r\n", "x".repeat(200_000));
        let (report, written) = run(GREETING, &submission(&["a", "b"], &big));
        assert_eq!(report.failed.as_ref().map(|f| f.0), Some(Exit::DataErr));
        assert!(!written.contains("MAIL"), "{written}");
        let refused: Vec<(&str, String)> = report
            .refused
            .iter()
            .map(|(r, reply)| (r.as_str(), reply.text()))
            .collect();
        let why = "552 5.3.4 Message size exceeds fixed maximum message size (100000 octets)";
        assert_eq!(
            refused,
            [("a@mx.test", why.to_owned()), ("b@mx.test", why.to_owned())]
        );
    }
}
