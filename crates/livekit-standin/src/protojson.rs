//! JSON the way the real server writes it, in its two forms.
//!
//! Twirp replies: the Go server marshals them with
//! `protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}`
//! (`livekit_room.twirp.go`): proto field names (snake_case), every field
//! present (defaults included, unset messages as `null`, unset oneof members
//! and proto3 `optional` fields left out), int64 as strings, enums by name.
//!
//! Webhook bodies: `protojson.Marshal` with the default options (protocol
//! `utils/protojson`, `webhook/resource_url_notifier.go`): lowerCamelCase
//! JSON names, only populated fields, int64 as strings, enums by name, map
//! entries sorted by key, fields in declaration order. Go's encoder also
//! writes a space after a comma when its `detrand` bit says so (see
//! [`Encoded::with_random_spaces`]).
//!
//! `livekit-protocol`'s pbjson impls write lowerCamelCase names and skip
//! defaults, so this module re-shapes their output with the help of the
//! protobuf descriptors of the very `.proto` files those types were generated
//! from (`livekit.binpb`, made with the protoc that the workspace already
//! vendors:
//! `protoc -I <livekit-protocol-0.8.2>/protocol/protobufs --include_imports
//!  --descriptor_set_out=livekit.binpb livekit_room.proto livekit_webhook.proto`).
//! Only the handful of descriptor fields needed here are decoded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use prost::Message;
use serde_json::Value;

static DESCRIPTOR_SET: &[u8] = include_bytes!("livekit.binpb");

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
        let set =
            FileDescriptorSet::decode(DESCRIPTOR_SET).expect("embedded livekit.binpb is a valid FileDescriptorSet");
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
    encode(Style::TwirpReply, type_name, message).out.into_bytes()
}

/// Encodes `message` (a `livekit.*` type) as Go's `protojson.Marshal` with
/// default options, before any `detrand` spaces.
pub(crate) fn to_protojson<M: serde::Serialize>(type_name: &str, message: &M) -> Encoded {
    encode(Style::Default, type_name, message)
}

/// How Go's protojson was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `UseProtoNames` and `EmitUnpopulated` (Twirp replies).
    TwirpReply,
    /// The default options (webhook bodies).
    Default,
}

/// Compact protojson and where its commas are.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) out: String,
    /// Byte offsets of the commas between members and elements (never of
    /// commas inside strings).
    pub(crate) commas: Vec<usize>,
}

impl Encoded {
    /// Go's protojson puts a space after every such comma when the
    /// `detrand` bit of the binary is set (`internal/encoding/json/encode.go`,
    /// `prepareNext`); a livekit-server build either always does or never
    /// does. The stand-in draws the choice afresh for each comma (with at
    /// least one space whenever there is a comma), so that a receiver that
    /// hashes a re-encoding instead of the raw bytes fails every time, and
    /// one that hashes the raw bytes sees both forms.
    pub(crate) fn with_random_spaces(self) -> Vec<u8> {
        use rand::Rng as _;
        if self.commas.is_empty() {
            return self.out.into_bytes();
        }
        let mut rng = rand::rng();
        let mut spaced: Vec<bool> = self.commas.iter().map(|_| rng.random_bool(0.5)).collect();
        if !spaced.contains(&true) {
            let i = rng.random_range(0..spaced.len());
            spaced[i] = true;
        }
        let bytes = self.out.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() + self.commas.len());
        let mut from = 0;
        for (&at, space) in self.commas.iter().zip(spaced) {
            out.extend_from_slice(&bytes[from..=at]);
            if space {
                out.push(b' ');
            }
            from = at + 1;
        }
        out.extend_from_slice(&bytes[from..]);
        out
    }
}

fn encode<M: serde::Serialize>(style: Style, type_name: &str, message: &M) -> Encoded {
    let mut encoder = Encoder { style, out: String::new(), commas: Vec::new() };
    // pbjson never fails on the messages the stand-in builds (enum fields only
    // ever hold known values); an empty message stands in if it ever did.
    match serde_json::to_value(message) {
        Ok(value) => encoder.message(&format!(".livekit.{type_name}"), &value),
        Err(_) => encoder.out.push_str("{}"),
    }
    Encoded { out: encoder.out, commas: encoder.commas }
}

