//! The MTA's configuration.
//!
//! [`Config`] is read from an optional TOML file; every key has a built-in
//! default, so `Config::default()` is a complete, working configuration
//! (listen on 127.0.0.1:2525, queue in `./queue`). Loading is two steps:
//! syntax (serde, unknown keys are errors, reported with line and column) and
//! meaning ([`Config::check`], every problem reported at once).
//!
//! All times are configuration, never constants in code, so that tests can
//! shrink them; see `docs/configuration.md` for every key.
#![deny(missing_docs)]

mod auth;
mod delivery;
mod descriptors;
mod dkim;
mod error;
mod recipients;
pub mod sendmail;
mod size;
mod smtp;
mod submission;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use auth::{AuthConfig, FailureKeys, FailureLimits, HashPriority};
pub use delivery::{
    DaneConfig, DeliveryConfig, DeliveryTimeouts, EightBitPolicy, MtaStsConfig, QueueConfig,
    QueueMode, ThrottleRule, TlsPolicy,
};
pub use dkim::{DkimAlgorithm, DkimConfig, DkimSign, DEFAULT_SIGNED_HEADERS};
pub use error::ConfigError;
pub use recipients::{LocalRecipient, RecipientProblem};
pub use size::ByteSize;
pub use smtp::SmtpConfig;
pub use submission::{Role, RoleLimits, SubmissionConfig};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The name this MTA gives itself in its banner, EHLO reply and
    /// `Received:` headers. Default: the system host name.
    pub hostname: String,
    /// The queue directory. Default: `queue` (relative to the working
    /// directory).
    pub queue_dir: PathBuf,
    /// Where mtad writes its PID. Default: `<queue_dir>/mtad.pid`.
    pub pid_file: Option<PathBuf>,
    /// The control socket `mta-init` talks to. Default:
    /// `<queue_dir>/control.sock`.
    pub control_socket: Option<PathBuf>,
    /// Where `mta-init start` sends mtad's standard output and error.
    /// Default: `<queue_dir>/mtad.log`.
    pub daemon_log: Option<PathBuf>,
    /// The account mtad switches to when started as root, once its
    /// listening sockets are bound (as Postfix's `mail_owner`). Default:
    /// none: mtad keeps the user it was started as (and warns when that
    /// is root).
    pub user: Option<String>,
    /// mtad's group when it switches (default: the user's own group).
    /// Setting it also opens the queue to the group's members for
    /// reading: directories 0750, spool files 0640, the control socket
    /// 0660, where members may ask for status and list and show the queue
    /// but change nothing.
    pub group: Option<String>,
    /// The time slice mtad's threads ask of the kernel's scheduler (Linux
    /// 6.6 and later: `sched_setattr`'s `sched_runtime`). A thread woken to
    /// answer a client (after a spool write, say) is run sooner when its
    /// slice is short; the share of the CPU each thread gets is the same,
    /// but long bursts of work are cut up more. 100 µs to 100 ms; 0 (the
    /// default) leaves the kernel's.
    #[serde(with = "humantime_serde")]
    pub time_slice: Duration,
    /// The SMTP listener: the MX and relay role (port 25).
    pub smtp: SmtpConfig,
    /// The submission role (RFC 6409, port 587): off unless it has
    /// addresses to listen on.
    pub submission: SubmissionConfig,
    /// The implicit-TLS submission role (RFC 8314, port 465): off unless
    /// it has addresses to listen on.
    pub submissions: SubmissionConfig,
    /// SMTP AUTH: users, sender rules, rate and failure limits.
    pub auth: AuthConfig,
    /// STARTTLS.
    pub tls: TlsConfig,
    /// The spool.
    pub spool: SpoolConfig,
    /// Stopping.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// The queue runners and the retry schedule.
    pub queue: QueueConfig,
    /// Outbound delivery: routing, DNS, the SMTP client.
    pub delivery: DeliveryConfig,
    /// Local delivery to Maildir.
    pub maildir: MaildirConfig,
    /// The admin HTTP server.
    pub http: HttpConfig,
    /// Local submission: `mta-sendmail`'s socket and drop directory.
    pub sendmail: sendmail::SendmailConfig,
    /// DKIM signing of outbound mail.
    pub dkim: DkimConfig,
}

