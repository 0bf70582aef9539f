"""tinyqmoe serve through the official openai client: a tiny random Llama served on 127.0.0.1."""
import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("transformers")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from serve_helpers import get, load_tiny, post, serving, wait_until, write_tiny_tqm  # noqa: E402
from tinyqmoe.serve.scheduler import PREFILL_CHUNK  # noqa: E402

LONG = 4000   # tokens a generation needs: far more steps than any test waits for


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = load_tiny(write_tiny_tqm(tmp_path_factory.mktemp("serve")))
    yield m
    m.close()


@pytest.fixture(scope="module")
def server(model):
    with serving(model, parallel=4) as (srv, client):
        srv.client = client
        srv.model_id = client.models.list().data[0].id
        yield srv


def complete(srv, **kw):
    kw.setdefault("model", srv.model_id)
    kw.setdefault("temperature", 0)
    return srv.client.completions.create(**kw)


def chat(srv, content="Hello there", **kw):
    kw.setdefault("model", srv.model_id)
    kw.setdefault("temperature", 0)
    return srv.client.chat.completions.create(messages=[{"role": "user", "content": content}], **kw)


def streamed_text(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join((c.choices[0].delta.content or "") if c.object == "chat.completion.chunk" else c.choices[0].text
                   for c in chunks if c.choices)
    return text, chunks


# ---------------------------------------------------------------- the endpoints
def test_models_and_health(server, model):
    ids = [m.id for m in server.client.models.list().data]
    assert ids == ["tiny.tqm"]
    status, body = get(server, "/health")
    assert status == 200 and body["status"] == "ok" and body["parallel"] == 4
    assert server.client.models.retrieve("tiny.tqm").id == "tiny.tqm"
    assert complete(server, model=model.name, prompt="a", max_tokens=1).model == model.name  # the path works too


def test_completion_shape_usage_and_max_tokens(server, model):
    r = complete(server, prompt="The capital of France is", max_tokens=12)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].finish_reason == "length"
    n_prompt = len(model.tokenizer.encode("The capital of France is"))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (n_prompt, 12, n_prompt + 12)
    ids = model.tokenizer.encode("The capital of France is")
    assert r.choices[0].text == model.tokenizer.decode(list(model.stream_ids(ids, max_new_tokens=12)))
    assert complete(server, prompt="x").usage.completion_tokens == 16    # OpenAI's default max_tokens


def test_chat_shape_and_template(server, model):
    r = chat(server, max_tokens=8)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(model.tokenizer.encode_chat([{"role": "user", "content": "Hello there"}]))
    assert r.usage.completion_tokens == 8
    r2 = chat(server, max_completion_tokens=5)
    assert r2.usage.completion_tokens == 5


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_streaming_equals_the_whole_answer(server, kind):
    call = (lambda **kw: chat(server, **kw)) if kind == "chat" else (lambda **kw: complete(server, prompt="Llamas", **kw))
    whole = call(max_tokens=20)
    text, chunks = streamed_text(call(max_tokens=20, stream=True, stream_options={"include_usage": True}))
    expected = whole.choices[0].message.content if kind == "chat" else whole.choices[0].text
    assert text == expected
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])
    if kind == "chat":
        assert chunks[0].choices[0].delta.role == "assistant"
    plain, plain_chunks = streamed_text(call(max_tokens=20, stream=True))
    assert plain == expected and plain_chunks[-1].choices[0].finish_reason == "length"


