//! One SMTP server session as a state machine, without sockets.
//!
//! The caller owns the connection: it appends what it reads to a buffer and
//! calls [`Session::poll`] until it answers [`Step::NeedInput`], writing each
//! reply it gets. The session does its own framing (command lines, DATA text,
//! BDAT chunks), so every rule about where one command ends and the next
//! begins lives here, where the tests can reach it byte by byte.
//!
//! AUTH (RFC 4954) follows the same pattern as storing a message: the
//! session decodes the exchange and answers [`Step::Authenticate`]; the
//! caller checks the credentials and reports back with
//! [`Session::authenticated`]. Nothing else is read until it does, so a
//! command pipelined behind AUTH runs with the verdict already known.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use ipnet::IpNet;
use mta_envelope::{Envelope, Mailbox, Origin, QueueId, Recipient, ReversePath};
use zeroize::Zeroize;

use crate::address::{parse_mailbox, AddressError};
use crate::auth::{self, AuthPolicy, AuthVerdict, Credentials, Exchange, Mechanism, Progress};
use crate::command::{Command, CommandError};
use crate::params::{mail_params, rcpt_params, MailParams};
use crate::recipients::{check_local, LocalCheck, LocalRecipients};
use crate::reply::Reply;
use crate::submission::SenderPolicy;
use crate::text::{DataDecoder, LineChecker, TextError};

/// What a session needs to know about the server; shared by all sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our host name, for the banner, EHLO and `Received:`.
    pub hostname: String,
    /// The SIZE limit in octets.
    pub max_message_size: usize,
    /// Recipients per transaction; more get `452 4.5.3`, which is not
    /// counted as an error.
    pub max_recipients: usize,
    /// Recipients over `max_recipients` one transaction may send before
    /// the session is closed with `421 4.7.0`.
    pub recipient_overshoot_limit: usize,
    /// Longest command line, CRLF included.
    pub max_command_line: usize,
    /// Longest text line, CRLF included.
    pub max_line_length: usize,
    /// Error replies before the session is closed.
    pub max_errors: u32,
    /// STARTTLS can be offered (a certificate is configured).
    pub tls_available: bool,
    /// Domains anyone may send to.
    pub local_domains: Vec<String>,
    /// The mailboxes of the local domains; None: any local part that can
    /// name a mailbox.
    pub local_recipients: Option<LocalRecipients>,
    /// Clients that may send to any domain (so may any client once it
    /// has authenticated).
    pub relay_networks: Vec<IpNet>,
    /// AUTH (RFC 4954) and the submission role; None: AUTH is not offered
    /// (the MX role).
    pub auth: Option<AuthPolicy>,
    /// Sender rules and message rates for authenticated users; None:
    /// any sender, no rate.
    pub sender_policy: Option<Arc<dyn SenderPolicy>>,
}

/// Server-wide conditions that decide whether new mail is taken, updated by
/// the daemon while sessions run.
#[derive(Debug)]
pub struct Admission {
    storage_ok: AtomicBool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            storage_ok: AtomicBool::new(true),
        }
    }
}

impl Admission {
    /// Records whether the spool has room (the free-space floor).
    pub fn set_storage_ok(&self, ok: bool) {
        self.storage_ok.store(ok, Ordering::Relaxed);
    }

    /// True while the spool has room.
    pub fn storage_ok(&self) -> bool {
        self.storage_ok.load(Ordering::Relaxed)
    }
}

/// A message ready to be stored: the caller makes it durable, then calls
/// [`Session::stored`].
#[derive(Debug)]
pub struct Message {
    /// Sender, recipients, DSN requests and origin.
    pub envelope: Envelope,
    /// The content, dot-unstuffed, CRLF line endings, ending with CRLF
    /// unless empty; without our `Received:` header.
    pub content: Vec<u8>,
}

/// Why storing a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The file system is full.
    NoSpace,
    /// Any other storage failure.
    Io,
    /// The message could not be prepared for storage (a DKIM signature
    /// could not be made): a temporary local error, not storage.
    Local,
}

/// What the caller must do next.
#[derive(Debug)]
pub enum Step {
    /// Read more input, after writing any pending replies.
    NeedInput,
    /// Send this reply.
    Reply(Reply),
    /// Send this reply, then close the connection.
    Close(Reply),
    /// Send this reply, discard any input already buffered (RFC 3207
    /// section 4.2 and CVE-2011-0411), run the TLS handshake, then call
    /// [`Session::tls_started`].
    StartTls(Reply),
    /// Store this message, then call [`Session::stored`] and send its reply.
    Store(Box<Message>),
    /// Check these credentials, then call [`Session::authenticated`] with
    /// the verdict and act on the step it returns; poll only after that.
    /// Drop the credentials once checked (that wipes the password).
    Authenticate(Credentials),
}

/// Where the input stands.
#[derive(Debug)]
enum Phase {
    /// Reading command lines.
    Command,
    /// Skipping the rest of a line that was too long.
    SkipLine(Overlong),
    /// Reading the client's response to a `334` challenge.
    Auth(Exchange),
    /// [`Step::Authenticate`] was returned; waiting for the verdict.
    AwaitVerdict,
    /// Reading the text after DATA.
    Data(Box<DataDecoder>),
    /// Reading the octets of a BDAT chunk.
    Chunk {
        remaining: u64,
        last: bool,
        /// The chunk belongs to no transaction and is only read and dropped.
        refused: Option<Reply>,
    },
}

/// What kind of line was too long, which decides the reply.
#[derive(Debug, Clone, Copy)]
enum Overlong {
    /// A command line: `500 5.5.2`.
    Command,
    /// An AUTH command line (its initial response) or a response line of an
    /// AUTH exchange: `500 5.5.6` (RFC 4954 sections 4 and 6), and the
    /// exchange fails.
    Auth,
}

/// Content gathered from BDAT chunks so far.
#[derive(Debug)]
struct Chunks {
    content: Vec<u8>,
    checker: LineChecker,
}

/// An open mail transaction (MAIL given).
#[derive(Debug)]
struct Transaction {
    sender: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// RCPTs refused for being over `max_recipients`.
    overshoot: usize,
    chunks: Option<Chunks>,
}

/// The greeting a client gave.
#[derive(Debug, Clone)]
struct Greeting {
    name: String,
    extended: bool,
}

