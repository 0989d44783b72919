//! The text format of `vector` and `halfvec`: `[1,2.5,3]`.
//!
//! Input follows pgvector: whitespace (space, tab, newline, carriage return, vertical tab,
//! form feed) is allowed around the brackets and every element; elements are decimal
//! floating-point literals as C's `strtof` reads them (sign, digits, point, exponent, `inf`,
//! `infinity`, `nan`), rounded once to the nearest `f32`. One difference: hexadecimal float
//! literals (`0x1p3`), which `strtof` also accepts, are refused.
//!
//! Output writes each element as PostgreSQL writes a `real`: the shortest decimal that reads
//! back to the same `f32`, in fixed notation for decimal exponents -4..=5 and scientific
//! notation (`1e+06`, `1.5e-05`) otherwise, so the text is byte-identical to pgvector's.

use crate::vector::{check_dims, check_element, check_typmod, VECTOR_MAX_DIM};
use crate::VectorError;

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

const SYNTAX: VectorError = VectorError::InvalidSyntax { detail: None };

/// Length of the longest prefix of `s` that `strtof` would read as a decimal number or a
/// special value, 0 when there is none.
fn float_token_len(s: &[u8]) -> usize {
    let mut i = 0;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let rest = &s[i..];
    let starts_ci =
        |word: &[u8]| rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word);
    if starts_ci(b"infinity") {
        return i + 8;
    }
    if starts_ci(b"inf") {
        return i + 3;
    }
    if starts_ci(b"nan") {
        return i + 3;
    }
    let int_start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < s.len() && s[i] == b'.' {
        let frac_start = i + 1;
        let mut j = frac_start;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        digits += j - frac_start;
        if digits > 0 {
            i = j;
        }
    }
    if digits == 0 {
        return 0;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut j = i + 1;
        if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    i
}

/// Reads one element at the start of `s`: its value and the bytes it used.
fn parse_element(s: &[u8]) -> Result<(f32, usize), VectorError> {
    let len = float_token_len(s);
    if len == 0 {
        return Err(SYNTAX);
    }
    // The token is ASCII by construction.
    let token = std::str::from_utf8(&s[..len]).map_err(|_| SYNTAX)?;
    let value: f32 = token.parse().map_err(|_| SYNTAX)?;
    if value.is_infinite()
        && !token.trim_start_matches(['+', '-']).as_bytes()[0].is_ascii_alphabetic()
    {
        // A finite literal too large for f32 (strtof's ERANGE with an infinite result).
        return Err(VectorError::OutOfRange {
            literal: token.to_string(),
        });
    }
    check_element(value)?;
    Ok((value, len))
}

/// Parses a vector literal, checking it against the column's dimensions (`typmod`).
pub fn parse(input: &[u8], typmod: Option<usize>) -> Result<Vec<f32>, VectorError> {
    parse_with(input, typmod, |value, _| Ok(value))
}

/// Parses a vector literal into elements made by `element` from each element's `f32` value
/// (finite, checked) and its text: the same syntax for `vector` and `halfvec`.
pub fn parse_with<T>(
    input: &[u8],
    typmod: Option<usize>,
    mut element: impl FnMut(f32, &str) -> Result<T, VectorError>,
) -> Result<Vec<T>, VectorError> {
    let mut i = skip_space(input, 0);
    if input.get(i) != Some(&b'[') {
        return Err(VectorError::InvalidSyntax {
            detail: Some("Vector contents must start with \"[\"."),
        });
    }
    i = skip_space(input, i + 1);
    if input.get(i) == Some(&b']') {
        return Err(VectorError::NoDimensions);
    }
    let mut values = Vec::with_capacity(typmod.unwrap_or(16));
    loop {
        if values.len() == VECTOR_MAX_DIM {
            return Err(VectorError::TooManyDimensions {
                dims: VECTOR_MAX_DIM + 1,
            });
        }
        i = skip_space(input, i);
        let (value, used) = parse_element(&input[i..])?;
        // The token is ASCII (parse_element read it).
        let token = std::str::from_utf8(&input[i..i + used]).map_err(|_| SYNTAX)?;
        values.push(element(value, token)?);
        i = skip_space(input, i + used);
        match input.get(i) {
            Some(b',') => i += 1,
            Some(b']') => {
                i += 1;
                break;
            }
            _ => return Err(SYNTAX),
        }
    }
    if skip_space(input, i) != input.len() {
        return Err(VectorError::InvalidSyntax {
            detail: Some("Junk after closing right brace."),
        });
    }
    check_dims(values.len())?;
    check_typmod(typmod, values.len())?;
    Ok(values)
}

/// Appends `x` as PostgreSQL's `float4out` writes it (shortest round-trip digits).
pub fn write_f32(out: &mut String, x: f32) {
    use std::fmt::Write;

    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    let x = x.abs();
    if x.is_infinite() {
        out.push_str("Infinity");
        return;
    }
    if x == 0.0 {
        out.push('0');
        return;
    }
    // Shortest round-trip digits by Ryu, the algorithm PostgreSQL's float4out uses: among
    // equally short candidates it picks the closest, and on an exact tie the even one
    // (1361.90625 prints as 1361.9062). Rust's own `{:e}` breaks such ties upward.
    let (digits, exp) = shortest_digits(x);
    let n = digits.len() as i32;
    if (-4..6).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            (0..(-exp - 1)).for_each(|_| out.push('0'));
            out.push_str(&digits);
        } else if n <= exp + 1 {
            out.push_str(&digits);
            (0..(exp + 1 - n)).for_each(|_| out.push('0'));
        } else {
            let point = (exp + 1) as usize;
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        write!(out, "e{sign}{:02}", exp.abs()).expect("writing to a String cannot fail");
    }
}

