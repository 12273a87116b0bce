//! Checks of a request's raw protobuf bytes against its descriptor, before prost decodes
//! it: the rules every request field of every service obeys, whichever service it is.
//!
//! - strings are valid UTF-8 and hold no NUL (U+0000), which PostgreSQL cannot store in
//!   `text` and which no client means to send;
//! - enum fields hold a value their enum declares (proto3 enums are open, so prost keeps
//!   unknown numbers; the server refuses them here instead of in every handler);
//! - `google.protobuf.Timestamp` has nanos in 0..=999,999,999 and seconds within years
//!   0001 to 9999; `google.protobuf.Duration` has seconds within ±10,000 years and nanos
//!   within ±999,999,999 of the seconds' sign.
//!
//! The schema comes from the descriptor set compiled into this crate, so a message added
//! to `proto/` is covered the moment it is. Violations name the field by its proto path
//! (`events[3].model`, `time_range.start_time`). Bytes that are not well-formed protobuf
//! pass this check untouched: prost's decoder then refuses them.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Deepest nesting checked (prost's own recursion limit).
const MAX_DEPTH: usize = 100;
/// Most violations reported for one request.
pub use strata_errors::MAX_VIOLATIONS;
/// Timestamp bounds: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
/// Duration bounds: about ±10,000 years.
const DURATION_SECONDS: std::ops::RangeInclusive<i64> = -315_576_000_000..=315_576_000_000;
const TIMESTAMP: &str = "google.protobuf.Timestamp";
const DURATION: &str = "google.protobuf.Duration";

/// A request field that breaks a rule (the suite's one violation type).
pub use strata_errors::Violation;

/// What a field holds, as far as the checks care.
#[derive(Debug)]
enum Kind {
    String,
    Message(String),
    Enum(String),
    Other,
}

#[derive(Debug)]
struct Field {
    name: String,
    kind: Kind,
    repeated: bool,
}

#[derive(Debug, Default)]
struct MessageSchema {
    fields: HashMap<u32, Field>,
    map_entry: bool,
}

/// Messages and enums of the descriptor set, by full name (no leading dot), and which
/// messages are requests of some RPC.
#[derive(Debug, Default)]
pub struct Schema {
    messages: HashMap<String, MessageSchema>,
    enums: HashMap<String, HashSet<i32>>,
    requests: HashSet<String>,
}

