#!/usr/bin/env python3
"""A walk through Strata's main flow with stubs generated from proto/.

    python example.py HOST:PORT        (run.sh generates the stubs and runs this)

Signs up, logs in, makes an agent with a labelled version, talks to it in a conversation
while watching the conversation's live stream, reads the usage that conversation was
billed, and shows how the server describes bad requests (INVALID_ARGUMENT with a
google.rpc.BadRequest) and rate limits (RESOURCE_EXHAUSTED with google.rpc.RetryInfo and
google.rpc.QuotaFailure).

Each step prints one line and checks what the server answered: this file is also a test,
run in CI against a real server, so anything unexpected ends it with a non-zero exit code
and a message saying which step failed and why.
"""

from __future__ import annotations

import datetime
import decimal
import queue
import secrets
import sys
import threading
import time
import uuid

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strata.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from strata.auth.v1 import auth_pb2, auth_pb2_grpc
from strata.common.v1 import common_pb2
from strata.content.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    conversation_pb2,
    conversation_pb2_grpc,
    versioning_pb2,
)

# Every call gets a deadline: a client without one can wait forever on a stuck server.
DEADLINE_S = 10.0
# How many times a call refused by the rate limiter is tried again (after its RetryInfo).
RATE_LIMIT_RETRIES = 5
# Never wait longer than this for one retry; a longer wait is reported as a failure.
MAX_WAIT_S = 65.0
# How long analytics may take to show the usage of the conversation (shipped by an outbox).
USAGE_WAIT_S = 30.0
# How many wrong passwords step 8 tries before giving up on seeing RESOURCE_EXHAUSTED.
MAX_LOGIN_ATTEMPTS = 40

PASSWORD = "correct horse battery staple, python edition"

# The step running, for the failure message.
current_step = "0"


class Failed(Exception):
    """A step got an answer it did not expect."""


def check(condition: bool, message: str) -> None:
    """The assertion of every step (not `assert`, which `python -O` would skip)."""
    if not condition:
        raise Failed(message)


# --- Errors: google.rpc.Status details -----------------------------------------------------
#
# Strata puts a google.rpc.Status in the `grpc-status-details-bin` trailer of every error;
# grpc_status.rpc_status.from_call decodes it, and its `details` are google.protobuf.Any
# messages (BadRequest, RetryInfo, QuotaFailure, ...) to unpack by type.


def detail(err: grpc.RpcError, message_type):
    """The first detail of `message_type` in the error's google.rpc.Status, or None."""
    status = rpc_status.from_call(err)
    if status is None:
        return None
    for any_detail in status.details:
        if any_detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            any_detail.Unpack(message)
            return message
    return None


def retry_delay_s(err: grpc.RpcError) -> float | None:
    """How long the server asks us to wait (google.rpc.RetryInfo), in seconds."""
    info = detail(err, error_details_pb2.RetryInfo)
    if info is None or not info.HasField("retry_delay"):
        return None
    return info.retry_delay.ToTimedelta().total_seconds()


# --- Calls ------------------------------------------------------------------------------------


