//! The policy fetch (RFC 8461 section 3.3): `GET
//! https://mta-sts.<domain>/.well-known/mta-sts.txt`, the certificate
//! verified for `mta-sts.<domain>`, HTTP/1.1 with no redirects followed,
//! only 200 taken, no HTTP cache, within a time and a size limit.
//!
//! The host is resolved with the delivery's resolver, so a private
//! deployment (or a test) that points `[delivery] name_servers` at its
//! own DNS finds its own policy hosts too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CACHE_CONTROL, HOST, USER_AGENT};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::policy::{Policy, PolicyError};
use crate::Resolver;

/// The path of the policy (section 3.3).
const PATH: &str = "/.well-known/mta-sts.txt";

/// Why a policy could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `mta-sts.<domain>` has no address.
    #[error("{host}: {reason}")]
    Resolve {
        /// The policy host.
        host: String,
        /// Why.
        reason: String,
    },
    /// No address took the connection, or the TLS handshake failed
    /// (the certificate included).
    #[error("{0}")]
    Connect(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// Any answer but 200 (a redirect included: not followed).
    #[error("HTTP status {0}")]
    Status(StatusCode),
    /// The body is larger than the limit.
    #[error("the policy is larger than {0} bytes")]
    TooLarge(usize),
    /// The whole fetch took too long.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The body is not a policy.
    #[error("invalid policy: {0}")]
    Invalid(#[from] PolicyError),
}

/// Fetches policies: where, with which trust anchors, within what limits.
#[derive(Clone)]
pub struct Fetcher {
    /// Verifies against the system's anchors and the configured CA files.
    tls: Arc<rustls::ClientConfig>,
    resolver: Resolver,
    port: u16,
    timeout: Duration,
    max_size: usize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher that verifies with `tls` and connects to `port`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        resolver: Resolver,
        port: u16,
        timeout: Duration,
        max_size: usize,
    ) -> Fetcher {
        Fetcher {
            tls,
            resolver,
            port,
            timeout,
            max_size,
        }
    }

    /// The policy of `domain` (lower case, no trailing dot).
    pub async fn fetch(&self, domain: &str) -> Result<Policy, FetchError> {
        match tokio::time::timeout(self.timeout, self.fetch_body(domain)).await {
            Ok(body) => Ok(Policy::parse(&body?)?),
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn fetch_body(&self, domain: &str) -> Result<Bytes, FetchError> {
        let host = format!("mta-sts.{domain}");
        let target = self
            .resolver
            .host_target(&host, self.port)
            .await
            .map_err(|e| FetchError::Resolve {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let name = ServerName::try_from(host.clone()).map_err(|e| FetchError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?;
        let connector = TlsConnector::from(self.tls.clone());
        let mut last = format!("{host}: no address");
        let mut stream = None;
        for addr in &target.addrs {
            let tcp = match TcpStream::connect(addr).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    last = format!("connect to {host}[{}]:{}: {e}", addr.ip(), addr.port());
                    continue;
                }
            };
            match connector.connect(name.clone(), tcp).await {
                Ok(tls) => {
                    stream = Some(tls);
                    break;
                }
                Err(e) => {
                    last = format!("TLS with {host}[{}]:{} failed: {e}", addr.ip(), addr.port());
                }
            }
        }
        let stream = stream.ok_or(FetchError::Connect(last))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        // The connection is driven beside the request and dropped with it.
        let driver = tokio::spawn(connection);
        let _abort = AbortOnDrop(driver);
        let host_header = if self.port == 443 {
            host.clone()
        } else {
            format!("{host}:{}", self.port)
        };
        let request = hyper::Request::get(PATH)
            .header(HOST, host_header)
            .header(USER_AGENT, concat!("mtad/", env!("CARGO_PKG_VERSION")))
            .header(CACHE_CONTROL, "no-cache")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), self.max_size)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge(self.max_size)
                } else {
                    FetchError::Http(e.to_string())
                }
            })?;
        Ok(body.to_bytes())
    }
}

/// Aborts the connection task when the fetch ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
