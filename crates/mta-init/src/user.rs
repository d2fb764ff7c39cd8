//! `mta-init user add|passwd|del|list`: the users of SMTP AUTH (RFC 4954)
//! in `[auth] users_file`, edited through mta-auth's `UsersEditor` (a
//! lock, an atomic replace, mode 0640).
//!
//! A password is never an argument: the command line of a running
//! program is anyone's to read (`ps`, `/proc/<pid>/cmdline`). It is typed
//! twice on the terminal without echo, or read as one line from standard
//! input with `--password-stdin`, and wiped from memory once hashed.
//!
//! Run as root, the file is given to root and to mtad's group (`group`,
//! else the group of `user`, else the file's own, else root's), so mtad
//! may read it and not change it; run as another user, the file keeps
//! its owner. mtad reads the file at start and at each graceful restart:
//! the command says so rather than restarting mtad itself, since a
//! graceful restart also reloads the whole configuration and the logs,
//! which is the operator's call (and one restart after several edits
//! does).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use mta_auth::{check_name, name_key, AuthError, UsersEditor, MAX_PASSWORD_LEN};
use mta_config::Config;
use zeroize::Zeroizing;

use crate::exit::EXIT_CONFIG;
use crate::process::EXIT_NOT_PERMITTED;

/// Exit code: `passwd` or `del` of a name the file does not have (as
/// `queue show` of a message not queued).
pub const EXIT_NO_SUCH_USER: u8 = 3;

/// Exit code: `add` of a name the file already has (useradd's 9).
pub const EXIT_USER_EXISTS: u8 = 9;

/// Exit code: a name or password refused (sysexits' EX_DATAERR): not a
/// possible user name, an empty, short or otherwise weak password, two
/// typed passwords that differ.
pub const EXIT_REFUSED: u8 = 65;

