//! Test helpers for the api tests (being written).
