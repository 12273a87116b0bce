//! Checks shared by every content resource: names, tags, the `labels` metadata map, JSON
//! documents, ids and idempotency keys. Each records what is wrong with the field named,
//! so a request's every fault is reported at once. NUL and invalid UTF-8 never reach here:
//! the codec refuses them for every RPC.

use std::collections::{BTreeMap, HashMap};

use prost_types::value::Kind;
use strata_errors::Violations;
use uuid::Uuid;

/// Most entries of a `labels` metadata map.
pub const MAX_LABELS: usize = 64;
/// Longest value of a `labels` entry, in characters.
pub const MAX_LABEL_VALUE: usize = 256;
/// Most tags of one object.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG: usize = 50;
/// Largest JSON document (model parameters, agent config), encoded.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// Deepest nesting of a JSON document.
const MAX_JSON_DEPTH: usize = 32;

/// Whether `key` is a label name: a lowercase letter, then up to 62 lowercase letters,
/// digits, '-' or '_' (the rule of Kubernetes and Google Cloud labels).
pub fn is_label_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks the `labels` metadata map of `field`.
pub fn labels(v: &mut Violations, field: &str, labels: &HashMap<String, String>) {
    if labels.len() > MAX_LABELS {
        v.add(field, format!("must hold at most {MAX_LABELS} entries"));
    }
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for key in keys {
        if !is_label_name(key) {
            v.add(
                format!("{field}[{key:?}]"),
                "keys must start with a lowercase letter and hold at most 63 lowercase letters, \
                 digits, '-' or '_'",
            );
        } else if labels[key].chars().count() > MAX_LABEL_VALUE {
            v.add(
                format!("{field}[{key:?}]"),
                format!("must be at most {MAX_LABEL_VALUE} characters"),
            );
        }
    }
}

