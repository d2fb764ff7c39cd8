//! Integration tests: the real mtad and mta-init, over TCP on loopback.
//! One binary, one module per topic.

mod util;

mod delivery;
mod durability;
mod full_disk;
mod http;
mod init;
mod lifecycle;
mod limits;
mod operator;
mod postfix;
mod restart;
mod signals;
mod smtp;
mod smuggling;
mod storage;
mod tls;
mod upstream;
