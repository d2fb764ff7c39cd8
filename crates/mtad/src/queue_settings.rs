//! The queue's settings from the configuration: mta-queue reads no
//! configuration, it is told ([`mta_queue::QueueSettings`]).

use mta_config::Config;
use mta_deliver::{ClientConfig, ResolverConfig};
use mta_queue::schedule::Schedule;
use mta_queue::{QueueSettings, Settings};

/// Everything the queue runners are started with.
pub fn of(config: &Config) -> QueueSettings {
    let d = &config.delivery;
    let q = &config.queue;
    QueueSettings {
        attempts: Settings {
            hostname: config.hostname.clone(),
            postmaster: config.postmaster(),
            dsn_from: config.dsn_from(),
            port: d.port,
            maildir_root: config.maildir.root.clone(),
            schedule: Schedule {
                base: q.retry_base,
                jitter: q.retry_jitter,
                lifetime: q.lifetime,
            },
            delay_notice_after: q.delay_notice_after,
            volatile: q.mode == mta_config::QueueMode::Volatile,
            poll_interval: q.poll_interval,
        },
        delivery_log: config.delivery_log(),
        client: client_config(config),
        resolver: ResolverConfig {
            name_servers: d.name_servers.clone(),
            timeout: d.dns_timeout,
            attempts: 2,
        },
        local_domains: config.smtp.local_domains.clone(),
        routes: d.routes.clone(),
        ram_concurrency: q.ram_concurrency,
        bounce_concurrency: q.bounce_concurrency,
        disk_concurrency: q.disk_concurrency,
    }
}

fn client_config(config: &Config) -> ClientConfig {
    let d = &config.delivery;
    let t = &d.timeouts;
    let policy = |p: mta_config::TlsPolicy| match p {
        mta_config::TlsPolicy::None => mta_deliver::TlsPolicy::None,
        mta_config::TlsPolicy::Opportunistic => mta_deliver::TlsPolicy::Opportunistic,
        mta_config::TlsPolicy::Required => mta_deliver::TlsPolicy::Required,
    };
    ClientConfig {
        helo_name: d
            .helo_name
            .clone()
            .unwrap_or_else(|| config.hostname.clone()),
        timeouts: mta_deliver::Timeouts {
            connect: t.connect,
            greeting: t.greeting,
            ehlo: t.ehlo,
            mail: t.mail,
            rcpt: t.rcpt,
            data_init: t.data_init,
            data_block: t.data_block,
            data_end: t.data_end,
            quit: t.quit,
        },
        tls: policy(d.tls),
        eightbit_without_8bitmime: match d.eightbit_without_8bitmime {
            mta_config::EightBitPolicy::Fail => mta_deliver::EightBitPolicy::Fail,
            mta_config::EightBitPolicy::Send => mta_deliver::EightBitPolicy::Send,
        },
        tls_per_domain: d
            .tls_policy
            .iter()
            .map(|(domain, p)| (domain.to_ascii_lowercase(), policy(*p)))
            .collect(),
        ca_file: d.ca_file.clone(),
        max_per_destination: d.max_per_destination,
        max_messages_per_hour: d.max_messages_per_hour,
        backoff_after: d.backoff_after,
        backoff_for: d.backoff_for,
        throttle: d
            .throttle
            .iter()
            .map(|(pattern, rule)| {
                let rule = mta_deliver::ThrottleRule {
                    max_connections: rule.max_connections,
                    max_messages_per_hour: rule.max_messages_per_hour,
                };
                (pattern.clone(), rule)
            })
            .collect(),
        max_messages_per_connection: d.max_messages_per_connection,
        idle_connection_timeout: d.idle_connection_timeout,
    }
}
