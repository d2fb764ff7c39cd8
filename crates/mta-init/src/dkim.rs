//! `mta-init dkim keygen`: a new DKIM key, written where mtad can read it
//! and nobody else can, and the DNS record that publishes it; and the
//! key check of `configtest` and `restart` (mtad refuses to start or
//! reload with a key it cannot use, so they check first).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use mta_config::{Config, DkimAlgorithm};

use crate::exit::EXIT_CONFIG;
use crate::user::{owner, Failure};

/// Exit code: the key file exists already (sysexits' EX_CANTCREAT); a
/// new key takes a new selector, so nothing is overwritten.
pub const EXIT_EXISTS: u8 = 73;

/// What `mta-init dkim` does.
#[derive(Debug, Subcommand)]
pub enum DkimVerb {
    /// Make a private key (mode 0640, root and mtad's group when run as
    /// root) and print the DNS TXT record to publish and the
    /// `[[dkim.sign]]` table to add.
    Keygen {
        /// The signing domain (d=), the From: domain of the mail to sign.
        #[arg(long)]
        domain: String,
        /// The selector (s=): a new one for each new key.
        #[arg(long)]
        selector: String,
        /// rsa-sha256 (what every receiver checks) or ed25519-sha256
        /// (RFC 8463; sign with both to offer it).
        #[arg(long, value_enum, default_value = "rsa-sha256")]
        algorithm: Algorithm,
        /// RSA key size (1024 at least; 2048 advised by RFC 8301).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// The key file; default: `dkim/<domain>.<selector>.pem` beside
        /// the configuration file (in the working directory without one).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `--algorithm`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Algorithm {
    #[value(name = "rsa-sha256")]
    RsaSha256,
    #[value(name = "ed25519-sha256")]
    Ed25519Sha256,
}

impl From<Algorithm> for DkimAlgorithm {
    fn from(a: Algorithm) -> DkimAlgorithm {
        match a {
            Algorithm::RsaSha256 => DkimAlgorithm::RsaSha256,
            Algorithm::Ed25519Sha256 => DkimAlgorithm::Ed25519Sha256,
        }
    }
}

/// Loads every configured key as mtad will; the warnings on success.
pub fn check_keys(config: &Config) -> Result<Vec<String>, String> {
    mta_dkim::Signers::load(&config.dkim.sign)
        .map(|loaded| loaded.warnings)
        .map_err(|e| format!("[[dkim.sign]]: {e}"))
}

/// Runs one `dkim` command.
pub fn run(config: &Config, config_path: Option<&Path>, verb: DkimVerb) -> ExitCode {
    match execute(config, config_path, verb) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mta-init: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn execute(config: &Config, config_path: Option<&Path>, verb: DkimVerb) -> Result<(), Failure> {
    let DkimVerb::Keygen {
        domain,
        selector,
        algorithm,
        bits,
        out,
    } = verb;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    for (what, name) in [("domain", &domain), ("selector", &selector)] {
        if !is_label_list(name) {
            return Err(Failure::new(
                EXIT_CONFIG,
                format!("--{what} {name:?}: letters, digits and '-' in labels separated by '.'"),
            ));
        }
    }
    let path = out.unwrap_or_else(|| {
        let dir = config_path
            .and_then(Path::parent)
            .map(|p| p.join("dkim"))
            .unwrap_or_else(|| PathBuf::from("dkim"));
        dir.join(format!("{domain}.{selector}.pem"))
    });
    let algorithm = DkimAlgorithm::from(algorithm);
    let key = mta_dkim::generate(algorithm, bits).map_err(|e| Failure::new(1, e.to_string()))?;
    write_key(config, &path, key.pem.as_bytes())?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    println!("wrote {} ({})", shown.display(), algorithm.as_str());
    println!();
    println!("Publish this DNS record:");
    println!("{}", mta_dkim::zone_line(&selector, &domain, &key.record));
    println!();
    println!("Then add to the configuration and run mta-init graceful:");
    println!("[[dkim.sign]]");
    println!("domain = \"{domain}\"");
    println!("selector = \"{selector}\"");
    println!("key = \"{}\"", shown.display());
    println!("algorithm = \"{}\"", algorithm.as_str());
    Ok(())
}

/// Writes a new file, 0640 whatever the umask, given to root and mtad's
/// group when run as root; never replaces one.
fn write_key(config: &Config, path: &Path, pem: &[u8]) -> Result<(), Failure> {
    let io = |action: &str, e: std::io::Error| {
        Failure::new(1, format!("cannot {action} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(|e| io("set the mode of the directory of", e))?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::new(
                    EXIT_EXISTS,
                    format!(
                        "{} exists: a new key takes a new selector (or remove the old file first)",
                        path.display()
                    ),
                )
            } else {
                io("create", e)
            }
        })?;
    if let Some((uid, gid)) = owner(config, path)? {
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| io("give away", e.into()))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
        .map_err(|e| io("set the mode of", e))?;
    file.write_all(pem).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    Ok(())
}

fn is_label_list(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}
