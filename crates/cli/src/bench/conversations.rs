//! The conversation scenarios, on a million seeded messages (`quick` and `full`; the
//! largest conversation holds 100,000): pages of a branch, appends (with usage, shipped to
//! analytics by the suite meanwhile), delivery to a watcher on another replica, and
//! message search over a rotating set of queries.
//!
//! Targets answer the reports this project grew from (message pagination 45 ms):
//! ListMessages p99 ≤ 5 ms, AppendMessages p50 ≤ 3 ms, WatchConversation delivery p99 ≤
//! 50 ms, SearchMessages p95 ≤ 30 ms. Latency targets are for one call at a time; the
//! throughput of appends with usage is set beside `pgbench` TPC-B.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::sql_types::{Array, BigInt, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use strata_bench::load::{self, Load, Report};
use strata_content::seed_conversations::{ConversationSeed, seed_conversations};
use strata_proto::common::Decimal;
use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::{self as cpb};
use tonic::transport::Channel;

use super::{Limit, Recorder, Scale, Suite, Target, User, bearer, nth, sign_up};

/// Conversations the wide append load spreads over (appends to one conversation queue on
/// its row lock, as they must).
const APPEND_CONVERSATIONS: usize = 256;
/// Pages of the largest conversation whose tokens the deep-page scenario rotates over.
const DEEP_PAGES: usize = 100;
/// Appends per second while delivery is measured.
const WATCH_RATE: u64 = 100;

impl Scale {
    /// What `strata seed conversations` loads before the conversation scenarios.
    fn conversations(self) -> ConversationSeed {
        match self {
            Scale::Smoke => ConversationSeed {
                conversations: 200,
                messages: 20_000,
                largest: 5_000,
                ..ConversationSeed::default()
            },
            Scale::Quick | Scale::Full => ConversationSeed {
                conversations: 10_000,
                messages: 1_000_000,
                largest: 100_000,
                ..ConversationSeed::default()
            },
        }
    }
}

