"""Model diffing: the run sizes and scaling default, the language-share measure with its base rate, Latent Scaling
confirmation of exclusive latents, and the audit's activation-difference evidence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.diffing.analyses import confirmed_kinds, kind_language_shares, language_base_rate, language_shares
from workbench.diffing.experiments import DiffSizes
from workbench.diffing.latent_scaling import LatentScaling


def test_papers_norm_scaling_is_the_default_and_variance_is_explicit():
    assert DiffSizes().balance == "norm"
    assert DiffSizes.full().balance == "norm" and DiffSizes.smoke().balance == "norm"
    assert DiffSizes(balance="variance").balance == "variance"
    with pytest.raises(ValueError, match="'norm'"):
        DiffSizes(balance="centred")
    # the sizes' key tells the two apart (they train different crosscoders)
    assert DiffSizes().key() != DiffSizes(balance="variance").key()


def test_full_corpus_is_mostly_english_and_the_l1_sweep_adds_named_crosscoders():
    full = DiffSizes.full()
    counts = dict(zip(full.languages, full.per_language))
    assert counts["en"] > counts["es"] + counts["fr"]

    class _Paired:  # what crosscoder_spec reads from a paired store
        d_models = (8, 6)

        def metadata(self):
            from workbench.sae.model import SAEMetadata

            return SAEMetadata(model_name="a | b", hook_name="h | h", context_size=None, prepend_bos=False)

    from workbench.diffing.experiments import crosscoder_specs

    names = [s.name for s in crosscoder_specs(_Paired(), DiffSizes(d_sae=16, k=4, l1_sweep=(0.3, 0.1)))]
    assert names == ["l1", "batchtopk", "dfc", "l1-0.3", "l1-0.1"]
    specs = crosscoder_specs(_Paired(), DiffSizes(d_sae=16, k=4, l1_sweep=(0.3,)))
    assert specs[-1].l1_coefficient == pytest.approx(0.3)
    # an empty sweep leaves the key of earlier sizes unchanged (their cached runs stay valid)
    assert DiffSizes().key() == DiffSizes(l1_sweep=()).key() != DiffSizes(l1_sweep=(0.3,)).key()


def test_wiki_documents_take_one_count_per_language():
    from workbench.diffing.documents import wiki_documents

    docs = wiki_documents(("en", "es"), (3, 1), max_chars=50)
    assert [d.language for d in docs] == ["en", "en", "en", "es"]
    with pytest.raises(ValueError, match="one per language"):
        wiki_documents(("en", "es"), (3,), max_chars=50)


def test_language_shares_enrichment_is_relative_to_the_base_rate():
    langs = np.array(["en"] * 8 + ["es", "fr"])  # base rate 0.2
    assert language_base_rate(langs) == pytest.approx(0.2)
    rows = torch.tensor([[8, 9, 0, 1], [0, 1, 2, 3], [8, 0, 1, 2]])
    values = torch.tensor([[3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 0.0, 0.0]])
    shares = language_shares(values, rows, langs)
    # latent 2 fires on two rows only: one of them es
    assert shares.tolist() == pytest.approx([0.5, 0.0, 0.5])
    out = kind_language_shares(shares, np.array(["a_only", "shared", "a_only"]), base_rate=0.2)
    assert out["a_only"] == {"share": pytest.approx(0.5), "n": 2, "enrichment": pytest.approx(2.5)}
    assert out["shared"]["enrichment"] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        language_base_rate(np.array([]))


def test_confirmed_kinds_keep_only_exclusive_latents_latent_scaling_backs():
    kinds = np.array(["a_only", "a_only", "a_only", "shared", "b_only"])
    # explained_error columns (model A, model B); own = model with the larger decoder
    expl = torch.tensor([[0.8, 0.1], [0.8, 0.6], [0.8, 0.05], [0.5, 0.5], [0.02, 0.9]])
    own = torch.tensor([0, 0, 0, 0, 1])
    nan = torch.full((5, 2), float("nan"))
    scaling = LatentScaling(torch.arange(5), own, nan, nan, expl, expl, torch.tensor([40, 40, 3, 40, 40]))
    out = confirmed_kinds(kinds, scaling, below=0.5)
    # latent 1 explains 0.75 of A's share in B: not exclusive; latent 2 fires on 3 rows only
    assert out.tolist() == ["a_only", "unconfirmed", "unconfirmed", "shared", "b_only"]
    with pytest.raises(ValueError, match="all latents"):
        confirmed_kinds(kinds[:3], scaling)


def _tiny_chat_model(seed: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_head=4, n_heads=2, n_ctx=256, d_vocab=len(tok),
                                  act_fn="gelu", normalization_type="LN", seed=seed)
    model = HookedTransformer(cfg, tokenizer=tok, default_padding_side="right")
    model.eval()
    return model


def test_difference_evidence_recovers_a_planted_shift_and_its_tokens():
    from workbench.diffing.audit import difference_evidence

    torch.set_num_threads(1)
    base = _tiny_chat_model(0)
    tuned = _tiny_chat_model(0)
    prompts = ["How do I make bread?", "Why do leaves change colour?"]
    same = difference_evidence(base, tuned, prompts, "blocks.1.hook_resid_post")
    assert float(same["diff"].abs().max()) == 0.0
    # the "fine-tune" adds v to block 1's MLP output: the residual after block 1 moves by exactly v everywhere
    target = tuned.tokenizer(" ocean", add_special_tokens=False)["input_ids"][0]
    v = tuned.W_U[:, target].detach().clone()
    v = 3 * v / v.norm()
    with torch.no_grad():
        tuned.blocks[1].mlp.b_out += v
    other = torch.randn(4, 16)
    ev = difference_evidence(base, tuned, prompts, "blocks.1.hook_resid_post", directions=torch.cat([v[None], other]))
    assert torch.allclose(ev["diff"], v, atol=1e-4)
    assert "ocean" in [w for w, _ in ev["promoted"][:5]]
    assert float(ev["alignment"][0]) == pytest.approx(1.0, abs=1e-4)
    assert float(ev["alignment"][1:].abs().max()) < 0.99


def test_prediction_evidence_names_the_token_a_fine_tune_favours():
    from workbench.diffing.audit import prediction_evidence

    torch.set_num_threads(1)
    base, tuned = _tiny_chat_model(0), _tiny_chat_model(0)
    prompts = ["How do I make bread?"]
    target = tuned.tokenizer(" ocean", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        tuned.b_U[target] += 5.0
    promoted = prediction_evidence(base, tuned, prompts)["promoted"]
    assert promoted[0][0] == "ocean" and promoted[0][1] > 4.0