def test_stream_ends_with_done(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 3, "stream": True}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    data = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    conn.close()
    assert data[-1] == "[DONE]" and json.loads(data[-2])["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings(server, stream):
    full = complete(server, prompt="The capital of Italy", max_tokens=40).choices[0].text
    stop = full[15:18]
    assert len(stop) == 3
    expected = full[: full.find(stop)]
    if stream:
        text, chunks = streamed_text(complete(server, prompt="The capital of Italy", max_tokens=40, stop=[stop, "\x07\x07"],
                                              stream=True))
        finish = chunks[-1].choices[0].finish_reason
        assert all(stop not in (c.choices[0].text or "") for c in chunks)
    else:
        r = complete(server, prompt="The capital of Italy", max_tokens=40, stop=stop)
        text, finish = r.choices[0].text, r.choices[0].finish_reason
    assert text == expected and finish == "stop"


def test_seed_reproducible(server):
    def sampled(seed):
        return complete(server, prompt="Once", max_tokens=24, temperature=1.0, seed=seed).choices[0].text

    assert sampled(7) == sampled(7)
    assert len({sampled(s) for s in (1, 2, 3, 4)}) > 1


# ---------------------------------------------------------------- errors
def error_of(status_body):
    status, body = status_body
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return status, body["error"]


def test_malformed_requests_are_400(server):
    assert error_of(post(server, "/v1/chat/completions", b"{not json"))[0] == 400
    assert error_of(post(server, "/v1/chat/completions", {"messages": "hi"}))[0] == 400
    assert error_of(post(server, "/v1/completions", {"prompt": ["a", "b"]}))[0] == 400
    assert error_of(post(server, "/v1/completions", {"prompt": "a", "max_tokens": 0}))[0] == 400
    assert error_of(post(server, "/v1/completions", {"prompt": "a", "stream_options": {"include_usage": True}}))[0] == 400
    for bad in ({"temperature": 5}, {"top_p": 0}, {"seed": -3}, {"stop": [1]}, {"stream": "yes"}):
        with pytest.raises(openai.BadRequestError):
            complete(server, prompt="a", **bad)


@pytest.mark.parametrize("field", [{"n": 2}, {"logprobs": True}, {"tools": [{"type": "function",
                                   "function": {"name": "f", "parameters": {}}}]}])
def test_unsupported_fields_are_refused(server, field):
    with pytest.raises(openai.BadRequestError, match=next(iter(field))):
        chat(server, max_tokens=2, **field)
    assert chat(server, max_tokens=2, n=1, logprobs=False).usage.completion_tokens == 2


def test_prompt_longer_than_the_context_is_400_with_the_numbers(server, model):
    ctx = model.max_context
    with pytest.raises(openai.BadRequestError) as e:
        complete(server, prompt=[5] * (ctx + 10), max_tokens=1)
    assert str(ctx) in str(e.value) and str(ctx + 10) in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        complete(server, prompt=[5] * 100, max_tokens=ctx)
    assert str(ctx) in str(e.value) and str(100 + ctx) in str(e.value)


def test_unknown_model_is_404_and_unknown_route_too(server):
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        complete(server, model="gpt-4o", prompt="a")
    assert error_of(post(server, "/v1/nothing", {}))[0] == 404


def test_api_key(model):
    with serving(model, api_key="sesame") as (srv, client):
        assert client.completions.create(model="tiny.tqm", prompt="a", max_tokens=2).usage.completion_tokens == 2
        wrong = openai.OpenAI(base_url=srv.url + "/v1", api_key="guess", max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError):
            wrong.completions.create(model="tiny.tqm", prompt="a", max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        assert error_of(post(srv, "/v1/completions", {"prompt": "a"}))[0] == 401      # no header at all
        assert get(srv, "/health")[0] == 200


# ---------------------------------------------------------------- batching
REQUESTS = [  # (prompt, max_tokens, temperature, seed): short and chunked prompts, greedy and seeded
    ("Hi", 30, 0, None),
    ("The capital of France is Paris. The capital of Italy is", 25, 0, None),
    ("Question: What is two plus two?\nAnswer: " * 3, 40, 0, None),
    ("Llamas", 12, 0.9, 11),
    ("0123456789 numbers, punctuation!", 35, 0, None),
    ("café", 20, 0.7, 5),
    ("Llamas live in the Andes; they are related to camels and alpacas. " * 4, 30, 0, None),
]


def test_batched_outputs_equal_unbatched(server):
    def run(req):
        prompt, n, temperature, seed = req
        return complete(server, prompt=prompt, max_tokens=n, temperature=temperature, seed=seed).choices[0].text

    scheduler = server.app.state.served.scheduler
    s0 = scheduler.steps
    alone = [run(r) for r in REQUESTS]
    s1 = scheduler.steps
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        together = list(pool.map(run, REQUESTS))
    s2 = scheduler.steps
    assert together == alone
    assert s2 - s1 < s1 - s0     # the concurrent requests did share steps


def test_chat_turn_reuses_the_previous_cache_with_the_same_answer(server, model):
    scheduler = server.app.state.served.scheduler
    turn1 = [{"role": "user", "content": "Tell me about llamas"}]
    reply = chat(server, content=turn1[0]["content"], max_tokens=10).choices[0].message.content
    turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And alpacas?"}]
    before = scheduler.reused_tokens
    r = server.client.chat.completions.create(model=server.model_id, messages=turn2, max_tokens=10, temperature=0)
    whole_chunks = len(model.tokenizer.encode_chat(turn1)) // PREFILL_CHUNK * PREFILL_CHUNK
    assert whole_chunks > 0 and scheduler.reused_tokens - before == whole_chunks
    with serving(model, keep_caches=0) as (_, fresh):
        r_fresh = fresh.chat.completions.create(model=server.model_id, messages=turn2, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == r_fresh.choices[0].message.content


# ---------------------------------------------------------------- clients that go away, a full queue
@pytest.fixture()
def one_slot(model):
    with serving(model, parallel=1, queue=0) as (srv, client):
        srv.scheduler = srv.app.state.served.scheduler
        srv.client = client
        yield srv


def start_long_stream(srv):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "Once", "max_tokens": LONG, "stream": True}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")   # the first token is out: the sequence holds the slot
    return conn, r


def test_disconnected_stream_frees_its_slot(one_slot):
    conn, _ = start_long_stream(one_slot)
    assert one_slot.scheduler.counts()["active"] == 1
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert wait_until(lambda: one_slot.scheduler.counts()["active"] == 0, timeout=30)
    assert one_slot.scheduler.steps < LONG // 2          # cancelled, not run to the end
    assert one_slot.client.completions.create(model="tiny.tqm", prompt="a", max_tokens=3).usage.completion_tokens == 3


def test_disconnected_plain_request_frees_its_slot(one_slot):
    conn = http.client.HTTPConnection(one_slot.host, one_slot.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "Once", "max_tokens": LONG}),
                 {"Content-Type": "application/json"})
    assert wait_until(lambda: one_slot.scheduler.steps > 5, timeout=30)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert wait_until(lambda: one_slot.scheduler.counts()["active"] == 0, timeout=30)
    assert one_slot.scheduler.steps < LONG // 2


def test_full_queue_is_503_and_others_are_undisturbed(one_slot):
    conn, stream = start_long_stream(one_slot)
    with pytest.raises(openai.InternalServerError) as e:
        one_slot.client.completions.create(model="tiny.tqm", prompt="a", max_tokens=3)
    assert e.value.status_code == 503
    status, err = error_of(post(one_slot, "/v1/completions", {"bad": 1, "prompt": 3}))
    assert status == 400
    lines = [stream.readline() for _ in range(20)]     # the running stream still flows
    assert sum(line.startswith(b"data: {") for line in lines) >= 9
    conn.close()


def test_message_content_parts_and_roles(server):
    plain = chat(server, content="Hello there", max_tokens=6).choices[0].message.content
    parts = server.client.chat.completions.create(
        model=server.model_id, max_tokens=6, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}])
    assert parts.choices[0].message.content == plain
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    for messages in ([{"role": "user", "content": image}], [{"role": "robot", "content": "hi"}], []):
        with pytest.raises(openai.BadRequestError):
            server.client.chat.completions.create(model=server.model_id, messages=messages, max_tokens=2)