/// Seeds conversations (the heaviest owners are users who can sign in), starts a second
/// replica of the suite and measures the scenarios.
#[expect(
    clippy::too_many_arguments,
    reason = "the bench's shared context, spelled out"
)]
pub(super) async fn run(
    bench: &mut Recorder<'_>,
    channel: &Channel,
    database_url: &str,
    redis_url: &str,
    out: &Path,
    usage_key: &str,
    scale: Scale,
    wide: &Load,
    run_id: u32,
    cores: usize,
) -> anyhow::Result<()> {
    let progress = |what: &str| eprintln!("strata bench: {what}");
    let one = Load::closed(1, 1, wide.measure);
    let mut owners = Vec::new();
    for i in 0..4 {
        let email = format!("m{i}.{run_id}@bench.example");
        owners.push(sign_up(channel.clone(), email).await?);
    }
    let known: Vec<uuid::Uuid> = owners
        .iter()
        .map(|o| o.id.parse())
        .collect::<Result<_, _>>()
        .context("a user id")?;
    let options = ConversationSeed {
        known_owners: known.clone(),
        ..scale.conversations()
    };
    progress(&format!(
        "seeding {} conversations with {} messages",
        options.conversations, options.messages
    ));
    let config = strata_storage::DbConfig::new(
        database_url.to_owned(),
        "strata-bench-seed",
        strata_storage::Environment::Development,
    );
    let started = Instant::now();
    let seeded = seed_conversations(&config, &options, cores, |done, total| {
        eprint!(
            "\r{}",
            super::super::progress_bar(done, total, "messages", started.elapsed())
        );
    })
    .await
    .context("seeding conversations")?;
    eprintln!();
    let (mine, largest) = seeded_conversations(database_url, &known).await?;
    let owners = Arc::new(owners);

    progress("ListMessages");
    let conversations = Arc::new(mine);
    let newest = {
        let (owners, conversations) = (Arc::clone(&owners), Arc::clone(&conversations));
        move |c, seq| {
            let (owner, id) = &conversations[(seq as usize) % conversations.len()];
            let token = owners[*owner].token.clone();
            list_messages(c, token, id.clone(), String::new())
        }
    };
    bench
        .measure(
            &format!(
                "ListMessages (newest 50 of the active branch; the owners' conversations of {} \
                 messages), one at a time",
                seeded.messages
            ),
            &one,
            Limit::PgbenchSelect,
            "45 ms",
            Target::p(0.99, Duration::from_millis(5)),
            newest.clone(),
        )
        .await;
    bench
        .measure(
            "ListMessages (newest 50)",
            wide,
            Limit::PgbenchSelect,
            "45 ms",
            Target::None,
            newest,
        )
        .await;
    let tokens = Arc::new(deep_tokens(channel, &owners[0].token, &largest).await?);
    let deep = {
        let (token, largest, tokens) = (
            owners[0].token.clone(),
            largest.clone(),
            Arc::clone(&tokens),
        );
        move |c, seq| {
            let page = tokens[(seq as usize) % tokens.len()].clone();
            list_messages(c, token.clone(), largest.clone(), page)
        }
    };
    bench
        .measure(
            &format!(
                "ListMessages (a page of 50 up to {} deep in the {}-message conversation), one \
                 at a time",
                tokens.len() * 50,
                seeded.largest
            ),
            &one,
            Limit::PgbenchSelect,
            "45 ms",
            Target::p(0.99, Duration::from_millis(5)),
            deep,
        )
        .await;

    progress("SearchMessages");
    let queries = Arc::new(super::content::word_queries());
    let search = {
        let (owners, queries) = (Arc::clone(&owners), Arc::clone(&queries));
        move |c, seq| {
            let query = queries[(seq as usize) % queries.len()].clone();
            search_messages(c, nth(&owners, seq).token.clone(), query)
        }
    };
    bench
        .measure(
            &format!(
                "SearchMessages ({} rotating queries over the owners' messages of {}), one at a \
                 time",
                queries.len(),
                seeded.messages
            ),
            &one,
            Limit::PgbenchSelect,
            "",
            Target::p(0.95, Duration::from_millis(30)),
            search,
        )
        .await;

    progress("AppendMessages");
    let targets = Arc::new(append_targets(channel, &owners).await?);
    let append = {
        let (owners, targets) = (Arc::clone(&owners), Arc::clone(&targets));
        move |c, seq| {
            let (owner, id) = &targets[(seq as usize) % targets.len()];
            append(
                c,
                owners[*owner].token.clone(),
                id.clone(),
                seq,
                format!("a{seq}"),
            )
        }
    };
    bench
        .measure(
            "AppendMessages (a question and an answer with usage; the shipper running), one at \
             a time",
            &one,
            Limit::PgbenchTpcb,
            "",
            Target::p(0.5, Duration::from_millis(3)),
            append.clone(),
        )
        .await;
    let wide_appends = format!(
        "AppendMessages with usage over {APPEND_CONVERSATIONS} conversations (the shipper \
         running)"
    );
    bench
        .measure(
            &wide_appends,
            wide,
            Limit::PgbenchTpcb,
            "",
            Target::None,
            append,
        )
        .await;
    let shipped = outbox_drained(database_url, Duration::from_secs(60)).await?;
    if let Some(row) = bench.last(&wide_appends) {
        row.operation.push_str(&format!(
            "; the outbox emptied {:.1} s after the load",
            shipped.as_secs_f64()
        ));
    }

    progress("WatchConversation (a second replica)");
    let replica = Suite::start(
        database_url,
        redis_url,
        &out.join("suite-replica.log"),
        super::UNREACHED_RATE_LIMIT,
        "replica",
        &[("STRATA_CONTENT_USAGE_KEY", usage_key)],
    )
    .await?;
    let replica_channel = load::connect(&replica.url, 1).await?.remove(0);
    let operation = "WatchConversation delivery (append on one replica, watch on the other; \
                     100 appends/s)";
    if !bench.left_out(operation) {
        let before = bench.probe.sample().await;
        let (owner, id) = targets[0].clone();
        let report = watch_delivery(
            channel.clone(),
            replica_channel,
            owners[owner].token.clone(),
            id,
            wide.measure,
        )
        .await?;
        bench
            .record_p99(operation, &report, &before, Duration::from_millis(50))
            .await;
    }
    replica.stop().await;
    Ok(())
}

