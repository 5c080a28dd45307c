"""The OpenAI-compatible chat server: real HTTP requests against a tiny model on a free port.

One server (tiny random model, API key) serves the module; generation is deterministic with temperature 0 or a
seed, so streaming and non-streaming replies can be compared exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from nbtoolkit.errors import ModelError
from nbtoolkit.models import DEFAULT_MODEL, tiny_model
from nbtoolkit.serve import (
    InferenceError,
    InferenceStream,
    LocalServer,
    ServeConfig,
    ServeError,
    invoke_inference,
    resolve_serving_target,
)
from nbtoolkit.serve.client import chat_url, normalize_messages
from nbtoolkit.serve.responses import events_from_json, events_from_lines
from nbtoolkit.serve.engine import ChatEngine, Completion, GenerationSettings, RequestError, load_serving_model

KEY = "nbt-test-key-3f9a7c1e"
SAMPLED = {"temperature": 1.0, "seed": 7}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(seed=0, vocab_from=None).save(tmp_path_factory.mktemp("served") / "sft-run" / "model")


@pytest.fixture(scope="module")
def server(model_dir):
    with LocalServer.start(str(model_dir.parent), port=0, api_key=KEY, max_tokens_limit=64,
                           default_max_tokens=16) as running:
        yield running


def post(server, body, *, key: str | None = KEY, path: str = "/v1/chat/completions", raw: bytes | None = None):
    """(status, headers, body bytes) of a POST; HTTP errors are returned, not raised."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get(server, path: str, *, key: str | None = KEY):
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def sse_events(body: bytes) -> list[str]:
    """The data payloads of a server-sent event stream, checking the framing (data lines, blank separators)."""
    text = body.decode()
    assert text.endswith("\n\n"), "every event ends with a blank line"
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block[len("data: "):])
    return events


def chat(content: str = "Classify: is this question good?", **more):
    return {"messages": [{"role": "system", "content": "Answer with one word."},
                         {"role": "user", "content": content}], **more}


# ---------------------------------------------------------------- routes and responses


