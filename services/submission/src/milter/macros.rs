//! Macros: `SMFIC_MACRO` sends name/value pairs for the command that
//! follows it (Postfix: `milter_*_macros`). Names come as `i` or as
//! `{auth_authen}`; both are looked up with or without the braces.
//!
//! Each stage's latest set replaces that stage's earlier one, so the table
//! stays bounded by the stages (a dozen) times one packet each. A lookup
//! prefers the latest stage: `i` from end-of-message over `i` from MAIL.

/// The macros of one connection, by stage (the command code they precede).
#[derive(Debug, Default, Clone)]
pub struct Macros {
    /// `(stage, pairs)`, oldest stage first.
    stages: Vec<(u8, Vec<(String, String)>)>,
}

/// The stages that belong to the connection; every other stage belongs
/// to one message and is forgotten when it ends.
const CONNECTION_STAGES: &[u8] = b"CH";

impl Macros {
    /// Set the macros of `stage`, replacing its earlier ones.
    pub fn set(&mut self, stage: u8, pairs: Vec<(String, String)>) {
        self.stages.retain(|(s, _)| *s != stage);
        self.stages.push((stage, pairs));
    }

    /// The value of `name` (`auth_authen` or `{auth_authen}`), from the
    /// latest stage that has it. An empty value is no value.
    pub fn get(&self, name: &str) -> Option<&str> {
        let want = bare(name);
        self.stages
            .iter()
            .rev()
            .flat_map(|(_, pairs)| pairs.iter())
            .find(|(n, v)| bare(n) == want && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Forget the message's macros (MAIL, RCPT, DATA, headers, end of
    /// message); keep those of the connection and HELO.
    pub fn end_message(&mut self) {
        self.stages.retain(|(s, _)| CONNECTION_STAGES.contains(s));
    }
}

/// A macro name without its braces.
fn bare(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_match_with_or_without_braces_and_the_latest_stage_wins() {
        let mut m = Macros::default();
        m.set(b'C', pairs(&[("{client_addr}", "127.0.0.1"), ("j", "mx")]));
        m.set(b'M', pairs(&[("{auth_authen}", "Alice@X"), ("i", "")]));
        m.set(b'E', pairs(&[("i", "4XyZ")]));
        assert_eq!(m.get("auth_authen"), Some("Alice@X"));
        assert_eq!(m.get("{auth_authen}"), Some("Alice@X"));
        assert_eq!(m.get("{i}"), Some("4XyZ"));
        assert_eq!(m.get("client_addr"), Some("127.0.0.1"));
        assert_eq!(m.get("auth_type"), None);
        // A new set for a stage replaces the old one.
        m.set(b'M', pairs(&[("{auth_type}", "PLAIN")]));
        assert_eq!(m.get("auth_authen"), None);
        assert_eq!(m.get("auth_type"), Some("PLAIN"));
    }

    #[test]
    fn the_end_of_a_message_forgets_its_macros() {
        let mut m = Macros::default();
        m.set(b'C', pairs(&[("j", "mx")]));
        m.set(b'M', pairs(&[("{auth_authen}", "a")]));
        m.set(b'R', pairs(&[("{rcpt_addr}", "b@y")]));
        m.end_message();
        assert_eq!(m.get("auth_authen"), None);
        assert_eq!(m.get("rcpt_addr"), None);
        assert_eq!(m.get("j"), Some("mx"));
        for i in 0..100u8 {
            m.set(b'M', pairs(&[("i", &i.to_string())]));
        }
        assert_eq!(m.stages.len(), 2, "one entry per stage");
    }
}
