//! What a message needs of the server beyond plain SMTP, decided per
//! transaction once the EHLO reply is known: SMTPUTF8 (RFC 6531) and
//! 8BITMIME (RFC 6152).
//!
//! The SMTPUTF8 flag of an envelope says what the client asked for, not
//! what the message needs: some clients set it whenever a server offers it.
//! So, as Postfix does, a flagged message goes to a server without SMTPUTF8
//! when nothing in it needs the extension, and only what does need it
//! fails, each with the code RFC 6531's registry gives it:
//!
//! - a UTF-8 address cannot be named to the server: 5.6.7 ("non-ASCII
//!   addresses not permitted for that sender/recipient"), every recipient
//!   for a UTF-8 sender, that recipient alone for a UTF-8 recipient;
//! - UTF-8 in the header section, with an ASCII envelope: 5.6.9 ("UTF-8
//!   header message cannot be transferred to one or more recipients").
//!
//! 8-bit text (any octet above 127, declared BODY=8BITMIME or not) must
//! not go to a server without 8BITMIME (RFC 6152 section 3). It fails with
//! 5.6.3 ("conversion required but not supported") unless the
//! configuration says to send it anyway ([`EightBitPolicy`]). A message
//! that goes with SMTPUTF8 needs no such check: a server offering SMTPUTF8
//! takes 8-bit text (RFC 6531 section 3.1).
//!
//! The content is scanned only when the server lacks an extension that
//! the message may need, and only as far as needed: the header section for
//! SMTPUTF8, the whole text for 8BITMIME.

use mta_envelope::{BodyType, Envelope, Recipient, ReversePath};
use mta_smtp::header_section;

use crate::config::EightBitPolicy;
use crate::session::Extensions;
use crate::Outcome;

/// How one message goes to one server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fit {
    /// Send the SMTPUTF8 parameter.
    pub smtputf8: bool,
    /// Send BODY=8BITMIME.
    pub body_8bitmime: bool,
    /// For each recipient, in the order given: why it cannot go to this
    /// server, or None when it can.
    pub refused: Vec<Option<Outcome>>,
}

/// Decides what goes to a server that offers `ext`, named `remote`.
pub(crate) fn fit(
    envelope: &Envelope,
    recipients: &[&Recipient],
    content: &[u8],
    ext: &Extensions,
    remote: &str,
    eightbit: EightBitPolicy,
) -> Fit {
    let utf8_sender = matches!(&envelope.sender, ReversePath::Mailbox(m) if m.is_utf8());
    let asked = envelope.smtputf8 || utf8_sender || recipients.iter().any(|r| r.address.is_utf8());
    let smtputf8 = asked && ext.smtputf8;
    let mut refused: Vec<Option<Outcome>> = vec![None; recipients.len()];
    if asked && !ext.smtputf8 {
        if utf8_sender {
            let reason = format!(
                "SMTPUTF8 is required for the sender address <{}>, but was not offered by host {remote}",
                envelope.sender
            );
            refused.fill(Some(Outcome::failed("5.6.7", reason)));
        } else {
            for (slot, rcpt) in refused.iter_mut().zip(recipients) {
                if rcpt.address.is_utf8() {
                    let reason = format!(
                        "SMTPUTF8 is required for the recipient address <{}>, but was not offered by host {remote}",
                        rcpt.address
                    );
                    *slot = Some(Outcome::failed("5.6.7", reason));
                }
            }
        }
        if refused.iter().any(Option::is_none) && !header_section(content).is_ascii() {
            let reason = format!(
                "the message header contains UTF-8, which needs SMTPUTF8, but SMTPUTF8 was not offered by host {remote}"
            );
            fill_open(&mut refused, Outcome::failed("5.6.9", reason));
        }
    }
    if !ext.eightbitmime
        && !smtputf8
        && eightbit == EightBitPolicy::Fail
        && refused.iter().any(Option::is_none)
        && !content.is_ascii()
    {
        let reason = format!(
            "the message contains 8-bit text, which needs 8BITMIME, but 8BITMIME was not offered by host {remote}"
        );
        fill_open(&mut refused, Outcome::failed("5.6.3", reason));
    }
    Fit {
        smtputf8,
        // Without 8BITMIME the BODY parameter is left out (the server would
        // refuse it, RFC 1869): the text is 7-bit by now, or sent anyway.
        body_8bitmime: envelope.body == BodyType::EightBitMime && ext.eightbitmime,
        refused,
    }
}

