//! Scanning names eight bytes at a time.
//!
//! A transform looks at every name of every point, and names are short. Inside the
//! sandbox every turn of a loop also checks the host's deadline, so a byte-by-byte
//! scan pays that check per byte. These helpers read a name as at most a few
//! 64-bit words and test all their bytes at once with bit arithmetic ("SWAR").
//!
//! ```
//! use boulder_guest_sdk::scan::{any_word, bytes_in, HIGH_BITS};
//! // Does the name have an ASCII digit?
//! let has_digit = |name: &str| any_word(name.as_bytes(), |w| bytes_in(w, b'0', b'9') != 0);
//! assert!(has_digit("tag2"));
//! assert!(!has_digit("host"));
//! ```

/// The high bit of every byte of a word: the mask the tests below answer in.
pub const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

const ONES: u64 = 0x0101_0101_0101_0101;

/// Whether `flagged` is true of any of the words that cover `bytes`.
///
/// The words hold `bytes` in little-endian order, eight at a time; the last word
/// (or, below eight bytes, the only one) overlaps the one before instead of being
/// padded, so every byte of a word is a byte of `bytes` and `flagged` may test all
/// eight. Some bytes are thus tested twice, which an "any" question does not mind.
/// Empty `bytes` have no words: `false`.
///
/// Always inlined: it is called for nearly every name of every point, and in the
/// sandbox a call costs about as much as the scan (stack and deadline checks).
#[inline(always)]
pub fn any_word(bytes: &[u8], flagged: impl Fn(u64) -> bool) -> bool {
    let n = bytes.len();
    if n >= 8 {
        let mut words = bytes.chunks_exact(8);
        words.by_ref().any(|w| flagged(word(w)))
            || (!words.remainder().is_empty() && flagged(word(&bytes[n - 8..])))
    } else if n >= 4 {
        let (first, last) = (half(&bytes[..4]), half(&bytes[n - 4..]));
        flagged(first | last << 32)
    } else if n > 0 {
        // 1 to 3 bytes: first, middle and last, the last twice.
        let (first, middle, last) = (bytes[0], bytes[n / 2], bytes[n - 1]);
        flagged(u64::from_le_bytes([
            first, middle, last, last, first, middle, last, last,
        ]))
    } else {
        false
    }
}

/// The high bit of each byte of `word` that lies in `lo..=hi`, for `lo` and `hi`
/// ASCII (below 0x80). Bytes beyond ASCII are never in range.
#[inline]
pub fn bytes_in(word: u64, lo: u8, hi: u8) -> u64 {
    debug_assert!(lo <= hi && hi < 0x80);
    // With the high bits cleared, adding at most 0x80 to a byte cannot carry into
    // the next one; the sum's high bit then says "at least" the bound.
    let low = word & !HIGH_BITS;
    let from_lo = low + ONES * u64::from(0x80 - lo);
    let past_hi = low + ONES * u64::from(0x80 - hi - 1);
    from_lo & !past_hi & !word & HIGH_BITS
}

/// The high bit of each byte of `word` beyond ASCII.
#[inline]
pub fn non_ascii(word: u64) -> u64 {
    word & HIGH_BITS
}

#[inline]
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

#[inline]
fn half(bytes: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_matches_a_byte_by_byte_test_for_every_byte_and_range() {
        for (lo, hi) in [
            (b'0', b'9'),
            (b'A', b'Z'),
            (b'_', b'_'),
            (0, 0x7f),
            (0x7f, 0x7f),
        ] {
            for b in 0..=255u8 {
                // The byte in every position, next to bytes that are in range and not.
                for at in 0..8 {
                    let mut bytes = [lo, hi, 0x80, 0xff, 0, lo, hi, 0x7f];
                    bytes[at] = b;
                    let got = bytes_in(u64::from_le_bytes(bytes), lo, hi);
                    let expected = bytes.iter().enumerate().fold(0, |m, (i, &c)| {
                        m | if (lo..=hi).contains(&c) {
                            0x80 << (8 * i)
                        } else {
                            0
                        }
                    });
                    assert_eq!(got, expected, "{bytes:?} in {lo}..={hi}");
                }
            }
        }
    }

    #[test]
    fn any_word_sees_every_byte_of_every_length() {
        for n in 0..40 {
            for at in 0..n {
                let mut bytes = vec![b'a'; n];
                bytes[at] = b'!';
                let bang = |w: u64| bytes_in(w, b'!', b'!') != 0;
                assert!(any_word(&bytes, bang), "'!' at {at} of {n}");
                bytes[at] = b'b';
                assert!(!any_word(&bytes, bang), "no '!' in {n}");
            }
        }
        assert!(!any_word(b"", |_| true));
    }
}
