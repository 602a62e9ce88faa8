//! JSON replies the way the real server writes them.
//!
//! The Go server marshals replies with
//! `protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}`
//! (`livekit_room.twirp.go`): proto field names (snake_case), every field
//! present (defaults included, unset messages as `null`, unset oneof members
//! and proto3 `optional` fields left out), int64 as strings, enums by name.
//!
//! `livekit-protocol`'s pbjson impls write lowerCamelCase names and skip
//! defaults, so this module re-shapes their output with the help of the
//! protobuf descriptors of the very `.proto` files those types were generated
//! from (`livekit_room.binpb`, made with the protoc that the workspace
//! already vendors:
//! `protoc -I <livekit-protocol-0.8.2>/protocol/protobufs --include_imports
//!  --descriptor_set_out=livekit_room.binpb livekit_room.proto`).
//! Only the handful of descriptor fields needed here are decoded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use prost::Message;
use serde_json::Value;

static DESCRIPTOR_SET: &[u8] = include_bytes!("livekit_room.binpb");

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorProto {
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<DescriptorProto>,
    #[prost(message, repeated, tag = "5")]
    enum_type: Vec<EnumDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct DescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    field: Vec<FieldDescriptorProto>,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<DescriptorProto>,
    #[prost(message, repeated, tag = "4")]
    enum_type: Vec<EnumDescriptorProto>,
    #[prost(message, optional, tag = "7")]
    options: Option<MessageOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct MessageOptions {
    #[prost(bool, tag = "7")]
    map_entry: bool,
}

#[derive(Clone, PartialEq, Message)]
struct FieldDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "3")]
    number: i32,
    #[prost(int32, tag = "4")]
    label: i32,
    #[prost(int32, tag = "5")]
    r#type: i32,
    #[prost(string, tag = "6")]
    type_name: String,
    #[prost(int32, optional, tag = "9")]
    oneof_index: Option<i32>,
    #[prost(string, tag = "10")]
    json_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct EnumDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    value: Vec<EnumValueDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct EnumValueDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    number: i32,
}

const LABEL_REPEATED: i32 = 3;
const TYPE_DOUBLE: i32 = 1;
const TYPE_FLOAT: i32 = 2;
const TYPE_INT64: i32 = 3;
const TYPE_UINT64: i32 = 4;
const TYPE_INT32: i32 = 5;
const TYPE_FIXED64: i32 = 6;
const TYPE_FIXED32: i32 = 7;
const TYPE_BOOL: i32 = 8;
const TYPE_STRING: i32 = 9;
const TYPE_MESSAGE: i32 = 11;
const TYPE_BYTES: i32 = 12;
const TYPE_UINT32: i32 = 13;
const TYPE_ENUM: i32 = 14;
const TYPE_SFIXED32: i32 = 15;
const TYPE_SFIXED64: i32 = 16;
const TYPE_SINT32: i32 = 17;
const TYPE_SINT64: i32 = 18;

struct Schema {
    /// Fully qualified message name (".livekit.Room") to its descriptor.
    messages: HashMap<String, DescriptorProto>,
    /// Fully qualified enum name to the name of its zero value.
    enum_defaults: HashMap<String, String>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // The descriptor set is a build input checked into the crate: failing
        // to decode it is a programming error, caught by the crate's tests.
        let set = FileDescriptorSet::decode(DESCRIPTOR_SET)
            .expect("embedded livekit_room.binpb is a valid FileDescriptorSet");
        let mut schema = Schema { messages: HashMap::new(), enum_defaults: HashMap::new() };
        for file in set.file {
            let scope = if file.package.is_empty() { String::new() } else { format!(".{}", file.package) };
            for e in &file.enum_type {
                add_enum(&mut schema, &scope, e);
            }
            for m in file.message_type {
                add_message(&mut schema, &scope, m);
            }
        }
        schema
    })
}

fn add_enum(schema: &mut Schema, scope: &str, e: &EnumDescriptorProto) {
    let zero = e.value.iter().find(|v| v.number == 0).or(e.value.first()).map(|v| v.name.clone()).unwrap_or_default();
    schema.enum_defaults.insert(format!("{scope}.{}", e.name), zero);
}

fn add_message(schema: &mut Schema, scope: &str, mut m: DescriptorProto) {
    let full = format!("{scope}.{}", m.name);
    for e in &m.enum_type {
        add_enum(schema, &full, e);
    }
    for nested in std::mem::take(&mut m.nested_type) {
        add_message(schema, &full, nested);
    }
    schema.messages.insert(full, m);
}

/// Encodes `message` (a `livekit.*` type, named without the package, e.g.
/// "Room") as the real server's JSON reply.
pub(crate) fn to_json<M: serde::Serialize>(type_name: &str, message: &M) -> Vec<u8> {
    // pbjson never fails on the messages the stand-in builds (enum fields only
    // ever hold known values); fall back to its raw output if it ever did.
    let value = match serde_json::to_value(message) {
        Ok(v) => v,
        Err(_) => return b"{}".to_vec(),
    };
    let mut out = String::new();
    encode_message(&mut out, &format!(".livekit.{type_name}"), &value);
    out.into_bytes()
}

