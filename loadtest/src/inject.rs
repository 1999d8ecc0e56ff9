//! Injection files (`-inf`): lines of `;`-separated fields that fill
//! `[fieldN]`, read as SIPp reads them.
//!
//! The first line says how lines are handed to calls: `SEQUENTIAL` (call
//! after call, wrapping), `RANDOM`, or `USER` (user N of `-users` takes
//! line N-1; a call without a user takes none). It may add
//! `PRINTF=N[,PRINTFOFFSET=O][,PRINTFMULTIPLE=M]`: the file then has N
//! virtual lines, line L being data line `L % lines` with each `%d` (flags,
//! width and precision allowed) written as `O + L * M`. Lines starting
//! with `#` are skipped, and the first empty line ends the data, as in
//! SIPp. Files are named by their base name (`file=`, `-infindex`,
//! `<lookup>`, `<insert>`, `<replace>`); `[fieldN]` without `file=` reads
//! the first `-inf`.

use std::collections::HashMap;

/// How a file hands its lines to calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Sequential,
    Random,
    User,
}

/// `PRINTF=`: virtual lines made from the data lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Printf {
    pub lines: u64,
    pub offset: u64,
    pub multiple: u64,
}

/// One injection file.
#[derive(Debug, Clone)]
pub struct Inject {
    /// The base name that `file=` and the actions use.
    pub name: String,
    pub order: Order,
    pub printf: Option<Printf>,
    lines: Vec<Vec<u8>>,
    /// `-infindex`: the field indexed, and each key's (last) line.
    index: Option<(usize, HashMap<Vec<u8>, usize>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("injection file {0}: the first line must name the order: SEQUENTIAL, RANDOM or USER")]
    Mode(String),
    #[error("injection file {0}: no data lines")]
    Empty(String),
    #[error("injection file {0}: {1}")]
    Printf(String, String),
}

