//! DKIM signing (work in progress).
