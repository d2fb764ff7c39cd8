//! Integration tests: the real mtad and mta-init, over TCP on loopback.
//! One binary, one module per topic.

mod util;

mod dane;
mod delivery;
mod dkim;
mod dsn;
mod durability;
mod full_disk;
mod http;
mod in_flow;
mod init;
mod init_output;
mod init_permissions;
mod init_text;
mod kill_loop;
mod lifecycle;
mod limits;
mod listeners;
mod mta_sts;
mod operator;
mod postfix;
mod queue_defects;
mod queue_fixture;
mod recipients;
mod restart;
mod scheduling;
mod security;
mod sendmail;
mod signals;
mod slow_senders;
mod smtp;
mod smtputf8;
mod smuggling;
mod storage;
mod submission;
mod submission_peers;
mod tls;
mod upstream;
mod users;
