//! JSON bytes to a [`Reading`]: the values of the fields a spec names.
//!
//! The decoder walks the JSON object once, keeps only the named fields
//! (strings borrowed from the input when they have no escapes), skips the
//! rest, and never panics: any byte string gives a reading or a
//! [`FeatureError`].
//!
//! Two paths give the same result. A fast scanner handles what readings
//! almost always are: one flat object of numbers, ASCII strings without
//! escapes, booleans and nulls. Anything else (escapes, non-ASCII text,
//! nested values, a duplicate field, an exponent it cannot round exactly,
//! malformed input) makes it give up, and serde_json decodes the reading
//! from the start, with its exact error messages. Numbers are correctly
//! rounded on both paths (serde_json's `float_roundtrip`), so they agree
//! to the bit; a property test checks that they do.

use std::borrow::Cow;
use std::fmt;

use arrayvec::ArrayVec;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::error::FeatureError;

/// One field's value in a reading.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value<'a> {
    /// The field is not in the reading.
    #[default]
    Absent,
    /// JSON `null`.
    Null,
    /// A number.
    Num(f64),
    /// A string, as its UTF-8 bytes (see [`text`]): borrowed from the
    /// reading when it had no escapes. Most uses (category lookups,
    /// timestamps) need only the bytes, so no reading pays for a UTF-8
    /// check that the decoder has already made.
    Str(Cow<'a, [u8]>),
    /// `true` or `false`.
    Bool(bool),
    /// An array or object (never a valid feature value).
    Nested(&'static str),
}

impl Value<'_> {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Absent => "absent".into(),
            Value::Null => "null".into(),
            Value::Num(v) => format!("the number {v}"),
            Value::Str(s) => {
                let s: String = String::from_utf8_lossy(s).chars().take(40).collect();
                format!("the string {s:?}")
            }
            Value::Bool(b) => format!("{b}"),
            Value::Nested(kind) => (*kind).into(),
        }
    }
}

/// The text of a string [`Value`], borrowed when the value is. Decoded
/// strings are UTF-8 by construction (the fast path takes only ASCII, the
/// general one gets them from serde_json), so nothing is ever replaced.
pub fn text<'a>(s: &Cow<'a, [u8]>) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(v).into_owned()),
    }
}

/// The length and first seven bytes of `s` in one word: two short names
/// are equal exactly when their fingerprints are, and two long ones rarely
/// have equal fingerprints unless they are equal.
fn fingerprint(s: &[u8]) -> u64 {
    let len = (s.len() as u64) << 56;
    match s.first_chunk::<8>() {
        Some(word) => len | (u64::from_le_bytes(*word) & 0x00ff_ffff_ffff_ffff),
        None => s
            .iter()
            .enumerate()
            .fold(len, |f, (i, &c)| f | u64::from(c) << (8 * i)),
    }
}

/// `a == b` a word at a time: for short texts (names, keys, timestamps),
/// cheaper than the call to `memcmp` that slice equality makes.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (wa.remainder(), wb.remainder());
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    wa.zip(wb).all(|(x, y)| word(x) == word(y)) && ra.iter().zip(rb).all(|(x, y)| x == y)
}

/// A short list of distinct names, found by position without hashing: a
/// word compare of [`fingerprint`]s rejects the other names, and only a long
/// name with the same fingerprint is compared in full. For a handful of
/// field names or category values, cheaper than hashing the key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    names: Vec<String>,
    prints: Vec<u64>,
}

impl Names {
    /// Appends `name` (the caller keeps names distinct).
    pub(crate) fn push(&mut self, name: &str) {
        self.names.push(name.to_owned());
        self.prints.push(fingerprint(name.as_bytes()));
    }

    /// The position of `key`, if it is one of the names.
    #[inline]
    pub(crate) fn position(&self, key: &[u8]) -> Option<usize> {
        let f = fingerprint(key);
        self.prints
            .iter()
            .zip(&self.names)
            .position(|(&p, n)| p == f && (key.len() <= 7 || bytes_eq(n.as_bytes(), key)))
    }