/// Fewest characters of a new password: NIST SP 800-63B section 5.1.1.2
/// asks at least 8 of a secret a person chooses.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// What `mta-init user` does.
#[derive(Debug, Subcommand)]
pub enum UserVerb {
    /// Add a user; its password is asked twice on the terminal (or read
    /// with --password-stdin).
    Add {
        /// The user name (an address such as joe@example.com, or a bare
        /// name).
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Give a user a new password (also how a user refused at load for a
    /// weak hash scheme is brought back).
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Remove a user.
    Del {
        /// The user name.
        name: String,
    },
    /// List the users and the scheme of each one's hash (never the hash),
    /// and warn about the lines that cannot be used.
    List,
}

/// Where the password comes from.
#[derive(Debug, Args)]
pub struct PasswordSource {
    /// Read the password from standard input: one line, its newline
    /// removed (never from the command line, which `ps` shows).
    #[arg(long)]
    password_stdin: bool,
}

/// Why a `user` command failed: what to print and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Runs one `user` command.
pub fn run(config: &Config, verb: UserVerb) -> ExitCode {
    match execute(config, verb) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mta-init: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn execute(config: &Config, verb: UserVerb) -> Result<(), Failure> {
    let path = users_file(config)?;
    let editor = UsersEditor::new(&path).with_owner(owner(config, &path)?);
    let shown = path.display();
    let reread = "run `mta-init graceful` for mtad to read it";
    match verb {
        UserVerb::Add { name, password } => {
            precheck(&editor, &name, false)?;
            let password = password.read(&name)?;
            editor
                .add(&name, password.as_bytes())
                .map_err(|e| failure(&path, e))?;
            println!("user {name:?} added to {shown}; {reread}");
        }
        UserVerb::Passwd { name, password } => {
            precheck(&editor, &name, true)?;
            let password = password.read(&name)?;
            editor
                .passwd(&name, password.as_bytes())
                .map_err(|e| failure(&path, e))?;
            println!("password of {name:?} changed in {shown}; {reread}");
        }
        UserVerb::Del { name } => {
            editor.del(&name).map_err(|e| failure(&path, e))?;
            println!("user {name:?} removed from {shown}; {reread}");
        }
        UserVerb::List => {
            let (users, warnings) = editor.list().map_err(|e| failure(&path, e))?;
            for warning in &warnings {
                eprintln!("mta-init: warning: {warning}");
            }
            let width = users.iter().map(|u| u.name.len()).max().unwrap_or(0);
            for user in &users {
                println!("{:<width$}  {}", user.name, user.scheme.dovecot_name());
            }
        }
    }
    Ok(())
}

/// Refuses, before a password is asked, a name that cannot be a user's,
/// one `add` would find taken, or one `passwd` would not find: a typo is
/// told at once. The edit checks again under its lock.
fn precheck(editor: &UsersEditor, name: &str, must_exist: bool) -> Result<(), Failure> {
    let path = editor.path();
    check_name(name).map_err(|problem| {
        let name = name.to_owned();
        failure(path, AuthError::BadName { name, problem })
    })?;
    let (users, warnings) = editor.list().map_err(|e| failure(path, e))?;
    let key = name_key(name);
    // A line whose hash is refused is still its user's (`UsersEditor`).
    let found = users
        .iter()
        .map(|u| u.name.as_str())
        .any(|n| name_key(n) == key)
        || warnings
            .iter()
            .filter_map(|w| w.name.as_deref())
            .any(|n| name_key(n) == key);
    match (found, must_exist) {
        (true, false) => Err(failure(path, AuthError::UserExists(name.to_owned()))),
        (false, true) => Err(failure(path, AuthError::NoSuchUser(name.to_owned()))),
        _ => Ok(()),
    }
}

/// The users file of the configuration.
fn users_file(config: &Config) -> Result<PathBuf, Failure> {
    match (&config.auth.users_file, &config.auth.dovecot_socket) {
        (Some(path), _) => Ok(path.clone()),
        (None, Some(socket)) => Err(Failure::new(
            EXIT_CONFIG,
            format!(
                "[auth] asks Dovecot ({}): its users are Dovecot's to manage, not in a users file of ours",
                socket.display()
            ),
        )),
        (None, None) => Err(Failure::new(
            EXIT_CONFIG,
            "no [auth] users_file in the configuration: set one for `mta-init user` to edit",
        )),
    }
}

/// Root gives the file to root and mtad's group; anyone else keeps its
/// owner (and could not give it away anyway).
pub(crate) fn owner(config: &Config, path: &Path) -> Result<Option<(u32, u32)>, Failure> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let lookup = |what: &str, name: &str, found: Result<Option<u32>, nix::Error>| match found {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(Failure::new(
            EXIT_CONFIG,
            format!("no {what} named {name:?}"),
        )),
        Err(e) => Err(Failure::new(
            EXIT_CONFIG,
            format!("cannot look up {what} {name:?}: {e}"),
        )),
    };
    let gid = if let Some(group) = &config.group {
        let found = nix::unistd::Group::from_name(group).map(|g| g.map(|g| g.gid.as_raw()));
        lookup("group", group, found)?
    } else if let Some(user) = &config.user {
        // mtad switches to the user's own group when `group` is not set.
        let found = nix::unistd::User::from_name(user).map(|u| u.map(|u| u.gid.as_raw()));
        lookup("user", user, found)?
    } else {
        match std::fs::metadata(path) {
            Ok(meta) => meta.gid(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_failure(path, "stat", &e)),
        }
    };
    Ok(Some((0, gid)))
}

impl PasswordSource {
    /// The new password of `name`, checked: from standard input, or typed
    /// twice on the terminal.
    fn read(&self, name: &str) -> Result<Zeroizing<String>, Failure> {
        let password = if self.password_stdin {
            from_stdin()?
        } else {
            from_terminal(name)?
        };
        check_strength(name, &password).map_err(|why| {
            Failure::new(EXIT_REFUSED, format!("password of {name:?} refused: {why}"))
        })?;
        Ok(password)
    }
}

/// One line from standard input, its LF (or CRLF) removed.
fn from_stdin() -> Result<Zeroizing<String>, Failure> {
    let mut bytes = Zeroizing::new(Vec::new());
    // A little over the longest password: enough to tell it is too long.
    let limit = MAX_PASSWORD_LEN as u64 + 3;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(1, format!("cannot read the password: {e}")))?;
    let mut line: &[u8] = &bytes;
    line = line.strip_suffix(b"\n").unwrap_or(line);
    line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\n') {
        return Err(Failure::new(
            EXIT_REFUSED,
            "--password-stdin takes one line; standard input has more",
        ));
    }
    // RFC 4616: SASL PLAIN's password is UTF-8.
    let text = std::str::from_utf8(line)
        .map_err(|_| Failure::new(EXIT_REFUSED, "password refused: not UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Typed twice on the terminal (`/dev/tty`), without echo.
fn from_terminal(name: &str) -> Result<Zeroizing<String>, Failure> {
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                Failure::new(
                    1,
                    format!(
                        "cannot ask for the password on a terminal ({e}); give it on standard input with --password-stdin"
                    ),
                )
            })
    };
    let first = ask(&format!("New password for {name}: "))?;
    let second = ask("Again: ")?;
    if first != second {
        return Err(Failure::new(
            EXIT_REFUSED,
            "the two passwords differ; nothing changed",
        ));
    }
    Ok(first)
}

