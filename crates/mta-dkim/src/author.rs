//! The domain a message is signed for: its From: header's (the one DMARC
//! aligns with).

use mail_parser::MessageParser;

/// The domain of the first address of the From: header field, lower
/// case; `None` without one.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_from_address() {
        let m = b"Subject: x\r\nFrom: \"Joe\" <Joe@Example.COM>, ann@other.test\r\n\r\nbody\r\n";
        assert_eq!(from_domain(m).as_deref(), Some("example.com"));
    }

    #[test]
    fn folded_and_grouped() {
        let m = b"From:\r\n Joe\r\n <joe@news.example.com>\r\n\r\n";
        assert_eq!(from_domain(m).as_deref(), Some("news.example.com"));
    }

    #[test]
    fn none_without_from_or_domain() {
        assert_eq!(from_domain(b"Subject: x\r\n\r\n"), None);
        assert_eq!(from_domain(b"From: joe\r\n\r\n"), None);
    }
}
