//! One mail transaction on an open session: MAIL, RCPT, DATA (RFC 5321
//! section 3.3), pipelined when the server allows (RFC 2920), with the
//! SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and DSN (RFC
//! 3461) parameters. Which recipients can go to this server at all, and
//! with which of BODY and SMTPUTF8, is decided first (`needs.rs`).

use std::fmt::Write as _;

use mta_envelope::{Envelope, Notify, Recipient, Ret};

use crate::config::EightBitPolicy;
use crate::data;
use crate::needs::{self, Fit};
use crate::reply::Reply;
use crate::session::{Session, SessionError, Stage};
use crate::{Delivery, OutboundMessage, Outcome, ServerSignal};

/// The result of one transaction.
pub(crate) struct TxResult {
    /// One per recipient index asked for, in order.
    pub outcomes: Vec<(usize, Outcome)>,
    /// The session is in a known state and may carry another message.
    pub reusable: bool,
    /// How the server ended it, for back-off.
    pub signal: ServerSignal,
    /// The connection came from the idle pool and failed the RSET sent
    /// in front of MAIL (`Session::check_pending`): nothing was said to
    /// the server that counts, and the message may go on another
    /// connection.
    pub stale: bool,
}

/// Encodes `s` as xtext (RFC 3461 section 4): bytes outside `!`..`~`, and
/// `+` and `=`, become `+XX`.
pub(crate) fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// `MAIL FROM:<sender> params` CRLF.
fn mail_command(session: &Session, envelope: &Envelope, size: usize, fit: &Fit) -> String {
    let ext = &session.ext;
    let mut line = format!("MAIL FROM:<{}>", envelope.sender);
    if ext.size {
        // RFC 1870 section 4: the size of the message as stored; the
        // dot-stuffing adds a little, which the estimate may ignore.
        let _ = write!(line, " SIZE={size}");
    }
    if fit.body_8bitmime {
        line.push_str(" BODY=8BITMIME");
    }
    if fit.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        match envelope.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &envelope.envid {
            let _ = write!(line, " ENVID={}", xtext(envid));
        }
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<address> params` CRLF.
fn rcpt_command(session: &Session, rcpt: &Recipient) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if session.ext.dsn {
        // NOTIFY with no condition set is not a valid parameter (RFC 3461
        // section 4.1): leave it out, as if none was given.
        let notify = rcpt.notify.as_ref().map(Notify::value);
        if let Some(value) = notify.filter(|v| !v.is_empty()) {
            let _ = write!(line, " NOTIFY={value}");
        }
        if let Some(orcpt) = &rcpt.orcpt {
            // Stored decoded as `addr-type;address`; the `;` is a plain
            // xchar, so encoding the whole is the RFC 3461 section 4.2 form.
            let _ = write!(line, " ORCPT={}", xtext(orcpt));
        }
    }
    line.push_str("\r\n");
    line
}

/// `host X said: 451 ... (in reply to MAIL FROM command)`.
fn reply_reason(remote: &str, reply: &Reply, stage: Stage) -> String {
    format!(
        "host {remote} said: {reply} (in reply to {} command)",
        stage.command()
    )
}

/// The back-off signal of a non-2xx reply.
fn signal_of(remote: &str, reply: &Reply, stage: Stage) -> ServerSignal {
    ServerSignal::of_reply(reply.code, &reply_reason(remote, reply, stage))
}

/// The outcome a non-2xx reply gives: 4xx defers, 5xx fails.
fn from_reply(remote: &str, reply: &Reply, stage: Stage) -> Outcome {
    Outcome::of_reply(reply, remote, reply_reason(remote, reply, stage))
}

impl Session {
    /// Sends one message to the recipients `msg.recipients` (indexes that
    /// exist in the envelope; the caller checks). `eightbit` says what
    /// becomes of 8-bit text when the server lacks 8BITMIME.
    pub async fn send_message(
        &mut self,
        msg: &OutboundMessage<'_>,
        eightbit: EightBitPolicy,
    ) -> TxResult {
        let recipients: Vec<&Recipient> = msg
            .recipients
            .iter()
            .map(|&i| &msg.envelope.recipients[i])
            .collect();
        let result = |states: Vec<Option<Outcome>>, reusable, signal| TxResult {
            outcomes: msg
                .recipients
                .iter()
                .zip(states)
                .map(|(&i, state)| {
                    // Every path below fills every state.
                    let outcome = state.unwrap_or_else(|| {
                        Outcome::deferred("4.3.0", "internal error: no outcome recorded")
                    });
                    (i, outcome)
                })
                .collect(),
            reusable,
            signal,
            stale: false,
        };
        // Recipients that cannot go to this server fail before MAIL; the
        // others go in the transaction.
        let fit = needs::fit(
            msg.envelope,
            &recipients,
            msg.content,
            &self.ext,
            &self.remote,
            eightbit,
        );
        let mut states = fit.refused.clone();
        if let Some(limit) = self.ext.size_limit {
            if msg.content.len() as u64 > limit {
                let outcome = Outcome::failed(
                    "5.3.4",
                    format!(
                        "message size {} exceeds size limit {limit} of server {}",
                        msg.content.len(),
                        self.remote
                    ),
                );
                for state in states.iter_mut().filter(|s| s.is_none()) {
                    *state = Some(outcome.clone());
                }
            }
        }
        if states.iter().all(Option::is_some) {
            return result(states, true, ServerSignal::Silent);
        }
        // A transaction broken off (lost, timed out) says nothing of the
        // server's will, unless a reply before the break did.
        let mut signal = ServerSignal::Silent;
        let outcome = self
            .transact(msg, &recipients, &fit, &mut states, &mut signal)
            .await;
        let reusable = match outcome {
            Ok(reusable) => reusable,
            Err(e) if self.check_pending => {
                let (_, reason) = e.describe(&self.remote);
                tracing::debug!(remote = %self.remote, %reason, "idle connection failed RSET");
                let mut tx = result(states, false, ServerSignal::Silent);
                for (_, outcome) in tx.outcomes.iter_mut() {
                    *outcome = Outcome::deferred("4.4.2", reason.clone());
                }
                tx.stale = true;
                return tx;
            }
            Err(e) => {
                let (status, reason) = e.describe(&self.remote);
                tracing::debug!(remote = %self.remote, %reason, "transaction broken off");
                for state in states.iter_mut().filter(|s| s.is_none()) {
                    *state = Some(Outcome::deferred(status.clone(), reason.clone()));
                }
                false
            }
        };
        result(states, reusable, signal)
    }

    /// The transaction proper, for the recipients whose state is still
    /// None (at least one). Fills their `states` as the server answers,
    /// and `signal` as the replies decide it; on Err the caller fills the
    /// rest. Ok(true) when the session may be reused.
    async fn transact(
        &mut self,
        msg: &OutboundMessage<'_>,
        recipients: &[&Recipient],
        fit: &Fit,
        states: &mut [Option<Outcome>],
        signal: &mut ServerSignal,
    ) -> Result<bool, SessionError> {
        let t = self.timeouts;
        let mail = mail_command(self, msg.envelope, msg.content.len(), fit);
        // (index into states, command) for each recipient that goes.
        let rcpts: Vec<(usize, String)> = recipients
            .iter()
            .enumerate()
            .filter(|(n, _)| states[*n].is_none())
            .map(|(n, r)| (n, rcpt_command(self, r)))
            .collect();
        let pipelining = self.ext.pipelining;
        tracing::debug!(remote = %self.remote, command = mail.trim_end(), pipelining, "send");

        if pipelining {
            // RFC 2920 section 3.1: MAIL, every RCPT and DATA in one
            // write; the replies come back in order. A connection taken
            // from the idle pool is checked with RSET (as Postfix checks
            // a cached one), here in the same write rather than a round
            // trip of its own.
            let mut batch = String::new();
            if self.check_pending {
                batch.push_str("RSET\r\n");
            }
            batch.push_str(&mail);
            for (_, rcpt) in &rcpts {
                batch.push_str(rcpt);
            }
            batch.push_str("DATA\r\n");
            self.send(batch.as_bytes(), Stage::Mail, t.mail).await?;
            if self.check_pending {
                let reply = self.read_reply(Stage::Rset, t.mail).await?;
                if !reply.is_success() {
                    return Err(SessionError::Rejected {
                        stage: Stage::Rset,
                        reply,
                    });
                }
                self.check_pending = false;
            }
        } else {
            if self.check_pending {
                let reply = self.command("RSET\r\n", Stage::Rset, t.mail).await?;
                if !reply.is_success() {
                    return Err(SessionError::Rejected {
                        stage: Stage::Rset,
                        reply,
                    });
                }
                self.check_pending = false;
            }
            self.send(mail.as_bytes(), Stage::Mail, t.mail).await?;
        }

        let mail_reply = self.read_reply(Stage::Mail, t.mail).await?;
        if !mail_reply.is_success() {
            let outcome = from_reply(&self.remote, &mail_reply, Stage::Mail);
            for state in states.iter_mut().filter(|s| s.is_none()) {
                *state = Some(outcome.clone());
            }
            *signal = signal_of(&self.remote, &mail_reply, Stage::Mail);
            if mail_reply.code == 421 {
                return Ok(false);
            }
            if pipelining {
                // Read the replies to what was pipelined behind MAIL.
                for _ in &rcpts {
                    self.read_reply(Stage::Rcpt, t.rcpt).await?;
                }
                let data = self.read_reply(Stage::Data, t.data_init).await?;
                if data.code == 354 {
                    // A server that opens DATA with no transaction cannot
                    // be trusted with what follows: close, sending nothing.
                    return Ok(false);
                }
            }
            return Ok(true);
        }

        let mut accepted = 0;
        // Every refusal a 4xx: the attempt ends in 4xx when none is taken.
        let mut transient: Option<ServerSignal> = None;
        let mut refused_for_good = false;
        for (n, rcpt) in rcpts.iter().map(|(n, r)| (*n, r)) {
            if !pipelining {
                tracing::debug!(remote = %self.remote, command = rcpt.trim_end(), "send");
                self.send(rcpt.as_bytes(), Stage::Rcpt, t.rcpt).await?;
            }
            let reply = self.read_reply(Stage::Rcpt, t.rcpt).await?;
            if reply.is_success() {
                accepted += 1;
                continue;
            }
            states[n] = Some(from_reply(&self.remote, &reply, Stage::Rcpt));
            match signal_of(&self.remote, &reply, Stage::Rcpt) {
                s @ ServerSignal::Transient { .. } => transient = Some(s),
                ServerSignal::Closing { .. } => {}
                _ => refused_for_good = true,
            }
            if reply.code == 421 {
                *signal = signal_of(&self.remote, &reply, Stage::Rcpt);
                // The server is closing: nobody else gets through now.
                let outcome = from_reply(&self.remote, &reply, Stage::Rcpt);
                for state in states.iter_mut().filter(|s| s.is_none()) {
                    *state = Some(outcome.clone());
                }
                return Ok(false);
            }
        }

        if accepted == 0 {
            *signal = match transient {
                Some(s) if !refused_for_good => s,
                _ => ServerSignal::Answered,
            };
        }
        let data = if pipelining {
            let data = self.read_reply(Stage::Data, t.data_init).await?;
            if accepted == 0 {
                if data.code == 354 {
                    // RFC 2920 section 3.1 would have us send a lone "."
                    // for the server to refuse; closing without it is as
                    // safe and leaves nothing to chance.
                    return Ok(false);
                }
                return self.rset().await;
            }
            data
        } else {
            if accepted == 0 {
                // No recipient: no DATA; reset the transaction instead.
                return self.rset().await;
            }
            tracing::debug!(remote = %self.remote, command = "DATA", "send");
            self.command("DATA\r\n", Stage::Data, t.data_init).await?
        };
        if data.code != 354 {
            let outcome = from_reply(&self.remote, &data, Stage::Data);
            for state in states.iter_mut().filter(|s| s.is_none()) {
                *state = Some(outcome.clone());
            }
            *signal = signal_of(&self.remote, &data, Stage::Data);
            if data.code == 421 {
                return Ok(false);
            }
            return self.rset().await;
        }

        for (block, after) in data::blocks(msg.content) {
            self.send_all(&[&block, after], Stage::Body, t.data_block)
                .await?;
        }
        let end = self.read_reply(Stage::EndOfData, t.data_end).await?;
        let outcome = if end.is_success() {
            *signal = ServerSignal::Answered;
            Outcome::Delivered {
                reply: end.to_string(),
                // RFC 3461 section 5.2: NOTIFY went with each RCPT (and the
                // next hop reports) exactly when the server offered DSN.
                delivery: if self.ext.dsn {
                    Delivery::RelayedWithDsn
                } else {
                    Delivery::Relayed
                },
            }
        } else {
            *signal = signal_of(&self.remote, &end, Stage::EndOfData);
            from_reply(&self.remote, &end, Stage::EndOfData)
        };
        for state in states.iter_mut().filter(|s| s.is_none()) {
            *state = Some(outcome.clone());
        }
        Ok(end.code != 421)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_encodes_plus_equals_and_non_printables() {
        assert_eq!(
            xtext("rfc822;a+b=c@example.test"),
            "rfc822;a+2Bb+3Dc@example.test"
        );
        assert_eq!(xtext("id 1\u{e9}"), "id+201+C3+A9");
        assert_eq!(xtext("plain"), "plain");
    }
}