/// `[http]`: the admin HTTP server (`GET /status`, `GET /metrics`, and
/// the queue API under `/api/`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Addresses to listen on; empty turns the server off. Loopback by
    /// default; any other address needs a `token`.
    pub listen: Vec<SocketAddr>,
    /// When set, every request must carry `Authorization: Bearer <token>`
    /// (`/metrics` included). Without it the queue API under `/api/` is
    /// off: only `/status` and `/metrics` are served.
    pub token: Option<String>,
    /// Names the server is reached by besides the addresses it listens on
    /// (and `localhost` on loopback): a `Host` or `Origin` naming anything
    /// else is refused (DNS rebinding, cross-site requests).
    /// `"mta.example.net"` allows that name on any port,
    /// `"mta.example.net:8443"` on that port only.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8025))],
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    fn check(&self, problem: &mut impl FnMut(&str, String)) {
        if let Some(token) = &self.token {
            if token.len() < 16 || token.chars().any(|c| !c.is_ascii_graphic()) {
                problem(
                    "http.token",
                    "must be at least 16 printable ASCII characters, without spaces".into(),
                );
            }
        } else if let Some(addr) = self.listen.iter().find(|a| !a.ip().is_loopback()) {
            problem(
                "http.listen",
                format!("{addr} is not a loopback address: set http.token to expose the admin API"),
            );
        }
        for entry in &self.allowed_hosts {
            if let Err(why) = check_host_entry(entry) {
                problem("http.allowed_hosts", format!("{entry:?}: {why}"));
            }
        }
    }
}

/// An `allowed_hosts` entry is what a `Host` header holds: a name or an
/// address, with an optional port (`[...]` around an IPv6 address).
fn check_host_entry(entry: &str) -> Result<(), &'static str> {
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => ("v6", port),
            _ => return Err("an IPv6 address goes in brackets, as in [2001:db8::1]:8025"),
        },
        None => match entry.find(':') {
            Some(colon) => entry.split_at(colon),
            None => (entry, ""),
        },
    };
    if !port.is_empty()
        && port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
    {
        return Err("the port must be a number from 0 to 65535");
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if host.is_empty() || !host.chars().all(name_char) {
        return Err("give a host name or address, with an optional :port (no scheme, no path)");
    }
    Ok(())
}

/// `[maildir]`: where mail for local domains is delivered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaildirConfig {
    /// Mail for `user@domain` goes to `<root>/<domain>/<user>/Maildir`.
    pub root: PathBuf,
}

impl Default for MaildirConfig {
    fn default() -> Self {
        MaildirConfig {
            root: PathBuf::from("maildir"),
        }
    }
}

/// `[tls]`: the certificate for STARTTLS. Without both paths, STARTTLS is
/// not offered.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM file with the private key.
    pub key: Option<PathBuf>,
}

/// Most spool writer threads `spool.writers` may ask for.
pub const MAX_WRITERS: usize = 1024;

/// `[spool]`: durable storage.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Below this much free space on the queue's file system, MAIL gets
    /// `452 4.3.1` until space returns.
    pub min_free_space: ByteSize,
    /// Most messages committed by one shared directory flush.
    pub max_batch: usize,
    /// Most threads writing and fsyncing messages at once.
    pub writers: usize,
    /// How often the free space is measured against `min_free_space`.
    #[serde(with = "humantime_serde")]
    pub free_space_check_interval: Duration,
    /// Spool files per second a rescan after an unclean stop may read
    /// (0: as fast as the disk allows). The rescan runs while the daemon
    /// accepts and delivers; a limit keeps its I/O from crowding them out.
    pub rescan_rate: u64,
    /// The queue index's page cache (sled's `cache_capacity`, counted in
    /// the pages' size on disk; in memory they take about three to four
    /// times that). Pages beyond it are dropped and read again from the
    /// file (the kernel's page cache) when needed, so a walk over the
    /// whole index leaves the daemon about where it was.
    pub index_cache: ByteSize,
}

/// `[shutdown]`: how a stop behaves.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long open sessions may take to finish their transaction once a
    /// stop begins; sessions still open then get `421` and are closed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long delivery attempts in flight may take to finish once the
    /// listener is closed; those still running then are cut short and
    /// count as deferred.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A graceful stop (SIGWINCH, `mta-init graceful-stop`): how long
    /// sessions may go on (not cut short between transactions) and
    /// deliveries may run before they are cut short like a stop's.
    #[serde(with = "humantime_serde")]
    pub graceful_timeout: Duration,
}

/// `[log]`: diagnostics on standard error, and the delivery log.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `mtad=debug`; `RUST_LOG` wins.
    pub level: String,
    /// The delivery log, one JSON line per event. Default:
    /// `<queue_dir>/delivery.log`.
    pub delivery_log: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: system_hostname(),
            queue_dir: PathBuf::from("queue"),
            pid_file: None,
            control_socket: None,
            daemon_log: None,
            user: None,
            group: None,
            time_slice: Duration::ZERO,
            smtp: SmtpConfig::default(),
            submission: SubmissionConfig::default(),
            submissions: SubmissionConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            spool: SpoolConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            queue: QueueConfig::default(),
            delivery: DeliveryConfig::default(),
            maildir: MaildirConfig::default(),
            http: HttpConfig::default(),
            sendmail: Default::default(),
            dkim: DkimConfig::default(),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            min_free_space: ByteSize(100 * 1024 * 1024),
            max_batch: 256,
            writers: 32,
            free_space_check_interval: Duration::from_secs(1),
            rescan_rate: 0,
            index_cache: ByteSize(1024 * 1024),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            graceful_timeout: Duration::from_secs(300),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            delivery_log: None,
        }
    }
}

