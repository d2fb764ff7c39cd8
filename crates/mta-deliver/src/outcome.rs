//! What became of each recipient of one delivery attempt.

/// The result for one recipient of one attempt.
///
/// A `reason` is the sentence for the operator (delivery log, `queue
/// show`), in Postfix's words. When no server reply decided the outcome
/// (`reply` is None: a local cause, the DNS, a connection that failed),
/// the reason is also what a DSN tells the sender, so it never holds a
/// file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The message was handed over: 2xx after the end of data, or written
    /// into a local mailbox.
    Delivered {
        /// The server's reply to the end of data, e.g.
        /// `250 2.0.0 Ok: queued as 4Xy`; for local delivery, where the
        /// message was written (for the operator: no DSN shows it).
        reply: String,
        /// Where it went, and so who owes the success notice.
        delivery: Delivery,
    },
    /// Try again later: a 4xx reply, or no server could be reached, or the
    /// connection was lost (after DATA, the message may have arrived: the
    /// queue then sends it twice rather than never).
    Deferred {
        /// The enhanced status code (RFC 3463), e.g. `4.4.1`.
        status: String,
        /// The remote reply, in Postfix's `host X said: ...` form, or the
        /// local cause.
        reason: String,
        /// The server reply that decided it, if one did.
        reply: Option<ServerReply>,
    },
    /// Never: a 5xx reply, or the message cannot be carried to this server
    /// (too large, needs SMTPUTF8).
    Failed {
        /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
        status: String,
        /// The remote reply, in Postfix's `host X said: ...` form, or the
        /// local cause.
        reason: String,
        /// The server reply that decided it, if one did.
        reply: Option<ServerReply>,
    },
}

/// Where a delivered recipient's message went, which decides who reports
/// on it from then on (RFC 3461 section 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Into the recipient's mailbox on this host: a success notice, when
    /// NOTIFY asks for one, says `delivered` (RFC 3464 section 2.3.3).
    Mailbox,
    /// To a next hop that does not offer DSN, so NOTIFY and ORCPT could
    /// not be passed on: a success notice, when asked for, is ours to send
    /// and says `relayed` (RFC 3461 section 5.2.2).
    Relayed,
    /// To a next hop that offers DSN and was given the DSN parameters: it
    /// reports from now on, success included (RFC 3461 section 5.2.1); we
    /// send no notice of our own.
    RelayedWithDsn,
}

/// A remote SMTP server's reply, as a DSN quotes it: the host in
/// `Remote-MTA`, the reply after `Diagnostic-Code: smtp;` (RFC 3464
/// sections 2.3.5 and 2.3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    /// The server: `mx1.example.test[192.0.2.1]:25`.
    pub remote: String,
    /// The reply, its lines joined by spaces as Postfix joins them:
    /// `550-5.1.1 first line 550 5.1.1 last line`.
    pub text: String,
}

impl ServerReply {
    /// The host name of [`remote`](Self::remote), without the address and
    /// port: `mx1.example.test`.
    pub fn host(&self) -> &str {
        self.remote.split('[').next().unwrap_or(&self.remote)
    }
}

impl Outcome {
    /// A Deferred outcome with a local cause (no server reply).
    pub fn deferred(status: impl Into<String>, reason: impl Into<String>) -> Outcome {
        Outcome::Deferred {
            status: status.into(),
            reason: reason.into(),
            reply: None,
        }
    }

    /// A Failed outcome with a local cause (no server reply).
    pub fn failed(status: impl Into<String>, reason: impl Into<String>) -> Outcome {
        Outcome::Failed {
            status: status.into(),
            reason: reason.into(),
            reply: None,
        }
    }

    /// The outcome a non-2xx server reply gives: 4xx defers, 5xx fails,
    /// with the reply kept for the DSN and `reason` for the operator.
    pub(crate) fn of_reply(reply: &crate::reply::Reply, remote: &str, reason: String) -> Outcome {
        let said = Some(ServerReply {
            remote: remote.to_owned(),
            text: reply.to_string(),
        });
        if reply.is_transient() {
            Outcome::Deferred {
                status: reply.status(),
                reason,
                reply: said,
            }
        } else {
            Outcome::Failed {
                status: reply.status(),
                reason,
                reply: said,
            }
        }
    }

