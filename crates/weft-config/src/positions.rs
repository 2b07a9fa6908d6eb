//! Where each field of a document stands, so that a semantic problem found
//! after parsing (`spec.http[0].route[1].weight`) can name its own line and
//! column, not just the document's.
//!
//! Built from a YAML 1.2 event parser: a stack of the open mappings and
//! sequences gives every key and list item its field path.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// Field path → (line, column), both 1-based, relative to the document.
    at: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl Positions {
    /// Indexes one document. A document the parser cannot read yields an
    /// empty index: messages then fall back to the document's line.
    pub(crate) fn of(text: &str) -> Positions {
        let mut p = Positions::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let here = (span.start.line(), span.start.col() + 1);
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = child_path(&stack);
                    p.at.entry(path.clone()).or_insert(here);
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, index: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    advance(&mut stack);
                }
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) = stack.last_mut()
                    {
                        let full = join(path, &value);
                        p.at.entry(full).or_insert(here);
                        *key = Some(value.into_owned());
                    } else {
                        let path = child_path(&stack);
                        p.at.entry(path).or_insert(here);
                        advance(&mut stack);
                    }
                }
                Event::Alias(_) => advance(&mut stack),
                _ => {}
            }
        }
        p
    }

    /// The position of `field`, or of its nearest indexed ancestor.
    pub(crate) fn find(&self, field: &str) -> Option<(usize, usize)> {
        let mut path = field;
        loop {
            if let Some(pos) = self.at.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path of the node about to start under the top frame.
fn child_path(stack: &[Frame]) -> String {
    match stack.last() {
        None => String::new(),
        Some(Frame::Map { path, key }) => join(path, key.as_deref().unwrap_or("")),
        Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
    }
}

/// A value under the top frame is complete.
fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, .. }) => *key = None,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_items_have_positions() {
        let text = "spec:\n  hosts: [a, b]\n  http:\n  - route:\n    - destination: {host: r}\n      weight: 80\n    - destination: {host: r}\n      weight: 20\n";
        let p = Positions::of(text);
        assert_eq!(p.find("spec"), Some((1, 1)));
        assert_eq!(p.find("spec.http[0].route[1].weight"), Some((8, 7)));
        assert_eq!(
            p.find("spec.http[0].route[0].destination.host"),
            Some((5, 21))
        );
        assert_eq!(p.find("spec.hosts[1]"), Some((2, 14)));
        assert_eq!(p.find("spec.http[0].route[1].nothing.here"), Some((7, 7)));
    }
}
