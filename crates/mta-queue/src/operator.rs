//! The operator's handle on a live queue (`Queue::operator`): listing
//! (`listing.rs`), actions (`actions.rs`) and paused domains
//! (`paused.rs`) each add their own methods to it, so the queue's face
//! is not a wall of forwarding methods.

use std::sync::Arc;

use crate::inner::Inner;

/// The operator's hands on one generation of runners; cheap to clone.
#[derive(Clone)]
pub struct Operator {
    pub(crate) inner: Arc<Inner>,
}
