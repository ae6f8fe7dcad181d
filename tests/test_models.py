"""Tests for workbench.data.models and workbench.data.chat on the real embedded models.

The TransformerLens models are checked against HF transformers' own implementation of the same GGUF
(log-probs and greedy generations), so a conversion that silently drops a config field or maps a
weight wrongly fails here. Each HF reference is built once per module (~70 s for Gemma, ~25 s for
SmolLM2 on 2 cores); the TransformerLens Gemma is the session ``gemma`` fixture from conftest.
"""
from __future__ import annotations

import shutil
import socket

import pytest
import torch

from workbench.data import assets
from workbench.data import models
from workbench.data.chat import chat_messages, chat_prompt
from workbench.data.models import EMBEDDED_MODELS, load_model, model_info, unknown_model_message

pytestmark = pytest.mark.slow

HOOK = "blocks.9.hook_resid_post"
DALLAS = "Fact: Dallas is a city in the state of"
GEMMA_PROMPTS = [DALLAS, "La capital de Francia es Madrid. Le chat est assis sur le tapis et"]
SMOL_PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]
LOGPROB_TOL = 1e-3  # max |log p_TL - log p_HF| over every position and vocabulary entry (fp32 both sides)
N_NEW = 12


def _hf_reference(name: str):
    """HF transformers' model for an embedded GGUF, dequantised to float32 (independent of TransformerLens)."""
    from transformers import AutoModelForCausalLM

    path = assets.asset_path(name).resolve()
    with models._quiet():
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return hf.eval()


@pytest.fixture(scope="module")
def hf_gemma():
    model = _hf_reference("gemma-3-270m")
    yield model
    del model


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="module")
def hf_smollm():
    model = _hf_reference("smollm2-135m-instruct")
    yield model
    del model


@pytest.fixture(scope="module")
def dallas(gemma):
    """One full forward of the TL Gemma with a complete cache: (tokens, logits, cache)."""
    tokens = gemma.to_tokens(DALLAS)
    with torch.inference_mode():
        logits, cache = gemma.run_with_cache(tokens)
    return tokens, logits, cache


def _max_logprob_diff(tl_model, hf_model, tokens: torch.Tensor, tl_logits: torch.Tensor | None = None) -> float:
    with torch.inference_mode():
        if tl_logits is None:
            tl_logits = tl_model(tokens)
        hf_logits = hf_model(tokens).logits
    assert tl_logits.shape == hf_logits.shape == (1, tokens.shape[1], tl_model.cfg.d_vocab)
    return float((tl_logits.log_softmax(-1) - hf_logits.log_softmax(-1)).abs().max())


# ------------------------------------------------------------------------------------- Gemma vs HF
def test_gemma_geometry(gemma):
    info = model_info(gemma)
    assert info["name"] == "gemma-3-270m"
    assert (info["n_layers"], info["d_model"], info["d_vocab"]) == (18, 640, 262144)
    assert info["dtype"] == "float32"
    assert next(gemma.parameters()).device.type == "cpu"


def test_gemma_logprobs_match_hf(gemma, hf_gemma, dallas):
    tokens, logits, _ = dallas
    assert tokens[0, 0].item() == gemma.tokenizer.bos_token_id == 2
    diffs = {DALLAS: _max_logprob_diff(gemma, hf_gemma, tokens, logits)}
    for prompt in GEMMA_PROMPTS[1:]:
        diffs[prompt] = _max_logprob_diff(gemma, hf_gemma, gemma.to_tokens(prompt))
    assert max(diffs.values()) < LOGPROB_TOL, diffs


def test_gemma_knows_dallas_is_in_texas(gemma, dallas):
    _, logits, _ = dallas
    texas = gemma.to_single_token(" Texas")
    probs = logits[0, -1].softmax(-1)
    assert probs.argmax().item() == texas
    assert probs[texas].item() > 0.9


def test_gemma_greedy_generation_matches_hf(gemma, hf_gemma):
    tokens = gemma.to_tokens("The Eiffel Tower is located in the city of")
    with torch.inference_mode():
        hf_out = hf_gemma.generate(tokens, max_new_tokens=N_NEW, do_sample=False)
        tl_out = gemma.generate(tokens, max_new_tokens=N_NEW, do_sample=False, verbose=False)
    n = tokens.shape[1]
    hf_new, tl_new = hf_out[0, n:].tolist(), tl_out[0, n:].tolist()
    assert tl_new == hf_new
    assert len(tl_new) == N_NEW  # no EOS in this continuation: both ran the full length
    assert "Paris" in gemma.tokenizer.decode(tl_new)


