//! Target `policy_request`: the Postfix policy delegation protocol reader
//! (`services/policy/src/protocol.rs`) over one connection's bytes.
//!
//! Properties: the requests read do not depend on how the bytes arrive
//! (a 1–16 byte buffer gives what a 64 KiB one gives); every request read
//! renders back to `name=value` lines that read as the same request; a
//! request keeps within the limits; an error names the limit or the bad
//! line, which is from the input; a clean end consumes everything.

use crate::policy_protocol::{read_request, reply, Limits, ProtocolError, Request};

/// Input: a buffer-size byte, a limits byte, then the connection's bytes.
pub fn check(data: &[u8]) {
    let [cap, which, input @ ..] = data else {
        return;
    };
    let limits = if which & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_line: 64,
            max_request: 256,
            max_attributes: 8,
        }
    };
    let small = read_all(input, super::capacity(*cap), limits);
    let large = read_all(input, 64 * 1024, limits);
    assert_eq!(small, large, "the result depends on the read buffer size");
    for result in &small {
        match result {
            Ok(Some(request)) => check_request(request, limits),
            Ok(None) => {}
            Err(e) => check_error(e, input, limits),
        }
    }
    assert_eq!(reply("DUNNO"), "action=DUNNO\n\n");
}

/// Every request on the connection, up to the end or the first error.
fn read_all(
    input: &[u8],
    capacity: usize,
    limits: Limits,
) -> Vec<Result<Option<Request>, ProtocolError>> {
    let mut reader = tokio::io::BufReader::with_capacity(capacity, input);
    let mut out = Vec::new();
    loop {
        let result = super::ready(read_request(&mut reader, limits));
        let more = matches!(result, Ok(Some(_)));
        if matches!(result, Ok(None)) {
            assert!(reader.buffer().is_empty(), "a clean end left bytes unread");
        }
        out.push(result);
        if !more {
            return out;
        }
    }
}

fn check_request(request: &Request, limits: Limits) {
    assert!(request.len() <= limits.max_attributes, "{request:?}");
    for (name, value) in request {
        assert!(!name.is_empty() && !name.contains(['=', '\n']), "{name:?}");
        assert!(!value.contains('\n') && !value.ends_with('\r'), "{value:?}");
    }
    // Render and read again: the same attributes.
    let mut text = String::new();
    for (name, value) in request {
        text.push_str(&format!("{name}={value}\n"));
    }
    text.push('\n');
    let again = read_all(text.as_bytes(), 64 * 1024, limits);
    assert_eq!(again.first(), Some(&Ok(Some(request.clone()))), "{text:?}");
}

fn check_error(error: &ProtocolError, input: &[u8], limits: Limits) {
    match error {
        ProtocolError::LineTooLong(n) => assert_eq!(*n, limits.max_line),
        ProtocolError::RequestTooLarge(n) => assert_eq!(*n, limits.max_request),
        ProtocolError::TooManyAttributes(n) => assert_eq!(*n, limits.max_attributes),
        ProtocolError::NoEquals(line) => {
            assert!(
                line.chars().count() <= 80,
                "the error quotes at most 80 chars"
            );
            assert!(!line.contains('='), "{line:?} has an '='");
            let quoted = line.as_bytes();
            assert!(!quoted.is_empty(), "an empty line ends a request");
            assert!(
                input.windows(quoted.len()).any(|w| w == quoted),
                "the error quotes {line:?}, which is not in the input"
            );
        }
        ProtocolError::EmptyName | ProtocolError::NotUtf8 | ProtocolError::Truncated => {}
        ProtocolError::Io(e) => panic!("an in-memory read failed: {e}"),
    }
}
