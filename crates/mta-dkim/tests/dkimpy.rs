//! Signatures checked by dkimpy (Debian's python3-dkim), an implementation
//! independent of mail-auth, with keys made by OpenSSL and by
//! `mta_dkim::generate`.

use std::path::{Path, PathBuf};
use std::process::Command;

use mta_config::{DkimAlgorithm, DkimSign};
use mta_dkim::Signers;

fn verifier() -> Option<PathBuf> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/integration/dkim_verify.py");
    let has_dkimpy = Command::new("/usr/bin/python3")
        .args(["-c", "import dkim"])
        .status()
        .is_ok_and(|s| s.success());
    if has_dkimpy {
        return Some(script);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3-dkim is missing (tests/install-peers.sh installs it)"
    );
    eprintln!("skipped: python3-dkim is missing");
    None
}

/// dkimpy's verdict per signature, in header order.
fn verify(script: &Path, dir: &Path, message: &[u8], records: &[(String, String)]) -> Vec<bool> {
    let file = dir.join("message.eml");
    std::fs::write(&file, message).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(&file);
    for (name, record) in records {
        cmd.arg(format!("{name}={record}"));
    }
    let out = cmd.output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.contains("\"ok\": true"))
        .collect()
}

fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, String) {
    let path = dir.join(name);
    let ok = Command::new("openssl")
        .args(["genpkey", "-quiet", "-out"])
        .arg(&path)
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey {args:?}");
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap()
        .stdout;
    use base64::Engine as _;
    let (k, p) = if args.contains(&"ED25519") {
        ("ed25519", &der[der.len() - 32..])
    } else {
        ("rsa", &der[..])
    };
    let record = format!(
        "v=DKIM1; k={k}; p={}",
        base64::engine::general_purpose::STANDARD.encode(p)
    );
    (path, record)
}

fn table(domain: &str, selector: &str, key: &Path) -> DkimSign {
    DkimSign {
        domain: domain.into(),
        selector: selector.into(),
        key: key.to_owned(),
        algorithm: None,
        subdomains: false,
        expire: None,
        headers: None,
    }
}

fn signed(signers: &Signers, message: &[u8]) -> Vec<u8> {
    let domain = mta_dkim::from_domain(message).expect("a From domain");
    let s = signers.sign(&domain, &[message]).unwrap().expect("a key");
    let mut out = s.fields.into_bytes();
    out.extend_from_slice(message);
    out
}

const FOLDED: &[u8] = b"From: Joe Example\r\n <joe@example.com>\r\nTo: ann@b.test,\r\n\tbob@b.test\r\nSubject:   a   long\r\n  folded   subject \r\nDate: Sun, 6 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nX-Unsigned: anything\r\n\r\nLine one  \r\n\r\nLine three\twith tab\r\n\r\n\r\n";

#[test]
fn dkimpy_verifies_rsa_and_ed25519_dual_signatures() {
    let Some(script) = verifier() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_record) = openssl_key(
        dir.path(),
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ed, ed_record) = openssl_key(dir.path(), "ed.pem", &["-algorithm", "ED25519"]);
    let loaded = Signers::load(&[
        table("example.com", "rsa1", &rsa),
        table("example.com", "ed1", &ed),
    ])
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let records = vec![
        ("rsa1._domainkey.example.com".to_owned(), rsa_record),
        ("ed1._domainkey.example.com".to_owned(), ed_record),
    ];
    let message = signed(&loaded.signers, FOLDED);
    assert_eq!(
        verify(&script, dir.path(), &message, &records),
        [true, true]
    );

    // 8-bit and UTF-8 header and body.
    let utf8 = "From: Jöran <jöran@example.com>\r\nTo: a@b.test\r\nSubject: grüße\r\n\r\nÄrger über Öl\r\n";
    let mut fixed = utf8.replace("jöran@example.com", "joran@example.com");
    fixed.push_str("\u{fffd} end\r\n");
    let message = signed(&loaded.signers, fixed.as_bytes());
    assert_eq!(
        verify(&script, dir.path(), &message, &records),
        [true, true]
    );

    // A tampered body fails both.
    let mut tampered = signed(&loaded.signers, FOLDED);
    let at = tampered.len() - 6;
    tampered[at] = b'X';
    assert_eq!(
        verify(&script, dir.path(), &tampered, &records),
        [false, false]
    );

    // Over-signed: a From: added after signing breaks the signatures.
    let mut reordered = Vec::new();
    let message = signed(&loaded.signers, FOLDED);
    let split = message.windows(3).position(|w| w == b"\r\nF").unwrap() + 2;
    reordered.extend_from_slice(&message[..split]);
    reordered.extend_from_slice(b"From: mallory@evil.test\r\n");
    reordered.extend_from_slice(&message[split..]);
    assert_eq!(
        verify(&script, dir.path(), &reordered, &records),
        [false, false]
    );
}