/// The base name of a path, as SIPp keys its injection files.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Inject {
    /// Reads a file's text; `path` names it (its base name is its name).
    pub fn parse(text: &[u8], path: &str) -> Result<Self, InjectError> {
        let name = base_name(path).to_string();
        let mut lines = text.split(|&b| b == b'\n');
        let head = lines.next().unwrap_or(b"");
        let head = String::from_utf8_lossy(head.strip_suffix(b"\r").unwrap_or(head)).into_owned();
        let order = if head.contains("RANDOM") {
            Order::Random
        } else if head.contains("SEQUENTIAL") {
            Order::Sequential
        } else if head.contains("USER") {
            Order::User
        } else {
            return Err(InjectError::Mode(name));
        };
        let printf = parse_printf(&head).map_err(|e| InjectError::Printf(name.clone(), e))?;
        let mut data = Vec::new();
        for l in lines {
            // As SIPp: the first empty line ends the data.
            if l.is_empty() {
                break;
            }
            if l.starts_with(b"#") {
                continue;
            }
            data.push(l.strip_suffix(b"\r").unwrap_or(l).to_vec());
        }
        if data.is_empty() {
            return Err(InjectError::Empty(name));
        }
        if printf.is_some() {
            for l in &data {
                check_printf(l).map_err(|e| InjectError::Printf(name.clone(), e))?;
            }
        }
        Ok(Inject {
            name,
            order,
            printf,
            lines: data,
            index: None,
        })
    }

    /// Lines the calls choose from (PRINTF's virtual lines).
    pub fn lines(&self) -> u64 {
        self.printf.map_or(self.lines.len() as u64, |p| p.lines)
    }

    /// The line a new call takes: call `number` (1-based, counted over
    /// every call as SIPp's one counter per file), `user` (0: none),
    /// `random` a random number. -1: none.
    pub fn line_for(&self, number: u64, user: u32, random: u64) -> i64 {
        let n = self.lines().max(1);
        let line = match self.order {
            Order::Sequential => number.saturating_sub(1) % n,
            Order::Random => random % n,
            Order::User if user == 0 => return -1,
            Order::User => u64::from(user - 1),
        };
        i64::try_from(line).unwrap_or(-1)
    }

    /// Writes field `field` of line `line` (nothing for a line or a field
    /// the file does not have); PRINTF's `%d`s are written.
    pub fn write_field(&self, line: i64, field: usize, out: &mut Vec<u8>) {
        let Ok(line) = u64::try_from(line) else {
            return;
        };
        if line >= self.lines() {
            return;
        }
        let real = (line % self.lines.len().max(1) as u64) as usize;
        let Some(text) = self
            .lines
            .get(real)
            .and_then(|l| l.split(|&b| b == b';').nth(field))
        else {
            return;
        };
        match self.printf {
            None => out.extend_from_slice(text),
            // C arithmetic, as SIPp: wrapping.
            Some(p) => write_printf(
                text,
                p.offset.wrapping_add(line.wrapping_mul(p.multiple)),
                out,
            ),
        }
    }

    /// `-infindex`: indexes the lines by `field` (a later line wins a
    /// key both have).
    pub fn set_index(&mut self, field: usize) -> Result<(), String> {
        if self.printf.is_some() {
            return Err(format!(
                "-infindex {}: a PRINTF file cannot be indexed",
                self.name
            ));
        }
        let mut map = HashMap::new();
        for (i, l) in self.lines.iter().enumerate() {
            map.insert(key_of(l, field), i);
        }
        self.index = Some((field, map));
        Ok(())
    }

    /// `<lookup>`: the line whose indexed field is `key`, -1 if none.
    pub fn lookup(&self, key: &[u8]) -> Result<f64, String> {
        let Some((_, map)) = &self.index else {
            return Err(format!(
                "lookup in {}: the file has no -infindex",
                self.name
            ));
        };
        Ok(map.get(key).map_or(-1.0, |&l| l as f64))
    }

    /// `<insert>`: a new last line.
    pub fn insert(&mut self, value: Vec<u8>) -> Result<(), String> {
        if self.printf.is_some() {
            return Err(format!("insert into {}: it is a PRINTF file", self.name));
        }
        let line = self.lines.len();
        if let Some((field, map)) = &mut self.index {
            map.insert(key_of(&value, *field), line);
        }
        self.lines.push(value);
        Ok(())
    }

    /// `<replace>`: line `line` becomes `value`.
    pub fn replace(&mut self, line: i64, value: Vec<u8>) -> Result<(), String> {
        if self.printf.is_some() {
            return Err(format!("replace in {}: it is a PRINTF file", self.name));
        }
        let Some(i) = usize::try_from(line).ok().filter(|&i| i < self.lines.len()) else {
            return Err(format!(
                "replace in {}: line {line} is not in 0..{}",
                self.name,
                self.lines.len()
            ));
        };
        if let Some((field, map)) = &mut self.index {
            let old = key_of(&self.lines[i], *field);
            if map.get(&old) == Some(&i) {
                map.remove(&old);
            }
            map.insert(key_of(&value, *field), i);
        }
        self.lines[i] = value;
        Ok(())
    }
}

fn key_of(line: &[u8], field: usize) -> Vec<u8> {
    line.split(|&b| b == b';')
        .nth(field)
        .unwrap_or(b"")
        .to_vec()
}

/// `PRINTF=N`, `PRINTFOFFSET=O`, `PRINTFMULTIPLE=M` of the first line
/// (numbers as C's strtoul with base 0).
fn parse_printf(head: &str) -> Result<Option<Printf>, String> {
    let Some(at) = head.find("PRINTF") else {
        return Ok(None);
    };
    let value = |at: usize, name: &str| -> Result<u64, String> {
        let rest = &head[at + name.len()..];
        let Some(rest) = rest.strip_prefix('=') else {
            return Err(format!("{name} requires a value (={name}=N)"));
        };
        let end = rest.find(',').unwrap_or(rest.len());
        let n = rest[..end].trim_end_matches(['\r', '\n']);
        let parsed = if let Some(h) = n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
            u64::from_str_radix(h, 16)
        } else if n.len() > 1 && n.starts_with('0') {
            u64::from_str_radix(&n[1..], 8)
        } else {
            n.parse::<u64>()
        };
        parsed.map_err(|_| format!("{name}=\"{n}\": expected a whole number"))
    };
    let lines = value(at, "PRINTF")?;
    if lines == 0 {
        return Err("PRINTF must have at least one virtual line".into());
    }
    let offset = head
        .find("PRINTFOFFSET")
        .map(|a| value(a, "PRINTFOFFSET"))
        .transpose()?
        .unwrap_or(0);
    let multiple = head
        .find("PRINTFMULTIPLE")
        .map(|a| value(a, "PRINTFMULTIPLE"))
        .transpose()?
        .unwrap_or(1);
    Ok(Some(Printf {
        lines,
        offset,
        multiple,
    }))
}

