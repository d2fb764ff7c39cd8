//! Who runs the command, and the one privilege it may have.
//!
//! `mta-sendmail` is installed set-group-id to the drop group, so that
//! it can add a file to the drop directory and nothing else. The group
//! is set aside at once (the effective gid becomes the real one, the
//! saved one keeps the drop group) and taken up only around writing a
//! drop file: reading the configuration a user names, connecting to the
//! socket and everything else run with the user's own ids. The user id
//! never changes, so the drop file is the user's and mtad learns who
//! wrote it from its owner.

use nix::unistd::{getegid, getgid, getuid, setegid, Gid, User};

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null when they
/// were not), so that no file this program opens takes their place and
/// receives what is printed (a set-group-id program must not trust its
/// caller for this).
pub fn ensure_std_fds() {
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // The lowest free descriptor: this one.
            let _ = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            );
        }
    }
}

/// The drop group, set aside.
#[derive(Debug)]
pub struct DropGroup {
    real: Gid,
    /// The set-group-id group, when the program has one.
    saved: Option<Gid>,
}

impl DropGroup {
    /// Sets the set-group-id group aside: from now on the effective gid
    /// is the real one.
    pub fn set_aside() -> DropGroup {
        let (real, effective) = (getgid(), getegid());
        if real == effective {
            return DropGroup { real, saved: None };
        }
        match setegid(real) {
            Ok(()) => DropGroup {
                real,
                saved: Some(effective),
            },
            // Cannot happen (the real gid is always allowed); keep
            // going with what we have rather than fail a user's mail.
            Err(_) => DropGroup { real, saved: None },
        }
    }

    /// Runs `f` with the drop group as the effective gid.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        let raised = self.saved.is_some_and(|g| setegid(g).is_ok());
        let out = f();
        if raised {
            let _ = setegid(self.real);
        }
        out
    }
}

/// The user who runs the command.
#[derive(Debug)]
pub struct Me {
    /// The login name (the uid in digits when there is none).
    pub login: String,
    /// The full name of the user database (the first comma-separated
    /// field of GECOS, `&` standing for the login, capitalized).
    pub full_name: Option<String>,
}

impl Me {
    /// The real user.
    pub fn current() -> Me {
        let uid = getuid();
        let user = User::from_uid(uid).ok().flatten();
        let login =
            mta_smtp::LocalUser::new(uid.as_raw(), user.as_ref().map(|u| u.name.as_str())).name;
        let full_name = user.and_then(|u| {
            let gecos = u.gecos.to_str().ok()?.split(',').next()?.trim().to_owned();
            let mut chars = login.chars();
            let capitalized: String = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
            let name = gecos.replace('&', &capitalized);
            (!name.is_empty()).then_some(name)
        });
        Me { login, full_name }
    }
}
