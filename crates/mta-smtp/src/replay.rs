//! An envelope from the MAIL and RCPT command lines a client sent, parsed
//! as a session parses them: for mtad, which hands a drop file to a local
//! session and has only those lines to say who to tell of the recipients
//! the session refused.

use mta_envelope::{Envelope, Origin, Recipient, ReversePath};

use crate::address::parse_mailbox;
use crate::command::Command;
use crate::params::{mail_params, rcpt_params};

/// The envelope of `mail` (`MAIL FROM:<a@b.test> BODY=8BITMIME RET=HDRS`)
/// and `rcpts` (`RCPT TO:<c@d.test> NOTIFY=FAILURE`), from `origin` at
/// `arrival`; a line a session would refuse is an error, its words.
pub fn envelope_of_commands(
    mail: &str,
    rcpts: &[String],
    origin: Origin,
    arrival: u64,
) -> Result<Envelope, String> {
    let (path, params) = match Command::parse(mail) {
        Ok(Command::Mail { path, params }) => (path, params),
        Ok(_) => return Err(format!("not a MAIL command: {mail}")),
        Err(e) => return Err(format!("{e:?}")),
    };
    let params = mail_params(params, false).map_err(|r| r.to_string())?;
    let sender = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(parse_mailbox(&path, params.smtputf8).map_err(|e| format!("{e:?}"))?)
    };
    let recipients = rcpts
        .iter()
        .map(|line| {
            let (path, rcpt) = match Command::parse(line) {
                Ok(Command::Rcpt { path, params }) => (path, params),
                Ok(_) => return Err(format!("not a RCPT command: {line}")),
                Err(e) => return Err(format!("{e:?}")),
            };
            let (notify, orcpt) = rcpt_params(rcpt).map_err(|r| r.to_string())?;
            Ok(Recipient {
                address: parse_mailbox(&path, params.smtputf8).map_err(|e| format!("{e:?}"))?,
                notify,
                orcpt,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Envelope {
        sender,
        recipients,
        body: params.body,
        smtputf8: params.smtputf8,
        ret: params.ret,
        envid: params.envid,
        origin,
        arrival,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_envelope::{BodyType, Notify, Ret};

    fn origin() -> Origin {
        Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "localhost".into(),
            protocol: "local-esmtp".into(),
            tls: None,
            auth: Some("local:1000:alice".into()),
        }
    }

    #[test]
    fn the_lines_a_client_sent_make_the_envelope_a_session_would() {
        let e = envelope_of_commands(
            "MAIL FROM:<alice@mx.test> SIZE=120 BODY=8BITMIME RET=HDRS ENVID=a+2Bb",
            &[
                "RCPT TO:<x@local.test> NOTIFY=FAILURE,DELAY".to_owned(),
                "RCPT TO:<y@local.test>".to_owned(),
            ],
            origin(),
            7,
        )
        .unwrap();
        assert_eq!(e.sender.to_string(), "alice@mx.test");
        let who: Vec<(String, Option<Notify>)> = e
            .recipients
            .iter()
            .map(|r| (r.address.to_string(), r.notify))
            .collect();
        assert_eq!(
            who,
            [
                (
                    "x@local.test".to_owned(),
                    Some(Notify::On {
                        success: false,
                        failure: true,
                        delay: true
                    })
                ),
                ("y@local.test".to_owned(), None),
            ]
        );
        assert_eq!(e.body, BodyType::EightBitMime);
        assert_eq!(e.ret, Some(Ret::Hdrs));
        assert_eq!(e.envid.as_deref(), Some("a+b"));
        assert_eq!((e.arrival, e.origin), (7, origin()));
        let null = envelope_of_commands("MAIL FROM:<>", &[], origin(), 7).unwrap();
        assert_eq!(null.sender, ReversePath::Null);
    }

    #[test]
    fn lines_a_session_would_refuse_are_errors() {
        let rcpt = |l: &str| vec![l.to_owned()];
        for (mail, rcpts) in [
            ("RCPT TO:<a@b.test>", vec![]),
            ("MAIL FROM:<no-at-sign>", vec![]),
            ("MAIL FROM:<a@b.test> RET=MAYBE", vec![]),
            ("MAIL FROM:<a@b.test>", rcpt("MAIL FROM:<c@d.test>")),
            (
                "MAIL FROM:<a@b.test>",
                rcpt("RCPT TO:<c@d.test> NOTIFY=SOMETIMES"),
            ),
            ("MAIL FROM:<a@b.test>", rcpt("RCPT TO:<ü@d.test>")),
        ] {
            assert!(
                envelope_of_commands(mail, &rcpts, origin(), 7).is_err(),
                "{mail} {rcpts:?}"
            );
        }
    }
}