struct Encoder {
    style: Style,
    out: String,
    commas: Vec<usize>,
}

impl Encoder {
    fn comma(&mut self) {
        self.commas.push(self.out.len());
        self.out.push(',');
    }

    fn message(&mut self, type_name: &str, value: &Value) {
        let schema = schema();
        let Some(desc) = schema.messages.get(type_name) else {
            // Not in the descriptor set (e.g. a google.protobuf well-known type):
            // pbjson already writes those in their canonical JSON form.
            self.out.push_str(&value.to_string());
            return;
        };
        let empty = serde_json::Map::new();
        let object = value.as_object().unwrap_or(&empty);
        self.out.push('{');
        let mut first = true;
        for field in &desc.field {
            // pbjson writes exactly the populated fields (under their JSON
            // names; its deserializer also accepts the proto names)
            let present = object.get(&field.json_name).or_else(|| object.get(&field.name)).filter(|v| !v.is_null());
            let name = match self.style {
                Style::TwirpReply => &field.name,
                Style::Default => &field.json_name,
            };
            match (present, self.style) {
                (Some(v), _) => {
                    if !first {
                        self.comma();
                    }
                    first = false;
                    push_str_json(&mut self.out, name);
                    self.out.push(':');
                    self.field_value(field, v);
                }
                // unpopulated oneof members and proto3 optionals are never emitted
                (None, Style::TwirpReply) if field.oneof_index.is_none() => {
                    if !first {
                        self.comma();
                    }
                    first = false;
                    push_str_json(&mut self.out, name);
                    self.out.push(':');
                    encode_default(&mut self.out, field);
                }
                (None, _) => {}
            }
        }
        self.out.push('}');
    }

    fn field_value(&mut self, field: &FieldDescriptorProto, value: &Value) {
        if let Some(entry) = map_entry(field) {
            let value_field = entry.field.iter().find(|f| f.number == 2);
            self.out.push('{');
            if let Some(obj) = value.as_object() {
                // serde_json's map is ordered by key, as protojson orders
                // map entries (`order.GenericKeyOrder`)
                for (i, (k, v)) in obj.iter().enumerate() {
                    if i > 0 {
                        self.comma();
                    }
                    // map keys are data, never renamed
                    push_str_json(&mut self.out, k);
                    self.out.push(':');
                    match value_field {
                        Some(vf) => self.single(vf, v),
                        None => self.out.push_str(&v.to_string()),
                    }
                }
            }
            self.out.push('}');
        } else if field.label == LABEL_REPEATED {
            self.out.push('[');
            if let Some(items) = value.as_array() {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.comma();
                    }
                    self.single(field, item);
                }
            }
            self.out.push(']');
        } else {
            self.single(field, value);
        }
    }

    fn single(&mut self, field: &FieldDescriptorProto, value: &Value) {
        match field.r#type {
            TYPE_MESSAGE => self.message(&field.type_name, value),
            TYPE_FLOAT | TYPE_DOUBLE => push_float(&mut self.out, value, field.r#type == TYPE_FLOAT),
            // other scalars, enums and bytes: pbjson's form is protojson's
            // form, and serde_json escapes strings as protojson does
            _ => self.out.push_str(&value.to_string()),
        }
    }
}

