//! Text kept in shared memory as atomic 64-bit words: a record made only of atomics can be
//! shared by reference between processes, and a reader never sees a torn word.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The longest prefix of `s` that fits `max` bytes and ends on a character boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Stores as much of `s` as fits in `words` (whole characters), zero-filling the rest;
/// returns the bytes stored.
pub fn store(words: &[AtomicU64], s: &str) -> usize {
    let s = truncated(s, words.len() * 8).as_bytes();
    for (i, w) in words.iter().enumerate() {
        let mut chunk = [0u8; 8];
        let part = s.get(i * 8..).unwrap_or_default();
        let n = part.len().min(8);
        chunk[..n].copy_from_slice(&part[..n]);
        w.store(u64::from_le_bytes(chunk), Relaxed);
    }
    s.len()
}

/// The first `len` bytes of `words` as text (`None`: up to the first zero byte).
pub fn load(words: &[AtomicU64], len: Option<usize>) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| w.load(Relaxed).to_le_bytes())
        .collect();
    let end = len
        .unwrap_or_else(|| bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len()))
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_is_cut_on_character_boundaries() {
        let words: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(u64::MAX)).collect();
        assert_eq!(store(&words, "enterprise"), 10);
        assert_eq!(load(&words, None), "enterprise", "the rest was zeroed");
        assert_eq!(load(&words, Some(5)), "enter");
        let long = "é".repeat(20); // 40 bytes
        assert_eq!(store(&words, &long), 24);
        assert_eq!(load(&words, None), "é".repeat(12));
        assert_eq!(truncated("aé", 2), "a");
    }
}