# ------------------------------------------------------------------------------------------- hooks
def test_run_with_cache_and_stop_at_layer(gemma, dallas):
    tokens, logits, cache = dallas
    assert HOOK in cache
    resid = cache[HOOK]
    assert resid.shape == (1, tokens.shape[1], 640)
    assert torch.isfinite(resid).all()
    with torch.inference_mode():
        stopped = gemma(tokens, stop_at_layer=10)
    assert stopped.shape == resid.shape
    torch.testing.assert_close(stopped, resid, rtol=0, atol=0)
    # other layers are cached too, and they differ
    assert "blocks.2.hook_resid_post" in cache and "blocks.17.hook_resid_post" in cache
    assert not torch.allclose(cache["blocks.17.hook_resid_post"], resid)


# ----------------------------------------------------------------------------------- SmolLM2 vs HF
@pytest.fixture(scope="module")
def smollm_logits(smollm):
    """TL SmolLM2 logits for each plain prompt, computed once."""
    with torch.inference_mode():
        return {p: smollm(smollm.to_tokens(p)) for p in SMOL_PROMPTS}


def test_smollm_logprobs_match_hf(smollm, hf_smollm, smollm_logits):
    info = model_info(smollm)
    assert (info["n_layers"], info["d_model"], info["d_vocab"]) == (30, 576, 49152)
    assert smollm.to_tokens(SMOL_PROMPTS[0])[0, 0].item() == smollm.tokenizer.bos_token_id
    diffs = {p: _max_logprob_diff(smollm, hf_smollm, smollm.to_tokens(p), smollm_logits[p]) for p in SMOL_PROMPTS}
    assert max(diffs.values()) < LOGPROB_TOL, diffs


def test_smollm_chat_greedy_generation_matches_hf(smollm, hf_smollm):
    prompt = chat_prompt(smollm, "What is the capital of France?")
    hf_ids = smollm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    tl_ids = smollm.to_tokens(prompt, prepend_bos=False)
    assert torch.equal(hf_ids, tl_ids)
    with torch.inference_mode():
        hf_out = hf_smollm.generate(hf_ids, max_new_tokens=N_NEW, do_sample=False)
        tl_out = smollm.generate(prompt, max_new_tokens=N_NEW, do_sample=False, verbose=False,
                                 prepend_bos=False, return_type="tokens")
    n = hf_ids.shape[1]
    assert tl_out[0, :n].tolist() == hf_ids[0].tolist()
    hf_new, tl_new = hf_out[0, n:].tolist(), tl_out[0, n:].tolist()
    assert tl_new == hf_new
    assert "Paris" in smollm.tokenizer.decode(tl_new)


def test_second_load_gives_identical_logits(smollm, smollm_logits):
    again = load_model("smollm2-135m-instruct", device="cpu")
    assert again is not smollm
    prompt = SMOL_PROMPTS[0]
    with torch.inference_mode():
        second = again(again.to_tokens(prompt))
    assert torch.equal(smollm_logits[prompt], second)


