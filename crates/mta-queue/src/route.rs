//! Where a recipient's mail goes: a local Maildir, a fixed relay, or the
//! domain's MX hosts.

use std::collections::BTreeMap;

/// The route of one recipient domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// One of our domains: delivered to Maildir.
    Local,
    /// A configured smarthost.
    Relay {
        /// Its host name or address.
        host: String,
        /// Its port.
        port: u16,
    },
    /// The domain's MX hosts (RFC 5321 section 5.1).
    Mx {
        /// The recipient domain, lower-cased.
        domain: String,
    },
}

/// The routing table: local domains and fixed routes from the
/// configuration.
#[derive(Debug, Clone, Default)]
pub struct Router {
    local: Vec<String>,
    routes: BTreeMap<String, (String, u16)>,
}

impl Router {
    /// Builds the table; `routes` maps a domain to `host:port` (already
    /// checked by the configuration).
    pub fn new(local_domains: &[String], routes: &BTreeMap<String, String>) -> Router {
        Router {
            local: local_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            routes: routes
                .iter()
                .filter_map(|(domain, route)| {
                    let (host, port) = route.rsplit_once(':')?;
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    Some((
                        domain.to_ascii_lowercase(),
                        (host.to_owned(), port.parse().ok()?),
                    ))
                })
                .collect(),
        }
    }

    /// The route for a recipient domain. The bare `postmaster` (empty
    /// domain) is ours.
    pub fn route(&self, domain: &str) -> Route {
        let domain = domain.to_ascii_lowercase();
        if domain.is_empty() || self.local.contains(&domain) {
            return Route::Local;
        }
        if let Some((host, port)) = self.routes.get(&domain) {
            return Route::Relay {
                host: host.clone(),
                port: *port,
            };
        }
        Route::Mx { domain }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_relay_and_mx() {
        let routes = BTreeMap::from([("Relay.test".to_owned(), "127.0.0.9:2525".to_owned())]);
        let r = Router::new(&["Local.test".to_owned()], &routes);
        assert_eq!(r.route("local.TEST"), Route::Local);
        assert_eq!(r.route(""), Route::Local);
        assert_eq!(
            r.route("relay.test"),
            Route::Relay {
                host: "127.0.0.9".into(),
                port: 2525
            }
        );
        assert_eq!(
            r.route("Example.test"),
            Route::Mx {
                domain: "example.test".into()
            }
        );
    }
}
