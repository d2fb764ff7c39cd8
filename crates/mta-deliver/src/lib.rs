//! Outbound delivery. Placeholder: written by the SMTP client helper.

pub mod mx;