fn encode_message(out: &mut String, type_name: &str, value: &Value) {
    let schema = schema();
    let Some(desc) = schema.messages.get(type_name) else {
        // Not in the descriptor set (e.g. a google.protobuf well-known type):
        // pbjson already writes those in their canonical JSON form.
        out.push_str(&value.to_string());
        return;
    };
    let empty = serde_json::Map::new();
    let object = value.as_object().unwrap_or(&empty);
    out.push('{');
    let mut first = true;
    for field in &desc.field {
        let present = object.get(&field.json_name).or_else(|| object.get(&field.name)).filter(|v| !v.is_null());
        if present.is_none() && field.oneof_index.is_some() {
            // unpopulated oneof members and proto3 optionals are not emitted
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_str_json(out, &field.name);
        out.push(':');
        match present {
            Some(v) => encode_field_value(out, field, v),
            None => encode_default(out, field),
        }
    }
    out.push('}');
}

fn map_entry(field: &FieldDescriptorProto) -> Option<&'static DescriptorProto> {
    if field.label != LABEL_REPEATED || field.r#type != TYPE_MESSAGE {
        return None;
    }
    schema().messages.get(&field.type_name).filter(|m| m.options.as_ref().is_some_and(|o| o.map_entry))
}

fn encode_field_value(out: &mut String, field: &FieldDescriptorProto, value: &Value) {
    if let Some(entry) = map_entry(field) {
        let value_field = entry.field.iter().find(|f| f.number == 2);
        out.push('{');
        if let Some(obj) = value.as_object() {
            for (i, (k, v)) in obj.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // map keys are data, never renamed
                push_str_json(out, k);
                out.push(':');
                match value_field {
                    Some(vf) => encode_single(out, vf, v),
                    None => out.push_str(&v.to_string()),
                }
            }
        }
        out.push('}');
    } else if field.label == LABEL_REPEATED {
        out.push('[');
        if let Some(items) = value.as_array() {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_single(out, field, item);
            }
        }
        out.push(']');
    } else {
        encode_single(out, field, value);
    }
}

fn encode_single(out: &mut String, field: &FieldDescriptorProto, value: &Value) {
    if field.r#type == TYPE_MESSAGE {
        encode_message(out, &field.type_name, value);
    } else {
        // scalars, enums and bytes: pbjson's form is protojson's form
        out.push_str(&value.to_string());
    }
}

fn encode_default(out: &mut String, field: &FieldDescriptorProto) {
    if map_entry(field).is_some() {
        out.push_str("{}");
        return;
    }
    if field.label == LABEL_REPEATED {
        out.push_str("[]");
        return;
    }
    match field.r#type {
        TYPE_MESSAGE => out.push_str("null"),
        TYPE_BOOL => out.push_str("false"),
        TYPE_STRING | TYPE_BYTES => out.push_str("\"\""),
        TYPE_INT64 | TYPE_UINT64 | TYPE_FIXED64 | TYPE_SFIXED64 | TYPE_SINT64 => out.push_str("\"0\""),
        TYPE_DOUBLE | TYPE_FLOAT | TYPE_INT32 | TYPE_UINT32 | TYPE_FIXED32 | TYPE_SFIXED32 | TYPE_SINT32 => {
            out.push('0')
        }
        TYPE_ENUM => {
            let name = schema().enum_defaults.get(&field.type_name).map(String::as_str).unwrap_or("");
            push_str_json(out, name);
        }
        _ => out.push_str("null"),
    }
}

fn push_str_json(out: &mut String, s: &str) {
    // serde_json's escaping of a plain string cannot fail
    let _ = write!(out, "{}", Value::String(s.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol as proto;

    fn json(type_name: &str, m: &impl serde::Serialize) -> Value {
        serde_json::from_slice(&to_json(type_name, m)).unwrap()
    }

    #[test]
    fn room_is_written_with_proto_names_and_every_default() {
        let v = json("Room", &proto::Room { name: "r".into(), creation_time: 12, ..Default::default() });
        assert_eq!(v["name"], "r");
        assert_eq!(v["creation_time"], "12");
        assert_eq!(v["creation_time_ms"], "0");
        assert_eq!(v["empty_timeout"], 0);
        assert_eq!(v["enabled_codecs"], serde_json::json!([]));
        assert_eq!(v["version"], Value::Null);
        assert!(v.get("creationTime").is_none());
    }

    #[test]
    fn map_keys_are_kept_as_they_are() {
        let mut p = proto::ParticipantInfo::default();
        p.attributes.insert("someKey".into(), "v".into());
        p.attributes.insert("snake_key".into(), "w".into());
        let v = json("ParticipantInfo", &p);
        assert_eq!(v["attributes"]["someKey"], "v");
        assert_eq!(v["attributes"]["snake_key"], "w");
        assert_eq!(v["state"], "JOINING");
        assert_eq!(v["kind"], "STANDARD");
        assert_eq!(v["permission"], Value::Null);
    }

    #[test]
    fn unset_optional_fields_are_left_out() {
        let v = json("SendDataRequest", &proto::SendDataRequest::default());
        assert!(v.get("topic").is_none());
        assert_eq!(v["nonce"], "");
    }
}
