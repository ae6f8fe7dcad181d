"""The audit's persona-vector projections (workbench.diffing.persona_shift) on fake models whose fine-tune moves
the residual stream along a planted direction: the trait along it is ranked first and called moved; a change
orthogonal to every trait moves none."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from workbench.diffing.persona_shift import moved_trait, persona_shifts, prompt_residuals

D, VOCAB, LAYER = 64, 50, 3
HOOK = f"blocks.{LAYER}.hook_resid_post"


class _Tokenizer:
    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<user> " + messages[-1]["content"] + (" <assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [sum(map(ord, w)) % VOCAB for w in text.split()]}


class _Model:
    """A residual stream that is an embedding of the token plus a fixed ``shift`` (the fine-tune's change)."""

    def __init__(self, embed, shift):
        self.tokenizer, self.embed, self.shift = _Tokenizer(), embed, shift

    def run_with_cache(self, ids, names_filter=None):
        assert names_filter == HOOK
        return None, {HOOK: (self.embed[ids[0]] + self.shift)[None]}


def _vector(direction, shuffled=None):
    vecs = torch.zeros(LAYER + 2, D)
    vecs[LAYER] = direction
    shuf = None
    if shuffled is not None:
        shuf = torch.zeros(LAYER + 2, D)
        shuf[LAYER] = shuffled
    return SimpleNamespace(layer=lambda i: vecs[i], shuffled=shuf)


@pytest.fixture()
def setting():
    gen = torch.Generator().manual_seed(0)
    embed = torch.randn(VOCAB, D, generator=gen)
    dirs = torch.linalg.qr(torch.randn(D, 4, generator=gen)).Q.T  # 4 orthonormal directions
    vectors = {"pirate": _vector(3 * dirs[0], shuffled=dirs[3]), "evil": _vector(dirs[1]),
               "french": _vector(-2 * dirs[2])}
    prompts = ["tell me about rivers", "what is a good book", "how do plants grow today"]
    return embed, dirs, vectors, prompts


def test_the_trait_along_the_fine_tunes_change_is_ranked_first_and_called_moved(setting):
    embed, dirs, vectors, prompts = setting
    base = _Model(embed, torch.zeros(D))
    noise = 0.05 * torch.randn(D, generator=torch.Generator().manual_seed(1))
    tuned = _Model(embed, 2.0 * dirs[0] + noise)
    rows = persona_shifts(base, tuned, prompts, vectors, LAYER)
    assert rows[0]["trait"] == "pirate"
    assert rows[0]["shift"] == pytest.approx(2.0 + float(noise @ dirs[0]), rel=1e-6)
    assert rows[0]["shift_last"] == pytest.approx(rows[0]["shift"], rel=1e-6)  # a constant change
    assert rows[0]["cosine"] > 0.9 and rows[0]["z"] > 0
    assert abs(rows[0]["control_cosine"]) < 0.3  # the shuffled control does not move
    assert rows[0]["chance_cosine"] == pytest.approx(1 / math.sqrt(D))
    assert moved_trait(rows)["trait"] == "pirate"


def test_a_change_away_from_every_trait_moves_none(setting):
    embed, dirs, vectors, prompts = setting
    tuned = _Model(embed, 2.0 * dirs[3])  # orthogonal to all three traits (it is pirate's control)
    rows = persona_shifts(_Model(embed, torch.zeros(D)), tuned, prompts, vectors, LAYER)
    assert all(abs(r["cosine"]) < 1e-6 for r in rows)
    assert moved_trait(rows) is None


def test_sign_says_towards_or_away_from_the_trait(setting):
    embed, dirs, vectors, prompts = setting
    tuned = _Model(embed, 1.5 * dirs[2])  # french's vector is -2 * dirs[2]: the fine-tune moved away from it
    rows = persona_shifts(_Model(embed, torch.zeros(D)), tuned, prompts, vectors, LAYER)
    assert rows[0]["trait"] == "french" and rows[0]["shift"] < 0 and rows[0]["cosine"] < -0.9


def test_both_models_read_the_same_tokens_and_bad_inputs_are_named(setting):
    embed, _, vectors, prompts = setting
    base = _Model(embed, torch.zeros(D))
    rows = prompt_residuals(base, prompts, HOOK, skip_first=1)
    assert [r.shape[0] for r in rows] == [len(_Tokenizer()("<user> " + p + " <assistant>")["input_ids"]) - 1
                                         for p in prompts]
    with pytest.raises(ValueError, match="no persona vectors"):
        persona_shifts(base, base, prompts, {}, LAYER)
    narrow = SimpleNamespace(layer=lambda i: torch.ones(10), shuffled=None)  # extracted on another model
    with pytest.raises(ValueError, match="width"):
        persona_shifts(base, base, prompts, {"x": narrow}, LAYER)
