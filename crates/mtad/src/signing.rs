//! DKIM at acceptance: which messages mtad signs, and signing them off
//! the async workers.
//!
//! A message is signed once, as it is accepted: after the submission
//! fixes (`Date:`, `Message-ID:`) and before it is made durable, so the
//! spool holds the signed message and retries, restarts and rescans never
//! sign again or differently. Only mail that is ours is signed: from an
//! authenticated user, a local program (`mta-sendmail`, the drop
//! directory) or a client in `relay_networks`; never mail that merely
//! arrived from outside.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use mta_dkim::{DkimError, Signed, Signers};
use mta_envelope::Origin;

/// A message as it is about to be stored: our `Received:`, the
/// submission fixes, then the client's content.
pub struct Parts {
    pub received: String,
    pub fixes: Vec<String>,
    pub content: Vec<u8>,
}

impl Parts {
    fn chunks(&self) -> Vec<&[u8]> {
        let mut chunks = Vec::with_capacity(self.fixes.len() + 2);
        chunks.push(self.received.as_bytes());
        chunks.extend(self.fixes.iter().map(|f| f.as_bytes()));
        chunks.push(&self.content);
        chunks
    }

    /// The message to store: the signatures first, then the parts. The
    /// fields go in front of the content in its own buffer, which moves
    /// the content once; with room there (the session allocates an
    /// eighth above the size it expects) no new buffer is allocated.
    pub fn assemble(self, signed: Option<&Signed>) -> Vec<u8> {
        let fields = signed.map_or("", |s| s.fields.as_str());
        let head: Vec<u8> = [fields, &self.received]
            .into_iter()
            .chain(self.fixes.iter().map(String::as_str))
            .flat_map(str::bytes)
            .collect();
        let mut content = self.content;
        content.splice(0..0, head);
        content
    }
}

/// Whether mail from `origin` is ours to sign.
pub fn is_ours(origin: &Origin, relay_networks: &[IpNet]) -> bool {
    origin.auth.is_some() || in_networks(origin.client_ip, relay_networks)
}

fn in_networks(ip: IpAddr, networks: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|n| n.contains(&ip))
}

/// Signs `parts` with the keys of its From: domain, on tokio's blocking
/// pool (an RSA signature is about a millisecond of CPU, and a large
/// body takes its hashing time): sessions on the async workers are not
/// held up. Returns the parts with the signatures (none when no key is
/// for its domain).
pub async fn sign(
    signers: &Arc<Signers>,
    parts: Parts,
) -> (Parts, Result<Option<Signed>, DkimError>) {
    let Some(domain) = mta_dkim::from_domain(&parts.content) else {
        return (parts, Ok(None));
    };
    if !signers.signs_for(&domain) {
        return (parts, Ok(None));
    }
    let signers = signers.clone();
    tokio::task::spawn_blocking(move || {
        let result = signers.sign(&domain, &parts.chunks());
        (parts, result)
    })
    .await
    .expect("the signing task does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(ip: &str, auth: Option<&str>) -> Origin {
        Origin {
            client_ip: ip.parse().unwrap(),
            helo: "h".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: auth.map(str::to_owned),
        }
    }

    #[test]
    fn ours_is_authenticated_local_or_relay_networks() {
        let nets: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(is_ours(&origin("127.0.0.1", None), &nets));
        assert!(is_ours(&origin("::ffff:10.1.2.3", None), &nets));
        assert!(is_ours(&origin("192.0.2.1", Some("joe")), &nets));
        assert!(is_ours(&origin("127.0.0.1", Some("local:0:root")), &[]));
        assert!(!is_ours(&origin("192.0.2.1", None), &nets));
        assert!(!is_ours(&origin("127.0.0.2", None), &nets));
    }

    #[test]
    fn assembled_with_the_signatures_on_top() {
        let parts = Parts {
            received: "Received: x\r\n".into(),
            fixes: vec!["Date: d\r\n".into()],
            content: b"From: a@b\r\n\r\nbody\r\n".to_vec(),
        };
        let signed = Signed {
            fields: "DKIM-Signature: v=1\r\n".into(),
            by: Vec::new(),
        };
        assert_eq!(
            parts.assemble(Some(&signed)),
            b"DKIM-Signature: v=1\r\nReceived: x\r\nDate: d\r\nFrom: a@b\r\n\r\nbody\r\n"
        );
    }

    /// With room in the content's buffer the fields go in front of it
    /// there: the same message, in the same allocation.
    #[test]
    fn assembled_in_the_contents_own_buffer_when_it_has_room() {
        let mut content = Vec::with_capacity(4096);
        content.extend_from_slice(b"From: a@b\r\n\r\nbody\r\n");
        let buffer = content.as_ptr();
        let parts = Parts {
            received: "Received: x\r\n".into(),
            fixes: vec!["Date: d\r\n".into(), "Message-ID: <m@h>\r\n".into()],
            content,
        };
        let out = parts.assemble(None);
        assert_eq!(
            out,
            b"Received: x\r\nDate: d\r\nMessage-ID: <m@h>\r\nFrom: a@b\r\n\r\nbody\r\n"
        );
        assert_eq!(out.as_ptr(), buffer);
    }
}