/// Sets every recipient not yet refused to `outcome`.
fn fill_open(refused: &mut [Option<Outcome>], outcome: Outcome) {
    for slot in refused.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_envelope::{Mailbox, Origin};

    fn mailbox(address: &str) -> Mailbox {
        let (local, domain) = address.rsplit_once('@').unwrap();
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn envelope(sender: &str, recipients: &[&str], smtputf8: bool, body: BodyType) -> Envelope {
        Envelope {
            sender: ReversePath::Mailbox(mailbox(sender)),
            recipients: recipients
                .iter()
                .map(|r| Recipient {
                    address: mailbox(r),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            body,
            smtputf8,
            ret: None,
            envid: None,
            origin: Origin {
                client_ip: "127.0.0.1".parse().unwrap(),
                helo: "client.test".into(),
                protocol: "UTF8SMTP".into(),
                tls: None,
                auth: None,
            },
            arrival: 0,
        }
    }

    fn ext(smtputf8: bool, eightbitmime: bool) -> Extensions {
        Extensions {
            smtputf8,
            eightbitmime,
            ..Extensions::default()
        }
    }

    fn run(env: &Envelope, content: &str, ext: &Extensions, eightbit: EightBitPolicy) -> Fit {
        let recipients: Vec<&Recipient> = env.recipients.iter().collect();
        fit(
            env,
            &recipients,
            content.as_bytes(),
            ext,
            "mx.test[127.0.0.2]:25",
            eightbit,
        )
    }

    /// The statuses of the refused recipients, "" for those that go.
    fn statuses(fit: &Fit) -> Vec<&str> {
        fit.refused
            .iter()
            .map(|r| r.as_ref().map_or("", Outcome::status))
            .collect()
    }

    const ASCII: &str = "Subject: hi\r\n\r\nHello.\r\n";
    const UTF8_HEADER: &str = "Subject: Gr\u{fc}\u{df}e\r\n\r\nHello.\r\n";
    const UTF8_BODY: &str = "Subject: hi\r\n\r\nGr\u{fc}\u{df}e\r\n";

    #[test]
    fn a_flagged_ascii_message_goes_without_the_flag() {
        let env = envelope("a@b.test", &["c@d.test"], true, BodyType::SevenBit);
        let fit = run(&env, ASCII, &ext(false, true), EightBitPolicy::Fail);
        assert_eq!(
            fit,
            Fit {
                smtputf8: false,
                body_8bitmime: false,
                refused: vec![None],
            }
        );
    }

    #[test]
    fn the_flag_goes_to_a_server_that_offers_it() {
        let env = envelope("a@b.test", &["c@d.test"], true, BodyType::EightBitMime);
        let fit = run(&env, UTF8_HEADER, &ext(true, true), EightBitPolicy::Fail);
        assert!(fit.smtputf8 && fit.body_8bitmime);
        assert_eq!(statuses(&fit), [""]);
        // UTF-8 addresses need it even when the client did not say so.
        let env = envelope("a@b.test", &["j\u{f6}rg@d.test"], false, BodyType::SevenBit);
        assert!(run(&env, ASCII, &ext(true, true), EightBitPolicy::Fail).smtputf8);
    }

    #[test]
    fn a_utf8_recipient_fails_5_6_7_alone() {
        let env = envelope(
            "a@b.test",
            &["j\u{f6}rg@d.test", "c@d.test"],
            true,
            BodyType::SevenBit,
        );
        let fit = run(&env, ASCII, &ext(false, true), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), ["5.6.7", ""]);
        assert!(!fit.smtputf8);
        let Some(Outcome::Failed { reason, .. }) = &fit.refused[0] else {
            panic!("{fit:?}");
        };
        assert!(
            reason.contains("<j\u{f6}rg@d.test>") && reason.contains("mx.test"),
            "{reason}"
        );
    }

    #[test]
    fn a_utf8_sender_fails_every_recipient_5_6_7() {
        let env = envelope(
            "\u{e5}sa@b.test",
            &["c@d.test", "e@d.test"],
            true,
            BodyType::SevenBit,
        );
        let fit = run(&env, UTF8_HEADER, &ext(false, true), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), ["5.6.7", "5.6.7"]);
    }

    #[test]
    fn utf8_headers_with_an_ascii_envelope_fail_5_6_9() {
        let env = envelope(
            "a@b.test",
            &["j\u{f6}rg@d.test", "c@d.test"],
            true,
            BodyType::SevenBit,
        );
        let fit = run(&env, UTF8_HEADER, &ext(false, true), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), ["5.6.7", "5.6.9"]);
    }

    #[test]
    fn utf8_in_the_body_only_is_not_an_smtputf8_matter() {
        let env = envelope("a@b.test", &["c@d.test"], true, BodyType::EightBitMime);
        let fit = run(&env, UTF8_BODY, &ext(false, true), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), [""]);
        assert!(!fit.smtputf8 && fit.body_8bitmime);
    }

    #[test]
    fn eight_bit_text_fails_5_6_3_without_8bitmime_unless_sent_anyway() {
        for content in [UTF8_BODY, UTF8_HEADER] {
            let env = envelope("a@b.test", &["c@d.test"], false, BodyType::EightBitMime);
            let fit = run(&env, content, &ext(false, false), EightBitPolicy::Fail);
            assert_eq!(statuses(&fit), ["5.6.3"], "{content:?}");
            let fit = run(&env, content, &ext(false, false), EightBitPolicy::Send);
            assert_eq!(statuses(&fit), [""]);
            assert!(!fit.body_8bitmime);
        }
        // Declared 8BITMIME, but ASCII: it goes, without the parameter.
        let env = envelope("a@b.test", &["c@d.test"], false, BodyType::EightBitMime);
        let fit = run(&env, ASCII, &ext(false, false), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), [""]);
        assert!(!fit.body_8bitmime);
        // A server with SMTPUTF8 takes 8-bit text (RFC 6531 section 3.1).
        let env = envelope("a@b.test", &["c@d.test"], true, BodyType::SevenBit);
        let fit = run(&env, UTF8_HEADER, &ext(true, false), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), [""]);
    }

    #[test]
    fn utf8_headers_without_either_extension_say_5_6_9() {
        let env = envelope("a@b.test", &["c@d.test"], true, BodyType::SevenBit);
        let fit = run(&env, UTF8_HEADER, &ext(false, false), EightBitPolicy::Fail);
        assert_eq!(statuses(&fit), ["5.6.9"]);
    }

    #[test]
    fn utf8_in_the_body_is_not_in_the_header_section() {
        // UTF-8 in the body does not count as a header.
        assert!(header_section(UTF8_BODY.as_bytes()).is_ascii());
        assert!(!header_section(UTF8_HEADER.as_bytes()).is_ascii());
    }
}
