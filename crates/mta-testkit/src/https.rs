//! An HTTPS server on 127.0.0.1 for MTA-STS policy fetches (RFC 8461
//! section 3.3), with a certificate a fresh CA signed for the name the
//! test gives; the test trusts that CA. Its answer is scripted (status,
//! headers, body, a delay) and it counts the requests for the policy.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The path of an MTA-STS policy.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// What the server answers for the policy path (anything else: 404).
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Headers besides `content-type: text/plain`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    /// 200 with `body`.
    pub fn ok(body: &str) -> Answer {
        Answer {
            status: 200,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// A running policy host; stops when dropped.
pub struct PolicyHost {
    /// `127.0.0.1:port`.
    pub addr: SocketAddr,
    /// The PEM certificate of the CA that signed the server's.
    pub ca_pem: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PolicyHost {
    /// Serves `answer` with a certificate for `name` (e.g.
    /// `mta-sts.example.test`), on its own thread and runtime.
    pub fn start(name: &str, answer: Answer) -> io::Result<PolicyHost> {
        let ca_key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "MTA-STS test CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(io::Error::other)?;
        let key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(io::Error::other)?
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(io::Error::other)?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let (served, counted) = (answer.clone(), requests.clone());
        let thread = thread::Builder::new()
            .name("policy-host".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let serve = async {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else {
                                continue;
                            };
                            let acceptor = acceptor.clone();
                            let (served, counted) = (served.clone(), counted.clone());
                            tokio::spawn(async move {
                                let Ok(tls) = acceptor.accept(tcp).await else {
                                    return;
                                };
                                let service = hyper::service::service_fn(move |req: Request<_>| {
                                    respond(req, served.clone(), counted.clone())
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        () = serve => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(PolicyHost {
            addr,
            ca_pem: ca_cert.pem(),
            answer,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Answers `answer` from now on.
    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock() = answer;
    }

    /// Requests for the policy path so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops serving: the port no longer takes connections.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PolicyHost {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != POLICY_PATH {
        let mut not_found = Response::new(Full::new(Bytes::new()));
        *not_found.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(not_found);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let answer = answer.lock().clone();
    tokio::time::sleep(answer.delay).await;
    let mut builder = Response::builder()
        .status(answer.status)
        .header("content-type", "text/plain");
    for (name, value) in &answer.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    Ok(builder
        .body(Full::new(Bytes::from(answer.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
