//! The account API (axum) and its projection (being written).
