//! The command line, as Postfix's `sendmail` reads it: Sendmail's option
//! letters through getopt (`A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx`,
//! stopping at the first recipient), the harmless ones accepted and
//! ignored, an unknown letter refused with `EX_USAGE`.
//!
//! The mode also follows the program's name: `mailq` lists the queue and
//! `newaliases` rebuilds aliases, which mtad has no use for.

use std::path::PathBuf;

/// What the command is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-bm`, the default: read a message from standard input and send it.
    Deliver,
    /// `-bs`: speak SMTP on standard input and output (as Postfix's
    /// stand-alone `smtpd`), relayed to mtad's local socket.
    Smtp,
    /// Nothing to do, successfully (`-bi`, `-I` and `newaliases`: mtad
    /// has no alias database; `-bh`, `-bH`: no host status; `-q`: mtad
    /// runs its queue itself). The text is a note for standard error, if
    /// any.
    Nothing(Option<String>),
    /// A mode mta-sendmail does not offer, and where to look instead.
    Unsupported(String),
}

/// Delivery status notifications asked for with `-N` (RFC 3461 NOTIFY):
/// the envelope's own type.
pub use mta_envelope::Notify;

/// `-N`'s argument: `never`, or a comma-separated list of `success`,
/// `delay` and `failure` (case ignored, as Postfix's
/// `dsn_notify_mask`). None when it is neither.
pub fn parse_notify(text: &str) -> Option<Notify> {
    let (mut success, mut failure, mut delay, mut never) = (false, false, false, false);
    for word in text.split(',').map(str::trim) {
        match word.to_ascii_lowercase().as_str() {
            "success" => success = true,
            "failure" => failure = true,
            "delay" => delay = true,
            "never" => never = true,
            _ => return None,
        }
    }
    match (never, success || failure || delay) {
        (true, false) => Some(Notify::Never),
        (false, true) => Some(Notify::On {
            success,
            failure,
            delay,
        }),
        _ => None,
    }
}