/// The shortest decimal digits of a positive finite `x` and the decimal exponent of the first
/// digit, from Ryu's output in whichever notation it chose ("1361.9062", "1e-5", "1.5E38").
fn shortest_digits(x: f32) -> (String, i32) {
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(x);
    let (mantissa, exp10) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("ryu writes an integer exponent")),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int_part.chars().chain(frac_part.chars()).collect();
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_string();
    // The first digit of `all` has exponent len(int_part) - 1; skip the leading zeros.
    let exp = exp10 + int_part.len() as i32 - 1 - leading as i32;
    (digits, exp)
}

/// Formats a vector as `[x1,x2,...]`.
pub fn format(values: &[f32]) -> String {
    let mut out = String::with_capacity(values.len() * 12 + 2);
    out.push('[');
    for (i, &x) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_f32(&mut out, x);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Vec<f32>, VectorError> {
        parse(s.as_bytes(), None)
    }

    #[test]
    fn accepts_whitespace_and_forms() {
        assert_eq!(p("[1,2.5,3]").unwrap(), vec![1.0, 2.5, 3.0]);
        assert_eq!(p(" \t[ 1 ,\n2.5 , 3 ]\r\n ").unwrap(), vec![1.0, 2.5, 3.0]);
        assert_eq!(
            p("[+1,-2,.5,1.,1e2,1E-2]").unwrap(),
            vec![1.0, -2.0, 0.5, 1.0, 100.0, 0.01]
        );
        assert_eq!(
            p("[1e]").unwrap_err(),
            SYNTAX,
            "dangling exponent leaves junk"
        );
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(p("[1,2").unwrap_err(), SYNTAX);
        assert_eq!(p("[]").unwrap_err(), VectorError::NoDimensions);
        assert_eq!(p("[ ]").unwrap_err(), VectorError::NoDimensions);
        assert_eq!(p("[1,,2]").unwrap_err(), SYNTAX);
        assert_eq!(p("[a]").unwrap_err(), SYNTAX);
        assert_eq!(p("[1,]").unwrap_err(), SYNTAX);
        assert_eq!(p("[.]").unwrap_err(), SYNTAX);
        assert!(matches!(
            p("1,2").unwrap_err(),
            VectorError::InvalidSyntax { detail: Some(_) }
        ));
        assert!(matches!(
            p("[1] x").unwrap_err(),
            VectorError::InvalidSyntax { detail: Some(_) }
        ));
        assert_eq!(p("").unwrap_err(), p("x").unwrap_err());
    }

    #[test]
    fn refuses_non_finite_and_out_of_range() {
        assert_eq!(p("[NaN]").unwrap_err(), VectorError::NotANumber);
        assert_eq!(p("[-inf]").unwrap_err(), VectorError::Infinite);
        assert_eq!(p("[Infinity]").unwrap_err(), VectorError::Infinite);
        assert_eq!(
            p("[1e39]").unwrap_err(),
            VectorError::OutOfRange {
                literal: "1e39".into()
            }
        );
        assert_eq!(
            p("[1,-4e38]").unwrap_err(),
            VectorError::OutOfRange {
                literal: "-4e38".into()
            }
        );
        // Underflow reads as zero or a subnormal, as with strtof.
        assert_eq!(p("[1e-50]").unwrap(), vec![0.0]);
    }

    #[test]
    fn dimension_limits() {
        let max = format!("[{}]", vec!["1"; VECTOR_MAX_DIM].join(","));
        assert_eq!(p(&max).unwrap().len(), VECTOR_MAX_DIM);
        let over = format!("[{}]", vec!["1"; VECTOR_MAX_DIM + 1].join(","));
        assert!(matches!(
            p(&over).unwrap_err(),
            VectorError::TooManyDimensions { .. }
        ));
        assert_eq!(
            parse(b"[1,2]", Some(3)).unwrap_err(),
            VectorError::DimensionMismatch {
                expected: 3,
                actual: 2
            }
        );
    }

    #[test]
    fn output_matches_float4out() {
        let cases: &[(f32, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (2.5, "2.5"),
            (-3.25, "-3.25"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.33333334"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (100000.0, "100000"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000015, "1.5e-05"),
            (f32::MAX, "3.4028235e+38"),
            (f32::MIN_POSITIVE, "1.1754944e-38"),
            (1e-45, "1e-45"),
            (12.5, "12.5"),
            (1e5 + 0.5, "100000.5"),
            (-(1361.0 + 29.0 / 32.0), "-1361.9062"), // an exact tie: even digit
            (1e-40, "1e-40"),
            (3e10, "3e+10"),
            (0.5, "0.5"),
            (100.0, "100"),
        ];
        for &(x, want) in cases {
            let mut s = String::new();
            write_f32(&mut s, x);
            assert_eq!(s, want, "formatting {x:?}");
        }
        assert_eq!(format(&[1.0, 2.5, 3.0]), "[1,2.5,3]");
    }

    proptest! {
        #[test]
        fn text_round_trips(v in proptest::collection::vec(proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO, 1..64)) {
            let text = format(&v);
            let back = p(&text).unwrap();
            prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = p(&s);
        }

        #[test]
        fn never_panics_on_vectorish(s in "[\\[\\] ,0-9.eE+\\-naifNAIF]{0,40}") {
            let _ = p(&s);
        }
    }
}
