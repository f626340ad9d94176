//! The outbound crate's one error type.

/// What the outbound consumer can fail at: its recorded settings and
/// state values that do not read back.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// A stored account row without its flags byte.
    #[error("empty account row")]
    EmptyAccountRow,
    /// A stored account row with flags this version does not know.
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// A stored windows record of another layout version.
    #[error("windows layout {version}, expected {expected}")]
    WindowsLayout { version: u8, expected: u8 },
    /// A stored windows record that ends inside a number.
    #[error("cut short: {left} bytes, {wanted} wanted")]
    CutShort { left: usize, wanted: usize },
    /// A stored windows record with more entries than bytes left.
    #[error("{count} entries in {left} bytes")]
    Entries { count: u32, left: usize },
    /// A stored windows record with bytes after its last entry.
    #[error("{0} bytes left over")]
    LeftOver(usize),
}
