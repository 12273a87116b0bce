// Strata's TypeScript example client: the main flow of the suite, against a running server,
// over real gRPC (HTTP/2) with Connect-ES v2. Every step prints one line and checks its
// result; anything unexpected ends the run with exit code 1 (CI runs this as a test).
//
//   examples/typescript/run.sh [HOST:PORT]      (default 127.0.0.1:50051)
//
// The types and service descriptors under ./gen are generated from the repo's proto/ (and
// google/rpc's error details) by run.sh; they are never edited by hand.

import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  BadRequestSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { AnalyticsService, type UsageTotals } from "./gen/strata/analytics/v1/analytics_pb.js";
import { AuthService } from "./gen/strata/auth/v1/auth_pb.js";
import { AgentService } from "./gen/strata/content/v1/agent_pb.js";
import {
  ConversationService,
  Role,
  type Message,
} from "./gen/strata/content/v1/conversation_pb.js";

// ---------------------------------------------------------------------------------------
// Settings.

const address = process.argv[2] ?? "127.0.0.1:50051";
/** Deadline of every unary call (sent to the server as `grpc-timeout`). */
const CALL_TIMEOUT_MS = 10_000;
/** Deadline of the WatchConversation stream; we abort it well before. */
const WATCH_TIMEOUT_MS = 30_000;
/** How long the watcher may take to deliver the appended messages. */
const WATCH_DELIVERY_MS = 10_000;
/** Usage ships from content to analytics asynchronously (about a second): poll this long. */
const USAGE_POLL_MS = 30_000;
/** How long one call may wait out rate limits in all (each wait as its RetryInfo says). */
const MAX_RETRY_WAIT_MS = 120_000;
/** Longest sign-in lockout (UNAUTHENTICATED with RetryInfo) worth waiting out. */
const MAX_LOCKOUT_WAIT_MS = 65_000;
/** Wrong-password logins before step 8 gives up on seeing RESOURCE_EXHAUSTED. */
const MAX_WRONG_LOGINS = 40;

// ---------------------------------------------------------------------------------------
// Clients. One HTTP/2 connection; an interceptor adds the access token once we have one.

let accessToken = "";

/** Sends `authorization: Bearer <access token>`, except on the calls that sign in. */
const bearer: Interceptor = (next) => async (req) => {
  const signingIn = req.method.name === "SignUp" || req.method.name === "Login";
  if (accessToken !== "" && !signingIn) {
    req.header.set("authorization", `Bearer ${accessToken}`);
  }
  return next(req);
};

const transport = createGrpcTransport({
  baseUrl: `http://${address}`,
  interceptors: [bearer],
});
const auth = createClient(AuthService, transport);
const agents = createClient(AgentService, transport);
const conversations = createClient(ConversationService, transport);
const analytics = createClient(AnalyticsService, transport);

// ---------------------------------------------------------------------------------------
// Helpers.

/** Fails the run with `message` unless `condition` holds. */
function check(condition: unknown, message: string): asserts condition {
  if (!condition) {
    throw new Error(`check failed: ${message}`);
  }
}

/** The delay a server's `google.rpc.RetryInfo` detail asks for, in ms, if it sent one. */
function retryDelayMs(err: ConnectError): number | undefined {
  const delay = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return delay === undefined ? undefined : durationMs(delay);
}

/** A ConnectError's code as gRPC spells it (RESOURCE_EXHAUSTED). */
function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A call that failed: which one, and the server's answer. */
class CallFailed extends Error {
  constructor(
    readonly what: string,
    readonly error: ConnectError,
  ) {
    super(`${what}: ${codeName(error.code)}: ${error.rawMessage}`);
  }
}

/**
 * Every call goes through here: it gets a deadline, and a call refused by a rate limit
 * (RESOURCE_EXHAUSTED) is retried after the delay the server's RetryInfo gives, for up to
 * MAX_RETRY_WAIT_MS in all: other clients at the same address may be using the budget of
 * SignUp and Login too (10 a minute per address). A short sign-in lockout (UNAUTHENTICATED
 * with RetryInfo: too many wrong passwords from this address) is waited out the same way.
 * With `retry: false` the first error is thrown as it is.
 */
async function rpc<T>(
  what: string,
  call: (options: CallOptions) => Promise<T>,
  { retry = true, timeoutMs = CALL_TIMEOUT_MS } = {},
): Promise<T> {
  let waited = 0;
  for (;;) {
    try {
      return await call({ timeoutMs });
    } catch (e) {
      const err = ConnectError.from(e);
      const delay = retryDelayMs(err);
      const retryable =
        err.code === Code.ResourceExhausted ||
        (err.code === Code.Unauthenticated && delay !== undefined && delay <= MAX_LOCKOUT_WAIT_MS);
      if (!retry || !retryable || delay === undefined || waited + delay > MAX_RETRY_WAIT_MS) {
        throw new CallFailed(what, err);
      }
      const seconds = (delay / 1000).toFixed(1);
      console.log(`   (${what}: ${codeName(err.code)}; RetryInfo says retry in ${seconds} s)`);
      await sleep(delay + 50);
      waited += delay + 50;
    }
  }
}

