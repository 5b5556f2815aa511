"""The LLM client against a local OpenAI-compatible stub server: completions, cache, retries, concurrency, errors."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.agent.llm_client import (
    PLACEHOLDER_API_KEY, ChatClient, EndpointConfig, LLMClientError, describe_endpoint, endpoint_from_env,
)
from tests.openai_stub import OpenAIStub, error_response, scripted

SECRET_KEY = "sk-test-secret-1234567890"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]


def make_client(stub: OpenAIStub, **settings) -> ChatClient:
    settings = {"model": "stub-model", "api_key": SECRET_KEY, "max_retries": 0, "timeout_s": 5.0, **settings}
    return ChatClient(EndpointConfig(base_url=stub.url, **settings))


def test_completion_returns_the_content_and_sends_model_messages_and_sampling():
    with OpenAIStub(lambda request: "Hi there.") as stub, make_client(stub) as client:
        assert client.complete(HELLO, temperature=0.7, max_tokens=64, seed=3, stop=["\n\n"]) == "Hi there."
        [sent] = stub.chat_requests
        assert sent["model"] == "stub-model" and sent["messages"] == HELLO
        assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["stop"]) == (0.7, 64, 3, ["\n\n"])
        assert stub.requests[0].headers["authorization"] == f"Bearer {SECRET_KEY}"
        assert client.stats.requests == 1 and client.stats.cache_hits == 0


def test_unset_seed_and_stop_are_not_sent():
    with OpenAIStub() as stub, make_client(stub) as client:
        assert client.complete(HELLO) == "echo: hello"
        assert "seed" not in stub.chat_requests[0] and "stop" not in stub.chat_requests[0]


def test_an_identical_call_is_served_from_disk_even_by_a_new_client(tmp_path):
    with OpenAIStub() as stub:
        with make_client(stub, cache_dir=tmp_path) as first:
            assert first.complete(HELLO) == "echo: hello"
        with make_client(stub, cache_dir=tmp_path) as rerun:
            assert rerun.complete(HELLO) == "echo: hello"
            assert rerun.stats.requests == 0 and rerun.stats.cache_hits == 1
        assert len(stub.chat_requests) == 1
        [entry] = tmp_path.glob("*/*/*.json")
        assert entry.parent.parent.name == entry.stem[:2] and entry.parent.name == entry.stem[2:4]


def test_a_different_temperature_is_a_cache_miss(tmp_path):
    with OpenAIStub() as stub, make_client(stub, cache_dir=tmp_path) as client:
        client.complete(HELLO, temperature=0.0)
        client.complete(HELLO, temperature=0.5)
        assert [r["temperature"] for r in stub.chat_requests] == [0.0, 0.5]
        assert client.stats.cache_hits == 0


def test_a_corrupt_cache_file_is_a_miss_and_is_repaired(tmp_path):
    with OpenAIStub(scripted("first", "second")) as stub, make_client(stub, cache_dir=tmp_path) as client:
        assert client.complete(HELLO) == "first"
        [entry] = tmp_path.glob("*/*/*.json")
        entry.write_text('{"content": "trunc')
        assert client.complete(HELLO) == "second"
        assert client.complete(HELLO) == "second"
        assert len(stub.chat_requests) == 2 and client.stats.cache_hits == 1
        assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("status", [500, 429])
def test_the_client_retries_server_errors_and_rate_limits(status):
    # retry-after-ms makes the openai client wait 1 ms instead of its 0.5 s, 1 s, ... backoff.
    failing = error_response(status, "try again", retry_after_ms=1)
    with OpenAIStub(scripted(failing, failing, "finally")) as stub, make_client(stub, max_retries=2) as client:
        assert client.complete(HELLO) == "finally"
        assert len(stub.chat_requests) == 3
        assert client.stats.retries == 2 and client.stats.failures == 0


@pytest.mark.parametrize("status, expected", [
    (500, "failed with 500: overloaded"),
    (429, r"answered 429 \(rate limit or quota\):"),
])
def test_without_retries_a_server_error_is_one_sentence(status, expected):
    failing = error_response(status, "overloaded", retry_after_ms=1)
    with OpenAIStub(scripted(failing, "too late")) as stub, make_client(stub, max_retries=0) as client:
        with pytest.raises(LLMClientError, match=expected) as raised:
            client.complete(HELLO)
        assert len(stub.chat_requests) == 1 and client.stats.failures == 1
        assert raised.value.__cause__ is None and "\n" not in str(raised.value)


def test_exhausted_retries_are_one_sentence_that_counts_them():
    with OpenAIStub(lambda request: error_response(503, "warming up", retry_after_ms=1)) as stub, \
            make_client(stub, max_retries=2) as client:
        with pytest.raises(LLMClientError) as raised:
            client.complete(HELLO)
        assert str(raised.value) == f"The endpoint at {stub.url} failed with 503 after 2 retries: warming up"
        assert len(stub.chat_requests) == 3 and client.stats.retries == 2


def test_complete_many_keeps_input_order_and_bounds_concurrency(tmp_path):
    prompts = [[{"role": "user", "content": f"prompt {i}"}] for i in range(12)]
    with OpenAIStub(latency_s=0.1) as stub, make_client(stub, max_concurrency=3, cache_dir=tmp_path) as client:
        replies = client.complete_many(prompts, progress=False)
    assert replies == [f"echo: prompt {i}" for i in range(12)]
    assert 1 < stub.max_in_flight <= 3
    assert len(stub.chat_requests) == 12
    # Parallel workers wrote whole entries and left no temporary files behind.
    assert len(list(tmp_path.glob("*/*/*.json"))) == 12 and not list(tmp_path.rglob("*.tmp"))


def test_complete_many_sends_duplicates_once_with_a_cache_and_resumes_from_it(tmp_path):
    prompts = [[{"role": "user", "content": text}] for text in ["a", "b", "a", "c"]]
    with OpenAIStub() as stub:
        with make_client(stub, cache_dir=tmp_path) as client:
            assert client.complete_many(prompts, progress=False) == ["echo: a", "echo: b", "echo: a", "echo: c"]
        assert len(stub.chat_requests) == 3
        with make_client(stub, cache_dir=tmp_path) as rerun:
            assert rerun.complete_many(prompts, progress=False, temperature=0.0)[2] == "echo: a"
            assert rerun.stats.requests == 0
        assert len(stub.chat_requests) == 3


def test_complete_many_stops_at_the_first_failure():
    def reply(request):
        return error_response(400, "bad prompt") if request.body["messages"][0]["content"] == "bad" else "ok"

    prompts = [[{"role": "user", "content": text}] for text in ["fine", "bad", "fine too"]]
    with OpenAIStub(reply) as stub, make_client(stub, max_concurrency=1) as client:
        with pytest.raises(LLMClientError, match=r"refused the request for model 'stub-model' \(400\): bad prompt"):
            client.complete_many(prompts, progress=False)


def test_a_rejected_key_is_one_sentence_without_the_key():
    with OpenAIStub(lambda request: error_response(401, f"Incorrect API key provided: {SECRET_KEY}.")) as stub, \
            make_client(stub, max_retries=3) as client:
        with pytest.raises(LLMClientError) as raised:
            client.complete(HELLO)
        assert str(raised.value) == f"The endpoint at {stub.url} rejected the API key (401): check OPENAI_API_KEY."
        assert len(stub.chat_requests) == 1  # a 401 is not retried


def test_an_unknown_model_names_the_model():
    with OpenAIStub(lambda request: error_response(404, "The model `nope` does not exist.")) as stub, \
            make_client(stub, model="nope") as client:
        with pytest.raises(LLMClientError, match=r"has no model 'nope' \(404\)"):
            client.complete(HELLO)


def test_a_refused_connection_is_one_sentence():
    with socket.socket() as probe:  # a port that was free a moment ago and has nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with ChatClient(EndpointConfig(base_url=url, max_retries=0, timeout_s=5.0)) as client:
        started = time.monotonic()
        with pytest.raises(LLMClientError) as raised:
            client.complete(HELLO)
    assert str(raised.value).startswith(f"Could not reach {url}: is the server running?")
    assert raised.value.__cause__ is None and time.monotonic() - started < 5


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_variables_means_the_offline_generator(clean_env):
    assert endpoint_from_env() is None
    assert describe_endpoint(None) == "No OPENAI_API_KEY set: using the offline generator."


def test_a_base_url_alone_gets_the_placeholder_key(clean_env):
    clean_env.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")
    config = endpoint_from_env(cache_dir=Path("data/cache"), max_concurrency=8)
    assert (config.base_url, config.api_key) == ("http://localhost:8000/v1", PLACEHOLDER_API_KEY)
    assert config.model == "gpt-4o"
    assert config.max_concurrency == 8
    assert describe_endpoint(config) == "Using gpt-4o at http://localhost:8000/v1 (cache: data/cache)."


def test_the_key_never_appears_in_the_description(clean_env):
    clean_env.setenv("OPENAI_API_KEY", SECRET_KEY)
    clean_env.setenv("OPENAI_MODEL", "gpt-4o-mini")
    config = endpoint_from_env()
    assert config.api_key == SECRET_KEY and config.model == "gpt-4o-mini"
    assert describe_endpoint(config) == "Using gpt-4o-mini at https://api.openai.com/v1 (no cache)."
    assert SECRET_KEY not in repr(config)
    assert endpoint_from_env(model="llama3").model == "llama3"


def test_importing_the_module_does_not_load_openai():
    code = "import sys, helpers.agent.llm_client; print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "False", result.stderr