impl Config {
    /// The addresses a role listens on (none: the role is off).
    pub fn role_listen(&self, role: Role) -> &[SocketAddr] {
        match role {
            Role::Mx => &self.smtp.listen,
            Role::Submission => &self.submission.listen,
            Role::Submissions => &self.submissions.listen,
        }
    }

    /// A role's limits, `[smtp]`'s where its own section is silent.
    pub fn role_limits(&self, role: Role) -> RoleLimits {
        match role {
            Role::Mx => self.smtp.limits(),
            Role::Submission => self.submission.limits(&self.smtp),
            Role::Submissions => self.submissions.limits(&self.smtp),
        }
    }

    /// Reads `path`, or returns the built-in defaults when `path` is `None`,
    /// and checks the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let config = Config::parse(&text, path)?;
                config.check_source(Some(path), Some(&text))?;
                return Ok(config);
            }
        };
        config.check(path)?;
        Ok(config)
    }

    /// Parses TOML text; `path` only names the file in errors. Relative
    /// paths in the file are taken relative to the working directory, as
    /// command-line paths are.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Checks the meaning of the configuration and reports every problem.
    pub fn check(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        self.check_source(path, None)
    }

    /// [`check`](Self::check), with the file's text so that each problem
    /// names the line and column of its key (`mta.toml:3:1: smtp.listen: ...`).
    pub fn check_source(&self, path: Option<&Path>, text: Option<&str>) -> Result<(), ConfigError> {
        let source = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".to_owned());
        let document = text.and_then(|t| toml_edit::ImDocument::parse(t).ok());
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String| {
            let at = document
                .as_ref()
                .and_then(|doc| locate(doc, key))
                .map(|(line, column)| format!(":{line}:{column}"))
                .unwrap_or_default();
            problems.push(format!("{source}{at}: {key}: {what}"))
        };

        if self.hostname.is_empty()
            || !self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            problem(
                "hostname",
                format!(
                    "{:?} is not a host name (letters, digits, '-' and '.')",
                    self.hostname
                ),
            );
        }
        if !self.time_slice.is_zero()
            && !(Duration::from_micros(100)..=Duration::from_millis(100)).contains(&self.time_slice)
        {
            problem(
                "time_slice",
                "must be 0 (the kernel's default) or from 100us to 100ms".into(),
            );
        }
        if self.smtp.listen.is_empty() {
            problem("smtp.listen", "at least one address is needed".into());
        }
        if self.smtp.max_connections == 0 {
            problem("smtp.max_connections", "must be at least 1".into());
        }
        if self.smtp.max_recipients == 0 {
            problem("smtp.max_recipients", "must be at least 1".into());
        }
        if self.smtp.max_command_line < 512 {
            problem(
                "smtp.max_command_line",
                "RFC 5321 section 4.5.3.1.4 needs at least 512 octets".into(),
            );
        }
        if self.smtp.max_line_length < 1000 {
            problem(
                "smtp.max_line_length",
                "RFC 5321 section 4.5.3.1.6 needs at least 1000 octets".into(),
            );
        }
        if self.smtp.max_errors == 0 {
            problem("smtp.max_errors", "must be at least 1".into());
        }
        if self.smtp.idle_timeout.is_zero() {
            problem("smtp.idle_timeout", "must be longer than zero".into());
        }
        if self.smtp.min_data_rate == 0 {
            problem(
                "smtp.min_data_rate",
                "must be at least 1 (octets per second)".into(),
            );
        }
        if self.smtp.max_session_time.is_zero() {
            problem("smtp.max_session_time", "must be longer than zero".into());
        }
        self.submission.check("submission", &mut problem);
        self.auth.check(&mut problem);
        let authenticating = !self.submission.listen.is_empty()
            || !self.submissions.listen.is_empty()
            || self.smtp.auth;
        if authenticating && !self.auth.has_backend() {
            problem(
                "auth",
                "[submission], [submissions] and [smtp] auth need [auth] users_file or dovecot_socket"
                    .into(),
            );
        }
        self.submissions.check("submissions", &mut problem);
        if !self.submissions.listen.is_empty() && self.tls.certificate.is_none() {
            problem(
                "submissions.listen",
                "implicit TLS (RFC 8314) needs [tls] certificate and key".into(),
            );
        }
        if let Err(found) = self.smtp.local_recipient_list() {
            for p in found {
                problem(p.key, p.what);
            }
        }
        if self.spool.free_space_check_interval.is_zero() {
            problem(
                "spool.free_space_check_interval",
                "must be longer than zero".into(),
            );
        }
        if self.spool.max_batch == 0 {
            problem("spool.max_batch", "must be at least 1".into());
        }
        if !(1..=MAX_WRITERS).contains(&self.spool.writers) {
            problem("spool.writers", format!("must be from 1 to {MAX_WRITERS}"));
        }
        match (&self.tls.certificate, &self.tls.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                for (k, p) in [("tls.certificate", cert), ("tls.key", key)] {
                    if !p.is_file() {
                        problem(k, format!("{} is not a readable file", p.display()));
                    }
                }
            }
            _ => problem("tls", "certificate and key must be given together".into()),
        }
        if let Some(user) = &self.user {
            match nix::unistd::User::from_name(user) {
                Ok(Some(_)) => {}
                Ok(None) => problem("user", format!("no account named {user:?}")),
                Err(e) => problem("user", format!("cannot look up {user:?}: {e}")),
            }
        }
        if let Some(group) = &self.group {
            match nix::unistd::Group::from_name(group) {
                Ok(Some(_)) => {}
                Ok(None) => problem("group", format!("no group named {group:?}")),
                Err(e) => problem("group", format!("cannot look up {group:?}: {e}")),
            }
        }
        self.queue.check(&mut problem);
        self.delivery.check(&mut problem);
        self.http.check(&mut problem);
        self.sendmail.check(&mut problem);
        self.dkim.check(&mut problem);
        for domain in &self.smtp.local_domains {
            if domain.is_empty() || domain.contains(['@', ' ', '\r', '\n']) {
                problem("smtp.local_domains", format!("{domain:?} is not a domain"));
            }
        }
        if let Some(address) = &self.queue.postmaster {
            if let Err(why) = self.postmaster_route(address) {
                problem("queue.postmaster", why);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Meaning { problems })
        }
    }

    /// Advice that does not stop mtad from starting, one line each
    /// (`configtest` and `mtad --check-config` print them): secrets other
    /// users can read, and, when the checker runs as root, a configuration
    /// that would keep mtad running as root.
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut warnings = Vec::new();
        if let Some(key) = &self.tls.key {
            if let Ok(meta) = std::fs::metadata(key) {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o007 != 0 {
                    warnings.push(format!(
                        "tls.key: {} is readable by every local user (mode {mode:04o}): make it 0600, \
                         or 0640 with mtad's group",
                        key.display()
                    ));
                }
            }
        }
        if self.user.is_none() && nix::unistd::geteuid().is_root() {
            warnings.push(
                "user: not set, so mtad started as root keeps running as root; set user \
                 (for example \"mtad\") to switch once the sockets are bound"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The PID file, explicit or under the queue directory.
    pub fn pid_file(&self) -> PathBuf {
        self.pid_file
            .clone()
            .unwrap_or_else(|| self.queue_dir.join("mtad.pid"))
    }

    /// The control socket, explicit or under the queue directory.
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.queue_dir.join("control.sock"))
    }

    /// The delivery log, explicit or under the queue directory.
    pub fn delivery_log(&self) -> PathBuf {
        self.log
            .delivery_log
            .clone()
            .unwrap_or_else(|| self.queue_dir.join("delivery.log"))
    }

    /// Where DSNs that cannot be returned go (reports on failed `<>`
    /// mail): `queue.postmaster`, or by default the bare local
    /// `postmaster` mailbox, which every SMTP server must have (RFC 5321
    /// section 4.5.1) and which is delivered like `RCPT TO:<postmaster>`:
    /// to `<maildir root>/<hostname>/postmaster/Maildir`.
    pub fn postmaster(&self) -> String {
        self.queue
            .postmaster
            .clone()
            .unwrap_or_else(|| "postmaster".to_owned())
    }

    /// The address our DSNs come from (their `From:`): `queue.postmaster`
    /// when it has a domain, else `postmaster@<hostname>`.
    pub fn dsn_from(&self) -> String {
        match &self.queue.postmaster {
            Some(address) if address.contains('@') => address.clone(),
            _ => format!("postmaster@{}", self.hostname),
        }
    }

    /// Whether a configured postmaster can be delivered: the bare
    /// `postmaster`, an address of a local domain or of a routed one, or
    /// any other domain (delivered by MX). Err says why not: it is not an
    /// address, or its domain routes nowhere (this host's own name when it
    /// is not a local domain: the MX lookup would bring it back here;
    /// `localhost` or `.invalid` names that are not local). Reports on
    /// failed `<>` mail sent there would be lost.
    fn postmaster_route(&self, address: &str) -> Result<(), String> {
        if address.eq_ignore_ascii_case("postmaster") {
            return Ok(());
        }
        let well_formed = |part: &str| {
            !part.is_empty()
                && !part
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\".contains(c))
        };
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(format!(
                "{address:?} is not an address (local-part@domain, or the bare postmaster)"
            ));
        };
        if !well_formed(local) || !well_formed(domain) || domain.contains('@') {
            return Err(format!(
                "{address:?} is not an address (local-part@domain, or the bare postmaster)"
            ));
        }
        let routed = self
            .delivery
            .routes
            .keys()
            .any(|d| d.eq_ignore_ascii_case(domain));
        if self.is_local_domain(domain) || routed {
            return Ok(());
        }
        let lower = domain.to_ascii_lowercase();
        let nowhere = if lower == self.hostname.to_ascii_lowercase() {
            Some("is this host's name but not in smtp.local_domains: the MX lookup would send the mail back here")
        } else if lower == "localhost" || lower.ends_with(".localhost") {
            Some("is a loopback name not in smtp.local_domains")
        } else if lower == "invalid" || lower.ends_with(".invalid") {
            Some("cannot exist (RFC 2606)")
        } else {
            None
        };
        match nowhere {
            Some(why) => Err(format!(
                "{address}: {domain} {why}, so reports on failed mail from <> would be lost; \
                 add {domain} to smtp.local_domains, or leave queue.postmaster unset for the \
                 local postmaster mailbox"
            )),
            None => Ok(()),
        }
    }

    /// The daemon's output file when started by `mta-init`.
    pub fn daemon_log(&self) -> PathBuf {
        self.daemon_log
            .clone()
            .unwrap_or_else(|| self.queue_dir.join("mtad.log"))
    }

    /// True when a domain is one of ours (ASCII case ignored).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.smtp
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The parts of a dotted key; a part may be quoted (`throttle."*.a.test"`),
/// and then holds dots of its own.
fn key_parts(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in key.chars() {
        let part = parts.last_mut().expect("never empty");
        match c {
            _ if escaped => {
                part.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            _ => part.push(c),
        }
    }
    parts
}

/// The line and column (1-based) of a dotted key in a parsed document.
fn locate(doc: &toml_edit::ImDocument<&str>, key: &str) -> Option<(usize, usize)> {
    let mut parts = key_parts(key);
    let last = parts.pop()?;
    let mut table = doc.as_table() as &dyn toml_edit::TableLike;
    for part in &parts {
        table = table.get(part)?.as_table_like()?;
    }
    let (k, _) = table.get_key_value(&last)?;
    let offset = k.span()?.start;
    let text = doc.raw();
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, column))
}

fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("mta.toml"))
    }

    #[test]
    fn time_slice_is_zero_or_within_what_the_kernel_takes() {
        assert_eq!(Config::default().time_slice, Duration::ZERO);
        for ok in ["0s", "100us", "1ms", "100ms"] {
            parse(&format!("time_slice = {ok:?}"))
                .unwrap()
                .check(None)
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["50us", "101ms", "1s"] {
            let msg = parse(&format!("time_slice = {bad:?}"))
                .unwrap()
                .check(None)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("time_slice: must be 0"), "{bad}: {msg}");
        }
    }

    #[test]
    fn spool_writers_are_at_least_one_and_bounded() {
        assert_eq!(Config::default().spool.writers, 32);
        for ok in [1, 8, MAX_WRITERS] {
            let config = parse(&format!("[spool]\nwriters = {ok}")).unwrap();
            assert_eq!(config.spool.writers, ok);
            config.check(None).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [0, MAX_WRITERS + 1] {
            let msg = parse(&format!("[spool]\nwriters = {bad}"))
                .unwrap()
                .check(None)
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("spool.writers: must be from 1"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn the_postmaster_must_route_somewhere() {
        let with = |postmaster: &str, extra: &str| {
            let text =
                format!("hostname = \"mx.test\"\n[queue]\npostmaster = {postmaster:?}\n{extra}");
            parse(&text).unwrap().check(None)
        };
        for ok in [
            "postmaster",
            "Postmaster",
            "postmaster@localhost",
            "ops@example.org",
        ] {
            with(ok, "").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        with(
            "postmaster@mx.test",
            "[smtp]\nlocal_domains = [\"mx.test\"]\n",
        )
        .unwrap();
        with(
            "pm@mx.test",
            "[delivery.routes]\n\"mx.test\" = \"127.0.0.1:2526\"\n",
        )
        .unwrap();
        for bad in [
            "postmaster@mx.test",
            "postmaster@MX.test",
            "pm@box.localhost",
            "pm@nowhere.invalid",
            "not an address",
            "@mx.test",
            "pm@",
            "<pm@example.org>",
        ] {
            let e = with(bad, "").expect_err(bad).to_string();
            assert!(e.contains("queue.postmaster"), "{bad}: {e}");
        }
        let e = with("postmaster@mx.test", "").unwrap_err().to_string();
        assert!(e.contains("smtp.local_domains"), "{e}");
    }

    #[test]
    fn the_default_postmaster_is_the_local_mailbox() {
        let mut c = Config {
            hostname: "mx.test".into(),
            ..Config::default()
        };
        assert_eq!(c.postmaster(), "postmaster");
        assert_eq!(c.dsn_from(), "postmaster@mx.test");
        c.queue.postmaster = Some("ops@example.org".into());
        assert_eq!(c.postmaster(), "ops@example.org");
        assert_eq!(c.dsn_from(), "ops@example.org");
    }

    #[test]
    fn defaults_are_complete_and_valid() {
        let c = Config::default();
        c.check(None).unwrap();
        assert_eq!(c.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(c.queue_dir, PathBuf::from("queue"));
        assert_eq!(c.smtp.max_recipients, 100);
        assert_eq!(c.pid_file(), PathBuf::from("queue/mtad.pid"));
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_column() {
        let err = parse("hostname = \"mx.test\"\n[smtp]\nmax_recipient = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("mta.toml: "), "{msg}");
        assert!(msg.contains("line 3, column 1"), "{msg}");
        assert!(msg.contains("max_recipient"), "{msg}");
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"2s\"\nmax_message_size = \"1MiB\"\n\
             relay_networks = [\"10.0.0.0/8\"]\n[spool]\nmin_free_space = 0\n",
        )
        .unwrap();
        assert_eq!(c.smtp.idle_timeout, Duration::from_secs(2));
        assert_eq!(c.smtp.max_message_size, ByteSize(1024 * 1024));
        assert_eq!(c.spool.min_free_space, ByteSize(0));
        assert_eq!(c.smtp.relay_networks.len(), 1);
    }

    #[test]
    fn meaning_errors_are_all_reported() {
        let c =
            parse("hostname = \"bad host\"\n[smtp]\nlisten = []\nmax_recipients = 0\n").unwrap();
        let msg = c
            .check(Some(Path::new("mta.toml")))
            .unwrap_err()
            .to_string();
        assert_eq!(msg.lines().count(), 3, "{msg}");
        assert!(msg.contains("mta.toml: hostname"), "{msg}");
        assert!(msg.contains("smtp.listen"), "{msg}");
        assert!(msg.contains("smtp.max_recipients"), "{msg}");
    }

    #[test]
    fn allowed_hosts_are_names_or_addresses_with_an_optional_port() {
        for good in [
            "mta.example.net",
            "mta.example.net:8443",
            "192.0.2.1:8025",
            "[2001:db8::1]",
            "[::1]:8025",
        ] {
            assert_eq!(check_host_entry(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "http://mta.example.net",
            "mta.example.net/api",
            "mta.example.net:port",
            "mta.example.net:99999",
            "::1",
            "[::1",
            "[mta]:80",
            "a b",
        ] {
            assert!(check_host_entry(bad).is_err(), "{bad}");
        }
        let c =
            parse("[http]\nallowed_hosts = [\"ok.example\", \"https://no.example\"]\n").unwrap();
        let msg = c.check(None).unwrap_err().to_string();
        assert!(msg.contains("http.allowed_hosts"), "{msg}");
        assert!(
            msg.contains("no.example") && !msg.contains("ok.example"),
            "{msg}"
        );
    }

    #[test]
    fn contrib_example_matches_the_built_in_defaults() {
        let example = parse(include_str!("../../../contrib/mta.toml")).unwrap();
        let default = Config::default();
        // Config has no PartialEq (it holds paths and networks), so compare
        // the rendered form, which covers every field.
        let render = |c: &Config| {
            format!(
                "{:?}",
                Config {
                    hostname: String::new(),
                    ..c.clone()
                }
            )
        };
        assert_eq!(render(&example), render(&default));
    }

    #[test]
    fn meaning_errors_name_line_and_column_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mta.toml");
        std::fs::write(
            &path,
            "hostname = \"mx.test\"\n\n[smtp]\nlisten = []\n  max_recipients = 0\n",
        )
        .unwrap();
        let msg = Config::load(Some(&path)).unwrap_err().to_string();
        let file = path.display().to_string();
        assert!(msg.contains(&format!("{file}:4:1: smtp.listen:")), "{msg}");
        assert!(
            msg.contains(&format!("{file}:5:3: smtp.max_recipients:")),
            "{msg}"
        );
    }

    #[test]
    fn throttle_rules_are_read() {
        let c = parse(
            "[delivery]\nmax_messages_per_hour = 100\nbackoff_after = 0\nbackoff_for = \"300ms\"\n\
             [delivery.throttle.\"example.com\"]\nmax_connections = 2\n\
             [delivery.throttle.\"*.example.com\"]\nmax_messages_per_hour = 10\n\
             [delivery.throttle.\"mx:mx1.example.net\"]\nmax_connections = 1\nmax_messages_per_hour = 0\n",
        )
        .unwrap();
        c.check(None).unwrap();
        let d = &c.delivery;
        assert_eq!(d.max_messages_per_hour, 100);
        assert_eq!(d.backoff_after, 0);
        assert_eq!(d.backoff_for, Duration::from_millis(300));
        assert_eq!(d.throttle.len(), 3);
        assert_eq!(
            d.throttle["example.com"],
            ThrottleRule {
                max_connections: Some(2),
                max_messages_per_hour: None,
            }
        );
        assert_eq!(
            d.throttle["mx:mx1.example.net"].max_messages_per_hour,
            Some(0)
        );
        let defaults = Config::default().delivery;
        assert_eq!(defaults.backoff_after, 5);
        assert_eq!(defaults.backoff_for, Duration::from_secs(300));
        assert_eq!(defaults.max_messages_per_hour, 0);
    }

    #[test]
    fn mta_sts_is_on_by_default_and_its_fetch_is_configurable() {
        let defaults = Config::default().delivery.mta_sts;
        assert!(defaults.enabled);
        assert_eq!(defaults.port, 443);
        assert_eq!(defaults.fetch_timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_policy_size, 65536);
        let c = parse(
            "[delivery.mta_sts]\nenabled = false\nport = 8443\nfetch_timeout = \"5s\"\nmax_policy_size = 1000\n",
        )
        .unwrap();
        c.check(None).unwrap();
        let m = &c.delivery.mta_sts;
        assert!(!m.enabled);
        assert_eq!((m.port, m.max_policy_size), (8443, 1000));
        assert_eq!(m.fetch_timeout, Duration::from_secs(5));
        let err = parse("[delivery.mta_sts]\nport = 0\nfetch_timeout = \"0s\"\nca_file = \"/nonexistent/ca.pem\"\n")
            .unwrap()
            .check(None)
            .unwrap_err()
            .to_string();
        for key in [
            "delivery.mta_sts.port",
            "delivery.mta_sts.fetch_timeout",
            "delivery.mta_sts.ca_file",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(parse("[delivery.mta_sts]\nenable = true\n").is_err());
    }

    #[test]
    fn dane_is_on_by_default_with_the_root_keys() {
        let defaults = Config::default().delivery.dane;
        assert!(defaults.enabled);
        assert_eq!(defaults.trust_anchor, None);
        let c = parse("[delivery.dane]\nenabled = false\n").unwrap();
        c.check(None).unwrap();
        assert!(!c.delivery.dane.enabled);
        let err = parse("[delivery.dane]\ntrust_anchor = \"/nonexistent/root.key\"\n")
            .unwrap()
            .check(None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("delivery.dane.trust_anchor"), "{err}");
        assert!(err.contains("/nonexistent/root.key"), "{err}");
        assert!(parse("[delivery.dane]\ntrust_anchors = \"x\"\n").is_err());
    }

    #[test]
    fn an_unknown_key_in_a_throttle_rule_is_an_error() {
        let err = parse("[delivery.throttle.\"a.test\"]\nmax_connection = 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2, column 1"), "{msg}");
        assert!(msg.contains("max_connection"), "{msg}");
    }

    #[test]
    fn bad_throttle_rules_are_reported_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mta.toml");
        std::fs::write(
            &path,
            "[delivery.throttle.\"\"]\n\
             [delivery.throttle.\"*.\"]\n\
             [delivery.throttle.\"mx:\"]\n\
             [delivery.throttle.\"bad domain.test\"]\n\
             [delivery.throttle.\"a..test\"]\n\
             [delivery.throttle.\"*.ok.test\"]\n\
             max_connections = 0\n\
             [delivery.throttle.\"OK.test\"]\n\
             [delivery.throttle.\"ok.test.\"]\n\
             [delivery.throttle.\"mx:[127.0.0.1]\"]\n\
             max_connections = 1\n",
        )
        .unwrap();
        let msg = Config::load(Some(&path)).unwrap_err().to_string();
        let file = path.display().to_string();
        assert_eq!(msg.lines().count(), 7, "{msg}");
        assert!(
            msg.contains(&format!("{file}:1:20: delivery.throttle.\"\": ")),
            "{msg}"
        );
        assert!(
            msg.contains("delivery.throttle.\"*.\": \"*.\": a domain after *. is needed"),
            "{msg}"
        );
        assert!(
            msg.contains("delivery.throttle.\"mx:\": \"mx:\": a host name after mx: is needed"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "{file}:4:20: delivery.throttle.\"bad domain.test\": "
            )),
            "{msg}"
        );
        assert!(msg.contains("delivery.throttle.\"a..test\": "), "{msg}");
        assert!(
            msg.contains(&format!(
                "{file}:7:1: delivery.throttle.\"*.ok.test\".max_connections: must be at least 1"
            )),
            "{msg}"
        );
        assert!(
            msg.contains("delivery.throttle.\"ok.test.\": the same pattern as \"OK.test\""),
            "{msg}"
        );
    }

    #[test]
    fn dotted_keys_with_quoted_parts() {
        assert_eq!(
            key_parts("delivery.throttle.\"*.a.test\".max_connections"),
            ["delivery", "throttle", "*.a.test", "max_connections"]
        );
        assert_eq!(key_parts("smtp.listen"), ["smtp", "listen"]);
    }

    #[test]
    fn http_outside_loopback_needs_a_token_of_some_length() {
        let open = parse("[http]\nlisten = [\"0.0.0.0:8025\"]\n").unwrap();
        let msg = open.check(None).unwrap_err().to_string();
        assert!(
            msg.contains("http.listen") && msg.contains("token"),
            "{msg}"
        );
        let short = parse("[http]\nlisten = [\"0.0.0.0:8025\"]\ntoken = \"abc\"\n").unwrap();
        let msg = short.check(None).unwrap_err().to_string();
        assert!(msg.contains("http.token"), "{msg}");
        let good = parse("[http]\nlisten = [\"0.0.0.0:8025\"]\ntoken = \"0123456789abcdef-xyz\"\n")
            .unwrap();
        good.check(None).unwrap();
        parse("").unwrap().check(None).unwrap();
    }

    #[test]
    fn client_limits_and_deadlines_are_read_and_checked() {
        let c = Config::default();
        assert_eq!(c.smtp.min_data_rate, 500);
        assert_eq!(c.smtp.max_session_time, Duration::from_secs(3600));
        assert_eq!(c.smtp.max_connections_per_client, 50);
        assert_eq!(c.smtp.client_limit_exemptions(), c.smtp.relay_networks);
        let c = parse(
            "[smtp]\nmax_connections_per_client = 0\nmax_connection_rate_per_client = 30\n\
             client_limit_exemptions = []\nmax_session_time = \"10m\"\n",
        )
        .unwrap();
        c.check(None).unwrap();
        assert!(c.smtp.client_limit_exemptions().is_empty());
        assert_eq!(c.smtp.max_connection_rate_per_client, 30);
        let bad = parse("[smtp]\nmin_data_rate = 0\nmax_session_time = \"0s\"\n").unwrap();
        let msg = bad.check(None).unwrap_err().to_string();
        assert!(msg.contains("smtp.min_data_rate"), "{msg}");
        assert!(msg.contains("smtp.max_session_time"), "{msg}");
    }

    #[test]
    fn user_and_group_must_exist() {
        let c = parse("user = \"no-such-user-here\"\ngroup = \"no-such-group-here\"\n").unwrap();
        let msg = c.check(None).unwrap_err().to_string();
        assert!(msg.contains("user: no account named"), "{msg}");
        assert!(msg.contains("group: no group named"), "{msg}");
        let c = parse("user = \"root\"\ngroup = \"root\"\n").unwrap();
        c.check(None).unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn a_world_readable_tls_key_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "x").unwrap();
        let c = Config {
            user: Some("root".into()),
            tls: TlsConfig {
                certificate: None,
                key: Some(key.clone()),
            },
            ..Config::default()
        };
        for (mode, warned) in [(0o644, true), (0o640, false), (0o600, false)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = c.warnings();
            assert_eq!(
                w.iter().any(|w| w.starts_with("tls.key:")),
                warned,
                "{mode:o}: {w:?}"
            );
        }
    }

    #[test]
    fn recipient_keys_are_read_and_a_bad_list_is_a_meaning_error() {
        let c = Config::default();
        assert_eq!(c.smtp.recipient_overshoot_limit, 1000);
        assert!(c.smtp.local_recipients.is_none() && c.smtp.local_recipients_file.is_none());
        let c = parse("[smtp]\nrecipient_overshoot_limit = 0\nlocal_recipients = [\"alice\"]\n")
            .unwrap();
        c.check(None).unwrap();
        assert_eq!(c.smtp.recipient_overshoot_limit, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mta.toml");
        std::fs::write(
            &path,
            "[smtp]\nlocal_recipients = [\"a/b\"]\nlocal_recipients_file = \"/nonexistent\"\n",
        )
        .unwrap();
        let msg = Config::load(Some(&path)).unwrap_err().to_string();
        let file = path.display().to_string();
        assert!(
            msg.contains(&format!("{file}:2:1: smtp.local_recipients: \"a/b\"")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "{file}:3:1: smtp.local_recipients_file: cannot read /nonexistent"
            )),
            "{msg}"
        );
    }

    #[test]
    fn tls_needs_both_files() {
        let c = parse("[tls]\ncertificate = \"/nonexistent.pem\"\n").unwrap();
        let msg = c.check(None).unwrap_err().to_string();
        assert!(msg.contains("given together"), "{msg}");
    }
}
