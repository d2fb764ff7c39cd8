//! Hashes made by real, independent tools, checked by this crate; and a
//! hash this crate writes, checked by Dovecot.
//!
//! The tools: `openssl passwd` (sha512-crypt, sha256-crypt), `mkpasswd`
//! (Debian's whois package: yescrypt, bcrypt, sha512-crypt with rounds,
//! and the weak schemes we must refuse), `doveadm pw` (dovecot-core: the
//! `{SCHEME}` strings Dovecot users have). A missing tool skips its test
//! with a note, or fails it in CI.

mod common;

use std::path::Path;

use common::{first_line, run, skip_without};
use mta_auth::{
    hash_password, HashParams, HashProblem, Scheme, StoredHash, UsersEditor, UsersFile, WarningKind,
};

/// A password with a space, an @ and a non-ASCII letter, as people have.
const PASSWORD: &str = "p@ss wörd 7";

/// Checks that `hash` (from `tool`) is read as `scheme`, accepts
/// [`PASSWORD`] and refuses near misses.
fn assert_verifies(tool: &str, hash: &str, scheme: Scheme) {
    let stored =
        StoredHash::parse(hash).unwrap_or_else(|e| panic!("{tool}: {hash:?} refused: {e}"));
    assert_eq!(stored.scheme(), scheme, "{tool}: {hash}");
    assert!(stored.verify(PASSWORD.as_bytes()), "{tool}: {hash}");
    for wrong in [
        "p@ss wörd 8",
        "p@ss word 7",
        "P@ss wörd 7",
        "p@ss wörd 7 ",
        "",
    ] {
        assert!(
            !stored.verify(wrong.as_bytes()),
            "{tool}: {hash} took {wrong:?}"
        );
    }
}

#[test]
fn openssl_sha_crypt() {
    if skip_without("openssl_sha_crypt", "openssl", "openssl") {
        return;
    }
    let table = [("-6", Scheme::Sha512Crypt), ("-5", Scheme::Sha256Crypt)];
    for (flag, scheme) in table {
        let hash = first_line("openssl", &["passwd", flag, PASSWORD]);
        assert_verifies(&format!("openssl passwd {flag}"), &hash, scheme);
    }
}

#[test]
fn mkpasswd_crypt_strings() {
    if skip_without("mkpasswd_crypt_strings", "mkpasswd", "whois") {
        return;
    }
    let table: &[(&[&str], Scheme)] = &[
        (&["-m", "yescrypt"], Scheme::Yescrypt),
        // A cheaper and a costlier yescrypt (-R is log2 of N here).
        (&["-m", "yescrypt", "-R", "3"], Scheme::Yescrypt),
        (&["-m", "yescrypt", "-R", "7"], Scheme::Yescrypt),
        (&["-m", "bcrypt"], Scheme::Bcrypt),
        (&["-m", "bcrypt", "-R", "6"], Scheme::Bcrypt),
        (&["-m", "bcrypt-a"], Scheme::Bcrypt),
        (&["-m", "sha512crypt"], Scheme::Sha512Crypt),
        (&["-m", "sha512crypt", "-R", "12345"], Scheme::Sha512Crypt),
        (&["-m", "sha256crypt", "-R", "1000"], Scheme::Sha256Crypt),
    ];
    for (args, scheme) in table {
        let mut all = args.to_vec();
        all.push(PASSWORD);
        let hash = first_line("mkpasswd", &all);
        assert_verifies(&format!("mkpasswd {args:?}"), &hash, *scheme);
    }
}

#[test]
fn mkpasswd_weak_schemes_are_refused() {
    if skip_without("mkpasswd_weak_schemes_are_refused", "mkpasswd", "whois") {
        return;
    }
    for method in ["md5crypt", "descrypt", "bsdicrypt", "sunmd5", "nt"] {
        let hash = first_line("mkpasswd", &["-m", method, PASSWORD]);
        match StoredHash::parse(&hash) {
            Err(HashProblem::Weak(_)) => {}
            other => panic!("mkpasswd -m {method}: {hash}: {other:?}"),
        }
    }
    // scrypt is not weak, but not ours either.
    let hash = first_line("mkpasswd", &["-m", "scrypt", PASSWORD]);
    assert_eq!(
        StoredHash::parse(&hash),
        Err(HashProblem::Unknown("$7$".into()))
    );
}

