"""Tests for workbench.analysis.scorecard (and ``workbench scorecard``) on a planted toy.

The toy store (24 residual dims, 60 contexts of 32 tokens, recorded as the embedded wiki corpus so every context
has a language) plants five features read by a ReLU SAE: a detector of token 7 (all languages), a BOS detector
(BOS also occurs mid-context), a newline detector, a detector of token 8 that occurs only in English contexts and
one of token 9 only in Spanish ones; a sixth latent is dead. The other 19 dims are Gaussian noise, so a random
residual direction is mostly noise. Neurons come from a tiny random TransformerLens model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.analysis.features import FeatureConfig, compute_features
from workbench.analysis.feature_traits import (feature_languages, special_token_features, special_token_ids,
                                               token_languages)
from workbench.analysis.scorecard import Scorecard, ScorecardConfig, _density_thresholds, scorecard
from workbench.data.corpus import WIKI_ID_STRIDE
from workbench.data.store import ActivationStore, StoreWriter
from workbench.sae.model import SAE, SAEConfig, SAEMetadata

HOOK = "blocks.0.hook_resid_post"
EOS, BOS, NL, T_ANY, T_EN, T_ES = 1, 2, 3, 7, 8, 9
N_CTX, CTX, D_IN, ANALYSED = 60, 32, 24, 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeTokenizer:
    """Token strings for the toy: special ids 0-2, a newline, words."""

    all_special_ids = [0, EOS, BOS]
    names = {0: "<pad>", EOS: "<eos>", BOS: "<bos>", NL: "\n"}

    def decode(self, ids):
        return "".join(self.names.get(int(i), f" w{int(i)}") for i in ids)

    def batch_decode(self, seqs):
        return [self.decode(s) for s in seqs]


def _toy_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    lang = np.arange(N_CTX) % 3  # en, es, fr, en, ...
    tokens = rng.integers(10, 60, size=(N_CTX, CTX)).astype(np.int64)
    for tok, p in ((T_ANY, 0.08), (BOS, 0.05), (NL, 0.05)):
        tokens[rng.random(tokens.shape) < p] = tok
    tokens[(rng.random(tokens.shape) < 0.1) & (lang[:, None] == 0)] = T_EN
    tokens[(rng.random(tokens.shape) < 0.1) & (lang[:, None] == 1)] = T_ES
    tokens[:, 0] = BOS
    docs = np.repeat((lang * WIKI_ID_STRIDE + np.arange(N_CTX))[:, None], CTX, 1)
    acts = rng.normal(size=(N_CTX, CTX, D_IN)).astype(np.float32)
    for dim, tok in enumerate((T_ANY, BOS, NL, T_EN, T_ES)):
        acts[..., dim] = np.where(tokens == tok, rng.integers(4, 17, size=tokens.shape) * 0.25, -0.5)
    return tokens, docs, acts, lang


def _write_store(path, tokens, docs, acts, corpus):
    pos = np.tile(np.arange(CTX, dtype=np.int32), (N_CTX, 1))
    w = StoreWriter(path, model_name="planted", hooks=[HOOK], d_model=D_IN, context_size=CTX, dtype="bfloat16",
                    shard_contexts=16, prepend_bos=True, corpus=corpus)
    for i, s in enumerate(range(0, N_CTX, 16)):
        w.write_shard(i, tokens[s:s + 16], docs[s:s + 16], pos[s:s + 16],
                      {HOOK: acts[s:s + 16].reshape(-1, D_IN)})
    return w.finalize()


def _toy_sae() -> SAE:
    """Latent j (j < 5) = relu(x_j); latent 5 never fires."""
    sae = SAE(SAEConfig("relu", D_IN, 6, apply_b_dec_to_input=False), SAEMetadata(model_name="planted", hook_name=HOOK))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        for j in range(5):
            sae.W_enc[j, j] = 1.0
            sae.W_dec[j, j] = 1.0
        sae.W_dec[5, 5] = 1.0
        sae.b_enc.zero_()
        sae.b_enc[5] = -1.0
        sae.b_dec.zero_()
    return sae.eval()


def _tiny_model():
    import transformer_lens as tl

    cfg = tl.HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=CTX, d_head=4, n_heads=4, d_mlp=32, d_vocab=64,
                                     act_fn="gelu", seed=0)
    return tl.HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tokens, docs, acts, lang = _toy_data()
    root = tmp_path_factory.mktemp("scorecard-toy")
    corpus = {"source": "wiki", "languages": ["en", "es", "fr"], "split": "train", "seed": 0}
    store = _write_store(root / "store", tokens, docs, acts, corpus)
    sae = _toy_sae()
    tok = FakeTokenizer()
    res = compute_features(store, sae, root / "features", FeatureConfig(max_tokens=ANALYSED * CTX, progress=False),
                           tokenizer=tok)
    return {"root": root, "store": store, "sae": sae, "res": res, "tok": tok, "tokens": tokens, "lang": lang}


@pytest.fixture(scope="module")
def card(toy):
    cfg = ScorecardConfig(n_train_contexts=ANALYSED, n_heldout_contexts=20, seed=3)
    return scorecard(toy["res"], toy["store"], toy["sae"], _tiny_model(), config=cfg, tokenizer=toy["tok"])


def test_planted_features_score_high_and_random_directions_low(card):
    feats = card.units["features"]
    assert feats.units == [0, 1, 2, 3, 4]  # every alive feature (fewer than n_units), not the dead one
    f1 = dict(zip(feats.units, feats.f1))
    for j in range(5):  # each planted detector is explained by its token and scores perfectly on held-out text
        assert f1[j] == 1.0, (j, feats.explanations[j])
    assert 'w7"' in feats.explanations[0] and feats.threshold == [0.0] * 5
    rnd = card.units["random"]
    assert len(rnd.units) == 5 and all(n > 0 for n in rnd.n_firing)
    assert max(rnd.scored_f1()) < 0.6 and card.f1_stats()["random"]["median"] < 0.4
    neu = card.units["neurons"]
    assert len(neu.units) == 5 and all(lab.startswith("L0 N") for lab in neu.labels)
    assert neu.density == feats.density == rnd.density  # baselines thresholded to the sampled features' densities
    assert all(0.0 <= f <= 1.0 for f in neu.scored_f1())
    s = card.summary()
    assert s["f1_median"]["features"] == 1.0 and s["n_units"] == {"features": 5, "neurons": 5, "random": 5}
    assert s["feature_over_random_median_f1"] > 2.5
    assert card.meta["n_train_contexts"] == ANALYSED and card.meta["n_heldout_contexts"] == 20
    assert card.meta["neuron_layers"] == [0]


def test_special_token_detectors_are_counted(card, toy):
    res = toy["res"]
    assert card.special["features"] == [1, 2]  # the BOS detector and the newline detector
    assert card.special["n_alive"] == 2 and card.special["fraction_alive"] == pytest.approx(2 / 5)
    assert card.special["fraction_sample"] == pytest.approx(2 / 5)
    # from the token strings the feature pass kept, without a tokenizer
    assert special_token_ids(res.vocab) == {BOS, NL}  # the ids the results mention
    assert special_token_ids({EOS: "<eos>", 5: " the", 6: "<unused12>"}, FakeTokenizer()) == {0, EOS, BOS, 6}
    assert special_token_features(res).nonzero().squeeze(1).tolist() == [1, 2]
    assert special_token_features(res, special_ids=set()).sum() == 0
    assert special_token_features(res, special_ids={T_ANY, BOS}).nonzero().squeeze(1).tolist() == [0, 1]


def test_language_fraction_counts_features_firing_in_two_languages(card, toy):
    lang, names = token_languages(toy["store"])
    assert names == ("en", "es", "fr") and (lang == toy["lang"][:, None]).all()
    counts, _ = feature_languages(toy["res"], toy["store"])
    assert (counts[3, 1:] == 0).all() and counts[3, 0] > 0  # the English-only token
    assert counts[4, 0] == counts[4, 2] == 0 and counts[4, 1] > 0  # the Spanish-only token
    assert (counts[0] > 0).all()
    lg = card.languages
    assert lg["fraction_alive"] == pytest.approx(3 / 5) and lg["fraction_sample"] == pytest.approx(3 / 5)
    assert lg["n_languages_hist"]["1"] == 2 and lg["token_share"]["en"] == pytest.approx(14 / 40, abs=0.01)
    # a store without the wiki corpus's document ids has no languages
    plain = ActivationStore.open(toy["store"].path)
    plain.manifest = {**plain.manifest, "corpus": None}
    assert token_languages(plain) is None and feature_languages(toy["res"], plain) is None


def test_scorecard_saves_loads_and_formats(card, tmp_path):
    path = card.save(tmp_path)
    assert path.name == "scorecard.json"
    raw = json.loads(path.read_text())
    assert raw["format"] == "workbench-scorecard" and raw["format_version"] == 1
    back = Scorecard.load(tmp_path)
    assert back.to_dict() == json.loads(json.dumps(card.to_dict()))
    text = card.format_table()
    assert "SAE features" in text and "MLP neurons" in text and "random directions" in text and "40.0%" in text
    with pytest.raises(ValueError, match="unknown scorecard settings"):
        ScorecardConfig.from_dict({"n_units": 3, "n_featurez": 2})
    with pytest.raises(ValueError, match="n_units"):
        ScorecardConfig(n_units=0)
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a scorecard"):
        Scorecard.load(tmp_path / "bad.json")


def test_scorecard_is_seeded_and_needs_heldout_contexts(toy):
    cfg = ScorecardConfig(n_units=3, n_train_contexts=8, n_heldout_contexts=4, seed=1)
    a = scorecard(toy["res"], toy["store"], toy["sae"], config=cfg)
    b = scorecard(toy["res"], toy["store"], toy["sae"], config=cfg)
    c = scorecard(toy["res"], toy["store"], toy["sae"], config=ScorecardConfig(**{**cfg.to_dict(), "seed": 2}))
    assert "neurons" not in a.units and a.meta["neurons"].startswith("skipped")
    assert len(a.units["features"].units) == 3
    assert a.units["random"].to_dict() == b.units["random"].to_dict()
    assert a.units["random"].threshold != c.units["random"].threshold
    everything = compute_features(toy["store"], toy["sae"], None, FeatureConfig(progress=False), tokenizer=False)
    with pytest.raises(ValueError, match="none are held out"):
        scorecard(everything, toy["store"], toy["sae"], config=cfg)
    other = _toy_sae()
    with torch.no_grad():
        other.W_enc[0, 0] = 2.0
    with pytest.raises(ValueError, match="another SAE"):
        scorecard(toy["res"], toy["store"], other, config=cfg)


def test_density_thresholds_fire_on_the_requested_fraction():
    acts = torch.arange(100, dtype=torch.float32).reshape(1, 100, 1).repeat(1, 1, 3)
    valid = torch.ones(1, 100, dtype=torch.bool)
    valid[0, 0] = False  # 99 valid tokens, values 1..99
    thr = _density_thresholds(acts, valid, [0.1, 0.0, 1.0])
    fires = (acts[valid] > thr).sum(0).tolist()
    assert fires == [10, 1, 99]  # density 0 still fires once; density 1 everywhere


def test_cli_scorecard_finds_the_sae_and_writes_the_file(toy, tmp_path, capsys):
    from workbench import cli
    from workbench.sae.io import save_sae

    run = toy["root"]
    save_sae(toy["sae"], run / "sae" / "train-x" / "topk-6")
    rc = cli.main(["scorecard", str(run), "--no-neurons", "--train-contexts", "16", "--heldout-contexts", "8",
                   "--out", str(tmp_path / "card.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "SAE features" in out and "random directions" in out
    card = Scorecard.load(tmp_path / "card.json")
    assert card.units["features"].units == [0, 1, 2, 3, 4] and "neurons" not in card.units
    rc = cli.main(["scorecard", str(tmp_path)])
    assert rc == 2 and "feature results" in capsys.readouterr().err


@pytest.mark.slow
def test_scorecard_on_the_real_model(gemma, real_sae, small_store, real_results):
    cfg = ScorecardConfig(n_units=8, n_train_contexts=8, n_heldout_contexts=4, batch_contexts=4)
    card = scorecard(real_results, small_store, real_sae, gemma, config=cfg)
    assert set(card.units) == {"features", "neurons", "random"}
    assert all(len(u.units) == 8 for u in card.units.values())
    assert all(lab.startswith("L9 N") for lab in card.units["neurons"].labels)  # the SAE's layer, blocks.9
    for u in card.units.values():
        assert all(0.0 <= f <= 1.0 for f in u.scored_f1()) and u.stats()["n_scored"] >= 4
    assert card.meta["n_heldout_tokens"] == 4 * (small_store.context_size - 1)
    assert 0.0 <= card.special["fraction_alive"] <= 1.0
    assert set(card.languages["token_share"]) == {"en", "es", "fr"}
    assert 0.0 <= card.languages["fraction_alive"] <= 1.0


def test_neuron_columns_follow_the_requested_order_across_layers():
    import transformer_lens as tl

    from workbench.analysis.scorecard import _neuron_acts

    cfg = tl.HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_mlp=8, d_vocab=64,
                                     act_fn="gelu", seed=0)
    model = tl.HookedTransformer(cfg).eval()

    class Store:
        context_size = 8

        @staticmethod
        def token_ids():
            return np.arange(24, dtype=np.int32).reshape(3, 8)

    neurons = torch.tensor([11, 2, 9, 5])  # layer 1 N3, layer 0 N2, layer 1 N1, layer 0 N5
    acts = _neuron_acts(model, Store(), [0, 2], [0, 1], neurons, 8, batch=1)
    _, cache = model.run_with_cache(torch.tensor([list(range(8)), list(range(16, 24))]))
    want = torch.stack([cache["blocks.1.mlp.hook_post"][..., 3], cache["blocks.0.mlp.hook_post"][..., 2],
                        cache["blocks.1.mlp.hook_post"][..., 1], cache["blocks.0.mlp.hook_post"][..., 5]], -1)
    torch.testing.assert_close(acts, want)
