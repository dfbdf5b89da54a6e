//! JSON bytes to a [`Reading`]: the values of the fields a spec names.
//!
//! The decoder walks the JSON object once with serde, keeps only the named
//! fields (strings borrowed from the input when they have no escapes),
//! skips the rest, and never panics: any byte string gives a reading or a
//! [`FeatureError`].

use std::borrow::Cow;
use std::fmt;

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
    /// A string.
    Str(Cow<'a, str>),
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
                let s: String = s.chars().take(40).collect();
                format!("the string {s:?}")
            }
            Value::Bool(b) => format!("{b}"),
            Value::Nested(kind) => (*kind).into(),
        }
    }
}

/// The field names a spec reads, in slot order.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    names: Vec<String>,
}

impl Fields {
    /// Registers `name` (once) and returns its slot.
    pub fn slot(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_owned());
                self.names.len() - 1
            }
        }
    }

    /// The name of slot `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no field is read.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.names.iter().position(|n| n == key)
    }
}

/// Slots kept inline (no allocation) when a spec reads at most this many fields.
const INLINE: usize = 8;

/// One value per slot, inline for up to [`INLINE`] slots.
#[derive(Debug, Clone, PartialEq)]
pub struct Slots<'a> {
    inline: [Value<'a>; INLINE],
    heap: Vec<Value<'a>>,
    len: usize,
}

impl<'a> Slots<'a> {
    fn new(len: usize) -> Self {
        Slots {
            inline: std::array::from_fn(|_| Value::Absent),
            heap: if len > INLINE {
                vec![Value::Absent; len]
            } else {
                Vec::new()
            },
            len,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> std::ops::Index<usize> for Slots<'a> {
    type Output = Value<'a>;
    fn index(&self, i: usize) -> &Value<'a> {
        if self.len > INLINE {
            &self.heap[i]
        } else {
            &self.inline[i]
        }
    }
}

impl std::ops::IndexMut<usize> for Slots<'_> {
    fn index_mut(&mut self, i: usize) -> &mut Self::Output {
        if self.len > INLINE {
            &mut self.heap[i]
        } else {
            &mut self.inline[i]
        }
    }
}

/// The values of a reading's named fields, by slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// One value per slot of [`Fields`].
    pub values: Slots<'a>,
}

/// Decodes one JSON reading, keeping the fields in `fields`.
pub fn decode<'a>(bytes: &'a [u8], fields: &Fields) -> Result<Reading<'a>, FeatureError> {
    let mut values = Slots::new(fields.len());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    ReadingSeed {
        fields,
        values: &mut values,
    }
    .deserialize(&mut de)
    .map_err(|e| json_error(&e))?;
    de.end().map_err(|e| json_error(&e))?;
    Ok(Reading { values })
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
        Ok(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v)))
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
        assert!(matches!(&r.values[0], Value::Str(Cow::Borrowed("soarin"))));
        assert_eq!(r.values[1], Value::Num(25.0));
        let r = decode(br#"{"ride":"so\"arin"}"#, &fields()).expect("decodes");
        assert_eq!(r.values[0], Value::Str(Cow::Owned("so\"arin".into())));
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
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
