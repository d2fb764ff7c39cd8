//! Accepted mail survives SIGKILL: 250 means on stable storage.

use std::collections::BTreeMap;

use crate::util::{message, spool_contents, Mtad, Workdir};

#[test]
fn every_acknowledged_message_survives_sigkill() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 25;
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let addr = mtad.addr;
    // Concurrent clients, so acceptances share flushes (group commit).
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut c = crate::util::Client::connect(addr);
                c.cmd("EHLO client.test", "250");
                let mut acked = Vec::new();
                for n in 0..PER_CLIENT {
                    let subject = format!("durable {client}-{n}");
                    let r = c.send_message("a@b.test", &["x@remote.test"], &message(&subject));
                    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
                    let id = r.text().rsplit(' ').next().unwrap().to_owned();
                    acked.push((id, subject));
                }
                acked
            })
        })
        .collect();
    let acked: BTreeMap<String, String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // Right after the last 250: no chance for a clean close.
    mtad.kill9();
    assert_eq!(
        acked.len(),
        CLIENTS * PER_CLIENT,
        "queue ids must be unique"
    );

    // The daemon comes back up on the same queue (recovering by a rescan)
    // and stops cleanly; every acknowledged message is there.
    let mtad = Mtad::start(&work);
    assert!(mtad.terminate().success());
    let stored = spool_contents(&work.queue());
    let found: BTreeMap<String, String> = stored
        .iter()
        .map(|(id, _, content)| {
            let parsed = mail_parser::MessageParser::default()
                .parse(content.as_slice())
                .unwrap();
            (
                id.to_string(),
                parsed.subject().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(found, acked);
}

#[test]
fn restart_keeps_ids_unique_and_messages_whole() {
    let work = Workdir::new();
    work.write_config("", "");
    let mut ids = Vec::new();
    for round in 0..3 {
        let mtad = Mtad::start(&work);
        let mut c = mtad.connect();
        c.cmd("EHLO client.test", "250");
        let r = c.send_message(
            "a@b.test",
            &["x@remote.test"],
            &message(&format!("round {round}")),
        );
        ids.push(r.text().rsplit(' ').next().unwrap().to_owned());
        if round % 2 == 0 {
            mtad.kill9();
        } else {
            assert!(mtad.terminate().success());
        }
    }
    let stored: Vec<String> = spool_contents(&work.queue())
        .iter()
        .map(|(id, ..)| id.to_string())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3);
    assert_eq!(stored, sorted);
}
