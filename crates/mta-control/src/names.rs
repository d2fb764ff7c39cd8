//! The names the control plane speaks: queue runners, services and
//! queues. Each is an enum, parsed once where it enters (serde on the
//! control socket and the HTTP API, clap in `mta-init`) and written as
//! the same lowercase word the protocol has always used, so an unknown
//! name is refused with the list of the known ones before any handler
//! runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A set of names: each variant's word, and what the set is called in an
/// error.
pub trait Name: Copy + 'static {
    /// Every name, in the order help and errors list them.
    const ALL: &'static [Self];
    /// What one of them is (`runner`).
    const WHAT: &'static str;
    /// The word on the wire and the command line.
    fn as_str(self) -> &'static str;
}

/// A name that is none of the known ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no {what} {given:?}: the {what}s are {known}")]
pub struct UnknownName {
    /// What was looked for (`runner`).
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The known names, as a list for people (`ram, bounce and disk`).
    pub known: String,
}

/// Finds `given` among `N`'s names.
pub fn parse_name<N: Name>(given: &str) -> Result<N, UnknownName> {
    N::ALL
        .iter()
        .copied()
        .find(|n| n.as_str() == given)
        .ok_or_else(|| UnknownName {
            what: N::WHAT,
            given: given.to_owned(),
            known: listed(N::ALL.iter().map(|n| n.as_str())),
        })
}

/// `a, b and c`.
fn listed<'a>(words: impl Iterator<Item = &'a str>) -> String {
    let words: Vec<&str> = words.collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

macro_rules! name_impls {
    ($ty:ident, $what:literal, [$($variant:ident => $word:literal),+ $(,)?]) => {
        impl Name for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            const WHAT: &'static str = $what;
            fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl $ty {
            /// The word on the wire and the command line.
            pub fn as_str(self) -> &'static str {
                Name::as_str(self)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                parse_name(s)
            }
        }
    };
}

/// A queue runner: what `pause delivery --runner` and the runner rows of
/// the status name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Runner {
    /// Fresh mail, first attempts.
    Ram,
    /// DSNs.
    Bounce,
    /// Retries.
    Disk,
}

name_impls!(Runner, "runner", [Ram => "ram", Bounce => "bounce", Disk => "disk"]);

/// A service `svc` takes down, brings up or restarts: the listener, the
/// HTTP server, the spool, or one queue runner. A runner may also be
/// named as the status table names it (`ram-runner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Service {
    /// The SMTP listener of port 25 (`[smtp]`).
    Smtp,
    /// The submission listener (`[submission]`, port 587).
    Submission,
    /// The implicit-TLS submission listener (`[submissions]`, port 465).
    Submissions,
    /// The admin HTTP server.
    Http,
    /// The spool; taken down, it pauses injection and the runners.
    Spool,
    /// The ram runner.
    #[serde(alias = "ram-runner")]
    #[cfg_attr(feature = "clap", value(alias = "ram-runner"))]
    Ram,
    /// The bounce runner.
    #[serde(alias = "bounce-runner")]
    #[cfg_attr(feature = "clap", value(alias = "bounce-runner"))]
    Bounce,
    /// The disk runner.
    #[serde(alias = "disk-runner")]
    #[cfg_attr(feature = "clap", value(alias = "disk-runner"))]
    Disk,
}

name_impls!(Service, "service", [
    Smtp => "smtp", Submission => "submission", Submissions => "submissions",
    Http => "http", Spool => "spool",
    Ram => "ram", Bounce => "bounce", Disk => "disk",
]);

impl Service {
    /// The runner this service is, if it is one.
    pub fn runner(self) -> Option<Runner> {
        match self {
            Service::Ram => Some(Runner::Ram),
            Service::Bounce => Some(Runner::Bounce),
            Service::Disk => Some(Runner::Disk),
            Service::Smtp
            | Service::Submission
            | Service::Submissions
            | Service::Http
            | Service::Spool => None,
        }
    }

    /// Parses a service name, the runners' `-runner` form included.
    pub fn parse(given: &str) -> Result<Service, UnknownName> {
        let bare = given.strip_suffix("-runner").unwrap_or(given);
        match parse_name::<Service>(bare) {
            Ok(s) if bare == given || s.runner().is_some() => Ok(s),
            _ => parse_name::<Service>(given),
        }
    }
}

/// A queue: the three runners' and the held queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Queue {
    /// Fresh mail.
    Ram,
    /// DSNs.
    Bounce,
    /// Retries.
    Disk,
    /// Held by the operator: never attempted, never expires.
    Held,
}

name_impls!(Queue, "queue", [Ram => "ram", Bounce => "bounce", Disk => "disk", Held => "held"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wire_words() {
        for r in Runner::ALL {
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Runner>(&json).unwrap(), *r);
            assert_eq!(r.as_str().parse::<Runner>().unwrap(), *r);
        }
        for s in Service::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Service>(&json).unwrap(), *s);
        }
        for q in Queue::ALL {
            let json = serde_json::to_string(q).unwrap();
            assert_eq!(json, format!("\"{}\"", q.as_str()));
            assert_eq!(serde_json::from_str::<Queue>(&json).unwrap(), *q);
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        assert_eq!(
            "nope".parse::<Runner>().unwrap_err().to_string(),
            r#"no runner "nope": the runners are ram, bounce and disk"#
        );
        assert_eq!(
            "nowhere".parse::<Queue>().unwrap_err().to_string(),
            r#"no queue "nowhere": the queues are ram, bounce, disk and held"#
        );
        assert_eq!(
            Service::parse("nonesuch").unwrap_err().to_string(),
            r#"no service "nonesuch": the services are smtp, submission, submissions, http, spool, ram, bounce and disk"#
        );
        // serde names the allowed values too.
        let e = serde_json::from_str::<Runner>(r#""nope""#).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected one of `ram`, `bounce`, `disk`"),
            "{e}"
        );
    }

    #[test]
    fn a_runner_service_may_be_named_as_the_status_table_does() {
        assert_eq!(Service::parse("ram-runner"), Ok(Service::Ram));
        assert_eq!(Service::parse("disk"), Ok(Service::Disk));
        assert!(Service::parse("smtp-runner").is_err());
        assert_eq!(
            serde_json::from_str::<Service>(r#""bounce-runner""#).unwrap(),
            Service::Bounce
        );
        assert_eq!(Service::Ram.runner(), Some(Runner::Ram));
        assert_eq!(Service::Spool.runner(), None);
    }
}