/// Go's `appendFloat` (`internal/encoding/json/encode.go`): the shortest
/// form that reads back, `e` notation below 1e-6 and from 1e21 on; NaN and
/// the infinities are strings (pbjson writes those as strings already).
/// pbjson hands a `float` over as the `f64` of the same value.
fn push_float(out: &mut String, value: &Value, is_f32: bool) {
    let Some(n) = value.as_f64() else {
        out.push_str(&value.to_string());
        return;
    };
    let abs = n.abs();
    let exponent = if is_f32 {
        let abs = abs as f32;
        abs != 0.0 && !(1e-6..1e21).contains(&abs)
    } else {
        abs != 0.0 && !(1e-6..1e21).contains(&abs)
    };
    let text = match (is_f32, exponent) {
        (true, false) => format!("{}", n as f32),
        (false, false) => format!("{n}"),
        (true, true) => format!("{:e}", n as f32),
        (false, true) => format!("{n:e}"),
    };
    match text.split_once('e') {
        // Go writes a positive exponent with its sign: 1e+21
        Some((mantissa, exp)) if !exp.starts_with('-') => {
            let _ = write!(out, "{mantissa}e+{exp}");
        }
        _ => out.push_str(&text),
    }
}

fn map_entry(field: &FieldDescriptorProto) -> Option<&'static DescriptorProto> {
    if field.label != LABEL_REPEATED || field.r#type != TYPE_MESSAGE {
        return None;
    }
    schema().messages.get(&field.type_name).filter(|m| m.options.as_ref().is_some_and(|o| o.map_entry))
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

    fn webhook_json(event: &proto::WebhookEvent) -> String {
        to_protojson("WebhookEvent", event).out
    }

    #[test]
    fn a_webhook_is_default_protojson_in_declaration_order() {
        let mut participant = proto::ParticipantInfo {
            sid: "PA_x".into(),
            identity: "alice".into(),
            state: proto::participant_info::State::Active as i32,
            joined_at: 1_700_000_000,
            version: 2,
            permission: Some(proto::ParticipantPermission { can_publish: true, ..Default::default() }),
            ..Default::default()
        };
        participant.attributes.insert("z".into(), "1".into());
        participant.attributes.insert("a".into(), "2".into());
        let event = proto::WebhookEvent {
            event: "participant_joined".into(),
            room: Some(proto::Room { sid: "RM_x".into(), name: "r".into(), ..Default::default() }),
            participant: Some(participant),
            id: "EV_x".into(),
            created_at: 1_700_000_001,
            ..Default::default()
        };
        assert_eq!(
            webhook_json(&event),
            concat!(
                r#"{"event":"participant_joined","room":{"sid":"RM_x","name":"r"},"#,
                r#""participant":{"sid":"PA_x","identity":"alice","state":"ACTIVE","joinedAt":"1700000000","#,
                r#""version":2,"permission":{"canPublish":true},"attributes":{"a":"2","z":"1"}},"#,
                r#""id":"EV_x","createdAt":"1700000001"}"#
            )
        );
    }

    #[test]
    fn zero_values_are_left_out_and_a_set_empty_message_is_kept() {
        let event = proto::WebhookEvent {
            event: "track_published".into(),
            track: Some(proto::TrackInfo::default()),
            ..Default::default()
        };
        assert_eq!(webhook_json(&event), r#"{"event":"track_published","track":{}}"#);
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        let float = |v: f64, f32: bool| {
            let mut out = String::new();
            push_float(&mut out, &serde_json::json!(v), f32);
            out
        };
        assert_eq!(float(f64::from(0.1f32), true), "0.1");
        assert_eq!(float(1.0, false), "1");
        assert_eq!(float(1e21, false), "1e+21");
        assert_eq!(float(1.5e-7, false), "1.5e-7");
        assert_eq!(float(0.0, true), "0");
    }

    #[test]
    fn random_spaces_follow_only_structural_commas() {
        let event = proto::WebhookEvent {
            event: "a,b".into(),
            room: Some(proto::Room { sid: "RM_x".into(), name: "x,y".into(), ..Default::default() }),
            id: "EV_x".into(),
            ..Default::default()
        };
        let compact = webhook_json(&event);
        for _ in 0..20 {
            let spaced = String::from_utf8(to_protojson("WebhookEvent", &event).with_random_spaces()).unwrap();
            assert!(spaced.contains(", "), "{spaced}");
            assert!(spaced.contains(r#""a,b""#) && spaced.contains(r#""x,y""#), "{spaced}");
            assert_eq!(spaced.replace(", ", ","), compact);
        }
    }
}
