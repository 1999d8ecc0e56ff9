//! Byte-level helpers shared by the SIP parsers (RFC 3261 §25.1 basic rules).

/// Linear white space as it appears inside a header value: SP, HTAB, and the
/// CR/LF of a folded line (RFC 3261 §7.3.1).
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = token_table();

/// `token` characters (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Whether `s` has a byte below `limit` (at most 0x80) or equal to `eq`.
/// Eight bytes at a time with no call (most header and parameter values
/// are short): a byte below the limit borrows into its high bit (the
/// "has less than" word test), and one equal to `eq` is a zero byte of
/// the word xor `eq` repeated; bytes with the high bit set are excluded
/// from both.
#[inline]
pub(crate) fn has_byte_below_or(s: &[u8], limit: u8, eq: u8) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = u64::from_ne_bytes([limit; 8]);
    let equal = u64::from_ne_bytes([eq; 8]);
    // `eq` below the limit is found by the first test (a constant
    // argument folds this away).
    let check_eq = eq >= limit;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_ne_bytes(word);
        let mut found = x.wrapping_sub(below) & !x;
        if check_eq {
            let y = x ^ equal;
            found |= y.wrapping_sub(ONES) & !y;
        }
        if found & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < limit || b == eq)
}

/// The position of the first `needle` in `s`. SIP lines and URI parts
/// are short, and for them a library search costs more in its call and
/// set-up than in the search: the first 64 bytes are looked at eight at a
/// time here (a byte equal to `needle` is a zero byte of the word xor
/// `needle` repeated; the lowest flagged byte is exactly the first match,
/// since the test's borrow only flags bytes after a true one), the rest,
/// if any, by `memchr`.
#[inline]
pub(crate) fn find_byte(needle: u8, s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const SHORT: usize = 64;
    let pattern = u64::from_le_bytes([needle; 8]);
    let mut at = 0;
    while at < SHORT {
        let Some(c) = s.get(at..at + 8) else {
            let tail = s.get(at..)?;
            return tail.iter().position(|&b| b == needle).map(|p| at + p);
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let y = u64::from_le_bytes(word) ^ pattern;
        let found = y.wrapping_sub(ONES) & !y & HIGH;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr(needle, s.get(at..)?).map(|p| at + p)
}

/// Where a line may end in `s`: the first LF or CR, the way [`find_byte`]
/// looks for one byte, and at the same cost. In the first 64 bytes the
/// test is for any byte below 0x0E, one subtraction a word (a byte less
/// than `n` is flagged by `(w - n·ONES) & !w & HIGH`, the lowest flag
/// exactly), so it also stops at the rare HTAB, NUL and other control
/// bytes below CR: the caller looks at the byte found and goes on past
/// those.
#[inline]
pub(crate) fn find_line_break(s: &[u8]) -> Option<usize> {
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const BELOW: u64 = u64::from_le_bytes([0x0e; 8]);
    const SHORT: usize = 64;
    let mut at = 0;
    while at < SHORT {
        let Some(c) = s.get(at..at + 8) else {
            let tail = s.get(at..)?;
            return tail.iter().position(|&x| x < 0x0e).map(|p| at + p);
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let w = u64::from_le_bytes(word);
        let found = w.wrapping_sub(BELOW) & !w & HIGH;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr2(b'\n', b'\r', s.get(at..)?).map(|p| at + p)
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

pub(crate) fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_lws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

pub(crate) fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if is_lws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Parses an unsigned decimal made only of digits (leading zeros allowed).
/// Returns `None` when empty, when a non-digit appears, or on overflow.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for &b in strip_leading_zeros(s) {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

fn strip_leading_zeros(mut s: &[u8]) -> &[u8] {
    while let [b'0', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Finds `needle` outside of quoted strings and angle brackets. Jumps
/// from one byte that matters to the next (memchr), so a value without
/// quotes or brackets costs one vectorised search.
pub(crate) fn find_unquoted(s: &[u8], needle: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut angle = 0u32;
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let found = if in_quotes {
            memchr::memchr2(b'\\', b'"', rest)
        } else if angle > 0 {
            memchr::memchr3(b'"', b'<', b'>', rest)
        } else {
            memchr::memchr3(needle, b'"', b'<', rest)
        };
        let at = i + found?;
        let b = s[at];
        i = at + 1;
        if in_quotes {
            if b == b'\\' {
                // The escaped byte is skipped.
                i += 1;
            } else {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == b'<' {
            angle += 1;
        } else if b == b'>' {
            // Searched for inside brackets (or as the needle, which a
            // closing bracket never is).
            angle = angle.saturating_sub(1);
        } else if angle == 0 {
            return Some(at);
        }
    }
    None
}

/// Splits a header value on the commas that separate list elements
/// (RFC 3261 §7.3.1), ignoring commas inside quoted strings and `<...>`.
/// Empty elements are skipped.
#[derive(Debug, Clone)]
pub struct CommaList<'a> {
    rest: &'a [u8],
}

impl<'a> CommaList<'a> {
    pub fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }
}

impl<'a> Iterator for CommaList<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (item, rest) = match find_unquoted(self.rest, b',') {
                Some(pos) => (&self.rest[..pos], &self.rest[pos + 1..]),
                None => (self.rest, &self.rest[..0]),
            };
            self.rest = rest;
            let item = trim(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

/// Reads a quoted string starting at `s[0] == '"'`. Returns the index just
/// past the closing quote, or `None` when it is unterminated.
pub(crate) fn quoted_string_end(s: &[u8]) -> Option<usize> {
    debug_assert_eq!(s.first(), Some(&b'"'));
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Bytes that end a parameter's value: `;` and white space.
static ENDS_VALUE: [bool; 256] = {
    let mut t = [false; 256];
    t[b';' as usize] = true;
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t
};

/// Bytes that end a parameter's name: those and `=`.
static ENDS_NAME: [bool; 256] = {
    let mut t = ENDS_VALUE;
    t[b'=' as usize] = true;
    t
};

/// `;name=value` parameters after a Via, name-addr or URI (RFC 3261 §25.1
/// `generic-param`), tolerant of LWS around `;` and `=`.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    /// `raw` starts at the first `;` (or is empty).
    pub fn new(raw: &'a [u8]) -> Self {
        Self { rest: raw }
    }

    /// Value of the first parameter named `name` (case-insensitive).
    /// `Some(None)` means the parameter is present without a value.
    pub fn get(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.clone()
            .find(|(n, _): &(&[u8], _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = trim_start(self.rest);
            let s = match s.split_first() {
                Some((b';', rest)) => trim_start(rest),
                Some(_) => {
                    // Junk that does not start a parameter ends the list.
                    self.rest = &s[..0];
                    return None;
                }
                None => {
                    self.rest = s;
                    return None;
                }
            };
            let name_end = s
                .iter()
                .position(|b| ENDS_NAME[usize::from(*b)])
                .unwrap_or(s.len());
            let name = &s[..name_end];
            let after_name = trim_start(&s[name_end..]);
            let (value, rest) = if let Some((b'=', v)) = after_name.split_first() {
                let v = trim_start(v);
                if v.first() == Some(&b'"') {
                    let end = quoted_string_end(v).unwrap_or(v.len());
                    (Some(&v[..end]), &v[end..])
                } else {
                    let end = v
                        .iter()
                        .position(|b| ENDS_VALUE[usize::from(*b)])
                        .unwrap_or(v.len());
                    (Some(&v[..end]), &v[end..])
                }
            } else {
                (None, after_name)
            };
            self.rest = rest;
            if name.is_empty() {
                // ";;" — an empty parameter; skip it.
                continue;
            }
            return Some((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time test finds every byte below the limit or
        /// equal to the one asked for, wherever it is, and nothing else.
        #[test]
        fn has_byte_below_or_is_exact(
            s in proptest::collection::vec(
                prop_oneof![30 => 0x20u8..=0xff, 1 => 0u8..0x20, 1 => Just(0x7fu8)], 0..40,
            ),
            limit in prop_oneof![Just(0x0eu8), Just(0x20u8), 0u8..=0x80],
            eq in prop_oneof![Just(0x7fu8), Just(0u8), any::<u8>()],
        ) {
            let exact = s.iter().any(|&b| b < limit || b == eq);
            prop_assert_eq!(has_byte_below_or(&s, limit, eq), exact);
        }

        /// The short search finds what `memchr` finds, before, at and past
        /// its 64 bytes, with bytes next to the needle's value around it
        /// (where a borrow would flag a wrong byte).
        #[test]
        fn find_byte_is_memchr(
            needle in prop_oneof![Just(b'\n'), Just(0u8), Just(0x80u8), Just(0xffu8), any::<u8>()],
            s in proptest::collection::vec(any::<u8>(), 0..150),
            noise in proptest::collection::vec(0usize..150, 0..4),
        ) {
            let mut s = s;
            // Plant the needle and its neighbours at a few places.
            for (k, &i) in noise.iter().enumerate() {
                if let Some(b) = s.get_mut(i) {
                    *b = needle.wrapping_add([0u8, 1, 255][k % 3]);
                }
            }
            prop_assert_eq!(find_byte(needle, &s), memchr::memchr(needle, &s));
        }

        /// The line-break search stops at the first LF or CR, or earlier
        /// only at another byte below CR within its first 64 bytes; never
        /// past an LF or CR, never at a byte of CR or above that is not one.
        #[test]
        fn find_line_break_stops_at_the_first_line_end_or_below(
            s in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'\t'), Just(0u8), Just(0x0eu8), Just(0x0du8 + 1), any::<u8>()],
                0..150,
            ),
        ) {
            let first_end = memchr::memchr2(b'\n', b'\r', &s);
            match find_line_break(&s) {
                Some(i) => {
                    prop_assert!(s[i] < 0x0e, "{i}: {:?}", s[i]);
                    if s[i] == b'\n' || s[i] == b'\r' {
                        prop_assert_eq!(Some(i), first_end);
                    } else {
                        prop_assert!(i < 64);
                        prop_assert!(first_end.is_none_or(|e| i < e));
                    }
                    // Nothing below 0x0E before it within the first 64.
                    prop_assert!(s[..i].iter().take(64).all(|&b| b >= 0x0e));
                }
                None => prop_assert_eq!(first_end, None),
            }
        }
    }

    /// The byte-at-a-time scan `find_unquoted` replaced, as the reference.
    fn find_unquoted_reference(s: &[u8], needle: u8) -> Option<usize> {
        let mut in_quotes = false;
        let mut angle = 0u32;
        let mut i = 0;
        while i < s.len() {
            let b = s[i];
            if in_quotes {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quotes = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_quotes = true;
            } else if b == b'<' {
                angle += 1;
            } else if b == b'>' {
                angle = angle.saturating_sub(1);
            } else if b == needle && angle == 0 {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn find_unquoted_agrees_with_the_byte_scan(
            s in proptest::collection::vec(
                proptest::sample::select(b"ab ,;<>\\\"=".to_vec()),
                0..40,
            ),
            needle in proptest::sample::select(b",;<>\"=a".to_vec()),
        ) {
            proptest::prop_assert_eq!(find_unquoted(&s, needle), find_unquoted_reference(&s, needle));
        }
    }

    #[test]
    fn decimal_with_leading_zeros_and_overflow() {
        assert_eq!(parse_decimal(b"0068"), Some(68));
        assert_eq!(parse_decimal(b"000000000000000000000000000009"), Some(9));
        assert_eq!(parse_decimal(b"99999999999999999999999"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"0000000000000000000000"), Some(0));
    }

    #[test]
    fn comma_list_respects_quotes_and_brackets() {
        let items: Vec<_> = CommaList::new(b"\"a, b\" <sip:x@y;p=1,2>, <sip:z>,, c").collect();
        assert_eq!(
            items,
            vec![&b"\"a, b\" <sip:x@y;p=1,2>"[..], b"<sip:z>", b"c"]
        );
    }

    #[test]
    fn params_tolerate_lws() {
        let p: Vec<_> = Params::new(b" ;   tag    = 1918181833n ; lr;q=\"a;b\"").collect();
        assert_eq!(
            p,
            vec![
                (&b"tag"[..], Some(&b"1918181833n"[..])),
                (b"lr", None),
                (b"q", Some(b"\"a;b\"")),
            ]
        );
    }
}