/// Checks a text of `field` that must hold 1 to `max` characters, none of them control
/// characters other than tab and newline (`multiline`) or none at all.
pub fn text(v: &mut Violations, field: &str, value: &str, min: usize, max: usize) {
    let count = value.chars().count();
    if count < min || count > max {
        v.add(field, format!("must be {min} to {max} characters"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not hold control characters");
    }
}

/// Checks a long text (a template, a system prompt): at most `max` characters; newlines
/// and tabs allowed, other control characters not.
pub fn long_text(v: &mut Violations, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        v.add(
            field,
            "must not hold control characters other than newlines and tabs",
        );
    }
}

/// Checks tags; returns them without duplicates, in their first order.
pub fn tags(v: &mut Violations, field: &str, tags: &[String]) -> Vec<String> {
    if tags.len() > MAX_TAGS {
        // Checked no further: each tag is compared with those before it.
        v.add(field, format!("must hold at most {MAX_TAGS} tags"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        text(v, &format!("{field}[{i}]"), tag, 1, MAX_TAG);
        if !out.contains(tag) {
            out.push(tag.clone());
        }
    }
    out
}

/// A UUID field (the canonical hyphenated form, not nil).
pub fn id(field: &str, value: &str) -> Result<Uuid, crate::ContentError> {
    Uuid::parse_str(value)
        .ok()
        .filter(|id| value.len() == 36 && !id.is_nil())
        .ok_or_else(|| crate::ContentError::invalid(field, "must be a UUID"))
}

/// An optional id field: empty, or a UUID (as [`id`] takes it).
pub fn optional_id(v: &mut Violations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        return None;
    }
    let id = id(field, value).ok();
    if id.is_none() {
        v.add(field, "must be empty or a UUID");
    }
    id
}

/// An optional AIP-155 `request_id`: empty, or a UUID.
pub fn request_id(v: &mut Violations, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        return None;
    }
    let id = Uuid::parse_str(value).ok();
    if id.is_none() {
        v.add("request_id", "must be empty or a UUID");
    }
    id
}

/// Checks a JSON document given as a `google.protobuf.Struct` and returns it as JSON.
pub fn json(
    v: &mut Violations,
    field: &str,
    value: Option<&prost_types::Struct>,
) -> serde_json::Value {
    json_within(v, field, value, MAX_JSON_BYTES)
}

/// [`json`], of at most `max_bytes` as JSON.
pub fn json_within(
    v: &mut Violations,
    field: &str,
    value: Option<&prost_types::Struct>,
    max_bytes: usize,
) -> serde_json::Value {
    let Some(value) = value else {
        return serde_json::Value::Object(serde_json::Map::new());
    };
    match struct_to_json(value, 0) {
        Some(json) if json.to_string().len() <= max_bytes => json,
        Some(_) => {
            v.add(field, format!("must be at most {max_bytes} bytes as JSON"));
            serde_json::Value::Null
        }
        None => {
            v.add(
                field,
                format!(
                    "must be nested at most {MAX_JSON_DEPTH} deep and hold only finite numbers"
                ),
            );
            serde_json::Value::Null
        }
    }
}

/// A `Struct` as JSON; `None` when too deep or holding a number JSON cannot (NaN, ∞).
fn struct_to_json(value: &prost_types::Struct, depth: usize) -> Option<serde_json::Value> {
    if depth > MAX_JSON_DEPTH {
        return None;
    }
    let mut map = serde_json::Map::new();
    for (key, value) in &value.fields {
        map.insert(key.clone(), value_to_json(value, depth + 1)?);
    }
    Some(serde_json::Value::Object(map))
}

fn value_to_json(value: &prost_types::Value, depth: usize) -> Option<serde_json::Value> {
    if depth > MAX_JSON_DEPTH {
        return None;
    }
    Some(match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Value::Number(serde_json::Number::from_f64(*n)?),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(
            list.values
                .iter()
                .map(|v| value_to_json(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        Some(Kind::StructValue(s)) => struct_to_json(s, depth + 1)?,
    })
}

/// A stored JSON object as a `Struct` (anything else stored reads as an empty one).
pub fn json_to_struct(value: &serde_json::Value) -> prost_types::Struct {
    match value {
        serde_json::Value::Object(map) => prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect::<BTreeMap<_, _>>(),
        },
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(value: &serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The `labels` map as a JSON object (keys sorted, so equal maps hash alike).
pub fn labels_json(labels: &HashMap<String, String>) -> serde_json::Value {
    let sorted: BTreeMap<&String, &String> = labels.iter().collect();
    serde_json::json!(sorted)
}

/// A stored `labels` JSON object as the proto map.
pub fn labels_map(value: &serde_json::Value) -> HashMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The top-level fields a `read_mask` names (all of `known` when unset), or a violation
/// naming the first path that is not one of them.
pub fn read_mask<'k>(
    mask: Option<&prost_types::FieldMask>,
    known: &[&'k str],
) -> Result<Vec<&'k str>, crate::ContentError> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        return Ok(known.to_vec());
    };
    let mut fields = Vec::new();
    for path in &mask.paths {
        match known.iter().find(|k| **k == path.as_str()) {
            Some(k) => fields.push(*k),
            None => {
                return Err(crate::ContentError::invalid(
                    "read_mask",
                    format!("unknown field {path:?}; known: {}", known.join(", ")),
                ));
            }
        }
    }
    Ok(fields)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_the_cloud_rule() {
        for good in ["production", "a", "v2-canary", "team_x"] {
            assert!(is_label_name(good), "{good}");
        }
        for bad in ["", "Production", "2x", "-a", "a b", "é", &"a".repeat(64)] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn json_round_trips_and_refuses_what_json_cannot_hold() {
        let value = serde_json::json!({"model": "gpt", "temperature": 0.5, "stop": ["a", null], "nested": {"x": true}});
        let mut v = Violations::new();
        assert_eq!(json(&mut v, "f", Some(&json_to_struct(&value))), value);
        assert!(v.is_empty());
        let nan = prost_types::Struct {
            fields: [(
                "x".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        json(&mut v, "f", Some(&nan));
        assert_eq!(v.len(), 1);
        let mut deep = prost_types::Struct::default();
        for _ in 0..40 {
            deep = prost_types::Struct {
                fields: [(
                    "x".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::StructValue(deep)),
                    },
                )]
                .into(),
            };
        }
        json(&mut v, "f", Some(&deep));
        assert_eq!(v.len(), 2);
        assert!(read_mask(None, &["a"]).unwrap() == vec!["a"]);
    }
}
