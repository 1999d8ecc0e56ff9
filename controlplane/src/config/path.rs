//! Field paths (`trunks[1].address`) and the line a path points at.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// One step into the document: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a problem is in the configuration, written as an operator types
/// it: `trunks[1].address`, `routes[0].targets[1].trunk`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document itself.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_owned()));
        p
    }

    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Converts the path `serde_path_to_error` recorded.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let mut p = FieldPath::root();
        for segment in path.iter() {
            match segment {
                S::Seq { index } => p.0.push(Segment::Index(*index)),
                S::Map { key } => p.0.push(Segment::Key(key.clone())),
                S::Enum { variant } => p.0.push(Segment::Key(variant.clone())),
                S::Unknown => {}
            }
        }
        p
    }

    /// The 1-based line of `text` where this path's value starts, when
    /// the document parses and the path exists in it.
    pub(crate) fn line_in(&self, text: &str) -> Option<usize> {
        let root = DeTable::parse(text).ok()?;
        let root_span = root.span();
        let root = DeValue::Table(root.into_inner());
        let mut value = &root;
        let mut start = root_span.start;
        for segment in &self.0 {
            let next = match segment {
                Segment::Key(k) => value.get(k.as_str()),
                Segment::Index(i) => value.get(*i),
            }?;
            start = next.span().start;
            value = next.get_ref();
        }
        Some(line_of_offset(text, start))
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
        + 1
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_an_operator_writes_it() {
        let p = FieldPath::root()
            .key("routes")
            .index(0)
            .key("targets")
            .index(1)
            .key("trunk");
        assert_eq!(p.to_string(), "routes[0].targets[1].trunk");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn finds_the_line_of_a_nested_value() {
        let text = "[sip]\nlisten = [\"127.0.0.1:5060\"]\n\n[[trunks]]\nname = \"a\"\n\n[[trunks]]\nname = \"b\"\naddress = \"x\"\n";
        let p = FieldPath::root().key("trunks").index(1).key("address");
        assert_eq!(p.line_in(text), Some(9));
        assert_eq!(
            FieldPath::root().key("sip").key("listen").line_in(text),
            Some(2)
        );
        assert_eq!(FieldPath::root().key("nope").line_in(text), None);
    }
}