/// The seeded conversations of `owners` (owner index, id), and the largest one's id.
async fn seeded_conversations(
    database_url: &str,
    owners: &[uuid::Uuid],
) -> anyhow::Result<(Vec<(usize, String)>, String)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: uuid::Uuid,
        #[diesel(sql_type = SqlUuid)]
        owner_id: uuid::Uuid,
        #[diesel(sql_type = BigInt)]
        message_count: i64,
    }
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, owner_id, message_count FROM content.conversations \
         WHERE owner_id = ANY($1) ORDER BY message_count DESC, id LIMIT 5000",
    )
    .bind::<Array<SqlUuid>, _>(owners)
    .load(&mut conn)
    .await?;
    let largest = rows
        .as_slice()
        .first()
        .context("no seeded conversation")?
        .id
        .to_string();
    let mine = rows
        .iter()
        .filter(|r| r.message_count >= 2)
        .map(|r| {
            let owner = owners.iter().position(|o| *o == r.owner_id).unwrap_or(0);
            (owner, r.id.to_string())
        })
        .collect();
    Ok((mine, largest))
}

/// Page tokens of the first [`DEEP_PAGES`] newest-first pages of conversation `id`.
async fn deep_tokens(channel: &Channel, token: &str, id: &str) -> anyhow::Result<Vec<String>> {
    let mut client = ConversationServiceClient::new(channel.clone());
    let mut tokens = Vec::new();
    let mut page_token = String::new();
    for _ in 0..DEEP_PAGES {
        let page = client
            .list_messages(bearer(
                cpb::ListMessagesRequest {
                    conversation_id: id.to_owned(),
                    page_size: 50,
                    page_token: page_token.clone(),
                    newest_first: true,
                    ..Default::default()
                },
                token,
            ))
            .await
            .context("ListMessages of the largest conversation")?
            .into_inner();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        tokens.push(page_token.clone());
    }
    anyhow::ensure!(!tokens.is_empty(), "the largest conversation has one page");
    Ok(tokens)
}