/// A local user handing a message over through mtad's local socket (the
/// `sendmail` command), as the kernel named them (SO_PEERCRED) or, for a
/// message left in the drop directory, as the file's owner says: never as
/// the client claims.
///
/// The envelope records them in [`Origin::auth`] as `local:UID:NAME`
/// (a form no SMTP AUTH user can take: a session refuses AUTH names
/// that start with `local:`), with the protocol `local-esmtp` (or
/// `local-smtp` after HELO), Exim's words for the same thing; and
/// [`received_header`] names them, as Postfix's `from userid N` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    /// The real user id.
    pub uid: u32,
    /// The login name, or the uid in digits when it has none that can
    /// go into an envelope.
    pub name: String,
}

impl LocalUser {
    /// A user by uid and, when the user database has one, login name.
    /// A name that could not be carried (a control or white space
    /// character, a colon, empty) is replaced by the uid.
    pub fn new(uid: u32, name: Option<&str>) -> LocalUser {
        let usable = |n: &&str| {
            !n.is_empty()
                && n.len() <= 256
                && !n
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == ':')
        };
        LocalUser {
            uid,
            name: name
                .filter(usable)
                .map_or_else(|| uid.to_string(), str::to_owned),
        }
    }

    /// The form `Origin::auth` records: `local:UID:NAME`.
    pub fn auth_name(&self) -> String {
        format!("{LOCAL_PREFIX}{}:{}", self.uid, self.name)
    }

    /// The local user an origin records, when the message was handed
    /// over locally (the protocol and the `auth` form both say so).
    pub fn of(origin: &Origin) -> Option<LocalUser> {
        if !origin.protocol.starts_with("local-") {
            return None;
        }
        let rest = origin.auth.as_deref()?.strip_prefix(LOCAL_PREFIX)?;
        let (uid, name) = rest.split_once(':')?;
        Some(LocalUser {
            uid: uid.parse().ok()?,
            name: name.to_owned(),
        })
    }
}

/// What starts the `auth` of a local submission.
const LOCAL_PREFIX: &str = "local:";

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    admission: Arc<Admission>,
    peer: IpAddr,
    greeting: Option<Greeting>,
    tls: Option<String>,
    transaction: Option<Transaction>,
    phase: Phase,
    errors: u32,
    close_pending: bool,
    /// The user the caller accepted after AUTH, or the local user of a
    /// [`Session::local`] (in [`LocalUser::auth_name`]'s form).
    user: Option<String>,
    /// A local submission ([`Session::local`]).
    local: bool,
    /// The size of the session's last message: the first allocation for
    /// the next one's text, so a session of like messages does not grow
    /// each one's buffer by doubling (and copying) from a few KiB.
    last_size: usize,
}

impl Session {
    /// A new session with a client at `peer`.
    pub fn new(config: Arc<SessionConfig>, admission: Arc<Admission>, peer: IpAddr) -> Session {
        Session {
            config,
            admission,
            peer,
            greeting: None,
            tls: None,
            transaction: None,
            phase: Phase::Command,
            errors: 0,
            close_pending: false,
            user: None,
            local: false,
            last_size: 0,
        }
    }

    /// A session with a local user, who was identified before it started
    /// (mtad's local socket, for the `sendmail` command): like an
    /// authenticated session it may relay, and the user goes into the
    /// envelope ([`LocalUser`]); AUTH and STARTTLS are not offered
    /// (`config.auth` and `config.tls_available` are the caller's, and
    /// should be off), and `tls_started` is never called.
    pub fn local(
        config: Arc<SessionConfig>,
        admission: Arc<Admission>,
        user: &LocalUser,
    ) -> Session {
        let mut session = Session::new(config, admission, IpAddr::from([127, 0, 0, 1]));
        session.user = Some(user.auth_name());
        session.local = true;
        session
    }

    /// The 220 banner.
    pub fn banner(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP mtad", self.config.hostname))
    }