def test_models_route_lists_the_run_directory_name(server):
    status, body = get(server, "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["sft-run"] and body["data"][0]["object"] == "model"
    assert get(server, "/v1/models/sft-run")[1]["id"] == "sft-run"
    status, body = get(server, "/v1/models/other")
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_non_streaming_completion_has_the_openai_shape(server):
    status, headers, raw = post(server, chat(max_tokens=6, temperature=0, model="sft-run"))
    assert status == 200 and headers["content-type"].startswith("application/json")
    body = json.loads(raw)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "sft-run"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 6 and usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = json.loads(post(server, chat(max_tokens=6, temperature=0))[2])
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"], "greedy is deterministic"


def test_streaming_sends_chunks_then_done_and_matches_the_whole_reply(server):
    whole = json.loads(post(server, chat(max_tokens=12, **SAMPLED))[2])
    status, headers, raw = post(server, chat(max_tokens=12, stream=True, stream_options={"include_usage": True},
                                             **SAMPLED))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "sft-run" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1, "one id for the whole stream"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    text = whole["choices"][0]["message"]["content"]
    assert text.strip() and len(set(text)) > 2, f"a seeded sample of the tiny model should vary, got {text!r}"
    assert "".join(content) == text
    assert sum(1 for piece in content if piece) >= 2, "text arrives in several chunks"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_invoke_inference_against_the_server_streaming_and_not(server):
    result = invoke_inference(server, "Hello", max_tokens=10, temperature=1.0, extra={"seed": 3})
    assert result.text and result.usage["completion_tokens"] >= 1 and result.model == "sft-run"
    stream = invoke_inference(server, "Hello", stream=True, max_tokens=10, temperature=1.0, extra={"seed": 3})
    assert isinstance(stream, InferenceStream)
    pieces = list(stream)
    assert "".join(pieces) == result.text and len(pieces) >= 2
    streamed = stream.result()
    assert streamed.finish_reason == result.finish_reason and streamed.usage == result.usage
    assert streamed.time_to_first_token is not None and 0 < streamed.time_to_first_token <= streamed.seconds
    # the same server through its URL, /v1 URL and full route
    for url in (server.url, server.url + "/v1", server.url + "/v1/chat/completions"):
        assert invoke_inference(url, "Hello", api_key=KEY, max_tokens=10, temperature=1.0,
                                extra={"seed": 3}).text == result.text


def test_stop_strings_end_the_reply_without_sending_them(server):
    text = invoke_inference(server, "Hello", max_tokens=16, temperature=1.0, extra={"seed": 11}).text
    assert len(text) >= 6, text
    stop = text[3:5]
    cut = text[:text.find(stop)]
    stopped = invoke_inference(server, "Hello", max_tokens=16, temperature=1.0, stop=[stop], extra={"seed": 11})
    assert stopped.text == cut and stopped.finish_reason == "stop"
    stream = invoke_inference(server, "Hello", stream=True, max_tokens=16, temperature=1.0, stop=stop,
                              extra={"seed": 11}).result()
    assert stream.text == cut and stream.finish_reason == "stop"


# ---------------------------------------------------------------- auth and bad requests


def test_requests_without_the_api_key_get_401(server):
    for key in (None, "wrong-key"):
        status, _, raw = post(server, chat(max_tokens=2), key=key)
        assert status == 401
        error = json.loads(raw)["error"]
        assert error["code"] == "invalid_api_key" and KEY not in raw.decode()
    assert get(server, "/v1/models", key=None)[0] == 401
    assert get(server, "/health", key=None) == (200, {"status": "ok"})
    with pytest.raises(InferenceError, match="HTTP 401") as caught:
        invoke_inference(server.url, "Hi", api_key="wrong-key")
    assert caught.value.status == 401
    # x-api-key works too (some clients send that header)
    request = urllib.request.Request(server.url + "/v1/models", headers={"x-api-key": KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


@pytest.mark.parametrize(("body", "status", "param", "message"), [
    ({"messages": []}, 400, "messages", "at least 1"),
    ({}, 400, "messages", "required"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", "system"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, 400, "temperature", "less than or equal"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, 400, "top_p", "greater than"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens", "greater than"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000}, 400, "max_tokens", "limit of 64"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n", "n must be 1"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "messages", "last message"),
    ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}, 404, "model", "not served here"),
])
def test_bad_requests_get_an_openai_error_naming_the_field(server, body, status, param, message):
    got, _, raw = post(server, body)
    assert got == status, raw
    error = json.loads(raw)["error"]
    assert error["param"] == param and message in error["message"] and error["type"]


def test_invalid_json_and_unknown_routes(server):
    status, _, raw = post(server, None, raw=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(raw)["error"]["message"]
    status, body = get(server, "/v1/nothing-here")
    assert status == 404 and body["error"]["type"] == "not_found_error"


def test_a_prompt_longer_than_the_context_window_is_refused(model_dir):
    engine = ChatEngine(load_serving_model(model_dir), "tiny")
    engine.context_length = 20
    with pytest.raises(RequestError, match="context window is 20") as caught:
        engine.complete([{"role": "user", "content": "word " * 40}], GenerationSettings(max_tokens=4))
    assert caught.value.code == "context_length_exceeded"
    prompt = engine.encode([{"role": "user", "content": "hi"}])
    assert engine.check(prompt, GenerationSettings(max_tokens=50)).max_tokens == 20 - len(prompt)


# ---------------------------------------------------------------- one generation at a time


def test_generation_holds_the_lock_until_done_or_closed(model_dir):
    engine = ChatEngine(load_serving_model(model_dir), "tiny")
    prompt = engine.encode([{"role": "user", "content": "Hello"}])
    completion = Completion()
    pieces = engine.stream(prompt, GenerationSettings(max_tokens=400, temperature=1.0, seed=1), completion)
    next(pieces)
    assert engine.lock.locked(), "a second request waits while this one generates"
    pieces.close()  # the client went away
    deadline = time.monotonic() + 30
    while engine.lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.lock.locked(), "closing the stream stops generation and frees the model"
    done = engine.complete([{"role": "user", "content": "Hello"}], GenerationSettings(max_tokens=3, temperature=0))
    assert done.completion_tokens <= 3 and not engine.lock.locked()


def test_concurrent_requests_are_served_one_after_the_other(server):
    expected = invoke_inference(server, "Hello", max_tokens=8, temperature=0).text
    results, errors = [], []

    def ask():
        try:
            results.append(invoke_inference(server, "Hello", max_tokens=8, temperature=0).text)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and results == [expected] * 3


# ---------------------------------------------------------------- what gets served


def test_serving_targets_resolve_run_dirs_adapters_and_the_embedded_model(tmp_path, model_dir):
    assert resolve_serving_target("embedded") == (DEFAULT_MODEL, None)
    assert resolve_serving_target(model_dir.parent) == (str(model_dir.parent), None)
    adapter = tmp_path / "stopped-run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model_dir)}))
    assert resolve_serving_target(adapter.parent) == (str(model_dir), adapter)
    assert resolve_serving_target(adapter) == (str(model_dir), adapter)
    pipeline = tmp_path / "pipeline"
    (pipeline / "jobs" / "sft-1" / "model").mkdir(parents=True)
    (pipeline / "jobs" / "sft-1" / "model" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="holds no model.*jobs/sft-1"):
        resolve_serving_target(pipeline)


def test_base_model_plus_lora_adapter_is_served_merged(tmp_path, model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from nbtoolkit.models import load_model

    base = load_model(model_dir)
    peft_model = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        plain = load_model(model_dir).model(ids).logits
    served = load_serving_model(tmp_path / "adapter")
    with torch.no_grad():
        got = served.model(ids).logits
    assert not torch.allclose(plain, expected, atol=1e-4), "the adapter changes the model"
    assert torch.allclose(got, expected, atol=1e-4)


# ---------------------------------------------------------------- server lifecycle and the CLI


def test_config_checks_and_the_key_never_shows(model_dir):
    config = ServeConfig(model=str(model_dir), api_key=KEY)
    assert KEY not in repr(config) and config.is_private
    assert not ServeConfig(host="0.0.0.0").is_private
    for bad in ({"port": 70000}, {"host": ""}, {"api_key": " "}, {"default_max_tokens": 5000}):
        with pytest.raises(ValueError):
            ServeConfig(**bad)


def test_a_taken_port_is_a_clear_error(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is in use"):
            LocalServer.start(str(model_dir), port=port)
        out = subprocess.run([sys.executable, "-m", "nbtoolkit.cli", "serve", str(model_dir), "--port", str(port)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "is in use" in out.stderr


def test_cli_serve_answers_over_http_and_stops_on_ctrl_c(model_dir):
    env = {**os.environ, "NBTOOLKIT_SERVE_API_KEY": KEY}
    process = subprocess.Popen([sys.executable, "-m", "nbtoolkit.cli", "serve", str(model_dir.parent), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = process.stdout.readline()
        while line and "serving" not in line:
            line = process.stdout.readline()
        assert "http://127.0.0.1:" in line and "API key required" in line and KEY not in line, line
        url = line.split(" at ", 1)[1].split()[0]
        result = invoke_inference(url, "Hello", api_key=KEY, max_tokens=4, temperature=0)
        assert result.model == "sft-run" and result.usage["completion_tokens"] >= 1
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0, rest
    assert KEY not in rest


def test_unreachable_server_and_bad_messages_are_clear_errors():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InferenceError, match="cannot reach .*is the server running"):
        invoke_inference(f"http://127.0.0.1:{port}", "hi", timeout=5)
    with pytest.raises(ValueError, match=r"messages\[1\]: role 'robot'"):
        normalize_messages([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    with pytest.raises(ValueError, match="neither a URL"):
        invoke_inference("not a valid name!", "hi")


# ---------------------------------------------------------------- reading streams from other servers


def test_stream_parser_handles_split_lines_and_other_servers_formats():
    chunk = lambda text, finish=None: json.dumps(  # noqa: E731
        {"object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]})
    raw = (f"data: {chunk('Hel')}\n\n: keep-alive\n\ndata: {chunk('lo')}\n\ndata: {chunk(None, 'stop')}\n\n"
           "data: [DONE]\n\n").encode()
    for size in (1, 3, 7, len(raw)):
        events = list(events_from_lines(raw[i:i + size] for i in range(0, len(raw), size)))
        assert [v for k, v in events if k == "text"] == ["Hel", "lo"] and ("finish", "stop") in events
    tgi = b'data:{"token":{"text":"HQ","special":false}}\n\ndata:{"token":{"text":"</s>","special":true},' \
          b'"generated_text":"HQ","details":{"finish_reason":"eos_token"}}\n\n'
    assert [e for e in events_from_lines([tgi]) if e[0] in ("text", "finish")] == [("text", "HQ"), ("finish", "stop")]
    jsonl = b'{"choices":[{"delta":{"content":"a"}}]}\n{"choices":[{"delta":{"content":"b"}}]}'
    assert [v for k, v in events_from_lines([jsonl]) if k == "text"] == ["a", "b"]
    with pytest.raises(InferenceError, match="overloaded"):
        list(events_from_json({"error": {"message": "overloaded", "type": "server_error"}}))
    assert chat_url("http://h:1/") == "http://h:1/v1/chat/completions"


# ---------------------------------------------------------------- sampling defaults


def test_models_route_shows_the_sampling_a_request_gets_when_it_sets_none(server):
    card = get(server, "/v1/models")[1]["data"][0]
    # The tiny test model recommends nothing: the OpenAI API defaults, said so.
    assert card["sampling_defaults"]["temperature"] == 1.0 and "OpenAI" in card["sampling_defaults"]["source"]


def test_unset_sampling_uses_the_models_generation_config_then_the_registry(tmp_path, model_dir):
    from nbtoolkit.models import recommended_sampling, resolve_model

    loaded = load_serving_model(model_dir)
    loaded.model.generation_config.temperature, loaded.model.generation_config.top_p = 0.3, 0.8
    engine = ChatEngine(loaded, "tuned")
    assert engine.sampling == {"temperature": 0.3, "top_p": 0.8, "source": "the model's generation_config"}
    settings = engine.settings(max_tokens=5)
    assert (settings.temperature, settings.top_p, settings.max_tokens) == (0.3, 0.8, 5)
    explicit = engine.settings(max_tokens=5, temperature=0, top_p=1.0)
    assert (explicit.temperature, explicit.top_p) == (0, 1.0)  # a request's own values always win

    # SmolLM2's generation_config sets no sampling; the registry carries its model card's 0.2 / 0.9.
    plain = load_serving_model(model_dir)
    plain.spec = resolve_model(DEFAULT_MODEL)
    assert recommended_sampling(plain)[("temperature")] == 0.2 and recommended_sampling(plain)["top_p"] == 0.9
    assert ChatEngine(plain, "smollm2").settings().temperature == 0.2