    /// The name at `i`.
    pub(crate) fn get(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// A field name as a plain reading spells its key, the closing quote
/// included (`posted_wait"`), in little-endian words with masks: the fast
/// decoder checks whether the next key is the field it expects with a
/// word compare or two, instead of scanning the key and looking it up.
#[derive(Debug, Clone, Copy)]
struct KeyPattern {
    words: [u64; KeyPattern::WORDS],
    masks: [u64; KeyPattern::WORDS],
    /// Words in use.
    n: usize,
    /// Bytes matched: the name and its closing quote.
    len: usize,
}

impl KeyPattern {
    const WORDS: usize = 4;

    /// `None` for a name JSON would escape (a quote, a backslash, a
    /// control character, non-ASCII) or longer than 31 bytes: such keys
    /// are always scanned.
    fn new(name: &str) -> Option<Self> {
        let plain = |c: &u8| *c >= 0x20 && *c < 0x80 && *c != b'"' && *c != b'\\';
        if !name.as_bytes().iter().all(plain) || name.len() >= 8 * Self::WORDS {
            return None;
        }
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(b'"');
        let mut p = KeyPattern {
            words: [0; Self::WORDS],
            masks: [0; Self::WORDS],
            n: 0,
            len: bytes.len(),
        };
        for (k, chunk) in bytes.chunks(8).enumerate() {
            let (mut w, mut m) = ([0u8; 8], [0u8; 8]);
            w[..chunk.len()].copy_from_slice(chunk);
            m[..chunk.len()].fill(0xff);
            p.words[k] = u64::from_le_bytes(w);
            p.masks[k] = u64::from_le_bytes(m);
            p.n = k + 1;
        }
        Some(p)
    }

    /// True if `b[at..]` starts with the pattern. False, too, when the
    /// last word would run past the end of `b` (the scan then decides).
    #[inline]
    fn matches(&self, b: &[u8], at: usize) -> bool {
        let Some(window) = b.get(at..at + 8 * self.n) else {
            return false;
        };
        let pattern = self.words.iter().zip(&self.masks);
        window.chunks_exact(8).zip(pattern).all(|(c, (&w, &m))| {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            u64::from_le_bytes(word) & m == w
        })
    }
}

/// The field names a spec reads, in slot order.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    names: Names,
    patterns: Vec<Option<KeyPattern>>,
}

impl Fields {
    /// Registers `name` (once) and returns its slot.
    pub fn slot(&mut self, name: &str) -> usize {
        match self.names.position(name.as_bytes()) {
            Some(i) => i,
            None => {
                self.names.push(name);
                self.patterns.push(KeyPattern::new(name));
                self.names.len() - 1
            }
        }
    }

    /// The name of slot `i`.
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no field is read.
    pub fn is_empty(&self) -> bool {
        self.names.len() == 0
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.names.position(key.as_bytes())
    }

    /// If the key starting at `b[at]` (after its opening quote) is the
    /// name of `slot`, the index after its closing quote.
    #[inline]
    fn expect(&self, slot: usize, b: &[u8], at: usize) -> Option<usize> {
        let p = self.patterns.get(slot)?.as_ref()?;
        p.matches(b, at).then_some(at + p.len)
    }
}

/// Slots kept inline (no allocation) when a spec reads at most this many
/// fields: a clinical reading names 13.
const INLINE: usize = 16;

/// One value per slot, inline for up to `INLINE` slots. Only the live
/// slots are written when it is made and visited when it is dropped.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // inline on purpose: no allocation per reading
pub enum Slots<'a> {
    /// At most `INLINE` slots.
    Inline(ArrayVec<Value<'a>, INLINE>),
    /// More.
    Heap(Vec<Value<'a>>),
}

impl<'a> Slots<'a> {
    /// `len` absent values.
    fn new(len: usize) -> Self {
        let mut slots = Slots::Inline(ArrayVec::new_const());
        slots.reset(len);
        slots
    }

    /// Makes these `len` absent values. Callers on the hot path build an
    /// empty [`Slots::Inline`] where it is used and reset it there: a
    /// function returning the (large) value would copy it.
    #[inline]
    pub(crate) fn reset(&mut self, len: usize) {
        match self {
            Slots::Inline(v) if len <= INLINE => {
                v.clear();
                v.extend((0..len).map(|_| Value::Absent));
            }
            _ => *self = Slots::Heap(vec![Value::Absent; len]),
        }
    }

    fn clear(&mut self) {
        self.fill(Value::Absent);
    }
}

impl<'a> std::ops::Deref for Slots<'a> {
    type Target = [Value<'a>];
    #[inline]
    fn deref(&self) -> &[Value<'a>] {
        match self {
            Slots::Inline(v) => v,
            Slots::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Slots<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Slots::Inline(v) => v,
            Slots::Heap(v) => v,
        }
    }
}

/// The values of a reading's named fields, by slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// One value per slot of [`Fields`].
    pub values: Slots<'a>,
}

impl<'a> Reading<'a> {
    /// A reading with every field of `fields` absent, to decode into.
    pub fn empty(fields: &Fields) -> Self {
        Reading {
            values: Slots::new(fields.len()),
        }
    }
}

/// Decodes one JSON reading, keeping the fields in `fields`.
pub fn decode<'a>(bytes: &'a [u8], fields: &Fields) -> Result<Reading<'a>, FeatureError> {
    let mut reading = Reading::empty(fields);
    decode_into(bytes, fields, &mut reading)?;
    Ok(reading)
}