/// A `%...d` spec: `-` (left), `0` (zeros), width, `.precision`.
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

/// The spec starting after a `%` at `text[0..]`, and its length up to and
/// with its `d`; only decimal specs are allowed (SIPp's rule).
fn spec(text: &[u8]) -> Result<(Spec, usize), String> {
    let Some(end) = text
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b'.' || b == b'-'))
    else {
        return Err("a %d in a PRINTF file ran off the end of the line".into());
    };
    if text[end] != b'd' {
        return Err(format!(
            "only decimal values (%d) are allowed in PRINTF files, found %{}",
            String::from_utf8_lossy(&text[..=end])
        ));
    }
    let flags = &text[..end];
    let left = flags.contains(&b'-');
    let flags: Vec<u8> = flags.iter().copied().filter(|&b| b != b'-').collect();
    let (w, p) = match flags.iter().position(|&b| b == b'.') {
        Some(dot) => (&flags[..dot], Some(&flags[dot + 1..])),
        None => (&flags[..], None),
    };
    let zero = w.first() == Some(&b'0');
    let num = |d: &[u8]| {
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
            .min(64)
    };
    Ok((
        Spec {
            left,
            zero,
            width: num(w),
            precision: p.map(num),
        },
        end + 1,
    ))
}

/// Checks a PRINTF line's `%` specs when the file loads.
fn check_printf(line: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < line.len() {
        if line[i] != b'%' {
            i += 1;
            continue;
        }
        if line.get(i + 1) == Some(&b'%') {
            // SIPp writes one `%` and reads the second as a new spec.
            i += 1;
            continue;
        }
        let (_, len) = spec(&line[i + 1..])?;
        i += 1 + len;
    }
    Ok(())
}

fn write_printf(text: &[u8], value: u64, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'%' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        if text.get(i + 1) == Some(&b'%') {
            out.push(b'%');
            i += 1;
            continue;
        }
        // Checked when the file loaded.
        let Ok((s, len)) = spec(&text[i + 1..]) else {
            return;
        };
        let mut digits = value.to_string();
        if let Some(p) = s.precision
            && digits.len() < p
        {
            digits = format!("{}{digits}", "0".repeat(p - digits.len()));
        }
        let pad = s.width.saturating_sub(digits.len());
        if s.left {
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat_n(b' ', pad));
        } else {
            let fill = if s.zero && s.precision.is_none() {
                b'0'
            } else {
                b' '
            };
            out.extend(std::iter::repeat_n(fill, pad));
            out.extend_from_slice(digits.as_bytes());
        }
        i += 1 + len;
    }
}

/// The `-inf` files of a run.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    pub files: Vec<Inject>,
}

impl Injection {
    /// The file named `name` (a base name).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.files.iter().position(|f| f.name == name)
    }
}

