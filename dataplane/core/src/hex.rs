//! Lowercase hexadecimal numbers as the SBC writes them in what it mints
//! (Call-IDs, tags, branches, nonces, digest nonce counts) and reads back;
//! `sbc-load` writes its digest cnonces with it too.

/// Writes the low `out.len()` hex digits of `v` (at most 16), lowercase,
/// zero-padded.
pub fn write_hex(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for d in out.iter_mut().rev() {
        *d = DIGITS[(v & 15) as usize];
        v >>= 4;
    }
}

/// Reads 1 to 16 lowercase hex digits; `None` for anything else.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What is written reads back, and agrees with `format!`.
        #[test]
        fn written_hex_reads_back(v in any::<u64>(), digits in 1usize..=16) {
            let mut out = [0u8; 16];
            write_hex(&mut out[..digits], v);
            let masked = if digits == 16 { v } else { v & ((1u64 << (4 * digits)) - 1) };
            let want = format!("{masked:0digits$x}");
            prop_assert_eq!(&out[..digits], want.as_bytes());
            prop_assert_eq!(parse_hex(&out[..digits]), Some(masked));
        }
    }

    #[test]
    fn only_lowercase_hex_of_sixteen_digits_at_most_reads() {
        assert_eq!(parse_hex(b"00ff"), Some(255));
        for bad in [&b""[..], b"FF", b"0x1", b"g", b"00000000000000001"] {
            assert_eq!(parse_hex(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
