//! The `sendmail` command for local programs (cron, PHP's `mail()`,
//! monitoring scripts), and what mtad shares with it.
//!
//! A program runs `mta-sendmail` (linked as `/usr/sbin/sendmail`) with
//! the Sendmail options it knows ([`options`]) and the message on
//! standard input ([`input`]). The command gathers a [`Submission`]: the
//! sender and recipients as the user gave them (or as `-t` found them in
//! the header, [`header`]) and the message text with CRLF line ends. It
//! then hands it to mtad over the local socket with the SMTP
//! [`client`], which reads mtad's host name from the banner and
//! [completes](Submission::complete) the submission with it (bare names
//! qualified, `From:`, `Date:` and `Message-ID:` added when missing).
//! mtad records who the user is from the socket's peer credentials.
//!
//! When mtad cannot take it now, the submission goes to the drop
//! directory as a [`dropfile`], and mtad imports it later through its
//! own local session with the very same client, the file's owner
//! standing for the peer. [`Exit`] holds the exit statuses of
//! `sysexits.h` the command answers with.
#![deny(missing_docs)]

pub mod client;
pub mod compose;
pub mod dropfile;
mod exit;
pub mod header;
pub mod input;
pub mod options;

pub use compose::{Prepared, Submission};
pub use exit::Exit;

/// The origin a stand-alone local session gives its envelopes, for the
/// tests that make one from RCPT lines.
#[cfg(test)]
pub(crate) fn test_origin() -> mta_envelope::Origin {
    mta_envelope::Origin {
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "localhost".into(),
        protocol: "local-esmtp".into(),
        tls: None,
        auth: None,
    }
}