    /// True for [`Outcome::Delivered`].
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    /// True for [`Outcome::Deferred`].
    pub fn is_deferred(&self) -> bool {
        matches!(self, Outcome::Deferred { .. })
    }

    /// True for [`Outcome::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }

    /// The enhanced status code: `2.0.0` for Delivered (the server's own is
    /// in the reply text).
    pub fn status(&self) -> &str {
        match self {
            Outcome::Delivered { .. } => "2.0.0",
            Outcome::Deferred { status, .. } | Outcome::Failed { status, .. } => status,
        }
    }

    /// The server reply that decided a Deferred or Failed outcome, if one
    /// did.
    pub fn server_reply(&self) -> Option<&ServerReply> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Deferred { reply, .. } | Outcome::Failed { reply, .. } => reply.as_ref(),
        }
    }
}

/// How an attempt ended as far as the destination's servers are concerned:
/// what back-off counts (see [`Throttles`](crate::Throttles)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServerSignal {
    /// No server reply decided it: the attempt was held back locally, no
    /// connection could be made, or it broke off (lost, timed out). Leaves
    /// the count of 4xx endings as it is.
    #[default]
    Silent,
    /// A server took the message for a recipient, or refused it for good
    /// (5xx): it is answering. Resets the count.
    Answered,
    /// A 4xx reply ended the attempt: to the greeting, EHLO, MAIL, DATA or
    /// the end of data, or to every RCPT. Counts towards the back-off.
    Transient {
        /// The reply, as in a Deferred reason (`host X said: 451 ...`).
        reply: String,
    },
    /// A 421 reply (RFC 5321 section 3.8: the server is closing the
    /// channel) at any point: backs off at once.
    Closing {
        /// The reply, as in a Deferred reason.
        reply: String,
    },
}

impl ServerSignal {
    /// The signal a non-2xx reply gives: 421 closing, 4xx transient, 5xx
    /// answered. `reason` is the reply as it goes in an outcome.
    pub(crate) fn of_reply(code: u16, reason: &str) -> ServerSignal {
        match code {
            421 => ServerSignal::Closing {
                reply: reason.to_owned(),
            },
            400..=499 => ServerSignal::Transient {
                reply: reason.to_owned(),
            },
            _ => ServerSignal::Answered,
        }
    }

    /// How strongly it speaks for a back-off, to keep the strongest of
    /// several.
    pub(crate) fn weight(&self) -> u8 {
        match self {
            ServerSignal::Silent => 0,
            ServerSignal::Answered => 1,
            ServerSignal::Transient { .. } => 2,
            ServerSignal::Closing { .. } => 3,
        }
    }
}

/// The result of one call to [`Client::deliver`](crate::Client::deliver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// One outcome for each recipient index asked for, in the order given.
    pub outcomes: Vec<(usize, Outcome)>,
    /// `mx1.test[127.0.0.2]:2525`: the server that answered the
    /// transaction; None when no server got that far.
    pub remote: Option<String>,
    /// The TLS version, cipher and verification when the transaction
    /// went over TLS.
    pub tls: Option<crate::TlsInfo>,
    /// The server advertised DSN (RFC 3461). When false, NOTIFY and ORCPT
    /// were not passed on, and a recipient that asked for NOTIFY=SUCCESS is
    /// owed a "relayed" DSN by the caller (RFC 3461 section 5.2.2): each
    /// Delivered outcome says so in its [`Delivery`].
    pub dsn: bool,
    /// How the servers ended it, for back-off: what the caller may log
    /// beside the outcomes.
    pub server: ServerSignal,
}

impl Attempt {
    /// The outcome of one recipient index.
    pub fn outcome(&self, recipient: usize) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(i, _)| *i == recipient)
            .map(|(_, o)| o)
    }

    /// True when every recipient was delivered.
    pub fn all_delivered(&self) -> bool {
        self.outcomes.iter().all(|(_, o)| o.is_delivered())
    }
}