def call(method, request, token: str | None = None, timeout: float = DEADLINE_S):
    """Calls a unary RPC with a deadline and, when given, `authorization: Bearer <token>`.

    When the rate limiter refuses the call (RESOURCE_EXHAUSTED), waits as long as its
    RetryInfo says and tries again, a few times: the budget of sign-ups and logins is per
    client address, so another client on this machine may just have used it. A refused
    call did nothing on the server, so trying it again is safe (the writes below carry a
    request_id anyway, which makes even a retry after a lost answer safe).

    A sign-in lock is waited out the same way: after many failed logins from one address
    the server answers every login from it with UNAUTHENTICATED plus a RetryInfo for a
    while (a wrong password alone carries no RetryInfo, and is not retried).
    """
    rpc = type(request).__name__.removesuffix("Request")
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            return method(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as err:
            if attempt == RATE_LIMIT_RETRIES:
                raise
            delay = retry_delay_s(err)
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                check(delay is not None, f"RESOURCE_EXHAUSTED without RetryInfo: {err.details()}")
                why = "rate limited"
            elif err.code() == grpc.StatusCode.UNAUTHENTICATED and delay is not None:
                why = "sign-in locked"
            else:
                raise
            check(delay <= MAX_WAIT_S, f"{rpc}: {why} for {delay:.0f} s, longer than we wait")
            print(f"   ({rpc} {why}: waiting {delay:.1f} s as RetryInfo says, then retrying)")
            time.sleep(delay + 0.05)
    raise AssertionError("unreachable")


def new_request_id() -> str:
    """An idempotency key (AIP-155): a retry with the same one returns the first result."""
    return str(uuid.uuid4())


def timestamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


# --- The flow ---------------------------------------------------------------------------------


def run(channel: grpc.Channel, target: str) -> None:
    global current_step
    current_step = "0 (connect)"
    try:
        grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
    except grpc.FutureTimeoutError:
        raise Failed(f"no gRPC server answered at {target} within {DEADLINE_S:.0f} s") from None

    auth = auth_pb2_grpc.AuthServiceStub(channel)
    agents = agent_pb2_grpc.AgentServiceStub(channel)
    conversations = conversation_pb2_grpc.ConversationServiceStub(channel)
    analytics = analytics_pb2_grpc.AnalyticsServiceStub(channel)

    # 1. Sign up: a new account each run (emails are unique, case-insensitively).
    current_step = "1 (SignUp)"
    email = f"py-example-{secrets.token_hex(6)}@example.com"
    signed_up = call(
        auth.SignUp,
        auth_pb2.SignUpRequest(
            email=email,
            password=PASSWORD,
            display_name="Python example",
            request_id=new_request_id(),
        ),
    )
    user_id = signed_up.user.id
    check(bool(user_id), "SignUp returned no user id")
    check(signed_up.user.email.lower() == email, f"SignUp returned email {signed_up.user.email!r}")
    check(bool(signed_up.credentials.access_token), "SignUp returned no access token")
    print(f"1. signed up {email} as user {user_id}")

    # 2. Log in: a new session. Its access token (a JWT, 15 minutes) authorizes what follows.
    current_step = "2 (Login)"
    login = call(auth.Login, auth_pb2.LoginRequest(email=email, password=PASSWORD))
    token = login.credentials.access_token
    check(login.user.id == user_id, f"Login returned user {login.user.id}, not {user_id}")
    check(login.credentials.token_type == "Bearer", f"token_type {login.credentials.token_type!r}")
    check(bool(token), "Login returned no access token")
    check(bool(login.credentials.refresh_token), "Login returned no refresh token")
    print(f"2. logged in: session {login.credentials.session_id}, access token of {len(token)} bytes")

    # 3. An agent. CreateAgent saves version 1 of its definition; CreateAgentVersion saves an
    #    immutable version 2; the `production` label is pointed at it, and ResolveAgent (what
    #    a caller of the agent asks) picks the version that label selects.
    current_step = "3 (agents)"
    config = struct_pb2.Struct()
    config.update({"temperature": 0.2, "max_output_tokens": 512})
    lookup_tool = agent_pb2.Tool(name="lookup_city", description="Facts about a city.")
    lookup_tool.parameters.update(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    )
    created = call(
        agents.CreateAgent,
        agent_pb2.CreateAgentRequest(
            agent=agent_pb2.Agent(name="Geography tutor", type="assistant"),
            version=agent_pb2.AgentVersion(
                model="gpt-4o-mini",
                system_prompt="You answer geography questions in one sentence.",
                config=config,
                tools=[lookup_tool],
            ),
            request_id=new_request_id(),
        ),
        token,
    ).agent
    agent_id = created.id
    check(bool(agent_id), "CreateAgent returned no id")
    check(created.owner_id == user_id, f"agent owner {created.owner_id}, not {user_id}")
    check(created.status == agent_pb2.AGENT_STATUS_ACTIVE, "a new agent should be ACTIVE")
    check(created.version.version == 1 and created.latest_version == 1, "CreateAgent: not version 1")

    version = call(
        agents.CreateAgentVersion,
        agent_pb2.CreateAgentVersionRequest(
            agent_id=agent_id,
            version=agent_pb2.AgentVersion(
                model="gpt-4o",
                system_prompt="You answer geography questions in one short sentence.",
                config=config,
                tools=[lookup_tool],
            ),
            request_id=new_request_id(),
        ),
        token,
    ).version
    check(version.version == 2, f"CreateAgentVersion made version {version.version}, not 2")
    check(version.model == "gpt-4o", f"version 2 has model {version.model!r}")

    label = call(
        agents.SetAgentLabel,
        agent_pb2.SetAgentLabelRequest(
            agent_id=agent_id,
            label="production",
            versions=[versioning_pb2.WeightedVersion(version=version.version, weight=1)],
        ),
        token,
    ).label
    check(label.name == "production", f"SetAgentLabel answered label {label.name!r}")
    check([v.version for v in label.versions] == [2], f"production points at {label.versions}")

    resolved = call(
        agents.ResolveAgent,
        agent_pb2.ResolveAgentRequest(agent_id=agent_id, label="production", subject=user_id),
        token,
    )
    check(resolved.label == "production", f"ResolveAgent resolved label {resolved.label!r}")
    check(
        resolved.version.version == version.version,
        f"production resolved to version {resolved.version.version}, not {version.version}",
    )
    check(resolved.version.model == "gpt-4o", f"resolved model {resolved.version.model!r}")
    print(
        f"3. agent {agent_id}: versions 1 and {version.version}, "
        f"production -> version {resolved.version.version} ({resolved.version.model})"
    )

    # 4. A conversation with the agent: it records the version the agent's `production`
    #    label selected for it.
    current_step = "4 (CreateConversation)"
    conversation = call(
        conversations.CreateConversation,
        conversation_pb2.CreateConversationRequest(
            conversation=conversation_pb2.Conversation(agent_id=agent_id, title="Capitals"),
            request_id=new_request_id(),
        ),
        token,
    ).conversation
    conversation_id = conversation.id
    check(bool(conversation_id), "CreateConversation returned no id")
    check(conversation.agent_id == agent_id, f"conversation's agent {conversation.agent_id}")
    check(
        conversation.agent_version == version.version,
        f"conversation uses agent version {conversation.agent_version}, not {version.version}",
    )
    check(conversation.message_count == 0, f"a new conversation has {conversation.message_count} messages")
    print(f"4. conversation {conversation_id} with agent version {conversation.agent_version}")

    # 5. Watch the conversation live (a server stream) while appending to it. The watch asks
    #    for every message after sequence 0, stored or still to come, so it cannot miss the
    #    appended messages even if it starts after the append.
    current_step = "5 (WatchConversation + AppendMessages)"
    stream = conversations.WatchConversation(
        conversation_pb2.WatchConversationRequest(conversation_id=conversation_id, from_sequence=0),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=60,
    )
    received: queue.Queue = queue.Queue()

    def watch() -> None:
        # Iterating a server stream blocks, hence the thread; it hands each message (or the
        # error that ended the stream) to the main thread through the queue.
        try:
            for event in stream:
                received.put(event.message)
        except grpc.RpcError as err:
            received.put(err)

    watcher = threading.Thread(target=watch, name="watch-conversation", daemon=True)
    watcher.start()

    usage = conversation_pb2.TokenUsage(
        model="gpt-4o",
        provider="openai",
        prompt_tokens=1234,
        completion_tokens=56,
        cost=common_pb2.Decimal(value="0.0036450"),
    )
    appended = call(
        conversations.AppendMessages,
        conversation_pb2.AppendMessagesRequest(
            conversation_id=conversation_id,
            messages=[
                conversation_pb2.NewMessage(
                    role=conversation_pb2.ROLE_USER,
                    parts=[conversation_pb2.Part(text="What is the capital of France?")],
                ),
                # The answer carries the usage of the LLM call that produced it: the
                # content service bills it to analytics (step 6), exactly once.
                conversation_pb2.NewMessage(
                    role=conversation_pb2.ROLE_ASSISTANT,
                    parts=[conversation_pb2.Part(text="Paris.")],
                    usage=usage,
                ),
            ],
            request_id=new_request_id(),
        ),
        token,
    ).messages
    check(len(appended) == 2, f"AppendMessages returned {len(appended)} messages, not 2")
    question, answer = appended
    check([question.sequence, answer.sequence] == [1, 2], "sequences are not 1 and 2")
    check(answer.parent_id == question.id, "the answer's parent is not the question")
    check(answer.usage == usage, f"the answer's usage came back as {answer.usage}")

    seen = []
    give_up = time.monotonic() + DEADLINE_S
    while len(seen) < 2:
        try:
            item = received.get(timeout=max(0.0, give_up - time.monotonic()))
        except queue.Empty:
            raise Failed(f"the watcher got {len(seen)} of 2 messages within {DEADLINE_S:.0f} s") from None
        if isinstance(item, grpc.RpcError):
            raise Failed(f"the watch ended early: {item.code().name}: {item.details()}")
        seen.append(item)
    check(
        [(m.id, m.sequence) for m in seen] == [(m.id, m.sequence) for m in appended],
        f"the watcher got {[(m.id, m.sequence) for m in seen]}",
    )
    check(seen[1].usage == usage, "the watched answer lost its usage")
    stream.cancel()  # ends the stream (the watcher sees CANCELLED and returns)
    watcher.join(timeout=DEADLINE_S)
    check(not watcher.is_alive(), "the watcher did not stop after cancel()")
    print(
        f"5. appended messages {question.sequence} and {answer.sequence}; "
        f"the watch stream delivered both, then was cancelled"
    )

    # 6. Usage. Content ships each message's usage to analytics through an outbox (within a
    #    second or so), so poll the caller's own usage summary until it shows up.
    current_step = "6 (GetUsageSummary)"
    now = datetime.datetime.now(datetime.timezone.utc)
    summary_request = analytics_pb2.GetUsageSummaryRequest(
        # No scope: the caller's own usage.
        time_range=common_pb2.TimeRange(
            start_time=timestamp(now - datetime.timedelta(hours=1)),
            end_time=timestamp(now + datetime.timedelta(hours=1)),
        ),
        bucket_width=analytics_pb2.BUCKET_WIDTH_HOUR,
        group_by=analytics_pb2.GROUP_BY_MODEL,
    )
    started = time.monotonic()
    while True:
        summary = call(analytics.GetUsageSummary, summary_request, token)
        if summary.totals.request_count > 0:
            break
        check(
            time.monotonic() - started < USAGE_WAIT_S,
            f"no usage in analytics {USAGE_WAIT_S:.0f} s after the append",
        )
        time.sleep(0.5)
    totals = summary.totals
    check(totals.request_count == 1, f"{totals.request_count} requests billed, not 1")
    check(totals.tokens.prompt_tokens == usage.prompt_tokens, f"prompt tokens {totals.tokens.prompt_tokens}")
    check(
        totals.tokens.completion_tokens == usage.completion_tokens,
        f"completion tokens {totals.tokens.completion_tokens}",
    )
    check(
        totals.tokens.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"total tokens {totals.tokens.total_tokens}",
    )
    # Costs are exact decimals (text), never floats: compare them as decimals.
    check(
        decimal.Decimal(totals.cost.value) == decimal.Decimal(usage.cost.value),
        f"cost {totals.cost.value}, not {usage.cost.value}",
    )
    check(
        [b.model for b in summary.buckets] == ["gpt-4o"],
        f"buckets by model: {[b.model for b in summary.buckets]}",
    )
    print(
        f"6. usage after {time.monotonic() - started:.1f} s: {totals.request_count} request, "
        f"{totals.tokens.prompt_tokens}+{totals.tokens.completion_tokens}="
        f"{totals.tokens.total_tokens} tokens, ${totals.cost.value}"
    )

    # 7. INVALID_ARGUMENT. The server checks every field and names each bad one in a
    #    google.rpc.BadRequest (field paths as in the request), not just the first.
    current_step = "7 (INVALID_ARGUMENT)"
    try:
        call(
            agents.CreateAgent,
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="", type="Not A Type"),
                version=agent_pb2.AgentVersion(model="gpt-4o"),
            ),
            token,
        )
        raise Failed("CreateAgent with an empty name and a bad type succeeded")
    except grpc.RpcError as err:
        check(
            err.code() == grpc.StatusCode.INVALID_ARGUMENT,
            f"expected INVALID_ARGUMENT, got {err.code().name}: {err.details()}",
        )
        bad_request = detail(err, error_details_pb2.BadRequest)
        check(bad_request is not None, "INVALID_ARGUMENT without a google.rpc.BadRequest detail")
        fields = [v.field for v in bad_request.field_violations]
        print(f"7. CreateAgent refused: INVALID_ARGUMENT, {len(fields)} field violations:")
        for violation in bad_request.field_violations:
            print(f"   - {violation.field}: {violation.description}")
        for expected in ("agent.name", "agent.type"):
            check(expected in fields, f"BadRequest does not name {expected} (it names {fields})")

    # 8. RESOURCE_EXHAUSTED. SignUp and Login share a budget per client address (`sign_in`,
    #    10 a minute by default). Wrong passwords until the rate limiter refuses; then wait
    #    what RetryInfo says and log in properly.
    #
    #    The wrong passwords go to an address that has no account, not to ours: after 5
    #    failures the server locks an email (answering like a wrong password, plus RetryInfo)
    #    for 30 s and more, and our own login would then fail. The address is the same every
    #    run, so while it stays locked later runs' guesses are not counted as failures again:
    #    20 failures from one client address in 15 minutes would lock that whole address.
    current_step = "8 (RESOURCE_EXHAUSTED)"
    wrong = auth_pb2.LoginRequest(email="py-example-no-such-account@example.com", password="not the password")
    refused = None
    for attempt in range(1, MAX_LOGIN_ATTEMPTS + 1):
        try:
            auth.Login(wrong, timeout=DEADLINE_S)  # no retry helper: we want the refusal
            raise Failed("Login with a wrong password succeeded")
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused = err
                break
            check(
                err.code() == grpc.StatusCode.UNAUTHENTICATED,
                f"wrong password answered {err.code().name}: {err.details()}",
            )
    check(refused is not None, f"no RESOURCE_EXHAUSTED after {MAX_LOGIN_ATTEMPTS} wrong logins")
    delay = retry_delay_s(refused)
    check(delay is not None, "RESOURCE_EXHAUSTED without a google.rpc.RetryInfo detail")
    check(0 < delay <= MAX_WAIT_S, f"RetryInfo asks for {delay} s")
    quota = detail(refused, error_details_pb2.QuotaFailure)
    check(quota is not None and len(quota.violations) > 0, "RESOURCE_EXHAUSTED without a QuotaFailure")
    retry_after = dict(refused.trailing_metadata() or ()).get("retry-after")
    print(
        f"8. Login with a wrong password: {attempt - 1} x UNAUTHENTICATED, then "
        f"RESOURCE_EXHAUSTED with RetryInfo {delay:.3f} s (retry-after: {retry_after} s)"
    )
    for violation in quota.violations:
        # quota_id is the limit's name, subject whose budget it is (here: our address).
        print(
            f"   - limit {violation.quota_id!r} ({violation.quota_value} {violation.quota_metric}) "
            f"for {violation.subject}: {violation.description}"
        )
    limits = [v.quota_id for v in quota.violations]
    check(
        any(name in ("sign_in", "unauthenticated") for name in limits),
        f"QuotaFailure names the limits {limits}, not sign_in",
    )
    time.sleep(delay + 0.05)
    again = call(auth.Login, auth_pb2.LoginRequest(email=email, password=PASSWORD))
    check(again.user.id == user_id and bool(again.credentials.access_token), "Login after the wait failed")
    print(f"   after {delay:.1f} s: logged in again (session {again.credentials.session_id})")


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} HOST:PORT", file=sys.stderr)
        return 2
    target = sys.argv[1]
    try:
        # Leaving the `with` closes the channel, which also ends a stream left open by a
        # failed step.
        with grpc.insecure_channel(target) as channel:
            run(channel, target)
    except Failed as err:
        print(f"python example: FAILED at step {current_step}: {err}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(
            f"python example: FAILED at step {current_step}: {err.code().name}: {err.details()}",
            file=sys.stderr,
        )
        return 1
    print("python example: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