impl Schema {
    /// The schema of [`crate::FILE_DESCRIPTOR_SET`], built once.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| Schema::from_encoded(crate::FILE_DESCRIPTOR_SET))
    }

    /// The schema of an encoded `FileDescriptorSet`; empty if it does not decode.
    fn from_encoded(bytes: &[u8]) -> Schema {
        let mut schema = Schema::default();
        let Ok(set) = FileDescriptorSet::decode(bytes) else {
            return schema;
        };
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                schema.add_message(package, message);
            }
            for e in &file.enum_type {
                schema.add_enum(&qualify(package, e.name()), e);
            }
            for service in &file.service {
                for method in &service.method {
                    schema
                        .requests
                        .insert(method.input_type().trim_start_matches('.').to_owned());
                }
            }
        }
        schema
    }

    fn add_enum(&mut self, full_name: &str, e: &prost_types::EnumDescriptorProto) {
        self.enums.insert(
            full_name.to_owned(),
            e.value.iter().map(|v| v.number()).collect(),
        );
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let full_name = qualify(scope, message.name());
        for nested in &message.nested_type {
            self.add_message(&full_name, nested);
        }
        for e in &message.enum_type {
            self.add_enum(&qualify(&full_name, e.name()), e);
        }
        let fields = message
            .field
            .iter()
            .map(|f| {
                let type_name = f.type_name().trim_start_matches('.').to_owned();
                let kind = match f.r#type() {
                    Type::String => Kind::String,
                    Type::Message => Kind::Message(type_name),
                    Type::Enum => Kind::Enum(type_name),
                    _ => Kind::Other,
                };
                let field = Field {
                    name: f.name().to_owned(),
                    kind,
                    repeated: f.label() == Label::Repeated,
                };
                (u32::try_from(f.number()).unwrap_or(0), field)
            })
            .collect();
        let map_entry = message
            .options
            .as_ref()
            .is_some_and(prost_types::MessageOptions::map_entry);
        self.messages
            .insert(full_name, MessageSchema { fields, map_entry });
    }

    /// Whether `full_name` is the request message of some RPC.
    pub fn is_request(&self, full_name: &str) -> bool {
        self.requests.contains(full_name)
    }

    /// Checks `bytes`, an encoded `full_name` message, against the rules in the module
    /// docs. Returns every violation, in wire order, up to [`MAX_VIOLATIONS`].
    pub fn check(&self, full_name: &str, bytes: &[u8]) -> Result<(), Vec<Violation>> {
        let Some(message) = self.messages.get(full_name) else {
            return Ok(());
        };
        let mut path = Vec::new();
        let mut found = Vec::new();
        self.check_message(message, bytes, &mut path, &mut found);
        if found.is_empty() { Ok(()) } else { Err(found) }
    }

    fn check_message<'s>(
        &'s self,
        message: &'s MessageSchema,
        mut bytes: &[u8],
        path: &mut Vec<Segment<'s>>,
        found: &mut Vec<Violation>,
    ) {
        if path.len() > MAX_DEPTH {
            return;
        }
        // Occurrences so far of each repeated field, for `[index]` in paths.
        let mut seen: Vec<(u32, usize)> = Vec::new();
        while !bytes.is_empty() && found.len() < MAX_VIOLATIONS {
            let Some(tag) = varint(&mut bytes) else {
                return;
            };
            let number = u32::try_from(tag >> 3).unwrap_or(0);
            let wire_type = tag & 7;
            let Some(value) = wire_value(wire_type, &mut bytes) else {
                return;
            };
            let Some(field) = message.fields.get(&number) else {
                continue;
            };
            if !field.repeated {
                path.push(Segment {
                    name: &field.name,
                    index: None,
                });
                self.check_field(field, value, path, found);
                path.pop();
                continue;
            }
            let count = match seen.iter_mut().find(|(n, _)| *n == number) {
                Some((_, count)) => count,
                None => {
                    seen.push((number, 0));
                    let last = seen.len() - 1;
                    &mut seen[last].1
                }
            };
            match (&field.kind, value) {
                // Packed repeated enums: each element of each chunk is one index.
                (Kind::Enum(name), Value::Len(mut packed)) => {
                    while let Some(element) = varint(&mut packed) {
                        path.push(Segment {
                            name: &field.name,
                            index: Some(Index::Position(*count)),
                        });
                        self.check_enum(name, element, path, found);
                        path.pop();
                        *count += 1;
                    }
                }
                (_, value) => {
                    path.push(Segment {
                        name: &field.name,
                        index: Some(Index::Position(*count)),
                    });
                    self.check_field(field, value, path, found);
                    path.pop();
                    *count += 1;
                }
            }
        }
    }

    fn check_field<'s>(
        &'s self,
        field: &'s Field,
        value: Value<'_>,
        path: &mut Vec<Segment<'s>>,
        found: &mut Vec<Violation>,
    ) {
        let problem = match (&field.kind, value) {
            (Kind::String, Value::Len(bytes)) => match std::str::from_utf8(bytes) {
                Err(_) => Some("must be valid UTF-8"),
                Ok(text) if text.contains('\0') => Some("must not contain NUL (U+0000) characters"),
                Ok(_) => None,
            },
            (Kind::Message(name), Value::Len(bytes)) if name == TIMESTAMP => {
                check_time(bytes, &TIMESTAMP_SECONDS, false)
            }
            (Kind::Message(name), Value::Len(bytes)) if name == DURATION => {
                check_time(bytes, &DURATION_SECONDS, true)
            }
            (Kind::Message(name), Value::Len(bytes)) => {
                let Some(message) = self.messages.get(name) else {
                    return;
                };
                if message.map_entry
                    && let Some(key) = map_key(bytes)
                    && let Some(last) = path.last_mut()
                {
                    last.index = Some(Index::Key(key));
                }
                self.check_message(message, bytes, path, found);
                None
            }
            (Kind::Enum(name), Value::Varint(v)) => {
                self.check_enum(name, v, path, found);
                None
            }
            _ => None,
        };
        if let Some(problem) = problem
            && found.len() < MAX_VIOLATIONS
        {
            found.push(violation(path, problem));
        }
    }

    fn check_enum(&self, name: &str, value: u64, path: &[Segment<'_>], found: &mut Vec<Violation>) {
        // Enum values travel as int32 sign-extended to 64 bits.
        let number = value as i64;
        let known = self
            .enums
            .get(name)
            .is_none_or(|values| i32::try_from(number).is_ok_and(|n| values.contains(&n)));
        if !known && found.len() < MAX_VIOLATIONS {
            found.push(violation(path, &format!("unknown value {number}")));
        }
    }
}