/// Decodes one JSON reading into `reading` (made by [`Reading::empty`] for
/// the same `fields`), without moving it.
pub fn decode_into<'a>(
    bytes: &'a [u8],
    fields: &Fields,
    reading: &mut Reading<'a>,
) -> Result<(), FeatureError> {
    if flat::decode(bytes, fields, &mut reading.values).is_some() {
        return Ok(());
    }
    reading.values.clear();
    decode_serde(bytes, fields, &mut reading.values)
}

/// The general path: serde_json over the whole input.
fn decode_serde<'a>(
    bytes: &'a [u8],
    fields: &Fields,
    values: &mut Slots<'a>,
) -> Result<(), FeatureError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    ReadingSeed { fields, values }
        .deserialize(&mut de)
        .map_err(|e| json_error(&e))?;
    de.end().map_err(|e| json_error(&e))
}

/// The fast path: a flat object of plain values, or `None` to leave the
/// input to serde_json (which then also reports any error).
mod flat {
    use std::borrow::Cow;

    use super::{Fields, Slots, Value};

    /// Powers of ten that are exact in an f64.
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];

    fn ws(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
            i += 1;
        }
        i
    }

    pub(super) fn decode<'a>(b: &'a [u8], fields: &Fields, values: &mut Slots<'a>) -> Option<()> {
        // every byte is examined and only ASCII is taken, so a reading
        // this path accepts is valid UTF-8 without a separate check
        let mut i = ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = ws(b, i + 1);
        // readings of a stream spell their fields in one order: after a
        // key of slot `s`, the next key is most likely that of `s + 1`
        let mut expect = 0;
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                let (slot, next) = match fields.expect(expect, b, i + 1) {
                    Some(next) => (Some(expect), next),
                    None => {
                        let (key, next) = raw_string(b, i + 1)?;
                        (fields.names.position(key), next)
                    }
                };
                i = ws(b, next);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                let (value, next) = value(b, ws(b, i + 1))?;
                if let Some(slot) = slot {
                    let v = values.get_mut(slot)?;
                    if !matches!(v, Value::Absent) {
                        return None; // a duplicate: serde_json names it
                    }
                    *v = value;
                    expect = slot + 1;
                }
                i = ws(b, next);
                match b.get(i) {
                    Some(b',') => i = ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (ws(b, i) == b.len()).then_some(())
    }

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;

    /// The high bit of each byte of `w` (little-endian) that is a quote, a
    /// backslash, a control character or not ASCII (SWAR: eight bytes per
    /// step). Bits above the lowest may be spurious (a borrow carries into
    /// the next byte); the lowest is exact: the first special byte.
    #[inline]
    pub(super) fn special(w: u64) -> u64 {
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
        // bytes below 0x20 (and, with the high bit, any byte >= 0x80)
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        (quote | backslash | control | w) & HIGHS
    }

    /// The raw bytes of an ASCII string without escapes or control
    /// characters, starting after its opening quote, and the index after
    /// its closing quote.
    #[inline(always)]
    fn raw_string(b: &[u8], start: usize) -> Option<(&[u8], usize)> {
        let rest = b.get(start..)?;
        let mut i = 0;
        // eight bytes at a time while eight remain in the reading (they
        // may run past the string: the closing quote stops the scan)
        while let Some(chunk) = rest.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let special = special(u64::from_le_bytes(word));
            if special != 0 {
                let end = i + (special.trailing_zeros() / 8) as usize;
                return (rest[end] == b'"').then(|| (&rest[..end], start + end + 1));
            }
            i += 8;
        }
        while let Some(&c) = rest.get(i) {
            match c {
                b'"' => return Some((&rest[..i], start + i + 1)),
                b'\\' | 0..=0x1f | 0x80..=0xff => return None,
                _ => i += 1,
            }
        }
        None
    }

    #[inline(always)]
    fn value(b: &[u8], i: usize) -> Option<(Value<'_>, usize)> {
        let literal = |word: &[u8], v: Value<'static>| {
            (b.get(i..i + word.len())? == word).then_some((v, i + word.len()))
        };
        match b.get(i)? {
            b'"' => raw_string(b, i + 1).map(|(s, next)| (Value::Str(Cow::Borrowed(s)), next)),
            b'-' | b'0'..=b'9' => number(b, i),
            b't' => literal(b"true", Value::Bool(true)),
            b'f' => literal(b"false", Value::Bool(false)),
            b'n' => literal(b"null", Value::Null),
            _ => None,
        }
    }

    fn digits(b: &[u8], mut i: usize) -> usize {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    }

    /// A JSON number, rounded exactly as serde_json (with
    /// `float_roundtrip`) rounds it.
    #[inline(always)]
    fn number(b: &[u8], start: usize) -> Option<(Value<'static>, usize)> {
        let neg = b[start] == b'-';
        let int_start = start + usize::from(neg);
        let int_end = match b.get(int_start)? {
            b'0' => int_start + 1,
            b'1'..=b'9' => digits(b, int_start),
            _ => return None,
        };
        let mut end = int_end;
        let mut frac = None;
        if b.get(end) == Some(&b'.') {
            let frac_end = digits(b, end + 1);
            if frac_end == end + 1 {
                return None;
            }
            frac = Some((end + 1, frac_end));
            end = frac_end;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            // rare in readings: the standard library rounds it exactly
            let mut e = end + 1;
            if matches!(b.get(e), Some(b'+' | b'-')) {
                e += 1;
            }
            let exp_end = digits(b, e);
            if exp_end == e {
                return None;
            }
            let text = std::str::from_utf8(&b[start..exp_end]).ok()?;
            let v: f64 = text.parse().ok()?;
            return v.is_finite().then_some((Value::Num(v), exp_end));
        }
        let sign = |v: f64| if neg { -v } else { v };
        let mut m: u64 = 0;
        let int_digits = &b[int_start..int_end];
        let frac_digits = frac.map_or(&b[0..0], |(s, e)| &b[s..e]);
        if int_digits.len() + frac_digits.len() > 19 {
            return None;
        }
        for &c in int_digits.iter().chain(frac_digits) {
            m = m * 10 + u64::from(c - b'0');
        }
        if frac.is_none() {
            // serde_json gives integers as u64 or i64, converted with `as`
            return Some((Value::Num(sign(m as f64)), end));
        }
        // Clinger's fast path: both exact, so one correctly rounded division
        if m > 1 << 53 || frac_digits.len() >= POW10.len() {
            return None;
        }
        Some((Value::Num(sign(m as f64 / POW10[frac_digits.len()])), end))
    }
}