    /// The reply to a client that stayed silent too long.
    pub fn timeout(&self) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{} Error: timeout exceeded", self.config.hostname),
        )
    }

    /// The reply when the server stops while the session is open.
    pub fn shutting_down(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{} shutting down, try again later", self.config.hostname),
        )
    }

    /// The reply to a connection over the limit, sent instead of the banner.
    pub fn too_many_connections(hostname: &str) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!("{hostname} Error: too many connections, try again later"),
        )
    }

    /// The reply to a connection to a submission port from a client its
    /// failed authentications locked out, sent instead of the banner (on
    /// port 465 before any TLS, which it could only waste).
    pub fn locked_out_at_connect(hostname: &str, client: &str, for_secs: u64) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!(
                "{hostname} Error: too many failed authentications from {client}, try again in {for_secs} seconds"
            ),
        )
    }

    /// The reply to a client over its own connection limit (sessions at
    /// once, or new sessions per minute), sent instead of the banner.
    pub fn too_many_connections_from(hostname: &str, client: &str, per_minute: bool) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            if per_minute {
                format!("{hostname} Error: too many new connections per minute from {client}, try again later")
            } else {
                format!("{hostname} Error: too many connections from {client}, try again later")
            },
        )
    }

    /// The size to expect of this session's first message text, when the
    /// caller knows the size of recent messages: its buffer starts there
    /// (an eighth above it) instead of doubling, and copying, its way up
    /// from a few KiB. A hint only: it changes no limit, and later
    /// messages start at the size of the session's last one.
    pub fn expect_size(&mut self, size: usize) {
        if self.last_size == 0 {
            self.last_size = size;
        }
    }

    /// True while message text (DATA, or a BDAT chunk) is being read: its
    /// deadline grows with the octets received.
    pub fn is_reading_text(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::Chunk { .. })
    }

    /// While DATA text is read and `input` holds nothing: the buffer the
    /// next read of text may go to, straight after the content decoded so
    /// far, which saves copying every octet out of the input buffer. Then
    /// [`text_read`](Self::text_read) with the length it had before.
    pub fn text_room(&mut self, input: &BytesMut) -> Option<&mut Vec<u8>> {
        match &mut self.phase {
            Phase::Data(decoder) if input.is_empty() => decoder.room(),
            _ => None,
        }
    }

    /// Decodes the text read into [`text_room`](Self::text_room) past
    /// `start`. Whatever followed its end (commands pipelined after it)
    /// goes to `input`; [`poll`](Self::poll) then finishes the message.
    pub fn text_read(&mut self, start: usize, input: &mut BytesMut) {
        if let Phase::Data(decoder) = &mut self.phase {
            decoder.appended(start, input);
        }
    }

    /// True when the next command waiting in `input` is a whole MAIL line
    /// that would open a transaction: the session reads commands and has
    /// none open. The daemon's in-flow control (`smtp.in_flow_delay`)
    /// waits before it; a line still coming is not counted, or each read
    /// of it would wait again.
    pub fn opens_transaction(&self, input: &[u8]) -> bool {
        matches!(self.phase, Phase::Command)
            && self.transaction.is_none()
            && input.len() >= 5
            && input[..4].eq_ignore_ascii_case(b"MAIL")
            && matches!(input[4], b' ' | b'\t')
            && input.contains(&b'\n')
    }

    /// True while a transaction is open or message text is being read: a
    /// stop lets such a session finish before it closes it.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some() || matches!(self.phase, Phase::Data(_) | Phase::Chunk { .. })
    }

    /// True once the TLS handshake is done.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The user the session authenticated as (AUTH), if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Records a finished TLS handshake: RFC 3207 section 4.2, the session
    /// starts over and the client must send EHLO again (and AUTH again:
    /// nothing learnt before TLS is kept).
    ///
    /// Implicit TLS (port 465, RFC 8314) is a session whose caller runs the
    /// handshake first and calls this before it sends the banner.
    pub fn tls_started(&mut self, description: String) {
        self.tls = Some(description);
        self.greeting = None;
        self.transaction = None;
        self.user = None;
        self.phase = Phase::Command;
    }

    /// The step once the caller checked the credentials of a
    /// [`Step::Authenticate`]: a reply, or a reply and close for
    /// [`AuthVerdict::LockedOut`]. Without an exchange waiting for it (a
    /// caller's mistake) the verdict is ignored: [`Step::NeedInput`].
    ///
    /// A failure (535, 454) is an error reply and counts toward
    /// `max_errors`, as Postfix counts it toward its error limits: a
    /// client guessing passwords is cut off by the session too, whatever
    /// the caller's own limits.
    pub fn authenticated(&mut self, verdict: AuthVerdict) -> Step {
        if !matches!(self.phase, Phase::AwaitVerdict) {
            return Step::NeedInput;
        }
        self.phase = Phase::Command;
        match verdict {
            // The name goes into envelopes, where no string may hold a
            // control character.
            AuthVerdict::Accepted { user }
                if !user.is_empty()
                    && !user.chars().any(char::is_control)
                    && !user.starts_with(LOCAL_PREFIX) =>
            {
                self.user = Some(user);
                Step::Reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            AuthVerdict::Rejected => self.reply(Reply::new(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            )),
            AuthVerdict::Accepted { .. } | AuthVerdict::Unavailable => {
                self.reply(Reply::new(454, "4.7.0", "Temporary authentication failure"))
            }
            AuthVerdict::LockedOut => {
                self.errors += 1;
                Step::Close(Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Error: too many failed authentications, closing connection",
                        self.config.hostname
                    ),
                ))
            }
        }
    }

    /// The reply once the caller tried to store the message of a
    /// [`Step::Store`].
    pub fn stored(&mut self, result: Result<QueueId, StoreError>) -> Reply {
        match result {
            Ok(id) => Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
            Err(StoreError::Local) => self.error(Reply::new(
                451,
                "4.3.0",
                "Local error in processing, try again later",
            )),
            Err(StoreError::NoSpace | StoreError::Io) => self.error(Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage, try again later",
            )),
        }
    }

    /// Runs the session on buffered input; consumes what it uses.
    pub fn poll(&mut self, input: &mut BytesMut) -> Step {
        if self.close_pending {
            return Step::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} Error: too many errors", self.config.hostname),
            ));
        }
        loop {
            match &mut self.phase {
                Phase::Command => {
                    let max = self.config.max_command_line;
                    let window = &input[..input.len().min(max)];
                    match window.iter().position(|&b| b == b'\n') {
                        Some(end) => {
                            let mut line = input.split_to(end + 1);
                            let step = self.command_line(&line);
                            if is_auth_line(&line) {
                                // It may hold an initial response.
                                line[..].zeroize();
                            }
                            if matches!(step, Step::NeedInput) {
                                // BDAT: its chunk may already be buffered.
                                continue;
                            }
                            return step;
                        }
                        None if input.len() >= max => {
                            // RFC 4954 section 4: the AUTH command is held
                            // to the command line limit like any other; a
                            // long initial response belongs after a `334`.
                            let kind = if self.auth_policy().is_some() && is_auth_line(window) {
                                input[..max].zeroize();
                                Overlong::Auth
                            } else {
                                Overlong::Command
                            };
                            // Only what was looked at goes; the rest of the
                            // line is skipped as it arrives.
                            input.advance(max);
                            self.phase = Phase::SkipLine(kind);
                        }
                        None => return Step::NeedInput,
                    }
                }
                Phase::SkipLine(kind) => {
                    let kind = *kind;
                    let found = input.iter().position(|&b| b == b'\n');
                    let used = found.map_or(input.len(), |end| end + 1);
                    if matches!(kind, Overlong::Auth) {
                        input[..used].zeroize();
                    }
                    input.advance(used);
                    if found.is_none() {
                        return Step::NeedInput;
                    }
                    self.phase = Phase::Command;
                    return self.reply(self.overlong(kind));
                }
                Phase::Auth(_) => {
                    // RFC 4954 section 4: responses may be far longer than
                    // commands; the limit is RESPONSE_LIMIT plus CRLF.
                    let max = auth::RESPONSE_LIMIT + 2;
                    let window = &input[..input.len().min(max)];
                    match window.iter().position(|&b| b == b'\n') {
                        Some(end) => {
                            let mut line = input.split_to(end + 1);
                            let step = self.auth_line(&line);
                            line[..].zeroize();
                            return step;
                        }
                        None if input.len() >= max => {
                            input[..max].zeroize();
                            input.advance(max);
                            self.phase = Phase::SkipLine(Overlong::Auth);
                        }
                        None => return Step::NeedInput,
                    }
                }
                Phase::AwaitVerdict => {
                    // The caller polled without a verdict: as if the check
                    // could not be made, never as a success.
                    return self.authenticated(AuthVerdict::Unavailable);
                }
                Phase::Data(decoder) => {
                    if !decoder.ended() {
                        let (used, done) = decoder.feed(input);
                        input.advance(used);
                        if !done {
                            return Step::NeedInput;
                        }
                    }
                    let Phase::Data(decoder) = std::mem::replace(&mut self.phase, Phase::Command)
                    else {
                        unreachable!("phase checked above");
                    };
                    let text = decoder.finish();
                    return self.message_complete(text);
                }
                Phase::Chunk {
                    remaining,
                    last,
                    refused,
                } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let bytes = input.split_to(take);
                    *remaining -= take as u64;
                    let (done, last, refused) = (*remaining == 0, *last, refused.take());
                    if refused.is_none() {
                        self.take_chunk_bytes(&bytes);
                    }
                    if !done {
                        if let Phase::Chunk { refused: slot, .. } = &mut self.phase {
                            *slot = refused;
                        }
                        return Step::NeedInput;
                    }
                    self.phase = Phase::Command;
                    return match refused {
                        Some(reply) => self.reply(reply),
                        None => self.chunk_complete(last),
                    };
                }
            }
        }
    }

    /// Counts an error reply; past the limit, the session closes after it.
    fn error(&mut self, reply: Reply) -> Reply {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.close_pending = true;
        }
        reply
    }

    /// The reply to a line that was too long.
    fn overlong(&self, kind: Overlong) -> Reply {
        match kind {
            Overlong::Command => {
                let max = self.config.max_command_line;
                Reply::new(500, "5.5.2", format!("Line too long (limit {max} octets)"))
            }
            Overlong::Auth => Reply::new(
                500,
                "5.5.6",
                format!(
                    "Authentication exchange line is too long (limit {} octets for AUTH, {} for a response after 334)",
                    self.config.max_command_line,
                    auth::RESPONSE_LIMIT
                ),
            ),
        }
    }

    /// The AUTH policy, when it offers a mechanism.
    fn auth_policy(&self) -> Option<&AuthPolicy> {
        self.config
            .auth
            .as_ref()
            .filter(|p| !p.mechanisms.is_empty())
    }

    /// AUTH may run now: offered, and under TLS when the policy wants it
    /// (a loopback client is exempt).
    fn auth_allowed_now(&self, policy: &AuthPolicy) -> bool {
        !policy.require_tls || self.tls.is_some() || self.peer.to_canonical().is_loopback()
    }

    /// The AUTH command (RFC 4954 section 4).
    fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Step {
        let Some(policy) = self.auth_policy() else {
            return self.reply(Reply::new(
                502,
                "5.5.1",
                "Error: authentication not enabled",
            ));
        };
        let mechanism = mechanism
            .parse::<Mechanism>()
            .ok()
            .filter(|m| policy.mechanisms.contains(m));
        let refusal = if !self.greeting.as_ref().is_some_and(|g| g.extended) {
            // AUTH is an ESMTP extension: a client that did not say EHLO
            // was never offered it.
            Some(Reply::new(503, "5.5.1", "Error: send EHLO first"))
        } else if self.user.is_some() {
            // RFC 4954 section 4: after a successful AUTH, no more AUTH.
            Some(Reply::new(503, "5.5.1", "Error: already authenticated"))
        } else if self.transaction.is_some() {
            // RFC 4954 section 4: not during a mail transaction.
            Some(Reply::new(
                503,
                "5.5.1",
                "Error: MAIL transaction in progress",
            ))
        } else if !self.auth_allowed_now(policy) {
            // RFC 4954 section 6.
            Some(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ))
        } else if mechanism.is_none() {
            Some(Reply::new(504, "5.5.4", "Unrecognized authentication type"))
        } else {
            None
        };
        if let Some(reply) = refusal {
            return self.reply(reply);
        }
        let mechanism = mechanism.expect("checked above");
        let progress = auth::start(mechanism, initial);
        self.auth_progress(progress)
    }

    /// One response line of an AUTH exchange (LF included).
    fn auth_line(&mut self, line: &[u8]) -> Step {
        let Phase::Auth(exchange) = std::mem::replace(&mut self.phase, Phase::Command) else {
            unreachable!("called in the Auth phase only");
        };
        // The same framing as a command line: a bare LF ends the session.
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return self.bare_lf();
        };
        let progress = auth::respond(exchange, body);
        self.auth_progress(progress)
    }

    fn auth_progress(&mut self, progress: Progress) -> Step {
        match progress {
            Progress::Challenge(reply, exchange) => {
                self.phase = Phase::Auth(exchange);
                Step::Reply(reply)
            }
            Progress::Done(credentials) => {
                self.phase = Phase::AwaitVerdict;
                Step::Authenticate(credentials)
            }
            Progress::Failed(reply) => {
                self.phase = Phase::Command;
                self.reply(reply)
            }
        }
    }

    /// A line ended by a bare LF: the session ends (see `command_line`).
    fn bare_lf(&mut self) -> Step {
        self.errors += 1;
        Step::Close(Reply::new(
            500,
            "5.5.2",
            "Syntax error: bare LF in command, lines must end with CRLF; closing connection",
        ))
    }

    fn reply(&mut self, reply: Reply) -> Step {
        let reply = if reply.is_error() {
            self.error(reply)
        } else {
            reply
        };
        Step::Reply(reply)
    }

    /// Checks the framing of one line (LF included) and runs it.
    fn command_line(&mut self, line: &[u8]) -> Step {
        // RFC 5321 section 2.3.8: lines end with CRLF. What follows a bare
        // LF may be a command smuggled past a lenient server upstream, so
        // nothing after it runs: the session ends here, as Postfix's
        // smtpd_forbid_bare_newline does. A bare CR cannot end a line at
        // all, so the line holding it is refused whole.
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return self.bare_lf();
        };
        if body.contains(&b'\r') {
            return self.reply(Reply::new(500, "5.5.2", "Syntax error: bare CR in command"));
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return self.reply(Reply::new(
                501,
                "5.5.2",
                "Syntax error: command is not UTF-8",
            ));
        };
        if text.chars().any(|c| c.is_control() && c != '\t') {
            return self.reply(Reply::new(
                501,
                "5.5.2",
                "Syntax error: control character in command",
            ));
        }
        match Command::parse(text) {
            Ok(command) => self.command(command),
            Err(CommandError::Unknown) => {
                self.reply(Reply::new(500, "5.5.1", "Error: command not recognized"))
            }
            Err(CommandError::Syntax(usage)) => {
                if text.len() >= 4 && text[..4].eq_ignore_ascii_case("BDAT") {
                    // The chunk size is unknown, so the octets that follow
                    // cannot be told from commands: close rather than run
                    // them (RFC 3030 section 3).
                    self.errors += 1;
                    return Step::Close(Reply::new(501, "5.5.4", format!("Syntax: {usage}")));
                }
                self.reply(Reply::new(501, "5.5.4", format!("Syntax: {usage}")))
            }
            Err(CommandError::Path(_)) => {
                let is_mail = text[..4].eq_ignore_ascii_case("MAIL");
                self.reply(bad_address(is_mail, AddressError::Syntax))
            }
        }
    }

    fn command(&mut self, command: Command) -> Step {
        match command {
            Command::Ehlo(name) => {
                self.transaction = None;
                self.greeting = Some(Greeting {
                    name,
                    extended: true,
                });
                Step::Reply(self.ehlo_reply())
            }
            Command::Helo(name) => {
                self.transaction = None;
                self.greeting = Some(Greeting {
                    name,
                    extended: false,
                });
                Step::Reply(Reply::plain(250, self.config.hostname.clone()))
            }
            Command::Mail { path, params } => {
                let reply = self.mail(&path, params);
                self.reply(reply)
            }
            Command::Rcpt { path, params } => {
                if let Some(step) = self.over_recipient_limit() {
                    return step;
                }
                let reply = self.rcpt(&path, params);
                self.reply(reply)
            }
            Command::Data => match &self.transaction {
                None => self.reply(need_mail()),
                Some(tx) if tx.recipients.is_empty() => {
                    self.reply(Reply::new(554, "5.5.1", "Error: no valid recipients"))
                }
                Some(tx) if tx.chunks.is_some() => self.reply(Reply::new(
                    503,
                    "5.5.1",
                    "Error: DATA cannot follow BDAT in one transaction",
                )),
                Some(_) => {
                    self.phase = Phase::Data(Box::new(DataDecoder::new(
                        self.config.max_line_length,
                        self.config.max_message_size,
                        self.last_size,
                    )));
                    Step::Reply(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
                }
            },
            Command::Bdat { size, last } => {
                let refused = match &mut self.transaction {
                    None => Some(need_mail()),
                    Some(tx) if tx.recipients.is_empty() => {
                        Some(Reply::new(554, "5.5.1", "Error: no valid recipients"))
                    }
                    Some(tx) => {
                        tx.chunks.get_or_insert_with(|| Chunks {
                            content: Vec::new(),
                            checker: LineChecker::new(self.config.max_line_length),
                        });
                        None
                    }
                };
                // RFC 3030 section 3: the octets of a refused chunk are still
                // read, and dropped.
                self.phase = Phase::Chunk {
                    remaining: size,
                    last,
                    refused,
                };
                Step::NeedInput
            }
            Command::Rset => {
                self.transaction = None;
                Step::Reply(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => Step::Reply(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => Step::Close(Reply::new(
                221,
                "2.0.0",
                format!("{} closing connection", self.config.hostname),
            )),
            Command::Vrfy => Step::Reply(Reply::new(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn => self.reply(Reply::new(502, "5.5.1", "Error: EXPN not available")),
            Command::Help => Step::Reply(Reply::new(
                214,
                "2.0.0",
                format!(
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS{}; see RFC 5321",
                    if self.auth_policy().is_some() { " AUTH" } else { "" }
                ),
            )),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response.as_deref().map(String::as_str)),
            Command::StartTls => {
                if !self.config.tls_available {
                    self.reply(Reply::new(502, "5.5.1", "Error: STARTTLS not available"))
                } else if self.tls.is_some() {
                    self.reply(Reply::new(503, "5.5.1", "Error: TLS already active"))
                } else if self.transaction.is_some() {
                    self.reply(Reply::new(
                        503,
                        "5.5.1",
                        "Error: STARTTLS not allowed during a mail transaction",
                    ))
                } else {
                    Step::StartTls(Reply::new(220, "2.0.0", "Ready to start TLS"))
                }
            }
        }
    }

    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.config.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
            "DSN".to_owned(),
        ];
        if self.config.tls_available && self.tls.is_none() {
            lines.push("STARTTLS".to_owned());
        }
        // Not before TLS when the policy wants TLS (Postfix's
        // smtpd_tls_auth_only), nor once authenticated.
        if let Some(policy) = self.auth_policy() {
            if self.auth_allowed_now(policy) && self.user.is_none() {
                let names: Vec<&str> = policy.mechanisms.iter().map(|m| m.name()).collect();
                lines.push(format!("AUTH {}", names.join(" ")));
            }
        }
        lines.push("HELP".to_owned());
        Reply::multiline(250, None, lines)
    }

    fn mail(&mut self, path: &str, params: Vec<(String, Option<String>)>) -> Reply {
        if self.greeting.is_none() {
            return Reply::new(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.transaction.is_some() {
            return Reply::new(503, "5.5.1", "Error: nested MAIL command");
        }
        if self.user.is_none() && self.auth_policy().is_some_and(|p| p.required_for_mail) {
            // RFC 6409 section 4.3 (submission needs authentication), with
            // RFC 4954 section 6's reply.
            return Reply::new(530, "5.7.0", "Authentication required");
        }
        if !self.admission.storage_ok() {
            return Reply::new(452, "4.3.1", "Insufficient system storage, try again later");
        }
        let params = match mail_params(params, self.auth_policy().is_some()) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let sender = if path.is_empty() {
            ReversePath::Null
        } else {
            match parse_mailbox(path, params.smtputf8) {
                Ok(m) => ReversePath::Mailbox(m),
                Err(e) => return bad_address(true, e),
            }
        };
        if params
            .size
            .is_some_and(|s| s > self.config.max_message_size as u64)
        {
            return Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        if let (Some(user), Some(policy)) = (&self.user, &self.config.sender_policy) {
            if let ReversePath::Mailbox(m) = &sender {
                if !policy.may_send_as(user, &m.to_string()) {
                    return Reply::new(
                        553,
                        "5.7.1",
                        format!("<{m}>: Sender address rejected: not owned by user {user}"),
                    );
                }
            }
            if let Err(limit) = policy.admit_message(user) {
                return Reply::new(
                    450,
                    "4.7.1",
                    format!(
                        "Error: {user} has sent {limit} messages in the last hour, try again later"
                    ),
                );
            }
        }
        let reply = Reply::new(250, "2.1.0", format!("Sender <{sender}> ok"));
        self.transaction = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
            overshoot: 0,
            chunks: None,
        });
        reply
    }

    /// The answer to a RCPT over `max_recipients`, or None when there is
    /// room (or no transaction).
    ///
    /// RFC 5321 section 4.5.3.1.10: `452 4.5.3` is the expected reply, and
    /// the client sends the rest in another transaction; so it is not an
    /// error and never closes the session through `max_errors`, which used
    /// to lose the transaction of a client pipelining many recipients.
    /// Past `recipient_overshoot_limit` of them in one transaction (as
    /// Postfix's `smtpd_recipient_overshoot_limit`, which is reset with the
    /// transaction too) the client is not listening: `421 4.7.0` and close.
    fn over_recipient_limit(&mut self) -> Option<Step> {
        let tx = self.transaction.as_mut()?;
        if tx.recipients.len() < self.config.max_recipients {
            return None;
        }
        tx.overshoot += 1;
        if tx.overshoot > self.config.recipient_overshoot_limit {
            return Some(Step::Close(Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} Error: too many recipients, closing connection",
                    self.config.hostname
                ),
            )));
        }
        Some(Step::Reply(Reply::new(
            452,
            "4.5.3",
            "Error: too many recipients",
        )))
    }

    fn rcpt(&mut self, path: &str, params: Vec<(String, Option<String>)>) -> Reply {
        let Some(tx) = &self.transaction else {
            return need_mail();
        };
        // RFC 5321 section 4.5.1: postmaster without a domain is always
        // accepted.
        let address = if path.eq_ignore_ascii_case("postmaster") {
            Mailbox {
                local: path.to_owned(),
                domain: String::new(),
            }
        } else {
            match parse_mailbox(path, tx.params.smtputf8) {
                Ok(m) => m,
                Err(e) => return bad_address(false, e),
            }
        };
        let (notify, orcpt) = match rcpt_params(params) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let local = address.domain.is_empty()
            || self
                .config
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&address.domain));
        let trusted = self.user.is_some()
            || self
                .config
                .relay_networks
                .iter()
                .any(|n| n.contains(&self.peer));
        if !local && !trusted {
            return Reply::new(554, "5.7.1", format!("<{address}>: Relay access denied"));
        }
        // Decided now, not at delivery: a local recipient that cannot be
        // delivered would otherwise bounce to an unverified sender.
        if local {
            match check_local(&address, self.config.local_recipients.as_ref()) {
                LocalCheck::Known => {}
                LocalCheck::BadName => {
                    return Reply::new(
                        550,
                        "5.1.3",
                        format!("<{address}>: Recipient address rejected: not a valid mailbox name"),
                    )
                }
                LocalCheck::Unknown => {
                    return Reply::new(
                        550,
                        "5.1.1",
                        format!(
                            "<{address}>: Recipient address rejected: User unknown in local recipient table"
                        ),
                    )
                }
            }
        }
        let reply = Reply::new(250, "2.1.5", format!("Recipient <{address}> ok"));
        if let Some(tx) = &mut self.transaction {
            tx.recipients.push(Recipient {
                address,
                notify,
                orcpt,
            });
        }
        reply
    }

    fn take_chunk_bytes(&mut self, bytes: &[u8]) {
        let max = self.config.max_message_size;
        if let Some(chunks) = self.transaction.as_mut().and_then(|t| t.chunks.as_mut()) {
            chunks.checker.push_all(bytes);
            if chunks.content.len() <= max {
                let room = max + 1 - chunks.content.len();
                chunks
                    .content
                    .extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }

    fn chunk_complete(&mut self, last: bool) -> Step {
        let max = self.config.max_message_size;
        let Some(tx) = &mut self.transaction else {
            return Step::NeedInput;
        };
        let Some(chunks) = &mut tx.chunks else {
            return Step::NeedInput;
        };
        if chunks.content.len() > max {
            // RFC 3030 section 3: the transaction fails; chunks already in
            // the pipeline find no transaction and are dropped.
            self.transaction = None;
            return self.reply(size_exceeded());
        }
        if !last {
            let len = chunks.content.len();
            return Step::Reply(Reply::new(250, "2.0.0", format!("{len} octets received")));
        }
        let mut chunks = tx.chunks.take().expect("checked above");
        let text = chunks.checker.finish(false).map(|()| {
            // Delivery relays with DATA, which needs the text to end with a
            // line end.
            if !chunks.content.is_empty() && !chunks.content.ends_with(b"\r\n") {
                chunks.content.extend_from_slice(b"\r\n");
            }
            chunks.content
        });
        self.message_complete(text)
    }

    /// The text of a message is in; the transaction ends either way.
    fn message_complete(&mut self, text: Result<Vec<u8>, TextError>) -> Step {
        let tx = self.transaction.take();
        let content = match text {
            Ok(content) => content,
            Err(e) => return self.reply(text_error(e, self.config.max_line_length)),
        };
        if let Err(why) = check_header_section(&content) {
            return self.reply(Reply::new(554, "5.6.0", format!("Message rejected: {why}")));
        }
        let Some(tx) = tx else {
            return self.reply(need_mail());
        };
        if let (Some(user), Some(policy)) = (&self.user, &self.config.sender_policy) {
            let authors = crate::submission::author_addresses(&content);
            if let Some(other) = authors
                .from
                .iter()
                .chain(&authors.sender)
                .find(|a| !policy.may_write_as(user, a))
            {
                let reply = Reply::new(
                    553,
                    "5.7.1",
                    format!("<{other}>: From/Sender address rejected: not owned by user {user}"),
                );
                return self.reply(reply);
            }
        }
        let greeting = self.greeting.clone().unwrap_or(Greeting {
            name: String::new(),
            extended: false,
        });
        let protocol = if self.local {
            // Exim's words for mail from a local program.
            if greeting.extended {
                "local-esmtp"
            } else {
                "local-smtp"
            }
            .to_owned()
        } else {
            protocol_name(
                greeting.extended,
                tx.params.smtputf8,
                self.tls.is_some(),
                self.user.is_some(),
            )
        };
        let envelope = Envelope {
            sender: tx.sender,
            recipients: tx.recipients,
            body: tx.params.body,
            smtputf8: tx.params.smtputf8,
            ret: tx.params.ret,
            envid: tx.params.envid,
            origin: Origin {
                client_ip: self.peer,
                helo: greeting.name,
                protocol,
                tls: self.tls.clone(),
                auth: self.user.clone(),
            },
            arrival: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        self.last_size = content.len();
        Step::Store(Box::new(Message { envelope, content }))
    }
}

/// The `with` word of `Received:` (RFC 3848, RFC 6531): `S` for TLS, `A`
/// for AUTH. AUTH needs EHLO here, so a HELO session never has the `A`
/// (no `SMTPA` is registered); a client that authenticated and then sent
/// HELO is named by its greeting.
fn protocol_name(extended: bool, smtputf8: bool, tls: bool, auth: bool) -> String {
    let base = match (extended, smtputf8) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "UTF8SMTP",
    };
    let tls = if tls { "S" } else { "" };
    let auth = if auth && extended { "A" } else { "" };
    format!("{base}{tls}{auth}")
}

/// The line (or its start) is an AUTH command, which may carry a password.
fn is_auth_line(line: &[u8]) -> bool {
    line.get(..5)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"AUTH "))
}

