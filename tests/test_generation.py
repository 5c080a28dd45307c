"""Batched greedy generation: the same replies as one model.generate call per prompt, whatever the batching."""

import pytest
import torch

from nbtoolkit.generation import encode_prompts, generate_replies, shared_prefix_length
from nbtoolkit.models import answer_terminator_ids, tiny_model

SYSTEM = "Classify the question as HQ, LQ_EDIT or LQ_CLOSE. Answer with the label only."


@pytest.fixture(scope="module")
def tiny():
    """The tiny model with large random weights: its greedy replies vary with the prompt (the default
    initialisation answers every prompt with one repeated token, which would hide misaligned rows)."""
    return tiny_model(seed=5, vocab_from=None, weight_std=0.3)


def reference_replies(loaded, conversations, max_new_tokens, stop=None):
    """One unpadded model.generate per prompt: the behaviour batching must not change."""
    tokenizer = loaded.tokenizer
    stop = stop or list({*answer_terminator_ids(tokenizer), tokenizer.eos_token_id})
    replies = []
    for ids in encode_prompts(tokenizer, conversations, 512):
        input_ids = torch.tensor([ids])
        output = loaded.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop,
                                       pad_token_id=loaded.pad_token_id, temperature=None, top_p=None, top_k=None)
        new = output[0, len(ids):].tolist()
        ended = next((k for k, token in enumerate(new) if token in stop), None)
        replies.append((tokenizer.decode(new[:ended], skip_special_tokens=True).strip(), ended is None))
    return replies


def conversations(system: str | None, n: int = 7):
    questions = [f"question {i}: " + "why does this loop " * (i * 3 % 7) for i in range(n)]
    return [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
            for q in questions]


@pytest.mark.parametrize("system", [SYSTEM, None], ids=["shared-system-prompt", "no-system-prompt"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_replies_match_per_prompt_generate(tiny, one_torch_thread, system, batch_size):
    chats = conversations(system)
    expected = reference_replies(tiny, chats, max_new_tokens=6)
    replies = generate_replies(tiny, chats, max_new_tokens=6, batch_size=batch_size, progress=False)
    assert [(r.text, r.truncated) for r in replies] == expected
    assert all(r.n_tokens <= 6 for r in replies)


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(tiny, one_torch_thread, monkeypatch):
    import nbtoolkit.generation as generation

    chats = conversations(SYSTEM, n=12)
    free = []
    for ids in encode_prompts(tiny.tokenizer, chats, 512):
        output = tiny.model.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=12,
                                     pad_token_id=tiny.pad_token_id, temperature=None, top_p=None, top_k=None)
        free.append(output[0, len(ids):].tolist())
    # A token some replies produce mid-way becomes the terminator, so rows finish at different steps.
    rows_with = {t: sum(t in ids for ids in free) for ids in free for t in ids}
    stop_token = max((t for t in rows_with if rows_with[t] < len(free)), key=rows_with.get)
    monkeypatch.setattr(generation, "answer_terminator_ids", lambda tokenizer: [stop_token])
    replies = generate_replies(tiny, chats, max_new_tokens=12, batch_size=12, progress=False)
    stop = [stop_token, tiny.tokenizer.eos_token_id]
    assert [(r.text, r.truncated) for r in replies] == reference_replies(tiny, chats, 12, stop)
    assert {r.truncated for r in replies} == {True, False}
    assert len({r.n_tokens for r in replies}) > 2


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[1, 2], [3, 4]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 0


def test_group_sampling_with_top_k_1_is_greedy_for_every_row(tiny):
    from nbtoolkit.generation import sample_groups

    conversations = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]
                     for text in ("hello there", "what is the time now in the city", "a", "tell me more please")]
    greedy = generate_replies(tiny, conversations, max_new_tokens=5, max_prompt_tokens=None, progress=False)
    groups = sample_groups(tiny, conversations, n=3, temperature=1.0, top_k=1, max_new_tokens=5,
                           batch_size=3)
    assert [len(group) for group in groups] == [3, 3, 3, 3]
    for group, reply in zip(groups, greedy):
        assert {text for text, _ in group} == {reply.text}
        assert all(hit == reply.truncated for _, hit in group)


def test_group_sampling_varies_within_a_group_and_repeats_with_the_seed(tiny):
    from nbtoolkit.generation import sample_groups

    conversations = [[{"role": "user", "content": "say something"}]] * 2
    first = sample_groups(tiny, conversations, n=6, temperature=2.0, max_new_tokens=4, seed=3)
    again = sample_groups(tiny, conversations, n=6, temperature=2.0, max_new_tokens=4, seed=3)
    assert first == again
    assert len({text for text, _ in first[0]}) > 1


def test_the_progress_bar_moves_at_every_decoding_step_not_once_per_batch(tiny, one_torch_thread, monkeypatch):
    import nbtoolkit.generation as generation

    bars = []

    class RecordingBar:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.updates = total, 0, []
            bars.append(self)

        def update(self, n):
            self.n += n
            self.updates.append(self.n)

        def set_postfix_str(self, text):
            self.postfix = text

        def close(self):
            pass

    monkeypatch.setattr(generation, "tqdm", RecordingBar)
    chats = conversations(SYSTEM, n=4)
    generate_replies(tiny, chats, max_new_tokens=6, batch_size=4)  # one batch
    bar = bars[0]
    assert bar.total == 4 * 6 and bar.n == bar.total and bar.postfix.startswith("4/4 samples")
    assert len(bar.updates) > 2 and bar.updates == sorted(bar.updates)  # several moves within the one batch
