//! `mta-init queue ...`: look into the queue and steer it, on the live
//! daemon, through the control socket.
//!
//! Exit codes: 0 done; 1 the daemon is not reachable or refused, or an
//! unknown queue name; 2 bad usage; 3 no such message (`show`, or an action on one queue id); 4
//! this user may not use the control socket.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use mta_config::Config;
use mta_control::{
    ActionReport, ErrorKind, MessageDetail, MessageRow, Queue, QueueAction, QueueFilter,
    QueueRequest, QueueSummary, RecipientRow, Request, Response, Selection,
};
use mta_envelope::{BodyType, Envelope, Recipient, Ret};

use crate::localtime;
use crate::wording::{count, humanize};

/// Exit code when the message asked for is not in the queue.
pub const EXIT_NOT_FOUND: u8 = 3;

/// The `queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueVerb {
    /// List queued messages, oldest first, like mailq: each recipient with
    /// its status, attempts and last reply. Streamed page by page.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per message and line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Messages fetched per request.
        #[arg(long, default_value_t = 200)]
        page: usize,
        /// Stop after this many messages.
        #[arg(long)]
        max: Option<u64>,
    },
    /// One message: envelope, every attempt's reply per recipient,
    /// headers.
    Show {
        /// The queue id.
        id: String,
        /// Print the body too.
        #[arg(long)]
        body: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Messages per destination domain and age, like Postfix's qshape.
    Summary {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Show at most this many domains (0: all).
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Retry now (qmail's ALRM, postqueue -f); held messages stay held.
    Flush {
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Hold: never attempted and never expiring until released (postsuper -h).
    Hold {
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Release held messages; they are due at once (postsuper -H).
    Release {
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Delete (postsuper -d). With --domain, only the recipients at that
    /// domain. A message being delivered is deleted when its attempt ends.
    Delete {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Send the sender a DSN (failed, 5.0.0) for what is deleted.
        #[arg(long)]
        bounce: bool,
    },
}

/// The filters of `list` and `summary`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// One queue.
    #[arg(long, value_enum, value_name = "QUEUE")]
    queue: Option<Queue>,
    /// A recipient domain.
    #[arg(long)]
    domain: Option<String>,
    /// The sender: an address, @domain, or <> for the null sender.
    #[arg(long)]
    sender: Option<String>,
    /// Arrived at least this long ago: 30m, 2h, 3d...
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// A recipient in this state: pending, deferred, delivered, failed.
    #[arg(long)]
    status: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> QueueFilter {
        QueueFilter {
            queue: self.queue,
            domain: self.domain.clone(),
            sender: self.sender.clone(),
            older_than_secs: self.older_than.map(|d| d.as_secs()),
            status: self.status.clone(),
        }
    }
}

/// Which messages an action takes: one id, a domain, or all.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SelectionArgs {
    /// A queue id.
    id: Option<String>,
    /// Every message with a recipient still to be delivered at this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Every message.
    #[arg(long)]
    all: bool,
}

impl SelectionArgs {
    fn selection(&self) -> Result<Selection, Failure> {
        // clap's group lets exactly one through.
        Selection::from_fields(self.id.clone(), self.domain.clone(), self.all)
            .map_err(|e| Failure::Other(e.to_string()))
    }
}

/// How long one request may take: a summary or a bulk action walks the
/// whole queue.
const TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(config: &Config, verb: QueueVerb) -> ExitCode {
    let result = match verb {
        QueueVerb::List {
            filter,
            json,
            page,
            max,
        } => list(config, filter.filter(), json, page, max),
        QueueVerb::Show { id, body, json } => show(config, id, body, json),
        QueueVerb::Summary { filter, json, top } => summary(config, filter.filter(), json, top),
        QueueVerb::Flush { selection } => act(config, QueueAction::Flush, selection, false),
        QueueVerb::Hold { selection } => act(config, QueueAction::Hold, selection, false),
        QueueVerb::Release { selection } => act(config, QueueAction::Release, selection, false),
        QueueVerb::Delete { selection, bounce } => {
            act(config, QueueAction::Delete, selection, bounce)
        }
    };
    match result {
        Ok(code) => code,
        Err(Failure::NotFound(message)) => {
            eprintln!("mta-init: {message}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(Failure::Other(message)) => {
            eprintln!("mta-init: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::NotPermitted(e)) => crate::exit::fail(e.into()),
    }
}

enum Failure {
    NotFound(String),
    Other(String),
    NotPermitted(crate::process::NotPermitted),
}

fn call(config: &Config, request: &Request) -> Result<Response, Failure> {
    match crate::process::call(config, request, TIMEOUT) {
        Ok(response) => refused(response),
        Err(crate::process::Call::NotPermitted(e)) => Err(Failure::NotPermitted(e)),
        Err(crate::process::Call::Failed(e)) => {
            Err(Failure::Other(format!("{e} (is mtad running?)")))
        }
    }
}

/// The daemon's answer, or why it is a failure. A missing message exits
/// 3 whichever way the daemon says so; every other refusal 1, whatever
/// its kind.
fn refused(response: Response) -> Result<Response, Failure> {
    match response {
        Response::Error {
            message,
            kind: ErrorKind::NotFound,
        }
        | Response::NotFound { message } => Err(Failure::NotFound(message)),
        Response::Error { message, .. } => Err(Failure::Other(message)),
        response => Ok(response),
    }
}

fn unexpected(r: Response) -> Failure {
    Failure::Other(format!("unexpected answer: {r:?}"))
}

fn list(
    config: &Config,
    filter: QueueFilter,
    json: bool,
    page: usize,
    max: Option<u64>,
) -> Result<ExitCode, Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut after = None;
    let (mut messages, mut bytes) = (0u64, 0u64);
    // The header once the daemon has answered, so that a refusal comes
    // alone.
    let mut header_due = !json;
    'pages: loop {
        let request = Request::Queue(QueueRequest::List {
            filter: filter.clone(),
            after: after.clone(),
            limit: page,
        });
        let p = match call(config, &request)? {
            Response::QueuePage(p) => p,
            other => return Err(unexpected(other)),
        };
        if std::mem::take(&mut header_due) {
            let header = writeln!(
                out,
                "{:<16}  {:<6} {:>9}  {:<20}  SENDER",
                "QUEUE ID", "QUEUE", "SIZE", "ARRIVED"
            );
            if let Err(e) = header {
                crate::output::failed(&e);
                return Ok(ExitCode::SUCCESS);
            }
        }
        for m in &p.messages {
            if max.is_some_and(|max| messages >= max) {
                break 'pages;
            }
            messages += 1;
            bytes += m.size;
            let written = if json {
                writeln!(out, "{}", serde_json::to_string(m).expect("rows serialize"))
            } else {
                write_row(&mut out, m)
            };
            if let Err(e) = written {
                // The reader went away (| head): stop quietly, without
                // asking for more pages. Any other error is reported.
                crate::output::failed(&e);
                return Ok(ExitCode::SUCCESS);
            }
        }
        if let Err(e) = out.flush() {
            crate::output::failed(&e);
            return Ok(ExitCode::SUCCESS);
        }
        match p.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if !json {
        let trailer = writeln!(
            out,
            "-- {} Kbytes in {}.",
            bytes.div_ceil(1024),
            count(messages, "message", "messages")
        );
        if let Err(e) = trailer {
            crate::output::failed(&e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_row(out: &mut impl Write, m: &MessageRow) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16}  {:<6} {:>9}  {:<20}  {}",
        m.id,
        m.queue,
        m.size,
        localtime::short(m.arrival),
        sender(&m.sender)
    )?;
    writeln!(
        out,
        "    {}; {}{}",
        count(m.attempts, "attempt", "attempts"),
        next_attempt(m),
        if m.in_memory {
            "; in memory only (volatile: not yet on disk)"
        } else {
            ""
        }
    )?;
    for r in &m.recipients {
        write_recipient(out, r)?;
    }
    writeln!(out)
}

/// The sender as MAIL FROM gave it: `<>` for the null sender.
fn sender(s: &str) -> &str {
    if s.is_empty() {
        "<>"
    } else {
        s
    }
}

fn next_attempt(m: &MessageRow) -> String {
    match m.next_attempt {
        Some(t) => format!("next attempt {}", localtime::short(t)),
        None => "held: no attempt until released".into(),
    }
}

/// One recipient line: address, status, attempts, the last reply.
fn write_recipient(out: &mut impl Write, r: &RecipientRow) -> std::io::Result<()> {
    write!(
        out,
        "    {:<40} {:<9} {:<11}",
        r.address,
        r.status,
        count(r.attempts, "attempt", "attempts")
    )?;
    match &r.last_reply {
        Some(reply) => writeln!(out, " ({reply})"),
        None => writeln!(out),
    }
}

fn show(config: &Config, id: String, body: bool, json: bool) -> Result<ExitCode, Failure> {
    let response = call(config, &Request::Queue(QueueRequest::Show { id, body }))?;
    let Response::Message(m) = response else {
        return Err(unexpected(response));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&m).expect("serializes"));
        return Ok(ExitCode::SUCCESS);
    }
    print_detail(&m);
    Ok(ExitCode::SUCCESS)
}

fn print_detail(d: &MessageDetail) {
    // Written to memory first (it cannot fail there), then printed.
    let mut out = Vec::new();
    let _ = write_detail(&mut out, d, SystemTime::now());
    print!("{}", String::from_utf8_lossy(&out));
}

/// `queue show` for people, as Postfix's `postcat -q` shows a queue
/// file: the envelope field by field in SMTP's own words, the recipients
/// with their DSN parameters, the history, the headers. Times are local.
fn write_detail(out: &mut impl Write, d: &MessageDetail, now: SystemTime) -> std::io::Result<()> {
    let m = &d.message;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let label = |name: &str| format!("{:<15}", format!("{name}:"));
    writeln!(out, "{}{}", label("queue id"), m.id)?;
    let memory = if m.in_memory {
        ", in memory only (volatile: not yet on disk)"
    } else {
        ""
    };
    writeln!(out, "{}{}{memory}", label("queue"), m.queue)?;
    writeln!(
        out,
        "{}{}; {}",
        label("attempts"),
        m.attempts,
        next_attempt(m)
    )?;
    writeln!(out, "{}{}", label("sender"), sender(&m.sender))?;
    writeln!(out, "{}{}", label("size"), count(m.size, "byte", "bytes"))?;
    writeln!(
        out,
        "{}{}, {} ago",
        label("arrival"),
        localtime::full(m.arrival),
        humanize(Duration::from_secs(now.saturating_sub(m.arrival)))
    )?;
    // The stored envelope, read back as the type mtad wrote it from.
    let envelope = serde_json::from_value::<Envelope>(d.envelope.clone());
    if let Ok(e) = &envelope {
        let o = &e.origin;
        writeln!(out, "{}{}, HELO {}", label("client"), o.client_ip, o.helo)?;
        match &o.tls {
            Some(tls) => writeln!(out, "{}{}, using {tls}", label("protocol"), o.protocol)?,
            None => writeln!(out, "{}{}", label("protocol"), o.protocol)?,
        }
        // SMTP AUTH (RFC 4954): who the client logged in as, as postcat
        // shows Postfix's sasl_username.
        if let Some(user) = o.auth.as_ref().or(m.auth.as_ref()) {
            writeln!(out, "{}{user}", label("authenticated"))?;
        }
        writeln!(out, "{}{}", label("body type"), body_type(e.body))?;
        writeln!(
            out,
            "{}{}",
            label("SMTPUTF8"),
            if e.smtputf8 { "yes" } else { "no" }
        )?;
        writeln!(out, "{}{}", label("DSN"), mail_dsn(e))?;
    } else if let Some(user) = &m.auth {
        writeln!(out, "{}{user}", label("authenticated"))?;
    }

    writeln!(out, "\nRECIPIENTS")?;
    for (i, r) in m.recipients.iter().enumerate() {
        write_recipient(out, r)?;
        let given = envelope.as_ref().ok().and_then(|e| {
            // In envelope order; by address should the two ever differ.
            e.recipients
                .get(i)
                .filter(|g| g.address.to_string() == r.address)
                .or_else(|| {
                    e.recipients
                        .iter()
                        .find(|g| g.address.to_string() == r.address)
                })
        });
        if let Some(params) = given.map(rcpt_dsn).filter(|p| !p.is_empty()) {
            writeln!(out, "        {params}")?;
        }
    }
    if let Err(e) = &envelope {
        // A daemon of another version: show what it sent, as it is.
        writeln!(out, "\nENVELOPE (as stored; not understood here: {e})")?;
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&d.envelope).unwrap_or_default()
        )?;
    }

    writeln!(out, "\nHISTORY")?;
    if d.history.is_empty() {
        writeln!(out, "    (no attempt yet)")?;
    }
    for h in &d.history {
        let attempt = if h.attempt == 0 {
            "operator".to_owned()
        } else {
            format!("attempt {}", h.attempt)
        };
        let remote = h
            .remote
            .as_deref()
            .map(|r| format!(" via {r}"))
            .unwrap_or_default();
        writeln!(
            out,
            "    {}  {attempt:<10} {:<30} {:<9} {} {}{remote}",
            localtime::short(h.time),
            h.recipient,
            h.event,
            h.status,
            h.reply
        )?;
    }
    writeln!(out, "\nHEADERS\n{}", d.headers.trim_end())?;
    if let Some(body) = &d.body {
        writeln!(out, "\nBODY\n{body}")?;
    }
    Ok(())
}

/// The BODY parameter's keyword (RFC 6152).
fn body_type(b: BodyType) -> &'static str {
    match b {
        BodyType::SevenBit => "7BIT",
        BodyType::EightBitMime => "8BITMIME",
    }
}

/// RET and ENVID as MAIL FROM gave them (RFC 3461 section 4).
fn mail_dsn(e: &Envelope) -> String {
    let mut params = Vec::new();
    if let Some(ret) = e.ret {
        params.push(match ret {
            Ret::Full => "RET=FULL".to_owned(),
            Ret::Hdrs => "RET=HDRS".to_owned(),
        });
    }
    if let Some(envid) = &e.envid {
        params.push(format!("ENVID={envid}"));
    }
    if params.is_empty() {
        "no RET or ENVID given".to_owned()
    } else {
        params.join(" ")
    }
}

/// NOTIFY and ORCPT as RCPT TO gave them (RFC 3461 section 4); empty
/// when neither was.
fn rcpt_dsn(r: &Recipient) -> String {
    let mut params = Vec::new();
    if let Some(notify) = &r.notify {
        params.push(format!("NOTIFY={}", notify.value()));
    }
    if let Some(orcpt) = &r.orcpt {
        params.push(format!("ORCPT={orcpt}"));
    }
    params.join(" ")
}

fn summary(
    config: &Config,
    filter: QueueFilter,
    json: bool,
    top: usize,
) -> Result<ExitCode, Failure> {
    let response = call(config, &Request::Queue(QueueRequest::Summary { filter }))?;
    let Response::Summary(s) = response else {
        return Err(unexpected(response));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&s, top);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &QueueSummary, top: usize) {
    let mut header = format!("{:>32} {:>7}", "", "T");
    for b in &s.bucket_minutes {
        header.push_str(&format!(" {b:>6}"));
    }
    header.push_str(&format!(
        " {:>6}",
        format!("{}+", s.bucket_minutes.last().unwrap_or(&0))
    ));
    println!("{header}");
    let shown = if top == 0 {
        s.domains.len()
    } else {
        top.min(s.domains.len())
    };
    for row in std::iter::once(&s.total).chain(s.domains.iter().take(shown)) {
        let mut line = format!("{:>32} {:>7}", row.domain, row.messages);
        for n in &row.buckets {
            line.push_str(&format!(" {n:>6}"));
        }
        println!("{line}");
    }
    if shown < s.domains.len() {
        println!(
            "({} more domains; --top 0 shows all)",
            s.domains.len() - shown
        );
    }
    println!("(ages in minutes; a message to several domains counts once in each)");
}

fn act(
    config: &Config,
    action: QueueAction,
    selection: SelectionArgs,
    bounce: bool,
) -> Result<ExitCode, Failure> {
    let request = Request::Queue(QueueRequest::Act {
        action,
        selection: selection.selection()?,
        bounce,
    });
    let response = call(config, &request)?;
    let Response::Acted(report) = response else {
        return Err(unexpected(response));
    };
    println!("{}", describe(action, &report));
    Ok(ExitCode::SUCCESS)
}

/// One line: what the action did, in counts.
fn describe(action: QueueAction, r: &ActionReport) -> String {
    let verb = match action {
        QueueAction::Flush => "flushed (due now)",
        QueueAction::Hold => "held",
        QueueAction::Release => "released",
        QueueAction::Delete => "deleted",
    };
    let mut line = format!(
        "{} of {} {verb}",
        r.done,
        count(r.matched, "message", "messages")
    );
    if r.in_flight > 0 {
        let later = match action {
            QueueAction::Flush => "being delivered now",
            _ => "being delivered now: done when their attempt ends",
        };
        line.push_str(&format!("; {} {later}", r.in_flight));
    }
    if r.unchanged > 0 {
        line.push_str(&format!("; {} unchanged", r.unchanged));
    }
    if action == QueueAction::Delete {
        line.push_str(&format!(
            "; {} removed, {} sent",
            count(r.recipients_deleted, "recipient", "recipients"),
            count(r.dsns, "DSN", "DSNs")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_message_is_exit_3_whichever_way_it_is_said() {
        let gone = refused(Response::NotFound {
            message: "no message 1 in the queue".into(),
        });
        assert!(matches!(gone, Err(Failure::NotFound(_))));
        let gone = refused(Response::error(ErrorKind::NotFound, "no message 1"));
        assert!(matches!(gone, Err(Failure::NotFound(_))));
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            let other = refused(Response::error(kind, "why"));
            assert!(
                matches!(other, Err(Failure::Other(m)) if m == "why"),
                "{kind:?}"
            );
        }
        assert!(matches!(refused(Response::Ok), Ok(Response::Ok)));
    }

    /// A message as `queue show --json` gives it, its envelope's origin
    /// with `auth` when given.
    fn detail(auth: Option<&str>) -> MessageDetail {
        let envelope = Envelope {
            sender: mta_envelope::ReversePath::Mailbox(mta_envelope::Mailbox::new(
                "alice",
                "example.test",
            )),
            recipients: Vec::new(),
            body: BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            origin: mta_envelope::Origin {
                client_ip: "192.0.2.7".parse().unwrap(),
                helo: "client.test".into(),
                protocol: "ESMTPSA".into(),
                tls: None,
                auth: auth.map(str::to_owned),
            },
            arrival: 1_700_000_000,
        };
        MessageDetail {
            message: mta_control::MessageRow {
                id: "00000000000000aa".into(),
                queue: "disk".into(),
                size: 10,
                arrival: 1_700_000_000,
                sender: "alice@example.test".into(),
                attempts: 1,
                next_attempt: Some(1_700_000_400),
                recipients: Vec::new(),
                in_memory: false,
                auth: auth.map(str::to_owned),
            },
            envelope: serde_json::to_value(&envelope).unwrap(),
            history: Vec::new(),
            headers: "Subject: x\r\n".into(),
            body: None,
        }
    }

    fn shown(d: &MessageDetail) -> String {
        let mut out = Vec::new();
        write_detail(&mut out, d, UNIX_EPOCH + Duration::from_secs(1_700_000_060)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn show_names_the_authenticated_user_after_the_client() {
        let out = shown(&detail(Some("alice@example.test")));
        let lines: Vec<&str> = out.lines().collect();
        let at = |label: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label}:\n{out}"))
        };
        assert_eq!(
            lines[at("authenticated:")],
            "authenticated: alice@example.test"
        );
        assert_eq!(at("authenticated:"), at("protocol:") + 1, "{out}");
        assert_eq!(at("protocol:"), at("client:") + 1, "{out}");
        // Labels stay aligned.
        assert_eq!(
            lines[at("client:")],
            "client:        192.0.2.7, HELO client.test"
        );
        // Without a user, no line.
        assert!(!shown(&detail(None)).contains("authenticated"));
        // An envelope this version cannot read: the row's user still shows.
        let mut odd = detail(Some("bob"));
        odd.envelope = serde_json::json!({"unknown": true});
        let out = shown(&odd);
        assert!(out.contains("\nauthenticated: bob\n"), "{out}");
    }
}
