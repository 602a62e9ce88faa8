//! An event's `detail` written straight to its protobuf bytes.
//!
//! `to_struct` turns a JSON object into a `google.protobuf.Struct` (a
//! `BTreeMap` of `Value`s), which prost then sizes and encodes, level by
//! level. For CreateToken, whose every call appends a `token_minted`
//! event before the token is handed out, building the JSON, the `Struct`
//! and encoding it took about 8,000 instructions of a call
//! (docs/benchmarks.md); [`EncodedStruct`] writes the same bytes directly.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// `Struct.fields`, a map entry's key and value, and `ListValue.values`.
const FIELDS: u32 = 1;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
const LIST_VALUES: u32 = 1;
/// The tags of `Value.kind`'s cases.
const NULL_VALUE: u32 = 1;
const NUMBER_VALUE: u32 = 2;
const STRING_VALUE: u32 = 3;
const BOOL_VALUE: u32 = 4;
const LIST_VALUE: u32 = 6;

/// A `google.protobuf.Struct`'s encoded bytes, written member by member:
/// byte for byte what prost encodes for the `Struct` that `to_struct`
/// makes of the same JSON object. Members must be written in the order of
/// their names, the order in which prost encodes the `Struct`'s map.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedStruct {
    bytes: Vec<u8>,
    /// The last member's name (names are in order).
    last: &'static str,
}

impl EncodedStruct {
    pub fn with_capacity(capacity: usize) -> Self {
        EncodedStruct { bytes: Vec::with_capacity(capacity), last: "" }
    }

    /// The `Struct`'s own bytes (what prost's `encode_raw` writes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the `Struct` as the message field `tag` of an enclosing
    /// message.
    pub fn encode_field(&self, tag: u32, buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.bytes.len() as u64, buf);
        buf.extend_from_slice(&self.bytes);
    }

    /// How many bytes [`EncodedStruct::encode_field`] writes.
    pub fn field_len(&self, tag: u32) -> usize {
        key_len(tag) + encoded_len_varint(self.bytes.len() as u64) + self.bytes.len()
    }

    /// JSON `null`.
    pub fn null(&mut self, name: &'static str) -> &mut Self {
        self.member(name, 2, |buf| {
            encode_key(NULL_VALUE, WireType::Varint, buf);
            encode_varint(0, buf);
        })
    }

    pub fn bool(&mut self, name: &'static str, value: bool) -> &mut Self {
        self.member(name, 2, |buf| {
            encode_key(BOOL_VALUE, WireType::Varint, buf);
            encode_varint(u64::from(value), buf);
        })
    }

    /// A bool, or `null` when absent (as `json!` writes an `Option`).
    pub fn optional_bool(&mut self, name: &'static str, value: Option<bool>) -> &mut Self {
        match value {
            Some(value) => self.bool(name, value),
            None => self.null(name),
        }
    }

    /// A JSON number: a `Struct` holds every number as a double.
    pub fn number(&mut self, name: &'static str, value: f64) -> &mut Self {
        self.member(name, 9, |buf| {
            encode_key(NUMBER_VALUE, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&value.to_le_bytes());
        })
    }

    pub fn string(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.member(name, string_value_len(value), |buf| string_value(value, buf))
    }

    /// A JSON array of strings.
    pub fn strings<I, S>(&mut self, name: &'static str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<str>,
    {
        let list_len: usize = values
            .clone()
            .into_iter()
            .map(|value| {
                let len = string_value_len(value.as_ref());
                key_len(LIST_VALUES) + encoded_len_varint(len as u64) + len
            })
            .sum();
        let value_len = key_len(LIST_VALUE) + encoded_len_varint(list_len as u64) + list_len;
        self.member(name, value_len, |buf| {
            encode_key(LIST_VALUE, WireType::LengthDelimited, buf);
            encode_varint(list_len as u64, buf);
            for value in values {
                let value = value.as_ref();
                encode_key(LIST_VALUES, WireType::LengthDelimited, buf);
                encode_varint(string_value_len(value) as u64, buf);
                string_value(value, buf);
            }
        })
    }

    /// One map entry: `{key: name, value: Value}`, the `Value`'s bytes
    /// `value_len` long, written by `value`.
    fn member(&mut self, name: &'static str, value_len: usize, value: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        debug_assert!(self.last.is_empty() || self.last < name, "{name} written after {}", self.last);
        self.last = name;
        // A map entry leaves out an empty key, as prost does.
        let key_part =
            if name.is_empty() { 0 } else { key_len(ENTRY_KEY) + encoded_len_varint(name.len() as u64) + name.len() };
        let entry_len = key_part + key_len(ENTRY_VALUE) + encoded_len_varint(value_len as u64) + value_len;
        let buf = &mut self.bytes;
        encode_key(FIELDS, WireType::LengthDelimited, buf);
        encode_varint(entry_len as u64, buf);
        if !name.is_empty() {
            encode_key(ENTRY_KEY, WireType::LengthDelimited, buf);
            encode_varint(name.len() as u64, buf);
            buf.extend_from_slice(name.as_bytes());
        }
        encode_key(ENTRY_VALUE, WireType::LengthDelimited, buf);
        encode_varint(value_len as u64, buf);
        let before = buf.len();
        value(buf);
        debug_assert_eq!(buf.len() - before, value_len, "the value of {name}");
        self
    }
}

/// The bytes of a `Value` holding a string.
fn string_value_len(value: &str) -> usize {
    key_len(STRING_VALUE) + encoded_len_varint(value.len() as u64) + value.len()
}

fn string_value(value: &str, buf: &mut Vec<u8>) {
    encode_key(STRING_VALUE, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_bytes_are_those_of_the_struct_to_struct_makes() {
        let long = "x".repeat(300);
        let many: Vec<String> = (0..40).map(|n| format!("attribute-{n}")).collect();
        let cases = [
            (EncodedStruct::default(), json!({})),
            (
                {
                    let mut detail = EncodedStruct::default();
                    detail
                        .strings("attributes", ["a", "", "é"])
                        .optional_bool("canPublish", None)
                        .optional_bool("canPublishData", Some(false))
                        .strings("canPublishSources", Vec::<&str>::new())
                        .bool("hidden", true)
                        .number("metadataBytes", 0.0)
                        .number("n", 1234.5)
                        .string("name", "")
                        .string("ttl", "6h");
                    detail
                },
                json!({
                    "attributes": ["a", "", "é"],
                    "canPublish": null,
                    "canPublishData": false,
                    "canPublishSources": [],
                    "hidden": true,
                    "metadataBytes": 0,
                    "n": 1234.5,
                    "name": "",
                    "ttl": "6h",
                }),
            ),
            (
                {
                    let mut detail = EncodedStruct::default();
                    detail.strings("a", &many).string("b", &long).null("c");
                    detail
                },
                json!({ "a": many, "b": long, "c": null }),
            ),
        ];
        for (encoded, json) in cases {
            let serde_json::Value::Object(map) = json else { unreachable!() };
            let expected = crate::events::to_struct(map);
            assert_eq!(encoded.as_bytes(), expected.encode_to_vec(), "{expected:?}");
            let mut field = Vec::new();
            encoded.encode_field(12, &mut field);
            assert_eq!(field.len(), encoded.field_len(12));
            let wrapper = crate::proto::v1::Event { detail: Some(expected), ..Default::default() };
            assert_eq!(field, wrapper.encode_to_vec());
        }
    }
}