/// [`APPEND_CONVERSATIONS`] new conversations over the owners.
async fn append_targets(
    channel: &Channel,
    owners: &[User],
) -> anyhow::Result<Vec<(usize, String)>> {
    let mut client = ConversationServiceClient::new(channel.clone());
    let mut targets = Vec::new();
    for i in 0..APPEND_CONVERSATIONS {
        let owner = i % owners.len();
        let id = client
            .create_conversation(bearer(
                cpb::CreateConversationRequest {
                    conversation: Some(cpb::Conversation {
                        title: format!("bench appends {i}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &owners[owner].token,
            ))
            .await
            .context("CreateConversation")?
            .into_inner()
            .conversation
            .unwrap_or_default()
            .id;
        targets.push((owner, id));
    }
    Ok(targets)
}

/// How long the usage outbox took to empty (at most `within`).
async fn outbox_drained(database_url: &str, within: Duration) -> anyhow::Result<Duration> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    let started = Instant::now();
    loop {
        let left: Count = diesel::sql_query("SELECT count(*) AS n FROM content.usage_outbox")
            .get_result(&mut conn)
            .await?;
        if left.n == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "{} usage rows still in the outbox after {within:?}",
            left.n
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends one message at a time through `appender` at [`WATCH_RATE`] per second for
/// `measure`, each carrying its send time, while a watcher on `watcher` receives them; the
/// report's latencies are from each append's start to its arrival at the watcher.
async fn watch_delivery(
    appender: Channel,
    watcher: Channel,
    token: String,
    id: String,
    measure: Duration,
) -> anyhow::Result<Report> {
    // From the conversation's current end.
    let last = ConversationServiceClient::new(appender.clone())
        .get_conversation(bearer(
            cpb::GetConversationRequest {
                conversation_id: id.clone(),
                message_count: 0,
            },
            &token,
        ))
        .await
        .context("GetConversation")?
        .into_inner()
        .conversation
        .unwrap_or_default()
        .last_sequence;
    let mut stream = ConversationServiceClient::new(watcher)
        .watch_conversation(bearer(
            cpb::WatchConversationRequest {
                conversation_id: id.clone(),
                from_sequence: last,
            },
            &token,
        ))
        .await
        .context("WatchConversation")?
        .into_inner();
    let base = Instant::now();
    // Appends acknowledged so far: the watcher stops once it holds them all.
    let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (appender, token, id) = (appender.clone(), token.clone(), id.clone());
        let acknowledged = Arc::clone(&acknowledged);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(1000 / WATCH_RATE));
            let mut sent = 0u64;
            let mut failed = 0u64;
            while base.elapsed() < measure {
                ticker.tick().await;
                let at = base.elapsed().as_micros();
                let request = cpb::AppendMessagesRequest {
                    conversation_id: id.clone(),
                    messages: vec![text_message(&format!("t{at}"))],
                    ..Default::default()
                };
                match ConversationServiceClient::new(appender.clone())
                    .append_messages(bearer(request, &token))
                    .await
                {
                    Ok(_) => {
                        sent += 1;
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => failed += 1,
                }
            }
            (sent, failed)
        })
    };
    let mut latency = strata_bench::load::histogram();
    let mut received = 0u64;
    let deadline = measure + Duration::from_secs(5);
    while let Ok(Some(event)) =
        tokio::time::timeout(deadline.saturating_sub(base.elapsed()), stream.message())
            .await
            .map_err(|_| ())
            .and_then(|r| r.map_err(|_| ()))
    {
        let Some(message) = event.message else {
            continue;
        };
        let sent_at = match message
            .parts
            .as_slice()
            .first()
            .and_then(|p| p.kind.as_ref())
        {
            Some(cpb::part::Kind::Text(t)) => {
                t.strip_prefix('t').and_then(|t| t.parse::<u128>().ok())
            }
            _ => None,
        };
        if let Some(sent_at) = sent_at {
            let delay = base.elapsed().as_micros().saturating_sub(sent_at);
            let _ = latency.record(u64::try_from(delay).unwrap_or(u64::MAX).max(1));
            received += 1;
        }
        // The last append may be acknowledged before the message before it arrives.
        let all_in = received
            >= std::sync::atomic::AtomicU64::load(
                &acknowledged,
                std::sync::atomic::Ordering::SeqCst,
            );
        if base.elapsed() >= measure && sender.is_finished() && all_in {
            break;
        }
    }
    let (sent, failed) = sender.await.unwrap_or((0, 1));
    let mut errors = std::collections::BTreeMap::new();
    if failed > 0 {
        errors.insert("append failed".to_owned(), failed);
    }
    if received < sent {
        errors.insert("not delivered".to_owned(), sent - received);
    }
    Ok(Report {
        load: Load::closed(1, 1, measure),
        ok: received,
        errors,
        latency,
    })
}

fn text_message(text: &str) -> cpb::NewMessage {
    cpb::NewMessage {
        role: cpb::Role::User.into(),
        parts: vec![cpb::Part {
            kind: Some(cpb::part::Kind::Text(text.to_owned())),
        }],
        usage: None,
    }
}

async fn list_messages(
    c: Channel,
    token: String,
    id: String,
    page_token: String,
) -> Result<(), tonic::Status> {
    let request = cpb::ListMessagesRequest {
        conversation_id: id,
        page_size: 50,
        newest_first: true,
        page_token,
        ..Default::default()
    };
    let page = ConversationServiceClient::new(c)
        .list_messages(bearer(request, &token))
        .await?
        .into_inner();
    if page.messages.is_empty() {
        return Err(tonic::Status::internal("an empty page"));
    }
    Ok(())
}

async fn search_messages(c: Channel, token: String, query: String) -> Result<(), tonic::Status> {
    let request = cpb::SearchMessagesRequest {
        query,
        page_size: 20,
        ..Default::default()
    };
    ConversationServiceClient::new(c)
        .search_messages(bearer(request, &token))
        .await
        .map(|_| ())
}

async fn append(
    c: Channel,
    token: String,
    id: String,
    seq: u64,
    text: String,
) -> Result<(), tonic::Status> {
    let answer = cpb::NewMessage {
        role: cpb::Role::Assistant.into(),
        parts: vec![cpb::Part {
            kind: Some(cpb::part::Kind::Text(format!("answer {text}"))),
        }],
        usage: Some(cpb::TokenUsage {
            model: "gpt-4o".into(),
            provider: "openai".into(),
            prompt_tokens: 1200 + (seq % 100) as i64,
            completion_tokens: 300,
            cost: Some(Decimal {
                value: "0.0042".into(),
            }),
        }),
    };
    let request = cpb::AppendMessagesRequest {
        conversation_id: id,
        messages: vec![text_message(&format!("question {text}")), answer],
        ..Default::default()
    };
    ConversationServiceClient::new(c)
        .append_messages(bearer(request, &token))
        .await
        .map(|_| ())
}
