//! Placeholder: the DSN builder.
