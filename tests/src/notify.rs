//! Test helpers for the notify tests (being written).