def test_half_precision_load_casts_weights_and_config(smollm, smollm_logits):
    # the path a CUDA user takes by default (bf16 weights); HookedTransformer.to takes a device or a dtype, not both
    half = load_model("smollm2-135m-instruct", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.cfg.dtype == torch.bfloat16 and half.cfg.device == "cpu"
    prompt = SMOL_PROMPTS[0]
    with torch.inference_mode():
        logits = half(half.to_tokens(prompt)).float()
    full = smollm_logits[prompt]
    assert torch.isfinite(logits).all()
    # bf16 weights move logits by rounding, not by meaning: the same next token almost everywhere
    agree = (logits.argmax(-1) == full.argmax(-1)).float().mean()
    assert agree >= 0.8, agree


# ------------------------------------------------------------------------------------------- chat
def test_chat_prompt_refuses_base_model(gemma):
    with pytest.raises(ValueError, match="no chat template") as err:
        chat_prompt(gemma, "Hello")
    assert "smollm2-135m-instruct" in str(err.value)


def test_chat_prompt_on_chat_model(smollm):
    text = chat_prompt(smollm, "Name three rivers in Spain.", system="Answer briefly.")
    assert "Name three rivers in Spain." in text and "Answer briefly." in text
    assert text.index("Answer briefly.") < text.index("Name three rivers in Spain.")
    assert text.endswith("<|im_start|>assistant\n")
    no_gen = chat_prompt(smollm, "Name three rivers in Spain.", add_generation_prompt=False)
    assert not no_gen.rstrip().endswith("assistant")
    # history turns come before the new question, in order
    msgs = chat_messages("And Italy?", history=[("Capital of Spain?", "Madrid.")])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    text = chat_prompt(smollm.tokenizer, msgs)
    assert text.index("Capital of Spain?") < text.index("Madrid.") < text.index("And Italy?")


# ------------------------------------------------------------------------------------------ errors
def test_unknown_model_name():
    for name in ["no-such-model-xyz", "gemma-3-270M-typo"]:
        with pytest.raises(ValueError) as err:
            load_model(name, device="cpu")
        msg = str(err.value)
        assert msg == unknown_model_message(name)
        assert name in msg
        for embedded in EMBEDDED_MODELS:
            assert embedded in msg
        assert "hub" in msg.lower() and "gpt2-small" in msg
    with pytest.raises(ValueError, match="gemma-3-270m"):
        load_model("", device="cpu")
    with pytest.raises(ValueError, match="Unknown dtype"):
        load_model("gemma-3-270m", device="cpu", dtype="int3")


def test_hub_name_offline_fails_fast_with_clear_error(monkeypatch):
    """A hub name with no network: a ValueError saying the hub is unreachable, without network retries.

    huggingface_hub reads HF_HUB_OFFLINE once, at import, so the constant is patched too; a resolver that
    records lookups proves no connection was even attempted (the failure is immediate, not a retry loop).
    """
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    lookups = []

    def no_dns(*args, **kwargs):
        lookups.append(args[0] if args else kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "blocked by test")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ValueError) as err:
        load_model("gpt2-small", device="cpu")
    msg = str(err.value)
    assert "HF hub" in msg and "unreachable" in msg
    assert "'gpt2'" in msg  # the official name it tried
    for embedded in EMBEDDED_MODELS:
        assert embedded in msg
    assert isinstance(err.value.__cause__, OSError)
    assert lookups == []


@pytest.mark.parametrize(
    "damage",
    [
        "truncated-weights",
        "truncated-config",
    ],
)
def test_corrupt_cached_model_gives_clear_error(smollm, tmp_path, monkeypatch, damage):
    """Damage a *copy* of the converted-model cache (under a temporary WORKBENCH_HOME) and load it."""
    spec = EMBEDDED_MODELS["smollm2-135m-instruct"]
    gguf = assets.asset_path(spec.asset).resolve()
    real = models._gguf_cache_dir(gguf, assets.ASSETS[spec.asset].sha256)
    assert (real / "model.safetensors").exists()  # the smollm fixture converted it

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    fake = models._gguf_cache_dir(gguf, assets.ASSETS[spec.asset].sha256)
    assert fake != real and str(fake).startswith(str(tmp_path))
    fake.mkdir(parents=True)
    shutil.copytree(real / "tokenizer", fake / "tokenizer")
    config = (real / "tl_config.json").read_text()
    if damage == "truncated-config":
        config = config[: len(config) // 2]
    (fake / "tl_config.json").write_text(config)
    with open(real / "model.safetensors", "rb") as src, open(fake / "model.safetensors", "wb") as dst:
        dst.write(src.read(1 << 16))  # the header and the first few weights only

    with pytest.raises(ValueError) as err:
        load_model("smollm2-135m-instruct", device="cpu")
    msg = str(err.value)
    assert str(fake) in msg
    assert "Delete that folder" in msg
    assert (real / "model.safetensors").stat().st_size > 1 << 20  # the real cache is untouched


# ---------------------------------------------------------------- harvest forward vs the GGUF HF model
@pytest.mark.parametrize("which", ["gemma", "smollm"])
def test_harvest_forward_equals_hf_hidden_states(which, request):
    """The residual stream the harvest path (workbench.data.forward) records equals HF transformers' own hidden
    states of the GGUF model, layer by layer (hidden_states[L + 1] is block L's output)."""
    from workbench.data.forward import hook_forward

    model = request.getfixturevalue(which)
    hf = request.getfixturevalue("hf_" + which)
    layers = [0, model.cfg.n_layers // 2, model.cfg.n_layers - 2]
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    tokens = model.to_tokens(DALLAS)
    forward = hook_forward(model, hooks)
    assert forward.path == "hf"
    ours = forward(tokens)
    with torch.inference_mode():
        states = hf(tokens, output_hidden_states=True).hidden_states
    for layer, hook in zip(layers, hooks):
        ref = states[layer + 1]
        err = float((ours[hook] - ref).abs().max() / ref.abs().max())
        assert err < 1e-4, (hook, err)