#[test]
fn generated_keys_and_their_records_verify() {
    let Some(script) = verifier() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut tables = Vec::new();
    let mut records = Vec::new();
    for (name, algorithm, bits) in [
        ("ed", DkimAlgorithm::Ed25519Sha256, 0),
        ("rsa", DkimAlgorithm::RsaSha256, 2048),
    ] {
        let key = mta_dkim::generate(algorithm, bits).unwrap();
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &key.pem).unwrap();
        // OpenSSL reads what we wrote.
        let ok = Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl reads the {name} key");
        let mut t = table("example.com", name, &path);
        t.algorithm = Some(algorithm);
        tables.push(t);
        records.push((format!("{name}._domainkey.example.com"), key.record));
    }
    let loaded = Signers::load(&tables).unwrap();
    let message = signed(&loaded.signers, FOLDED);
    assert_eq!(
        verify(&script, dir.path(), &message, &records),
        [true, true]
    );
}

#[test]
fn a_1024_bit_key_signs_with_a_warning_and_512_is_refused() {
    let Some(script) = verifier() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (small, record) = openssl_key(
        dir.path(),
        "small.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let loaded = Signers::load(&[table("example.com", "old", &small)]).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0].contains("1024 bits"),
        "{:?}",
        loaded.warnings
    );
    let message = signed(&loaded.signers, FOLDED);
    let records = vec![("old._domainkey.example.com".to_owned(), record)];
    assert_eq!(verify(&script, dir.path(), &message, &records), [true]);

    let (tiny, _) = openssl_key(
        dir.path(),
        "tiny.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"],
    );
    let Err(e) = Signers::load(&[table("example.com", "tiny", &tiny)]) else {
        panic!("a 512-bit key loaded")
    };
    assert!(e.to_string().contains("512 bits"), "{e}");
}

#[test]
fn wrong_algorithm_missing_and_garbage_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = mta_dkim::generate(DkimAlgorithm::Ed25519Sha256, 0).unwrap();
    let path = dir.path().join("ed.pem");
    std::fs::write(&path, &key.pem).unwrap();
    let mut t = table("example.com", "s", &path);
    t.algorithm = Some(DkimAlgorithm::RsaSha256);
    let e = Signers::load(&[t]).err().expect("refused");
    assert!(
        e.to_string().contains("the key is for ed25519-sha256"),
        "{e}"
    );

    let e = Signers::load(&[table("example.com", "s", &dir.path().join("none.pem"))])
        .err()
        .expect("refused");
    assert!(e.to_string().contains("cannot read the DKIM key"), "{e}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    let e = Signers::load(&[table("example.com", "s", &junk)])
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no PEM private key"), "{e}");
}

#[test]
fn subdomains_sign_with_the_parent_unless_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for n in ["a", "b"] {
        let key = mta_dkim::generate(DkimAlgorithm::Ed25519Sha256, 0).unwrap();
        let path = dir.path().join(format!("{n}.pem"));
        std::fs::write(&path, &key.pem).unwrap();
        paths.push(path);
    }
    let mut parent = table("example.com", "p", &paths[0]);
    parent.subdomains = true;
    let named = table("shop.example.com", "n", &paths[1]);
    let signers = Signers::load(&[parent, named]).unwrap().signers;
    let by = |domain: &str| {
        signers
            .sign(domain, &[b"From: x@y\r\n\r\n"])
            .unwrap()
            .map(|s| s.by[0].to_string())
    };
    assert_eq!(by("example.com").as_deref(), Some("example.com:p"));
    assert_eq!(by("News.Example.com").as_deref(), Some("example.com:p"));
    assert_eq!(by("a.b.example.com").as_deref(), Some("example.com:p"));
    assert_eq!(
        by("shop.example.com").as_deref(),
        Some("shop.example.com:n")
    );
    assert_eq!(by("example.org"), None);
    assert_eq!(by("badexample.com"), None);
}

#[test]
fn an_expiry_sets_x_after_t_and_still_verifies() {
    let Some(script) = verifier() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = mta_dkim::generate(DkimAlgorithm::Ed25519Sha256, 0).unwrap();
    let path = dir.path().join("ed.pem");
    std::fs::write(&path, &key.pem).unwrap();
    let mut t = table("example.com", "x", &path);
    t.expire = Some(std::time::Duration::from_secs(7 * 86400));
    let signers = Signers::load(&[t]).unwrap().signers;
    let message = signed(&signers, FOLDED);
    let header = String::from_utf8_lossy(&message).replace("\r\n\t", " ");
    let tag = |name: &str| -> u64 {
        header
            .split(';')
            .find_map(|t| {
                t.trim()
                    .strip_prefix(&format!("{name}="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no {name}= in {header}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(tag("x") - tag("t"), 7 * 86400);
    let records = vec![("x._domainkey.example.com".to_owned(), key.record)];
    assert_eq!(verify(&script, dir.path(), &message, &records), [true]);
}
