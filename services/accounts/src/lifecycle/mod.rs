//! The lifecycle decider.