/** Runs `call` (without retries) expecting it to fail, with `code` when given. */
async function expectError(
  what: string,
  code: Code | undefined,
  call: (options: CallOptions) => Promise<unknown>,
): Promise<ConnectError> {
  try {
    await rpc(what, call, { retry: false });
  } catch (e) {
    if (!(e instanceof CallFailed)) throw e;
    if (code !== undefined)
      check(e.error.code === code, `${e.message}; expected ${codeName(code)}`);
    return e.error;
  }
  throw new Error(
    `${what}: expected ${code === undefined ? "an error" : codeName(code)}, but it succeeded`,
  );
}

/** A decimal string without trailing zeros ("0.0150000000" → "0.015"), to compare. */
function normalizeDecimal(value: string): string {
  return value.includes(".") ? value.replace(/0+$/, "").replace(/\.$/, "") : value;
}

// ---------------------------------------------------------------------------------------
// The flow.

async function main(): Promise<void> {
  console.log(`typescript example: against ${address}`);

  // 1. Sign up a new account: a unique email per run, and a long passphrase (8 to 128
  //    characters, not a common password). The request_id makes a retried sign-up (after
  //    a lost answer) return the same account instead of ALREADY_EXISTS.
  const email = `ts-example-${randomBytes(6).toString("hex")}@example.com`;
  const password = `correct horse battery staple ${randomBytes(4).toString("hex")}`;
  const signUpRequestId = randomUUID();
  const signedUp = await rpc("SignUp", (o) =>
    auth.signUp(
      { email, password, displayName: "TypeScript example", requestId: signUpRequestId },
      o,
    ),
  );
  const userId = signedUp.user?.id ?? "";
  check(userId !== "", "SignUp returned no user id");
  check(signedUp.user?.email === email, `SignUp returned email ${signedUp.user?.email}`);
  check(signedUp.credentials?.accessToken, "SignUp returned no access token");
  console.log(`1. signed up ${email} (user ${userId})`);

  // 2. Log in: a new session. Its access token (a 15-minute JWT) goes on every later call
  //    as `authorization: Bearer <token>` (the interceptor above).
  const login = await rpc("Login", (o) => auth.login({ email, password }, o));
  check(login.user?.id === userId, `Login answered for user ${login.user?.id}, not ${userId}`);
  const credentials = login.credentials;
  check(credentials?.accessToken, "Login returned no access token");
  check(credentials.tokenType === "Bearer", `token type ${credentials.tokenType}`);
  accessToken = credentials.accessToken;
  console.log(`2. logged in (session ${credentials.sessionId})`);

  // 3. An agent (CreateAgent saves version 1 of its definition), a second version, the
  //    `production` label on it, and the label resolved back to that version.
  const created = await rpc("CreateAgent", (o) =>
    agents.createAgent(
      {
        agent: { name: "TypeScript example agent", type: "assistant" },
        version: { model: "gpt-4o", systemPrompt: "You are terse." },
        requestId: randomUUID(),
      },
      o,
    ),
  );
  const agentId = created.agent?.id ?? "";
  check(agentId !== "", "CreateAgent returned no agent id");
  check(
    created.agent?.version?.version === 1,
    `CreateAgent made version ${created.agent?.version?.version}`,
  );
  const v2 = await rpc("CreateAgentVersion", (o) =>
    agents.createAgentVersion(
      {
        agentId,
        version: {
          model: "gpt-4o",
          systemPrompt: "You are terse, and you cite your sources.",
          tools: [{ name: "web_search", description: "Searches the web." }],
        },
        requestId: randomUUID(),
      },
      o,
    ),
  );
  const version = v2.version?.version ?? 0;
  check(version === 2, `CreateAgentVersion made version ${version}, expected 2`);
  const labelled = await rpc("SetAgentLabel", (o) =>
    agents.setAgentLabel({ agentId, label: "production", versions: [{ version }] }, o),
  );
  check(
    labelled.label?.name === "production" &&
      labelled.label.versions.length === 1 &&
      labelled.label.versions[0]?.version === version,
    `SetAgentLabel answered ${JSON.stringify(labelled.label?.versions)}`,
  );
  const resolved = await rpc("ResolveAgent", (o) =>
    agents.resolveAgent({ agentId, label: "production" }, o),
  );
  check(resolved.label === "production", `ResolveAgent resolved label ${resolved.label}`);
  check(
    resolved.version?.version === version,
    `ResolveAgent(production) gave version ${resolved.version?.version}, expected ${version}`,
  );
  console.log(
    `3. agent ${agentId}: version ${version} created, labelled and resolved as production`,
  );

  // 4. A conversation with the agent: it records the version `production` resolved to.
  const started = await rpc("CreateConversation", (o) =>
    conversations.createConversation(
      { conversation: { agentId, title: "TypeScript example" }, requestId: randomUUID() },
      o,
    ),
  );
  const conversation = started.conversation;
  check(conversation?.id, "CreateConversation returned no conversation id");
  check(conversation.agentId === agentId, `conversation's agent is ${conversation.agentId}`);
  check(
    conversation.agentVersion === version,
    `conversation uses agent version ${conversation.agentVersion}, expected ${version}`,
  );
  const conversationId = conversation.id;
  console.log(`4. conversation ${conversationId} with agent version ${conversation.agentVersion}`);

  // 5. Watch the conversation (a server stream) while appending a user message and the
  //    assistant's answer, which carries the token usage of the LLM call that made it.
  //    The watcher must see both; then we abort the stream.
  const usage = {
    model: "gpt-4o",
    provider: "openai",
    promptTokens: 1234n,
    completionTokens: 567n,
    cost: { value: "0.0087" },
  };
  const watching = new AbortController();
  const seen: Message[] = [];
  let bothSeen: () => void = () => {};
  const delivered = new Promise<void>((resolve) => (bothSeen = resolve));
  const watcher = (async () => {
    try {
      const stream = conversations.watchConversation(
        { conversationId, fromSequence: 0n },
        { signal: watching.signal, timeoutMs: WATCH_TIMEOUT_MS },
      );
      for await (const event of stream) {
        if (event.message) seen.push(event.message);
        if (seen.length >= 2) bothSeen();
      }
      throw new Error("WatchConversation ended before it was aborted");
    } catch (e) {
      // Our own abort ends the stream with CANCELED: that is the normal end here.
      if (watching.signal.aborted && ConnectError.from(e).code === Code.Canceled) return;
      throw e;
    }
  })();
  watcher.catch(() => {}); // Awaited below; this keeps an early failure from going unhandled.

  const appended = await rpc("AppendMessages", (o) =>
    conversations.appendMessages(
      {
        conversationId,
        messages: [
          { role: Role.USER, parts: [{ kind: { case: "text", value: "What is Strata?" } }] },
          {
            role: Role.ASSISTANT,
            parts: [{ kind: { case: "text", value: "A suite of Rust gRPC services." } }],
            usage,
          },
        ],
        requestId: randomUUID(),
      },
      o,
    ),
  );
  const [question, answer] = appended.messages;
  check(
    appended.messages.length === 2 && question && answer,
    "AppendMessages did not return 2 messages",
  );
  check(question.sequence === 1n && answer.sequence === 2n, "appended messages are not #1 and #2");
  check(answer.parentId === question.id, "the answer's parent is not the question");
  check(answer.usage?.promptTokens === usage.promptTokens, "the answer lost its usage");

  const timeout = sleep(WATCH_DELIVERY_MS, "timeout" as const);
  const outcome = await Promise.race([
    delivered.then(() => "delivered" as const),
    watcher,
    timeout,
  ]);
  watching.abort();
  await watcher; // Rethrows anything the stream failed with.
  check(
    outcome === "delivered",
    `WatchConversation delivered ${seen.length} of 2 messages within ${WATCH_DELIVERY_MS} ms`,
  );
  check(
    seen.length === 2 &&
      seen[0]?.id === question.id &&
      seen[0].role === Role.USER &&
      seen[1]?.id === answer.id &&
      seen[1].role === Role.ASSISTANT,
    `watcher saw ${seen.map((m) => `#${m.sequence} ${Role[m.role]}`).join(", ")}`,
  );
  check(
    seen[1].usage?.completionTokens === usage.completionTokens,
    "watched answer lost its usage",
  );
  console.log(
    `5. watcher received #1 ${Role[seen[0].role]} and #2 ${Role[seen[1].role]} ` +
      `(${usage.promptTokens}+${usage.completionTokens} tokens), stream aborted`,
  );

  // 6. The usage reaches analytics asynchronously (an outbox, shipped about every second),
  //    so poll our own usage summary until the call shows up, then check the totals.
  const pollStart = Date.now();
  const timeRange = {
    startTime: timestampFromMs(pollStart - 3_600_000),
    endTime: timestampFromMs(pollStart + 3_600_000),
  };
  let totals: UsageTotals | undefined;
  for (;;) {
    const summary = await rpc("GetUsageSummary", (o) =>
      analytics.getUsageSummary({ timeRange }, o),
    );
    totals = summary.totals;
    if ((totals?.requestCount ?? 0n) > 0n) break;
    check(
      Date.now() - pollStart < USAGE_POLL_MS,
      `no usage in the summary after ${USAGE_POLL_MS} ms`,
    );
    await sleep(500);
  }
  check(
    totals?.requestCount === 1n,
    `usage summary counts ${totals?.requestCount} requests, expected 1`,
  );
  check(
    totals.tokens?.promptTokens === usage.promptTokens &&
      totals.tokens.completionTokens === usage.completionTokens &&
      totals.tokens.totalTokens === usage.promptTokens + usage.completionTokens,
    `usage summary tokens ${totals.tokens?.promptTokens}+${totals.tokens?.completionTokens}`,
  );
  check(
    normalizeDecimal(totals.cost?.value ?? "") === normalizeDecimal(usage.cost.value),
    `usage summary cost ${totals.cost?.value}, expected ${usage.cost.value}`,
  );
  console.log(
    `6. usage summary after ${((Date.now() - pollStart) / 1000).toFixed(1)} s: 1 request, ` +
      `${totals.tokens.totalTokens} tokens, $${totals.cost?.value}`,
  );

  // 7. INVALID_ARGUMENT: every bad field of a request is listed in a google.rpc.BadRequest
  //    detail (here an empty name and a type that is not a lowercase label name).
  const invalid = await expectError("CreateAgent (invalid)", Code.InvalidArgument, (o) =>
    agents.createAgent(
      { agent: { name: "", type: "Not A Type" }, version: { model: "gpt-4o" } },
      o,
    ),
  );
  const violations = invalid.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  console.log(`7. INVALID_ARGUMENT (${invalid.rawMessage}), BadRequest lists:`);
  for (const v of violations) console.log(`     ${v.field}: ${v.description}`);
  const fields = violations.map((v) => v.field).sort();
  check(
    JSON.stringify(fields) === JSON.stringify(["agent.name", "agent.type"]),
    `BadRequest names ${JSON.stringify(fields)}, expected ["agent.name","agent.type"]`,
  );

  // 8. RESOURCE_EXHAUSTED: SignUp and Login share a budget per client address (`sign_in`,
  //    10 a minute by default). Wrong passwords until it runs out, then read RetryInfo and
  //    QuotaFailure, wait as told and log in with the right password.
  //
  //    The wrong passwords go to a decoy account, never ours: after 5 failures an account
  //    locks (30 s, doubling), and a locked account refuses even the right password. Each
  //    failure also counts against this address (20 in 15 minutes lock it out of Login);
  //    the decoy is the same every run, so it is usually locked already, and a locked
  //    account's answer (UNAUTHENTICATED with RetryInfo) counts no failure.
  const decoy = "ts-example-decoy@example.com";
  let wrong = 0;
  let locked = 0;
  let exhausted: ConnectError | undefined;
  while (exhausted === undefined) {
    check(
      wrong + locked < MAX_WRONG_LOGINS,
      `no RESOURCE_EXHAUSTED after ${MAX_WRONG_LOGINS} logins`,
    );
    const err = await expectError("Login (wrong password)", undefined, (o) =>
      auth.login({ email: decoy, password: `not-the-password-${wrong + locked}` }, o),
    );
    if (err.code === Code.ResourceExhausted) exhausted = err;
    else if (err.code !== Code.Unauthenticated) throw new CallFailed("Login (wrong password)", err);
    else if (retryDelayMs(err) === undefined) wrong++;
    else locked++;
  }
  const delay = retryDelayMs(exhausted);
  check(delay !== undefined && delay > 0, "RESOURCE_EXHAUSTED without a RetryInfo delay");
  const quota = exhausted.findDetails(QuotaFailureSchema).flatMap((q) => q.violations);
  check(
    quota.some((q) => q.quotaId === "sign_in"),
    `QuotaFailure does not name sign_in: ${quota.map((q) => q.quotaId).join(", ") || "no violation"}`,
  );
  const limits = quota.map(
    (q) => `${q.quotaId} for ${q.subject}: ${q.quotaValue} ${q.quotaMetric} (${q.description})`,
  );
  console.log(
    `8. wrong passwords: ${wrong + locked} x UNAUTHENTICATED (${locked} while the decoy was ` +
      `locked), then RESOURCE_EXHAUSTED: RetryInfo ${(delay / 1000).toFixed(3)} s, ` +
      `QuotaFailure ${limits.join("; ")}`,
  );
  await sleep(delay + 50);
  const again = await rpc("Login", (o) => auth.login({ email, password }, o));
  check(again.user?.id === userId && again.credentials?.accessToken, "Login after the wait failed");
  console.log(
    `   waited ${(delay / 1000).toFixed(1)} s, then logged in again with the right password`,
  );

  console.log("typescript example: all steps passed");
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`typescript example: FAILED: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
