//! Placeholder: written by the DNS helper.
