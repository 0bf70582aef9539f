"""tinyqmoe serve on the default model (SmolLM2-135M-Instruct), through the openai client."""
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from serve_helpers import serving  # noqa: E402

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Name a large animal.", "Say hello in Spanish."]


@pytest.fixture(scope="module")
def served():
    import tinyqmoe

    model = tinyqmoe.load("default", threads=2)
    with serving(model, parallel=3) as (srv, client):
        yield model, client
    model.close()


def ask(client, question, **kw):
    return client.chat.completions.create(model="default", messages=[{"role": "user", "content": question}],
                                          max_tokens=24, temperature=0, **kw)


def test_chat_answers_and_streams_the_same(served):
    model, client = served
    r = ask(client, QUESTIONS[0])
    assert r.usage.prompt_tokens == len(model.tokenizer.encode_chat([{"role": "user", "content": QUESTIONS[0]}]))
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, QUESTIONS[0], stream=True) if c.choices)
    assert streamed == r.choices[0].message.content


def test_batched_greedy_equals_alone(served):
    _, client = served
    alone = [ask(client, q).choices[0].message.content for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: ask(client, q).choices[0].message.content, QUESTIONS))
    assert together == alone
    assert all(alone)