impl From<Inject> for Injection {
    fn from(f: Inject) -> Self {
        Injection { files: vec![f] }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn field(f: &Inject, line: i64, n: usize) -> String {
        let mut out = Vec::new();
        f.write_field(line, n, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sequential_lines_wrap_and_comments_are_skipped() {
        let f = Inject::parse(
            b"SEQUENTIAL\r\n# c\nalice;secret\r\nbob;pw;x\n",
            "dir/u.csv",
        )
        .unwrap();
        assert_eq!(f.name, "u.csv");
        assert_eq!(f.lines(), 2);
        assert_eq!(field(&f, f.line_for(1, 0, 0), 0), "alice");
        assert_eq!(field(&f, f.line_for(1, 0, 0), 1), "secret");
        assert_eq!(field(&f, f.line_for(2, 0, 0), 2), "x");
        assert_eq!(field(&f, f.line_for(3, 0, 0), 1), "secret");
        assert_eq!(field(&f, 0, 7), "");
        assert_eq!(field(&f, -1, 0), "");
        assert_eq!(field(&f, 2, 0), "");
    }

    #[test]
    fn an_empty_line_ends_the_data_as_in_sipp() {
        let f = Inject::parse(b"RANDOM\na\n\nb\n", "r.csv").unwrap();
        assert_eq!(f.lines(), 1);
        assert_eq!(f.order, Order::Random);
    }

    #[test]
    fn user_lines_follow_the_user() {
        let f = Inject::parse(b"USER\na\nb\nc\n", "u.csv").unwrap();
        assert_eq!(f.line_for(9, 3, 0), 2);
        assert_eq!(f.line_for(9, 1, 0), 0);
        assert_eq!(f.line_for(9, 0, 0), -1);
    }

    #[test]
    fn printf_lines_are_virtual() {
        let f = Inject::parse(
            b"SEQUENTIAL,PRINTF=10,PRINTFMULTIPLE=2,PRINTFOFFSET=100\nuser%03d;%d;%-4d|;50%%d\n",
            "p.csv",
        )
        .unwrap();
        assert_eq!(f.lines(), 10);
        assert_eq!(field(&f, 3, 0), "user106");
        assert_eq!(field(&f, 3, 1), "106");
        assert_eq!(field(&f, 0, 2), "100 |");
        assert_eq!(field(&f, 1, 3), "50%102");
        assert_eq!(field(&f, 10, 0), "");
        for bad in [
            &b"SEQUENTIAL,PRINTF=2\nx%s\n"[..],
            b"SEQUENTIAL,PRINTF=2\nx%05\n",
            b"SEQUENTIAL,PRINTF=0\nx\n",
            b"SEQUENTIAL,PRINTFOFFSET=3\nx\n",
            b"SEQUENTIAL,PRINTF=2\n100%%\n",
        ] {
            assert!(
                matches!(Inject::parse(bad, "p.csv"), Err(InjectError::Printf(..))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let hex = Inject::parse(b"SEQUENTIAL,PRINTF=0x10\nx\n", "p.csv").unwrap();
        assert_eq!(hex.lines(), 16);
    }

    #[test]
    fn index_lookup_insert_and_replace() {
        let mut f = Inject::parse(b"SEQUENTIAL\nalice;1\nbob;2\nalice;3\n", "u.csv").unwrap();
        assert!(f.lookup(b"bob").is_err());
        f.set_index(0).unwrap();
        assert_eq!(f.lookup(b"alice").unwrap(), 2.0);
        assert_eq!(f.lookup(b"carol").unwrap(), -1.0);
        f.insert(b"carol;4".to_vec()).unwrap();
        assert_eq!(f.lookup(b"carol").unwrap(), 3.0);
        assert_eq!(f.lines(), 4);
        assert_eq!(field(&f, 3, 1), "4");
        f.replace(1, b"dave;5".to_vec()).unwrap();
        assert_eq!(f.lookup(b"bob").unwrap(), -1.0);
        assert_eq!(f.lookup(b"dave").unwrap(), 1.0);
        // Replacing a duplicate's hidden line leaves the later one.
        f.replace(0, b"erin;6".to_vec()).unwrap();
        assert_eq!(f.lookup(b"alice").unwrap(), 2.0);
        assert!(f.replace(9, b"x".to_vec()).is_err());
        assert!(f.replace(-1, b"x".to_vec()).is_err());
        let mut p = Inject::parse(b"SEQUENTIAL,PRINTF=3\nu%d\n", "p.csv").unwrap();
        assert!(p.set_index(0).is_err());
        assert!(p.insert(b"x".to_vec()).is_err());
    }

    #[test]
    fn bad_files_are_named() {
        assert_eq!(
            Inject::parse(b"a;b\n", "f.csv").unwrap_err(),
            InjectError::Mode("f.csv".into())
        );
        assert_eq!(
            Inject::parse(b"RANDOM\n", "f.csv").unwrap_err(),
            InjectError::Empty("f.csv".into())
        );
    }
}
