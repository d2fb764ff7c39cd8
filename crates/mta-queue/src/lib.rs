//! Placeholder: the queue runners.
