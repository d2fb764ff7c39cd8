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