/// What is wrong with `seconds` (field 1) and `nanos` (field 2) of an encoded Timestamp
/// or (`signed`) Duration, if anything.
fn check_time(
    mut bytes: &[u8],
    seconds_range: &std::ops::RangeInclusive<i64>,
    signed: bool,
) -> Option<&'static str> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    while !bytes.is_empty() {
        let tag = varint(&mut bytes)?;
        let value = wire_value(tag & 7, &mut bytes)?;
        match (tag >> 3, value) {
            (1, Value::Varint(v)) => seconds = v as i64,
            // int32 on the wire: sign-extended to 64 bits.
            (2, Value::Varint(v)) => nanos = v as i64,
            _ => {}
        }
    }
    if !seconds_range.contains(&seconds) {
        return Some(if signed {
            "seconds must be within ±315576000000 (10,000 years)"
        } else {
            "must be between 0001-01-01 and 9999-12-31"
        });
    }
    let nanos_ok = if signed {
        nanos.abs() <= 999_999_999 && (seconds == 0 || nanos == 0 || (seconds > 0) == (nanos > 0))
    } else {
        (0..=999_999_999).contains(&nanos)
    };
    if nanos_ok {
        None
    } else if signed {
        Some("nanos must be within ±999999999 and have the sign of seconds")
    } else {
        Some("nanos must be between 0 and 999999999")
    }
}

/// The key of an encoded map entry, when it is a printable string.
fn map_key(mut bytes: &[u8]) -> Option<String> {
    while !bytes.is_empty() {
        let tag = varint(&mut bytes)?;
        let value = wire_value(tag & 7, &mut bytes)?;
        if let (1, Value::Len(key)) = (tag >> 3, value) {
            return std::str::from_utf8(key)
                .ok()
                .filter(|k| k.len() <= 64 && !k.chars().any(char::is_control))
                .map(str::to_owned);
        }
    }
    None
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// One step of a field path.
#[derive(Debug)]
struct Segment<'s> {
    name: &'s str,
    index: Option<Index>,
}

#[derive(Debug)]
enum Index {
    Position(usize),
    Key(String),
}

fn violation(path: &[Segment<'_>], description: &str) -> Violation {
    let mut field = String::new();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            field.push('.');
        }
        field.push_str(segment.name);
        match &segment.index {
            Some(Index::Position(n)) => field.push_str(&format!("[{n}]")),
            Some(Index::Key(key)) => field.push_str(&format!("[{key:?}]")),
            None => {}
        }
    }
    Violation {
        field,
        description: description.to_owned(),
    }
}

/// A field's value on the wire.
enum Value<'b> {
    Varint(u64),
    Len(&'b [u8]),
    Fixed,
}

fn wire_value<'b>(wire_type: u64, bytes: &mut &'b [u8]) -> Option<Value<'b>> {
    match wire_type {
        0 => varint(bytes).map(Value::Varint),
        1 => take(bytes, 8).map(|_| Value::Fixed),
        2 => {
            let len = usize::try_from(varint(bytes)?).ok()?;
            take(bytes, len).map(Value::Len)
        }
        5 => take(bytes, 4).map(|_| Value::Fixed),
        // Groups (3, 4) do not exist in proto3; let prost judge the bytes.
        _ => None,
    }
}

fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::analytics::{RecordUsageRequest, UsageEvent};
    use crate::auth::{LoginRequest, UpdateProfileRequest, User};
    use prost::Name as _;

    fn check<M: prost::Name>(message: &M) -> Result<(), Violation> {
        Schema::get()
            .check(&M::full_name(), &message.encode_to_vec())
            .map_err(|mut v| v.remove(0))
    }

    #[test]
    fn nul_characters_are_named_by_path() {
        let login = LoginRequest {
            email: "a\0b@example.com".into(),
            password: "x".into(),
        };
        assert_eq!(check(&login).unwrap_err().field, "email");
        let batch = RecordUsageRequest {
            events: vec![
                UsageEvent::default(),
                UsageEvent {
                    model: "gpt\0".into(),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(check(&batch).unwrap_err().field, "events[1].model");
        let update = UpdateProfileRequest {
            user: Some(User::default()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["bio".into(), "x\0".into()],
            }),
        };
        assert_eq!(check(&update).unwrap_err().field, "update_mask.paths[1]");
        assert!(check(&LoginRequest::default()).is_ok());
    }

    #[test]
    fn invalid_utf8_is_named() {
        // LoginRequest.email (field 1) holding 0xff.
        let bytes = [0x0a, 0x01, 0xff];
        let v = Schema::get()
            .check("strata.auth.v1.LoginRequest", &bytes)
            .unwrap_err()
            .remove(0);
        assert_eq!(v.field, "email");
        assert!(v.description.contains("UTF-8"));
    }

    #[test]
    fn timestamps_and_enums_are_checked() {
        let at = |seconds, nanos| UsageEvent {
            occur_time: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        };
        for (seconds, nanos, ok) in [
            (1_700_000_000, 0, true),
            (1_700_000_000, 999_999_999, true),
            (1_700_000_000, 1_000_000_000, false),
            (1_700_000_000, -1, false),
            (-62_135_596_801, 0, false),
            (253_402_300_800, 0, false),
        ] {
            let batch = RecordUsageRequest {
                events: vec![at(seconds, nanos)],
            };
            let result = check(&batch);
            assert_eq!(result.is_ok(), ok, "{seconds} {nanos}: {result:?}");
            if let Err(v) = result {
                assert_eq!(v.field, "events[0].occur_time");
            }
        }
        let batch = RecordUsageRequest {
            events: vec![UsageEvent {
                operation: 99,
                ..Default::default()
            }],
        };
        let v = check(&batch).unwrap_err();
        assert_eq!(v.field, "events[0].operation");
        assert!(v.description.contains("99"));
        let negative = RecordUsageRequest {
            events: vec![UsageEvent {
                status: -1,
                ..Default::default()
            }],
        };
        assert_eq!(check(&negative).unwrap_err().field, "events[0].status");
        // Every violation is reported, up to the cap.
        let many = RecordUsageRequest {
            events: (0..150)
                .map(|_| UsageEvent {
                    model: "\0".into(),
                    operation: 42,
                    ..Default::default()
                })
                .collect(),
        };
        let all = Schema::get()
            .check(&RecordUsageRequest::full_name(), &many.encode_to_vec())
            .unwrap_err();
        assert_eq!(all.len(), MAX_VIOLATIONS);
        assert_eq!(all[1].field, "events[0].operation");
        assert_eq!(all[2].field, "events[1].model");
    }

    #[test]
    fn packed_enums_are_indexed_by_element_across_chunks() {
        // RefreshViewsRequest.views (field 1), packed, in two chunks: [1, 99] and [2, 98].
        let bytes = [0x0a, 0x02, 0x01, 0x63, 0x0a, 0x02, 0x02, 0x62];
        let found = Schema::get()
            .check("strata.analytics.v1.RefreshViewsRequest", &bytes)
            .unwrap_err();
        let fields: Vec<_> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["views[1]", "views[3]"]);
    }

    /// A schema with `t.Req { map<string, string> labels = 1; }` as an RPC's request.
    fn map_schema() -> Schema {
        use prost_types::field_descriptor_proto::{Label, Type};
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MessageOptions,
            MethodDescriptorProto, ServiceDescriptorProto,
        };
        let field =
            |name: &str, number, label, r#type, type_name: Option<&str>| FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                label: Some(label as i32),
                r#type: Some(r#type as i32),
                type_name: type_name.map(str::to_owned),
                ..Default::default()
            };
        let entry = DescriptorProto {
            name: Some("LabelsEntry".into()),
            field: vec![
                field("key", 1, Label::Optional, Type::String, None),
                field("value", 2, Label::Optional, Type::String, None),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = DescriptorProto {
            name: Some("Req".into()),
            field: vec![field(
                "labels",
                1,
                Label::Repeated,
                Type::Message,
                Some(".t.Req.LabelsEntry"),
            )],
            nested_type: vec![entry],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            package: Some("t".into()),
            message_type: vec![request],
            service: vec![ServiceDescriptorProto {
                name: Some("S".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("M".into()),
                    input_type: Some(".t.Req".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        Schema::from_encoded(&FileDescriptorSet { file: vec![file] }.encode_to_vec())
    }

    #[test]
    fn map_entries_are_named_by_their_key() {
        let schema = map_schema();
        assert!(schema.is_request("t.Req"));
        // labels { key: "k" value: "a\0" }, labels { key: "x\0" value: "v" }
        let entry = |key: &[u8], value: &[u8]| {
            let mut e = vec![0x0a, key.len() as u8];
            e.extend_from_slice(key);
            e.extend_from_slice(&[0x12, value.len() as u8]);
            e.extend_from_slice(value);
            let mut f = vec![0x0a, e.len() as u8];
            f.extend(e);
            f
        };
        let mut bytes = entry(b"k", b"a\0");
        bytes.extend(entry(b"x\0", b"v"));
        let found = schema.check("t.Req", &bytes).unwrap_err();
        let fields: Vec<_> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["labels[\"k\"].value", "labels[1].key"]);
    }

    #[test]
    fn every_rpc_request_is_known() {
        let schema = Schema::get();
        assert!(schema.is_request("strata.auth.v1.LoginRequest"));
        assert!(schema.is_request("strata.admin.v1.ExplainQueryRequest"));
        assert!(!schema.is_request("strata.auth.v1.LoginResponse"));
        assert!(!schema.is_request("strata.analytics.v1.UsageEvent"));
    }

    #[test]
    fn malformed_bytes_are_left_to_prost() {
        assert!(
            Schema::get()
                .check("strata.auth.v1.LoginRequest", &[0x0a, 0x05, 0x61])
                .is_ok()
        );
        assert!(
            Schema::get()
                .check("strata.auth.v1.LoginRequest", &[0xff, 0xff])
                .is_ok()
        );
    }
}