#[test]
fn doveadm_schemes() {
    if skip_without("doveadm_schemes", "/usr/bin/doveadm", "dovecot-core") {
        return;
    }
    let table = [
        ("ARGON2ID", Scheme::Argon2id),
        ("ARGON2I", Scheme::Argon2i),
        ("SHA512-CRYPT", Scheme::Sha512Crypt),
        ("SHA256-CRYPT", Scheme::Sha256Crypt),
        ("BLF-CRYPT", Scheme::Bcrypt),
    ];
    for (scheme_name, scheme) in table {
        let hash = first_line("doveadm", &["pw", "-s", scheme_name, "-p", PASSWORD]);
        assert!(
            hash.starts_with(&format!("{{{scheme_name}}}")),
            "doveadm pw -s {scheme_name}: {hash}"
        );
        assert_verifies(&format!("doveadm pw -s {scheme_name}"), &hash, scheme);
    }
    // {CRYPT} is the system's crypt(3); whatever it makes, we read it.
    let hash = first_line("doveadm", &["pw", "-s", "CRYPT", "-p", PASSWORD]);
    let stored = StoredHash::parse(&hash).unwrap_or_else(|e| panic!("{hash}: {e}"));
    assert!(stored.verify(PASSWORD.as_bytes()), "{hash}");
    for weak in [
        "PLAIN",
        "CLEAR",
        "MD5",
        "SHA256",
        "SSHA512",
        "MD5-CRYPT",
        "PLAIN-MD5",
    ] {
        let hash = first_line("doveadm", &["pw", "-s", weak, "-p", PASSWORD]);
        match StoredHash::parse(&hash) {
            Err(HashProblem::Weak(_)) => {}
            other => panic!("doveadm pw -s {weak}: {hash}: {other:?}"),
        }
    }
    for unknown in ["PBKDF2", "SCRAM-SHA-256"] {
        let hash = first_line("doveadm", &["pw", "-s", unknown, "-p", PASSWORD]);
        match StoredHash::parse(&hash) {
            Err(HashProblem::Unknown(_)) => {}
            other => panic!("doveadm pw -s {unknown}: {hash}: {other:?}"),
        }
    }
}

/// Dovecot checks our hashes: the default parameters and others.
#[test]
fn doveadm_accepts_our_hashes() {
    if skip_without(
        "doveadm_accepts_our_hashes",
        "/usr/bin/doveadm",
        "dovecot-core",
    ) {
        return;
    }
    let small = HashParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    for params in [HashParams::default(), small] {
        let hash = hash_password(PASSWORD.as_bytes(), params).unwrap();
        let right = run("doveadm", &["pw", "-t", &hash, "-p", PASSWORD]);
        assert!(
            right.status.success(),
            "doveadm pw -t {hash}: {}",
            String::from_utf8_lossy(&right.stderr)
        );
        assert!(String::from_utf8_lossy(&right.stdout).contains("(verified)"));
        let wrong = run("doveadm", &["pw", "-t", &hash, "-p", "p@ss wörd 8"]);
        assert!(
            !wrong.status.success(),
            "doveadm took a wrong password for {hash}"
        );
    }
}

/// A users file with a line from each tool, as an operator migrating
/// would have it: every user loads and logs in with its password.
#[test]
fn a_mixed_users_file() {
    let tools = [
        ("openssl", "openssl", "openssl"),
        ("mkpasswd", "mkpasswd", "whois"),
        ("/usr/bin/doveadm", "doveadm", "dovecot-core"),
    ];
    for (program, _, package) in tools {
        if skip_without("a_mixed_users_file", program, package) {
            return;
        }
    }
    let lines = [
        (
            "a@example.com",
            first_line("openssl", &["passwd", "-6", PASSWORD]),
        ),
        (
            "b@example.com",
            first_line("openssl", &["passwd", "-5", PASSWORD]),
        ),
        ("c", first_line("mkpasswd", &["-m", "yescrypt", PASSWORD])),
        (
            "d",
            first_line("doveadm", &["pw", "-s", "ARGON2ID", "-p", PASSWORD]),
        ),
        (
            "e",
            first_line("doveadm", &["pw", "-s", "SHA512-CRYPT", "-p", PASSWORD]),
        ),
        (
            "f",
            first_line("doveadm", &["pw", "-s", "BLF-CRYPT", "-p", PASSWORD]),
        ),
        (
            "weak",
            first_line("doveadm", &["pw", "-s", "PLAIN", "-p", PASSWORD]),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let mut text = String::from("# migrated from Dovecot\n");
    for (name, hash) in &lines {
        text.push_str(&format!("{name}:{hash}:::/home/{name}\n"));
    }
    std::fs::write(&path, &text).unwrap();
    // Our editor adds a user beside them without touching their lines.
    UsersEditor::new(&path)
        .add("g@example.org", PASSWORD.as_bytes())
        .unwrap();
    let (file, warnings) = UsersFile::load(&path).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].name.as_deref(), Some("weak"));
    assert!(matches!(
        warnings[0].kind,
        WarningKind::Hash(HashProblem::Weak(_))
    ));
    for name in [
        "a@EXAMPLE.com",
        "b@example.com",
        "c",
        "d",
        "e",
        "f",
        "g@example.org",
    ] {
        assert!(file.verify(name, PASSWORD.as_bytes()).is_some(), "{name}");
        assert!(file.verify(name, b"p@ss word 7").is_none(), "{name}");
    }
    assert_eq!(file.verify("weak", PASSWORD.as_bytes()), None);
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(kept.starts_with(&text), "the old lines changed");
    assert!(Path::new(&path).exists());
}
