//! Placeholder: written by the SMTP sink helper.
