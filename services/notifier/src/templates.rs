//! The mail templates: plain-text files with a `Subject:` line, a blank
//! line and the body, where `{{name}}` stands for a parameter.
//!
//! The built-in ones (`services/notifier/templates/*.txt`) are compiled in;
//! a folder of `<name>.txt` files replaces or adds to them. Templates are
//! parsed when loaded, so a broken one stops the start, not a notice.
//! Rendering is all or nothing: a missing parameter is an error naming it,
//! never a half-filled mail.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::error::NotifierError;

/// The built-in templates, by name.
const BUILTIN: &[(&str, &str)] = &[
    ("deactivated", include_str!("../templates/deactivated.txt")),
    (
        "over-quota-recipient",
        include_str!("../templates/over-quota-recipient.txt"),
    ),
    (
        "over-quota-sender",
        include_str!("../templates/over-quota-sender.txt"),
    ),
    ("admin-alert", include_str!("../templates/admin-alert.txt")),
    (
        "migration-token",
        include_str!("../templates/migration-token.txt"),
    ),
];

/// A rendered notice: one subject line and a plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Param(String),
}

/// One parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    subject: Vec<Segment>,
    body: Vec<Segment>,
}

/// Every template, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    by_name: BTreeMap<String, Template>,
}

impl Templates {
    /// The built-in templates, then those of `dir` (which replace a
    /// built-in one of the same name).
    pub fn load(dir: Option<&Path>) -> Result<Templates, NotifierError> {
        let mut by_name = BTreeMap::new();
        for (name, text) in BUILTIN {
            let shown = format!("{name}.txt (built in)");
            by_name.insert(name.to_string(), parse(&shown, text)?);
        }
        if let Some(dir) = dir {
            for (name, path) in template_files(dir)? {
                let text = std::fs::read_to_string(&path).map_err(|source| {
                    NotifierError::TemplateRead {
                        path: path.clone(),
                        source,
                    }
                })?;
                by_name.insert(name, parse(&path.display().to_string(), &text)?);
            }
        }
        Ok(Templates { by_name })
    }

    /// Whether a template of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The template names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Fill template `name` from `params`, or name what is missing (never
    /// a value: parameters may hold secrets such as a migration token).
    pub fn render(
        &self,
        name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Rendered, NotifierError> {
        let template = self
            .by_name
            .get(name)
            .ok_or_else(|| NotifierError::UnknownTemplate {
                name: name.to_string(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })?;
        let missing: BTreeSet<&str> = template
            .subject
            .iter()
            .chain(&template.body)
            .filter_map(|s| match s {
                Segment::Param(p) if !params.contains_key(p) => Some(p.as_str()),
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            return Err(NotifierError::MissingParams {
                template: name.to_string(),
                missing: missing.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(Rendered {
            subject: one_line(&fill(&template.subject, params)),
            body: fill(&template.body, params),
        })
    }
}

/// The `<name>.txt` files of `dir`; other files are ignored.
fn template_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, NotifierError> {
    let read = |source| NotifierError::TemplateRead {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("txt") || !path.is_file() {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| valid_name(s))
            .ok_or_else(|| NotifierError::TemplateParse {
                path: path.display().to_string(),
                reason:
                    "a template's file name must be <name>.txt with a name of a-z, 0-9, - and _",
            })?;
        out.push((name.to_string(), path.clone()));
    }
    Ok(out)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `Subject: ...`, a blank line, the body.
fn parse(path: &str, text: &str) -> Result<Template, NotifierError> {
    let fail = |reason: &'static str| NotifierError::TemplateParse {
        path: path.to_string(),
        reason,
    };
    let in_part = |part: &'static str| {
        move |problem| NotifierError::TemplatePart {
            path: path.to_string(),
            part,
            problem: Box::new(problem),
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")
        .ok_or_else(|| fail("the first line must be `Subject: ...`"))?;
    let body = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .ok_or_else(|| fail("a blank line must follow the Subject line"))?;
    Ok(Template {
        subject: segments(subject.trim()).map_err(in_part("subject"))?,
        body: segments(body).map_err(in_part("body"))?,
    })
}

/// Split text into literal runs and `{{name}}` placeholders.
fn segments(mut text: &str) -> Result<Vec<Segment>, NotifierError> {
    let mut out = Vec::new();
    while let Some(open) = text.find("{{") {
        if open > 0 {
            out.push(Segment::Text(text[..open].to_string()));
        }
        let after = &text[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| NotifierError::PlaceholderOpen {
                excerpt: excerpt(after),
            })?;
        let name = after[..close].trim();
        if !valid_param(name) {
            return Err(NotifierError::PlaceholderName {
                excerpt: excerpt(name),
            });
        }
        out.push(Segment::Param(name.to_string()));
        text = &after[close + 2..];
    }
    if !text.is_empty() {
        out.push(Segment::Text(text.to_string()));
    }
    Ok(out)
}

fn valid_param(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn excerpt(s: &str) -> String {
    s.chars().take(30).collect()
}

fn fill(segments: &[Segment], params: &BTreeMap<String, String>) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Text(t) => t.as_str(),
            Segment::Param(p) => params.get(p).map_or("", String::as_str),
        })
        .collect()
}

/// A subject is one line: control characters (CR and LF above all, which
/// could otherwise start a header of their own) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}