/// Everything the command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The mode.
    pub mode: Mode,
    /// `-t`: the recipients of the `To:`, `Cc:` and `Bcc:` fields (or of
    /// the `Resent-` ones, when there are some) are added to those of the
    /// command line.
    pub extract: bool,
    /// False with `-i` or `-oi`: a line holding only `.` is text, not the
    /// end of the message.
    pub dot_ends: bool,
    /// `-f` or `-r`: the envelope sender, as given (`<>` or empty: the
    /// null sender).
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` the message lacks.
    pub full_name: Option<String>,
    /// `-C`: the configuration file to read `[sendmail]` from.
    pub config: Option<PathBuf>,
    /// `-N`: DSN requests for every recipient.
    pub notify: Option<Notify>,
    /// `-R full|hdrs`: what a DSN returns (Sendmail's meaning; any other
    /// value is Postfix's ignored bounce size limit).
    pub ret: Option<String>,
    /// `-V`: the envelope id for DSNs.
    pub envid: Option<String>,
    /// `-B 8BITMIME`.
    pub eight_bit: bool,
    /// The recipients after the options, each as given (one argument may
    /// hold a comma-separated list).
    pub recipients: Vec<String>,
    /// Warnings about options given but not used.
    pub warnings: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Deliver,
            extract: false,
            dot_ends: true,
            sender: None,
            full_name: None,
            config: None,
            notify: None,
            ret: None,
            envid: None,
            eight_bit: false,
            recipients: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// A command line that cannot be run: `EX_USAGE`, with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The option letters, and which take an argument (a `:` after them):
/// Postfix's list.
const GETOPT: &str = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx";

/// The usage line.
pub const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F full_name] [-N dsn] [-V envid] \
     [-bm|-bs] [-C config] [recipient ...]";

/// Reads the command line: `program` is how the command was called
/// (its last path component decides `mailq` and `newaliases`), `args`
/// the rest.
pub fn parse(program: &str, args: &[String]) -> Result<Options, UsageError> {
    let mut o = Options::default();
    let name = program.rsplit('/').next().unwrap_or(program);
    match name {
        "mailq" => o.mode = unsupported_mailq(),
        "newaliases" => o.mode = Mode::Nothing(None),
        _ => {}
    }
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        // POSIX getopt (Postfix asks for it with "+"): the first
        // argument that is not an option starts the recipients.
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            break;
        };
        i += 1;
        if letters.starts_with('q') {
            // Not getopt's: `-q` alone flushes the queue, `-q30m` sets
            // a queue-run interval (ignored by Postfix too).
            if letters == "q" {
                o.mode = Mode::Nothing(Some(
                    "-q: mtad runs its queue itself; `mta-init queue flush` sends what \
                     waits at once"
                        .into(),
                ));
            }
            continue;
        }
        for (at, letter) in letters.char_indices() {
            let Some(spec) = GETOPT.find(letter).filter(|_| letter != ':') else {
                return Err(UsageError(format!("unknown option -{letter}\n{USAGE}")));
            };
            let wants_arg = GETOPT[spec + 1..].starts_with(':');
            if !wants_arg {
                flag(&mut o, letter)?;
                continue;
            }
            let attached = &letters[at + letter.len_utf8()..];
            let value = if !attached.is_empty() {
                attached.to_owned()
            } else if let Some(next) = args.get(i) {
                i += 1;
                next.clone()
            } else {
                return Err(UsageError(format!(
                    "option -{letter} needs an argument\n{USAGE}"
                )));
            };
            with_arg(&mut o, letter, value)?;
            break;
        }
    }
    o.recipients = args[i..].to_vec();
    if o.extract && o.mode != Mode::Deliver {
        return Err(UsageError("-t can be used only in delivery mode".into()));
    }
    if !o.recipients.is_empty() {
        let refused = match &o.mode {
            Mode::Smtp => Some("stand-alone mode (-bs)"),
            Mode::Nothing(_) | Mode::Unsupported(_) => Some("this mode"),
            Mode::Deliver => None,
        };
        if let Some(mode) = refused {
            return Err(UsageError(format!("{mode} takes no recipient")));
        }
    }
    Ok(o)
}

fn unsupported_mailq() -> Mode {
    Mode::Unsupported("the queue is listed by `mta-init queue list` (mailq, -bp)".into())
}

/// An option without an argument.
fn flag(o: &mut Options, letter: char) -> Result<(), UsageError> {
    match letter {
        't' => o.extract = true,
        'i' => o.dot_ends = false,
        'I' => o.mode = Mode::Nothing(None),
        // Postfix refuses -n (no aliasing) too.
        'n' => return Err(UsageError("-n option not supported".into())),
        // -G (gateway), -U (initial submission), -m (me too), -v
        // (verbose), -c, -x: accepted and ignored, as by Postfix.
        _ => {}
    }
    Ok(())
}

/// An option with its argument.
fn with_arg(o: &mut Options, letter: char, value: String) -> Result<(), UsageError> {
    match letter {
        'f' | 'r' => o.sender = Some(value),
        'F' => o.full_name = Some(value),
        'C' => o.config = Some(PathBuf::from(value)),
        'N' => match parse_notify(&value) {
            Some(n) => o.notify = Some(n),
            // As Postfix: warned about and ignored.
            None => o
                .warnings
                .push(format!("bad -N option value {value:?}: ignored")),
        },
        'R' if value.eq_ignore_ascii_case("full") || value.eq_ignore_ascii_case("hdrs") => {
            o.ret = Some(value.to_ascii_uppercase());
        }
        'V' => {
            // RFC 3461 section 4.4: at most 100 characters of xtext;
            // printable ASCII here, encoded by the client.
            if value.len() > 100 || !value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                o.warnings
                    .push("bad -V option value (envelope id): ignored".to_owned());
            } else {
                o.envid = Some(value);
            }
        }
        'B' => match value.as_str() {
            "8BITMIME" => o.eight_bit = true,
            "7BIT" => o.eight_bit = false,
            _ => return Err(UsageError("-B option needs 8BITMIME or 7BIT".into())),
        },
        'b' => o.mode = b_mode(&value)?,
        'o' => match value.chars().next() {
            Some('i') => o.dot_ends = false,
            Some('A') if value.len() == 1 => {
                return Err(UsageError("-oA requires pathname".into()))
            }
            // -oem, -oep (error modes), -odb, -odi, -odq (delivery
            // modes), -oQ... (queue directory), -o7, -o8, -om and the
            // rest: mtad decides these itself.
            _ => {}
        },
        'X' => {
            // Sendmail's -X logs the SMTP traffic to a file of the
            // caller's choosing: not here.
            return Err(UsageError(format!(
                "unsupported: -X{}",
                value.chars().next().unwrap_or(' ')
            )));
        }
        // -A (submission mode), -L (log label), -O option=value, -h hop
        // count, -e, -p: accepted and ignored, as by Postfix.
        _ => {}
    }
    Ok(())
}

/// `-b` and its mode letter.
fn b_mode(value: &str) -> Result<Mode, UsageError> {
    Ok(match value.chars().next() {
        Some('m') => Mode::Deliver,
        Some('s') => Mode::Smtp,
        Some('i') => Mode::Nothing(None),
        Some('h' | 'H') => Mode::Nothing(None),
        Some('p') => unsupported_mailq(),
        Some('d') => {
            Mode::Unsupported("mtad is started with `mta-init start`, not as sendmail -bd".into())
        }
        Some('v') => Mode::Unsupported("address verification (-bv) is not offered".into()),
        other => {
            return Err(UsageError(format!(
                "unsupported: -b{}",
                other.unwrap_or(' ')
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn parse_line(line: &str) -> Result<Options, UsageError> {
        parse("/usr/sbin/sendmail", &args(line))
    }

    #[test]
    fn cron_and_php_command_lines() {
        // cron: sendmail -FCronDaemon -i -B8BITMIME -oem root
        let o = parse_line("-FCronDaemon -i -B8BITMIME -oem root").unwrap();
        assert_eq!(o.full_name.as_deref(), Some("CronDaemon"));
        assert!(!o.dot_ends && o.eight_bit && !o.extract);
        assert_eq!(o.recipients, ["root"]);
        // PHP's default sendmail_path: sendmail -t -i
        let o = parse_line("-t -i").unwrap();
        assert!(o.extract && !o.dot_ends && o.recipients.is_empty());
        // Clustered letters, as getopt allows.
        let o = parse_line("-ti -odi -oQ/var/spool -v a@b.test").unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.recipients, ["a@b.test"]);
        assert_eq!(o.mode, Mode::Deliver);
    }

    #[test]
    fn arguments_attached_or_separate() {
        let o = parse_line("-f root@x.test -F Cron -N success,Delay -V id-1 -R hdrs u").unwrap();
        assert_eq!(o.sender.as_deref(), Some("root@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("Cron"));
        assert_eq!(
            o.notify.map(|n| n.value()).as_deref(),
            Some("SUCCESS,DELAY")
        );
        assert_eq!(o.envid.as_deref(), Some("id-1"));
        assert_eq!(o.ret.as_deref(), Some("HDRS"));
        let o = parse_line("-fme@x.test -rother -oi u").unwrap();
        assert_eq!(o.sender.as_deref(), Some("other"), "-r is -f");
        assert!(!o.dot_ends);
        let o = parse("sendmail", &["-f".into(), "".into(), "u".into()]).unwrap();
        assert_eq!(o.sender.as_deref(), Some(""));
        let o = parse_line("-N never u").unwrap();
        assert_eq!(o.notify, Some(Notify::Never));
        let o = parse_line("-N sometimes u").unwrap();
        assert_eq!(o.notify, None);
        assert_eq!(o.warnings.len(), 1);
    }

    #[test]
    fn the_first_recipient_ends_the_options() {
        let o = parse_line("a@b.test -t").unwrap();
        assert!(!o.extract);
        assert_eq!(o.recipients, ["a@b.test", "-t"]);
        let o = parse_line("-- -odd@b.test").unwrap();
        assert_eq!(o.recipients, ["-odd@b.test"]);
    }

    #[test]
    fn unknown_and_unsupported_options_are_usage_errors() {
        for line in [
            "-z u",
            "-tz u",
            "-n u",
            "-X/tmp/log u",
            "-bz",
            "-B 9BIT u",
            "-f",
            "-t -bs",
        ] {
            assert!(parse_line(line).is_err(), "{line}");
        }
        let e = parse_line("-k u").unwrap_err();
        assert!(e.0.starts_with("unknown option -k\nusage: sendmail"), "{e}");
        let e = parse_line("-bs u").unwrap_err();
        assert!(e.0.contains("takes no recipient"), "{e}");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_line("-bs").unwrap().mode, Mode::Smtp);
        assert_eq!(parse_line("-bm u").unwrap().mode, Mode::Deliver);
        assert_eq!(parse_line("-bi").unwrap().mode, Mode::Nothing(None));
        assert_eq!(parse_line("-I").unwrap().mode, Mode::Nothing(None));
        assert!(matches!(
            parse_line("-q").unwrap().mode,
            Mode::Nothing(Some(_))
        ));
        assert_eq!(parse_line("-q30m u").unwrap().mode, Mode::Deliver);
        assert!(matches!(
            parse_line("-bp").unwrap().mode,
            Mode::Unsupported(_)
        ));
        assert!(matches!(
            parse_line("-bd").unwrap().mode,
            Mode::Unsupported(_)
        ));
        assert!(matches!(
            parse("/usr/bin/mailq", &[]).unwrap().mode,
            Mode::Unsupported(_)
        ));
        assert_eq!(parse("newaliases", &[]).unwrap().mode, Mode::Nothing(None));
        let c = parse_line("-C /etc/mta/mta.toml -bs").unwrap();
        assert_eq!(c.config, Some(PathBuf::from("/etc/mta/mta.toml")));
    }
}
