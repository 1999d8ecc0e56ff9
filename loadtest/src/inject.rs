//! Injection files (`-inf`): CSV rows whose fields fill `[fieldN]`.
//!
//! The first line says how rows are handed to calls: `SEQUENTIAL` (call
//! after call, wrapping), `RANDOM`, or `USER` (one row per user; sbc-load
//! has no user concept and treats it as sequential). Fields are separated
//! by `;`. Lines starting with `#` and empty lines are skipped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Sequential,
    Random,
}

#[derive(Debug, Clone)]
pub struct Inject {
    pub order: Order,
    rows: Vec<Vec<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("injection file {0}: the first line must be SEQUENTIAL, RANDOM or USER")]
    Mode(String),
    #[error("injection file {0}: no data lines")]
    Empty(String),
}

impl Inject {
    pub fn parse(text: &[u8], origin: &str) -> Result<Self, InjectError> {
        let mut lines = text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = lines.next().unwrap_or(b"");
        let order = match first.trim_ascii().to_ascii_uppercase().as_slice() {
            b"SEQUENTIAL" | b"USER" => Order::Sequential,
            b"RANDOM" => Order::Random,
            _ => return Err(InjectError::Mode(origin.to_string())),
        };
        let rows: Vec<Vec<Vec<u8>>> = lines
            .filter(|l| !l.trim_ascii().is_empty() && !l.starts_with(b"#"))
            .map(|l| l.split(|&b| b == b';').map(<[u8]>::to_vec).collect())
            .collect();
        if rows.is_empty() {
            return Err(InjectError::Empty(origin.to_string()));
        }
        Ok(Inject { order, rows })
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The row for call `number` (1-based); `random` is used in random
    /// order.
    pub fn row_for(&self, number: u64, random: u64) -> usize {
        let n = self.rows.len() as u64;
        let i = match self.order {
            Order::Sequential => number.saturating_sub(1) % n,
            Order::Random => random % n,
        };
        usize::try_from(i).unwrap_or(0)
    }

    /// Field `field` of row `row`; empty when the row is shorter.
    pub fn field(&self, row: usize, field: usize) -> &[u8] {
        self.rows
            .get(row)
            .and_then(|r| r.get(field))
            .map_or(&[][..], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn sequential_rows_wrap() {
        let f = Inject::parse(b"SEQUENTIAL\r\n# c\nalice;secret\nbob;pw;x\n\n", "u.csv").unwrap();
        assert_eq!(f.rows(), 2);
        assert_eq!(f.field(f.row_for(1, 0), 0), b"alice");
        assert_eq!(f.field(f.row_for(2, 0), 2), b"x");
        assert_eq!(f.field(f.row_for(3, 0), 1), b"secret");
        assert_eq!(f.field(0, 7), b"");
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
