//! The receiver's doors, one per protocol: each turns its protocol's
//! requests into calls on the one place uploads land (`uploads`), and what
//! that place says back into its protocol's answers.

pub(crate) mod companion;
pub(crate) mod resumable;
pub(crate) mod segmented;