fn json_error(e: &serde_json::Error) -> FeatureError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE) {
        let field = rest.rsplit_once(" at line ").map_or(rest, |(f, _)| f);
        return FeatureError::Duplicate {
            field: field.to_owned(),
        };
    }
    FeatureError::Json(format!("it is not: {msg}"))
}

const DUPLICATE: &str = "duplicate field: ";

struct ReadingSeed<'f, 'v, 'a> {
    fields: &'f Fields,
    values: &'v mut Slots<'a>,
}

impl<'de, 'f, 'v> DeserializeSeed<'de> for ReadingSeed<'f, 'v, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'f, 'v> Visitor<'de> for ReadingSeed<'f, 'v, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.fields.find(&key) {
                Some(i) => {
                    if self.values[i] != Value::Absent {
                        return Err(de::Error::custom(format_args!("{DUPLICATE}{key}")));
                    }
                    self.values[i] = map.next_value_seed(ValueSeed)?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Value::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::Num(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Value::Num(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Borrowed(v.as_bytes())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.as_bytes().to_vec())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.into_bytes())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Nested("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Nested("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields() -> Fields {
        let mut f = Fields::default();
        f.slot("ride");
        f.slot("posted_wait");
        f
    }

    #[test]
    fn keeps_named_fields_and_borrows_strings() {
        let r = decode(
            br#"{"ride":"soarin","ts":"x","posted_wait":25.0,"n":{"a":[1]}}"#,
            &fields(),
        )
        .expect("decodes");
        assert!(matches!(&r.values[0], Value::Str(Cow::Borrowed(b"soarin"))));
        assert_eq!(r.values[1], Value::Num(25.0));
        let r = decode(br#"{"ride":"so\"arin"}"#, &fields()).expect("decodes");
        assert_eq!(r.values[0], Value::Str(Cow::Owned(b"so\"arin".to_vec())));
        assert_eq!(r.values[1], Value::Absent);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let f = fields();
        let e = decode(b"[1,2]", &f).expect_err("not an object");
        assert!(
            e.to_string().starts_with("reading should be a JSON object"),
            "{e}"
        );
        assert!(decode(b"", &f).is_err());
        assert!(decode(b"{\"ride\": 1} trailing", &f).is_err());
        assert!(decode(b"\xff\xfe", &f).is_err());
        assert!(decode(br#"{"posted_wait": 1e999}"#, &f).is_err());
        assert_eq!(
            decode(br#"{"ride":"a","ride":"b"}"#, &f).expect_err("duplicate"),
            FeatureError::Duplicate {
                field: "ride".into()
            }
        );
    }

    /// Both paths on the same input: the fast one must either give up or
    /// agree with serde_json to the bit (the Debug form tells -0.0 from 0.0).
    fn paths_agree(bytes: &[u8], fields: &Fields) -> Result<bool, String> {
        let mut fast = Slots::new(fields.len());
        let mut slow = Slots::new(fields.len());
        let slow_result = decode_serde(bytes, fields, &mut slow);
        match flat::decode(bytes, fields, &mut fast) {
            None => Ok(false),
            Some(()) => match slow_result {
                Ok(()) if format!("{fast:?}") == format!("{slow:?}") => Ok(true),
                Ok(()) => Err(format!("fast {fast:?} != serde {slow:?}")),
                Err(e) => Err(format!("fast path accepted what serde refuses: {e}")),
            },
        }
    }

    #[test]
    fn long_names_with_the_same_fingerprint_are_told_apart() {
        // same length and first seven bytes: the fingerprint cannot tell
        // them apart, the full compare must (it used to stop at the first)
        let mut f = Fields::default();
        let posted = f.slot("wait_time_posted");
        let actual = f.slot("wait_time_actual");
        assert_ne!(posted, actual);
        assert_eq!(f.slot("wait_time_actual"), actual);
        let r = decode(br#"{"wait_time_posted":5,"wait_time_actual":7}"#, &f).expect("decodes");
        assert_eq!(r.values[posted], Value::Num(5.0));
        assert_eq!(r.values[actual], Value::Num(7.0));
    }

    #[test]
    fn expected_keys_are_matched_whole_and_in_any_order() {
        // slot order ride, ts, posted_wait; "t" and "ts2" share a prefix
        // with "ts", and a name JSON would escape is never matched raw
        let mut f = Fields::default();
        for name in ["ride", "ts", "posted_wait", "t", "ts2", "a\":1,\"b"] {
            f.slot(name);
        }
        // (reading, whether the fast path takes it); when it does, it must
        // agree with serde_json
        for (text, fast) in [
            (r#"{"ride":"a","ts":"b","posted_wait":1}"#, true),
            (r#"{"posted_wait":1,"ts":"b","ride":"a"}"#, true),
            (r#"{"ride":"a","t":0,"ts2":2,"ts":"b"}"#, true),
            (r#"{"a":1,"b":2}"#, true),
            (r#"{"ride":"a","x":{"ts":1},"ts":"b"}"#, false),
            (r#"{"a\":1,\"b":3}"#, false),
            (r#"{"ride":"a","ts""#, false),
            (r#"{"ride":"a","ts":"#, false),
            (r#"{"ts":1,"ts":2}"#, false),
        ] {
            assert_eq!(paths_agree(text.as_bytes(), &f), Ok(fast), "{text}");
        }
        let r = decode(br#"{"ride":"a","t":0,"ts2":2,"ts":"b"}"#, &f).expect("decodes");
        assert_eq!(r.values[1], Value::Str(Cow::Borrowed(b"b")));
        assert_eq!(r.values[3], Value::Num(0.0));
        assert_eq!(r.values[4], Value::Num(2.0));
        let r = decode(br#"{"a\":1,\"b":3}"#, &f).expect("decodes");
        assert_eq!(r.values[5], Value::Num(3.0));
        let r = decode(br#"{"a":1,"b":2}"#, &f).expect("decodes");
        assert_eq!(r.values[5], Value::Absent);
    }

    #[test]
    fn swar_scan_finds_every_special_byte_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = special;
                let mask = flat::special(u64::from_le_bytes(word));
                assert_eq!(mask.trailing_zeros() / 8, at as u32, "{special:#x} at {at}");
                // the first of several, whatever follows it
                for later in [b'"', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x80, 0xff] {
                    for after in at + 1..8 {
                        let mut w = word;
                        w[after] = later;
                        let mask = flat::special(u64::from_le_bytes(w));
                        assert_eq!(mask.trailing_zeros() / 8, at as u32, "{w:?}");
                    }
                }
            }
        }
        for plain in [
            *b"abcdefgh",
            *b"2018-01-",
            *b" ~!#$%&'",
            [0x20, 0x7f, b'Z', b'a', b'0', b'9', b'_', b'-'],
        ] {
            assert_eq!(flat::special(u64::from_le_bytes(plain)), 0, "{plain:?}");
        }
    }

    #[test]
    fn fast_path_takes_plain_readings_and_agrees_with_serde() {
        let f = fields();
        for text in [
            r#"{"ride":"7_dwarfs_train","ts":"2018-01-01T07:21:12","posted_wait":45.0}"#,
            r#" { "posted_wait" : -0 , "ride" : null } "#,
            r#"{"posted_wait":-0.0,"x":true,"y":false}"#,
            r#"{"posted_wait":0.1}"#,
            r#"{"posted_wait":1234567.891011}"#,
            r#"{"posted_wait":9007199254740993}"#,
            r#"{"posted_wait":1.5e3}"#,
            r#"{"posted_wait":-9876543210987654321}"#,
            r#"{}"#,
        ] {
            assert_eq!(paths_agree(text.as_bytes(), &f), Ok(true), "{text}");
        }
        // left to serde: escapes, non-ASCII, nesting, duplicates, bad input
        for text in [
            r#"{"ride":"so\"arin"}"#,
            r#"{"ride":"café"}"#,
            r#"{"x":[1],"ride":"a"}"#,
            r#"{"ride":"a","ride":"b"}"#,
            r#"{"posted_wait":01}"#,
            r#"{"posted_wait":1e999}"#,
            r#"{"posted_wait":1.}"#,
            r#"{"ride":"a",}"#,
            r#"{"ride":"a"} x"#,
        ] {
            assert_eq!(paths_agree(text.as_bytes(), &f), Ok(false), "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_path_agrees_with_serde_on_json_like_text(
            s in r#"[ ]?\{[ ]?(("(ride|posted_wait|x)"[ ]?:[ ]?(-?[0-9]{1,21}(\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?|"[a-z_\\"é]{0,6}"|null|true|false|\[\]|\{\})[ ]?),?){0,4}\}[ ]?"#
        ) {
            prop_assert!(paths_agree(s.as_bytes(), &fields()).is_ok(), "{}", s);
        }

        #[test]
        fn fast_path_agrees_with_serde_on_any_number(v in any::<f64>(), digits in 0usize..20) {
            let text = format!(r#"{{"posted_wait":{v}}}"#);
            prop_assert!(paths_agree(text.as_bytes(), &fields()).is_ok(), "{}", text);
            let text = format!(r#"{{"posted_wait":{v:.digits$}}}"#);
            prop_assert!(paths_agree(text.as_bytes(), &fields()).is_ok(), "{}", text);
        }

        #[test]
        fn fast_path_agrees_with_serde_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert!(paths_agree(&bytes, &fields()).is_ok());
        }
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, &fields());
        }

        #[test]
        fn any_json_like_text_decodes_or_fails_cleanly(s in r#"\{("(ride|posted_wait|x)":(-?[0-9.e+]{1,12}|"[a-z\\"]{0,5}"|null|true|\[\]|\{\}),?){0,4}\}?"#) {
            let _ = decode(s.as_bytes(), &fields());
        }
    }
}