fn need_mail() -> Reply {
    Reply::new(503, "5.5.1", "Error: need MAIL command")
}

fn size_exceeded() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}

fn bad_address(sender: bool, e: AddressError) -> Reply {
    match (e, sender) {
        (AddressError::NeedsSmtpUtf8, _) => Reply::new(
            553,
            "5.6.7",
            "Non-ASCII address needs the SMTPUTF8 parameter (RFC 6531)",
        ),
        // RFC 3463: X.1.7 is the sender's address syntax, X.1.3 any other.
        (AddressError::Syntax, true) => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        (AddressError::Syntax, false) => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
    }
}

fn text_error(e: TextError, max_line: usize) -> Reply {
    match e {
        TextError::BareLf => Reply::new(
            554,
            "5.6.0",
            "Message rejected: bare LF in message text (RFC 5321 section 2.3.8), lines must end with CRLF",
        ),
        TextError::BareCr => Reply::new(
            554,
            "5.6.0",
            "Message rejected: bare CR in message text (RFC 5321 section 2.3.8), lines must end with CRLF",
        ),
        TextError::Nul => Reply::new(
            554,
            "5.6.0",
            "Message rejected: NUL octet in message text (RFC 6152)",
        ),
        TextError::TooBig => size_exceeded(),
        TextError::LineTooLong => Reply::new(
            500,
            "5.5.2",
            format!("Message rejected: line longer than {max_line} octets (RFC 5321 section 4.5.3.1.6)"),
        ),
    }
}

