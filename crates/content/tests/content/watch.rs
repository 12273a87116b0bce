//! WatchConversation: messages appended through any replica reach a watcher of another, in
//! order, each once; a client that resumes from its last sequence misses nothing.

use std::time::Duration;

use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::{self as pb};
use strata_testkit::app::TestUser;
use strata_testkit::{TestDb, bearer};
use tonic::Code;
use tonic::Streaming;
use tonic::transport::Channel;

use super::conversations::create;
use super::serve;

type Client = ConversationServiceClient<Channel>;

fn text(body: &str) -> pb::NewMessage {
    pb::NewMessage {
        role: pb::Role::User.into(),
        parts: vec![pb::Part {
            kind: Some(pb::part::Kind::Text(body.into())),
        }],
        usage: None,
    }
}

async fn watch(
    c: &mut Client,
    user: &TestUser,
    id: &str,
    from: i64,
) -> Result<Streaming<pb::WatchConversationResponse>, tonic::Status> {
    c.watch_conversation(bearer(
        pb::WatchConversationRequest {
            conversation_id: id.into(),
            from_sequence: from,
        },
        &user.token,
    ))
    .await
    .map(tonic::Response::into_inner)
}

/// The next `n` sequences of `stream` (each within 10 s).
async fn next(stream: &mut Streaming<pb::WatchConversationResponse>, n: usize) -> Vec<i64> {
    let mut got = Vec::new();
    while got.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no message within 10 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended"));
        got.push(event.message.unwrap().sequence);
    }
    got
}

async fn append(c: &mut Client, user: &TestUser, id: &str, n: usize, tag: &str) {
    let messages = (0..n).map(|i| text(&format!("{tag} {i}"))).collect();
    c.append_messages(bearer(
        pb::AppendMessagesRequest {
            conversation_id: id.into(),
            messages,
            ..Default::default()
        },
        &user.token,
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_watcher_sees_every_message_of_every_replica_once_and_resumes_where_it_left() {
    let db = TestDb::new().await;
    let (one, _) = serve(db.server_config("content")).await;
    let (two, _) = serve(db.server_config("content")).await;
    let ada = strata_testkit::app::sign_up(one.channel()).await;
    let mut c1 = Client::new(one.channel());
    let mut c2 = Client::new(two.channel());
    let id = create(&mut c1, &ada, pb::Conversation::default()).await.id;
    // Three already there: caught up from the table.
    append(&mut c1, &ada, &id, 3, "before").await;
    let mut stream = watch(&mut c1, &ada, &id, 0).await.unwrap();
    assert_eq!(next(&mut stream, 3).await, vec![1, 2, 3]);

    // Appends through the other replica, some concurrent, arrive live and in order.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (mut c, ada, id) = (c2.clone(), ada.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            append(&mut c, &ada, &id, 2, &format!("live {i}")).await;
        }));
    }
    assert_eq!(next(&mut stream, 20).await, (4..=23).collect::<Vec<_>>());
    for task in tasks {
        task.await.unwrap();
    }

    // The client disconnects after 23; 7 more arrive meanwhile, on both replicas.
    drop(stream);
    append(&mut c2, &ada, &id, 4, "away").await;
    append(&mut c1, &ada, &id, 3, "away").await;
    let mut resumed = watch(&mut c2, &ada, &id, 23).await.unwrap();
    assert_eq!(next(&mut resumed, 7).await, (24..=30).collect::<Vec<_>>());
    append(&mut c1, &ada, &id, 1, "after").await;
    assert_eq!(next(&mut resumed, 1).await, vec![31]);
    // Nothing more, nothing twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.message())
            .await
            .is_err()
    );

    // Someone else's conversation, or a bad sequence: refused before any stream.
    let eve = strata_testkit::app::sign_up(one.channel()).await;
    let status = watch(&mut c1, &eve, &id, 0).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "conversation not found")
    );
    for bad in [-1, 1_000_000] {
        let status = watch(&mut c1, &ada, &id, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(super::violations(&status), vec!["from_sequence".to_owned()]);
    }

    // Deleting it (through the other replica) ends the stream.
    c2.delete_conversation(bearer(
        pb::DeleteConversationRequest {
            conversation_id: id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), resumed.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::NotFound);
}

#[tokio::test]
async fn a_server_that_stops_tells_its_watchers_where_to_resume() {
    let db = TestDb::new().await;
    let (server, _) = serve(db.server_config("content")).await;
    let ada = strata_testkit::app::sign_up(server.channel()).await;
    let mut c = Client::new(server.channel());
    let id = create(&mut c, &ada, pb::Conversation::default()).await.id;
    append(&mut c, &ada, &id, 2, "hello").await;
    let mut stream = watch(&mut c, &ada, &id, 0).await.unwrap();
    assert_eq!(next(&mut stream, 2).await, vec![1, 2]);
    let stopped = tokio::spawn(server.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        end.message().contains("from_sequence = 2"),
        "{}",
        end.message()
    );
    // The drain did not wait for the stream's grace period.
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_told_where_to_resume() {
    let db = TestDb::new().await;
    let server = strata_testkit::TestServer::start(db.server_config("content"), |builder| {
        strata_auth::register(builder, strata_auth::AuthConfig::default()).unwrap();
        strata_content::register(
            builder,
            strata_content::ContentConfig {
                watch: strata_content::watch::Limits {
                    buffer: 2,
                    slow: Duration::from_millis(500),
                },
                ..Default::default()
            },
        );
    })
    .await;
    let ada = strata_testkit::app::sign_up(server.channel()).await;
    let mut c = Client::new(server.channel());
    let id = create(&mut c, &ada, pb::Conversation::default()).await.id;
    // 16 messages of about 400 KB: more than the connection's flow-control window and
    // the two messages held for the client together.
    let big = "lorem ipsum ".repeat(8_000);
    for _ in 0..16 {
        let message = pb::NewMessage {
            role: pb::Role::User.into(),
            parts: (0..4)
                .map(|_| pb::Part {
                    kind: Some(pb::part::Kind::Text(big.clone())),
                })
                .collect(),
            usage: None,
        };
        c.append_messages(bearer(
            pb::AppendMessagesRequest {
                conversation_id: id.clone(),
                messages: vec![message],
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap();
    }
    // A watcher that does not read for a while.
    let mut stream = watch(&mut c, &ada, &id, 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut last = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(event)) => {
                let sequence = event.message.unwrap().sequence;
                assert_eq!(sequence, last + 1, "in order, none skipped");
                last = sequence;
            }
            Ok(None) => panic!("the stream ended without saying where to resume"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert!(last < 16, "it was cut off before the end: {last}");
    assert!(
        end.message().contains(&format!("from_sequence = {last}")),
        "{end:?}"
    );
    // Resuming there delivers the rest.
    let mut resumed = watch(&mut c, &ada, &id, last).await.unwrap();
    let rest = next(&mut resumed, (16 - last) as usize).await;
    assert_eq!(rest, ((last + 1)..=16).collect::<Vec<_>>());
}