/// Refuses a password too weak to set: under [`MIN_PASSWORD_CHARS`]
/// characters, or the user's own name (or its local part), which NIST SP
/// 800-63B section 5.1.1.2 names among the first a guesser tries. Empty,
/// NUL and too long are mta-auth's to refuse.
fn check_strength(name: &str, password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("empty".into());
    }
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "{chars} characters, fewer than {MIN_PASSWORD_CHARS}"
        ));
    }
    let local = name.rsplit_once('@').map_or(name, |(local, _)| local);
    if password.eq_ignore_ascii_case(name) || password.eq_ignore_ascii_case(local) {
        return Err("it is the user name".into());
    }
    Ok(())
}

/// An edit's error, with its exit code.
fn failure(path: &Path, e: AuthError) -> Failure {
    let shown = path.display();
    match e {
        AuthError::UserExists(name) => Failure::new(
            EXIT_USER_EXISTS,
            format!("{shown}: user {name:?} already exists"),
        ),
        AuthError::NoSuchUser(name) => {
            Failure::new(EXIT_NO_SUCH_USER, format!("{shown}: no user {name:?}"))
        }
        e @ (AuthError::BadName { .. } | AuthError::BadPassword(_)) => {
            Failure::new(EXIT_REFUSED, e.to_string())
        }
        AuthError::Io {
            path,
            action,
            source,
        } => io_failure(&path, action, &source),
        e => Failure::new(1, e.to_string()),
    }
}

/// An I/O error: exit 4 when permission was denied (LSB's "insufficient
/// privilege", as for the daemon's files), else 1.
fn io_failure(path: &Path, action: &str, e: &std::io::Error) -> Failure {
    let message = format!("{}: {action}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Failure::new(
            EXIT_NOT_PERMITTED,
            format!("{message} (may this user change it? root may)"),
        ),
        _ => Failure::new(1, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused() {
        let table = [
            ("joe@example.com", "", false),
            ("joe@example.com", "short7!", false),
            ("joe@example.com", "ünïcödé", false),
            ("joe@example.com", "joe@example.com", false),
            ("joe@example.com", "JOE@EXAMPLE.COM", false),
            ("joseph@example.com", "JOSEPH", false),
            ("joseph@example.com", "joseph12", true),
            ("joe@example.com", "eight ch", true),
            ("joe@example.com", "ünïcödé8", true),
            ("joe", "correct horse battery staple", true),
        ];
        for (name, password, ok) in table {
            assert_eq!(
                check_strength(name, password).is_ok(),
                ok,
                "{name:?} {password:?}: {:?}",
                check_strength(name, password)
            );
        }
    }

    #[test]
    fn each_edit_error_has_its_exit_code() {
        let path = Path::new("/etc/mta/users");
        let code = |e| failure(path, e).code;
        assert_eq!(code(AuthError::UserExists("a".into())), EXIT_USER_EXISTS);
        assert_eq!(code(AuthError::NoSuchUser("a".into())), EXIT_NO_SUCH_USER);
        assert_eq!(code(AuthError::BadPassword("empty")), EXIT_REFUSED);
        let denied = AuthError::Io {
            path: path.into(),
            action: "create",
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        let f = failure(path, denied);
        assert_eq!(f.code, EXIT_NOT_PERMITTED);
        assert!(f.message.starts_with("/etc/mta/users: create: "), "{f:?}");
        let gone = AuthError::Io {
            path: path.into(),
            action: "rename over",
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(failure(path, gone).code, 1);
        assert_eq!(code(AuthError::Hash("no entropy".into())), 1);
    }

    #[test]
    fn without_a_users_file_it_is_a_configuration_error() {
        let mut config = Config::default();
        let f = users_file(&config).unwrap_err();
        assert_eq!(f.code, EXIT_CONFIG);
        assert!(f.message.contains("users_file"), "{f:?}");
        config.auth.dovecot_socket = Some("/run/dovecot/auth-client".into());
        let f = users_file(&config).unwrap_err();
        assert_eq!(f.code, EXIT_CONFIG);
        assert!(f.message.contains("Dovecot"), "{f:?}");
        config.auth.dovecot_socket = None;
        config.auth.users_file = Some("/etc/mta/users".into());
        assert_eq!(
            users_file(&config).unwrap(),
            PathBuf::from("/etc/mta/users")
        );
    }
}
