//! What became of each recipient of one delivery attempt.

/// The result for one recipient of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server took responsibility: 2xx after the end of data.
    Delivered {
        /// The server's reply to the end of data, e.g.
        /// `250 2.0.0 Ok: queued as 4Xy`.
        reply: String,
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
    },
    /// Never: a 5xx reply, or the message cannot be carried to this server
    /// (too large, needs SMTPUTF8).
    Failed {
        /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
        status: String,
        /// The remote reply or the local cause.
        reason: String,
    },
}

impl Outcome {
    /// A Deferred outcome.
    pub fn deferred(status: impl Into<String>, reason: impl Into<String>) -> Outcome {
        Outcome::Deferred {
            status: status.into(),
            reason: reason.into(),
        }
    }

    /// A Failed outcome.
    pub fn failed(status: impl Into<String>, reason: impl Into<String>) -> Outcome {
        Outcome::Failed {
            status: status.into(),
            reason: reason.into(),
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
    /// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384` when the transaction
    /// went over TLS.
    pub tls: Option<String>,
    /// The server advertised DSN (RFC 3461). When false, NOTIFY and ORCPT
    /// were not passed on, and a recipient that asked for NOTIFY=SUCCESS is
    /// owed a "relayed" DSN by the caller (RFC 3461 section 4.1).
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
