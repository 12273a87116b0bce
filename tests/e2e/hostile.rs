//! Hostile requests against every RPC of every service, found by walking the descriptor
//! set the binary serves: a service added later is covered by the same walk.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{RefreshTokenRequest, SignUpRequest};
use strata_testkit::raw::{len_field, unary, varint_field};
use tonic_types::StatusExt as _;

use super::*;

/// An RPC: its path and request message.
struct Rpc {
    path: String,
    input: String,
}

/// Messages by full name, and every RPC of the `strata.*` services.
fn schema() -> (HashMap<String, DescriptorProto>, Vec<Rpc>) {
    let set = FileDescriptorSet::decode(strata_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut messages = HashMap::new();
    let mut rpcs = Vec::new();
    fn add(scope: &str, message: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            add(&name, nested, out);
        }
        out.insert(name, message.clone());
    }
    for file in &set.file {
        for message in &file.message_type {
            add(file.package(), message, &mut messages);
        }
        if !file.package().starts_with("strata.") {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                rpcs.push(Rpc {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    input: method.input_type().trim_start_matches('.').to_owned(),
                });
            }
        }
    }
    (messages, rpcs)
}

/// What a field holds, for the hostile values the walk sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    String,
    Enum,
    Timestamp,
}

/// A field somewhere inside a request: its proto path, the field numbers that lead to it,
/// and what it holds.
struct LeafField {
    path: String,
    numbers: Vec<u32>,
    leaf: Leaf,
}

fn leaf_fields(
    messages: &HashMap<String, DescriptorProto>,
    message: &str,
    prefix: &str,
    numbers: &[u32],
    out: &mut Vec<LeafField>,
) {
    let Some(descriptor) = messages.get(message) else {
        return;
    };
    if numbers.len() > 5 {
        return;
    }
    for field in &descriptor.field {
        let mut path = format!("{prefix}{}", field.name());
        if field.label() == Label::Repeated {
            path.push_str("[0]");
        }
        let mut numbers = numbers.to_vec();
        numbers.push(u32::try_from(field.number()).unwrap());
        let type_name = field.type_name().trim_start_matches('.');
        match field.r#type() {
            Type::String => out.push(LeafField {
                path,
                numbers,
                leaf: Leaf::String,
            }),
            Type::Enum => out.push(LeafField {
                path,
                numbers,
                leaf: Leaf::Enum,
            }),
            Type::Message if type_name == "google.protobuf.Timestamp" => out.push(LeafField {
                path,
                numbers,
                leaf: Leaf::Timestamp,
            }),
            Type::Message => leaf_fields(
                messages,
                field.type_name().trim_start_matches('.'),
                &format!("{path}."),
                &numbers,
                out,
            ),
            _ => {}
        }
    }
}

/// `field` (an encoded innermost field) nested in the messages `outer` leads through.
fn nested(outer: &[u32], field: Vec<u8>) -> Bytes {
    let mut bytes = field;
    for number in outer.iter().rev() {
        bytes = len_field(*number, &bytes);
    }
    Bytes::from(bytes)
}

/// The hostile values for `field`, each with a word its refusal must contain.
fn hostile_values(field: &LeafField) -> Vec<(Bytes, &'static str)> {
    let (last, outer) = field.numbers.split_last().unwrap();
    match field.leaf {
        Leaf::String => vec![
            (nested(outer, len_field(*last, b"a\0b")), "NUL"),
            (nested(outer, len_field(*last, b"a\xffb")), "UTF-8"),
        ],
        Leaf::Enum => vec![
            (nested(outer, varint_field(*last, 9999)), "unknown value"),
            (nested(outer, varint_field(*last, -7)), "unknown value"),
        ],
        Leaf::Timestamp => {
            let seconds = varint_field(1, 1_700_000_000);
            let mut bad_nanos = seconds.clone();
            bad_nanos.extend(varint_field(2, 1_000_000_000));
            let mut negative_nanos = seconds;
            negative_nanos.extend(varint_field(2, -1));
            vec![
                (nested(outer, len_field(*last, &bad_nanos)), "nanos"),
                (nested(outer, len_field(*last, &negative_nanos)), "nanos"),
                (
                    nested(outer, len_field(*last, &varint_field(1, i64::MAX))),
                    "9999",
                ),
            ]
        }
    }
}

/// An admin's access token on the server at `channel`.
async fn admin_token(db: &TestDb, channel: &tonic::transport::Channel) -> String {
    let mut auth = AuthServiceClient::new(channel.clone());
    let refresh_token = auth
        .sign_up(SignUpRequest {
            email: "hostile@example.com".into(),
            password: "a long hostile passphrase".into(),
            display_name: "Hostile".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .refresh_token;
    let grant = strata(
        Some(db.url()),
        &["auth", "grant-admin", "hostile@example.com"],
    );
    assert_eq!(grant.status.code(), Some(0), "{}", text(&grant));
    auth.refresh_token(RefreshTokenRequest { refresh_token })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .access_token
}

/// Sends `body` to `rpc` as an admin and returns the refusal.
async fn refusal(
    channel: &tonic::transport::Channel,
    rpc: &Rpc,
    token: &str,
    body: Bytes,
) -> tonic::Status {
    match unary(channel.clone(), &rpc.path, bearer(body, token)).await {
        Ok(_) => panic!("{} accepted a hostile request", rpc.path),
        Err(status) => status,
    }
}

fn assert_refused_before_any_query(status: &tonic::Status, rpc: &Rpc, field: Option<&str>) {
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{} {field:?}: {status:?}",
        rpc.path
    );
    if let Some(field) = field {
        let violations = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(
            violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            [field],
            "{}: {status:?}",
            rpc.path
        );
        assert!(status.message().contains(field), "{status:?}");
    }
    assert_eq!(
        status
            .metadata()
            .get("x-query-count")
            .and_then(|v| v.to_str().ok()),
        Some("0"),
        "{} {field:?} reached the database",
        rpc.path
    );
}

/// Every string (NUL, invalid UTF-8), enum (unknown values) and timestamp (nanos out of
/// range, beyond year 9999) field of every request of every service: `INVALID_ARGUMENT`
/// naming the field, before a single query runs.
#[tokio::test]
async fn every_field_of_every_request_refuses_values_it_cannot_hold() {
    let db = TestDb::empty().await;
    let redis = TestRedis::new();
    let served = serve("all", &db, &redis, &[]).await;
    let token = admin_token(&db, &served.channel).await;
    let (messages, rpcs) = schema();
    assert!(rpcs.len() >= 30, "every service's RPCs: {}", rpcs.len());

    let mut checked = [0; 3];
    for rpc in &rpcs {
        let mut fields = Vec::new();
        leaf_fields(&messages, &rpc.input, "", &[], &mut fields);
        for field in &fields {
            for (body, what) in hostile_values(field) {
                let status = refusal(&served.channel, rpc, &token, body).await;
                assert!(status.message().contains(what), "{}: {status:?}", rpc.path);
                assert_refused_before_any_query(&status, rpc, Some(&field.path));
                checked[field.leaf as usize] += 1;
            }
        }
        // Bytes that are not protobuf at all: a length running past the end.
        let status = refusal(
            &served.channel,
            rpc,
            &token,
            Bytes::from_static(&[0x0a, 0x7f, 0x01]),
        )
        .await;
        assert_refused_before_any_query(&status, rpc, None);
    }
    let [strings, enums, timestamps] = checked;
    assert!(
        strings >= 80 && enums >= 10 && timestamps >= 8,
        "{strings} string, {enums} enum and {timestamps} timestamp values checked"
    );
}