/// A message must open with a header section (RFC 5322 section 2.1): its
/// first line is a header field, and mail-parser finds fields in it.
fn check_header_section(content: &[u8]) -> Result<(), &'static str> {
    let first_line = content.split(|&b| b == b'\n').next().unwrap_or_default();
    let name_end = first_line.iter().position(|&b| b == b':');
    let is_field = match name_end {
        Some(end) if end > 0 => first_line[..end].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    };
    if !is_field {
        return Err(
            "no header section; a message starts with header fields (RFC 5322 section 2.1)",
        );
    }
    let parsed = mail_parser::MessageParser::default().parse_headers(content);
    match parsed {
        Some(message) if !message.headers().is_empty() => Ok(()),
        _ => Err("the header section cannot be parsed (RFC 5322 section 2.2)"),
    }
}

/// The `Received:` header for a message (RFC 5321 section 4.4), CRLF ended.
///
/// It never names the authenticated user (the `A` of `ESMTPSA` says there
/// was one), as Postfix's default `smtpd_sasl_authenticated_header = no`:
/// the header travels with the message to every recipient.
///
/// A local submission ([`LocalUser`]) names its user instead of a client:
/// `from local user NAME (uid N)`, as the kernel gave them, whatever the
/// client said in EHLO.
pub fn received_header(hostname: &str, envelope: &Envelope, id: QueueId) -> String {
    use std::fmt::Write as _;
    let origin = &envelope.origin;
    // One string, written into (writing to a String cannot fail).
    let mut h = String::with_capacity(256);
    h.push_str("Received: from ");
    let _ = match LocalUser::of(origin) {
        Some(user) => write!(h, "local user {} (uid {})", user.name, user.uid),
        None => match origin.client_ip {
            IpAddr::V4(v4) => write!(h, "{} ([{v4}])", origin.helo),
            IpAddr::V6(v6) => write!(h, "{} ([IPv6:{v6}])", origin.helo),
        },
    };
    let _ = write!(
        h,
        "\r\n\tby {hostname} (mtad) with {} id {id}",
        origin.protocol
    );
    if let Some(tls) = &origin.tls {
        let _ = write!(h, "\r\n\t(using {tls})");
    }
    // Name the recipient only when there is one, as Postfix does, so that
    // one copy does not disclose the others.
    if let [only] = envelope.recipients.as_slice() {
        let _ = write!(h, "\r\n\tfor <{}>", only.address);
    }
    let _ = write!(h, "; {}\r\n", crate::date::rfc5322_date(envelope.arrival));
    h
}

#[cfg(test)]
mod local_tests {
    use super::*;

    fn config() -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 10_000,
            max_recipients: 10,
            recipient_overshoot_limit: 10,
            max_command_line: 512,
            max_line_length: 1000,
            max_errors: 5,
            tls_available: false,
            local_domains: vec!["local.test".into()],
            local_recipients: None,
            relay_networks: Vec::new(),
            auth: None,
            sender_policy: None,
        })
    }

    /// Feeds `input` and returns the replies as sent and what was stored.
    fn run(session: &mut Session, input: &str) -> (Vec<String>, Vec<Message>) {
        let mut buf = BytesMut::from(input.as_bytes());
        let (mut replies, mut stored) = (Vec::new(), Vec::new());
        loop {
            match session.poll(&mut buf) {
                Step::NeedInput => return (replies, stored),
                Step::Reply(r) | Step::Close(r) | Step::StartTls(r) => {
                    let mut wire = Vec::new();
                    r.write_to(&mut wire);
                    replies.push(String::from_utf8(wire).unwrap());
                }
                Step::Store(m) => {
                    stored.push(*m);
                    let r = session.stored(Ok(QueueId::new(7)));
                    replies.push(r.code.to_string());
                }
                Step::Authenticate(_) => panic!("no AUTH in a local session"),
            }
        }
    }

    /// Only a MAIL that would open a transaction counts: not one inside a
    /// transaction, not while text is read, not another command.
    #[test]
    fn opens_transaction_is_a_mail_command_outside_a_transaction() {
        let user = LocalUser::new(1000, Some("alice"));
        let mut s = Session::local(config(), Arc::new(Admission::default()), &user);
        run(&mut s, "EHLO h\r\n");
        assert!(s.opens_transaction(b"MAIL FROM:<a@b.test>\r\n"));
        assert!(s.opens_transaction(b"mail FROM:<a@b.test>\r\n"));
        assert!(!s.opens_transaction(b"MAIL"), "not yet a command");
        assert!(
            !s.opens_transaction(b"MAIL FROM:<a@b.test>"),
            "not yet a whole line"
        );
        assert!(!s.opens_transaction(b"MAILX FROM:<a@b.test>\r\n"));
        assert!(!s.opens_transaction(b"RCPT TO:<x@remote.test>\r\n"));
        assert!(!s.opens_transaction(b"NOOP\r\n"));
        run(&mut s, "MAIL FROM:<a@b.test>\r\n");
        assert!(
            !s.opens_transaction(b"MAIL FROM:<a@b.test>\r\n"),
            "a transaction is open"
        );
        run(&mut s, "RCPT TO:<x@remote.test>\r\nDATA\r\n");
        assert!(
            !s.opens_transaction(b"MAIL FROM:<a@b.test>\r\n"),
            "text is being read"
        );
        run(&mut s, "hi\r\n.\r\n");
        assert!(s.opens_transaction(b"MAIL FROM:<a@b.test>\r\n"));
    }

    #[test]
    fn a_local_session_relays_records_its_user_and_offers_no_auth() {
        let user = LocalUser::new(1000, Some("alice"));
        let mut s = Session::local(config(), Arc::new(Admission::default()), &user);
        let (replies, stored) = run(
            &mut s,
            "EHLO whoever-i-say\r\nAUTH PLAIN AGFsaWNlAHgK\r\nMAIL FROM:<root@elsewhere.test>\r\n\
             RCPT TO:<x@remote.test>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\n",
        );
        assert!(replies[0].starts_with("250-mx.test"), "{replies:?}");
        assert!(
            !replies[0].contains("AUTH") && !replies[0].contains("STARTTLS"),
            "{replies:?}"
        );
        assert!(replies[1].starts_with("502"), "{replies:?}");
        assert!(
            replies[3].starts_with("250 2.1.5"),
            "relay allowed: {replies:?}"
        );
        assert_eq!(stored.len(), 1);
        let origin = &stored[0].envelope.origin;
        assert_eq!(origin.auth.as_deref(), Some("local:1000:alice"));
        assert_eq!(origin.protocol, "local-esmtp");
        assert_eq!(LocalUser::of(origin), Some(user));
        let header = received_header("mx.test", &stored[0].envelope, QueueId::new(7));
        assert!(
            header.starts_with("Received: from local user alice (uid 1000)\r\n\tby mx.test (mtad) with local-esmtp id 0000000000000007\r\n\tfor <x@remote.test>; "),
            "{header}"
        );
        assert!(!header.contains("whoever"), "{header}");
    }

    /// The first message's buffer starts at the size the caller expects
    /// (an eighth above it, room for the fields mtad puts in front), the
    /// next at the size of the session's last message; a hint given
    /// after the first message changes nothing.
    #[test]
    fn the_first_text_buffer_starts_at_the_expected_size() {
        let message = |s: &mut Session, lines: usize| {
            let text = "x".repeat(78) + "\r\n";
            let input = format!(
                "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\nSubject: s\r\n\r\n{}.\r\n",
                text.repeat(lines)
            );
            let (_, mut stored) = run(s, &input);
            stored.pop().expect("stored").content
        };
        let mut s = Session::new(
            config(),
            Arc::new(Admission::default()),
            "192.0.2.1".parse().unwrap(),
        );
        run(&mut s, "EHLO c\r\n");
        s.expect_size(8_000);
        let first = message(&mut s, 10);
        assert_eq!(first.len(), 814);
        assert!(first.capacity() >= 9_000, "{}", first.capacity());
        s.expect_size(50_000);
        let second = message(&mut s, 10);
        assert!(
            (814..=8_192).contains(&second.capacity()),
            "the last message's size, not the hint: {}",
            second.capacity()
        );
    }

    #[test]
    fn a_network_session_is_never_taken_for_a_local_one() {
        // Not local: the protocol is not local-..., even if an AUTH name
        // looked like a local user's (the session refuses such names).
        let mut s = Session::new(
            config(),
            Arc::new(Admission::default()),
            "192.0.2.1".parse().unwrap(),
        );
        let (_, stored) = run(
            &mut s,
            "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\n",
        );
        let mut origin = stored[0].envelope.origin.clone();
        assert_eq!(LocalUser::of(&origin), None);
        origin.auth = Some("local:0:root".into());
        assert_eq!(LocalUser::of(&origin), None, "the protocol is ESMTP");
        let header = received_header("mx.test", &stored[0].envelope, QueueId::new(7));
        assert!(
            header.starts_with("Received: from c ([192.0.2.1])"),
            "{header}"
        );
    }

    #[test]
    fn an_auth_user_named_like_a_local_one_is_refused() {
        let mut config = (*config()).clone();
        config.auth = Some(AuthPolicy {
            mechanisms: vec![Mechanism::Plain],
            require_tls: false,
            required_for_mail: false,
        });
        let mut s = Session::new(
            Arc::new(config),
            Arc::new(Admission::default()),
            "192.0.2.1".parse().unwrap(),
        );
        let mut buf = BytesMut::from(&b"EHLO c\r\nAUTH PLAIN AGEAYgo=\r\n"[..]);
        assert!(matches!(s.poll(&mut buf), Step::Reply(_)));
        assert!(matches!(s.poll(&mut buf), Step::Authenticate(_)));
        let Step::Reply(reply) = s.authenticated(AuthVerdict::Accepted {
            user: "local:0:root".into(),
        }) else {
            panic!("a reply");
        };
        assert_eq!(reply.code, 454);
        assert_eq!(s.user(), None);
    }

    #[test]
    fn local_user_names_that_cannot_be_carried_become_the_uid() {
        assert_eq!(LocalUser::new(5, Some("bob")).name, "bob");
        for bad in [None, Some(""), Some("a b"), Some("a:b"), Some("a\nb")] {
            assert_eq!(LocalUser::new(5, bad).name, "5", "{bad:?}");
        }
        assert_eq!(LocalUser::new(0, Some("root")).auth_name(), "local:0:root");
    }
}
