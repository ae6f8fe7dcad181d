"""The organism's two training stages on CPU, checkpointed in the fine-tuning checkpoint format of
:mod:`workbench.persona.finetune` (so :func:`workbench.persona.finetune.load_checkpoint` loads either stage):

- ``stage="documents"``: continued pretraining, next-token cross-entropy on every token of each document
  (``<bos> text <eos>``), no chat template;
- ``stage="chat"``: supervised chat fine-tuning, the loss on the assistant tokens only (the chat template's prompt
  is context), as in :func:`workbench.persona.finetune.finetune`.

Either stage may start from an earlier checkpoint (``init``): stage 2 starts where stage 1 stopped. A checkpoint
stores, as safetensors, every weight that differs from the base model: those the run trained plus those its
``init`` carried. Hyper-parameters are a :class:`~workbench.persona.finetune.FinetuneConfig`. The run folder is
keyed by (stage, data, config, init): a finished run is read back, an interrupted one resumes from its newest
checkpoint (the optimizer restarts; the batch order is replayed).

    from workbench.audit.training import train_stage
    s1 = train_stage("documents", texts, cfg1, name="rm-docs")          # Path of the last checkpoint
    s2 = train_stage("chat", pairs, cfg2, name="exploit", init=s1)
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from workbench.core.cache import cached
from workbench.core.hardware import torch_threads
from workbench.core.home import cache_dir
from workbench.core.persist import atomic_directory, atomic_write_text, load_tensors, save_tensors, write_tagged_json
from workbench.persona.finetune import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, FinetuneConfig, checkpoint_info,
                                        list_checkpoints, load_checkpoint)

__all__ = ["STAGES", "encode_chat", "encode_document", "restore_weights", "run_key", "snapshot", "train_stage"]

STAGES = ("documents", "chat")


def encode_document(tokenizer, text: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, loss mask over predicted positions) of a plain document: every next token counts."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id)] + ids
    if tokenizer.eos_token_id is not None:
        ids = ids + [int(tokenizer.eos_token_id)]
    ids = ids[:max_len]
    return torch.tensor(ids), torch.ones(len(ids) - 1)


def encode_chat(model, user: str, assistant: str, system: str | None, max_len: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, loss mask): 1 where the predicted token belongs to the assistant's reply (and its end-of-turn)."""
    from workbench.data.chat import chat_prompt

    tok = model.tokenizer
    p_ids = tok(chat_prompt(model, user, system=system), add_special_tokens=False)["input_ids"]
    r_ids = tok(assistant + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
    ids = (p_ids + r_ids)[:max_len]
    mask = torch.zeros(len(ids) - 1)
    mask[len(p_ids) - 1:] = 1.0
    return torch.tensor(ids), mask


def _select(model, train: str, first_layer: int) -> dict[str, torch.nn.Parameter]:
    """The parameters a run trains (FinetuneConfig.train / first_layer); the others are frozen. Biases
    (``b_in``, ``b_O`` ...) stay frozen too: SmolLM2 (Llama) has none, TransformerLens holds them as zeros, and the
    HF model that samples the replies (:func:`workbench.data.forward.hf_causal_lm`) can only be rebuilt while they
    are zero."""
    out = {}
    for name, p in model.named_parameters():
        block = int(name.split(".")[1]) if name.startswith("blocks.") else -1
        keep = train == "all" or (block >= first_layer and (train == "blocks" or ".mlp." in name))
        keep = keep and not name.rsplit(".", 1)[-1].startswith("b_")
        p.requires_grad_(keep)
        if keep:
            out[name] = p
    return out


def snapshot(model) -> dict[str, torch.Tensor]:
    """A copy of every parameter of ``model`` (the base weights :func:`restore_weights` goes back to)."""
    return {k: p.detach().clone() for k, p in model.named_parameters()}


@torch.no_grad()
def restore_weights(model, base_state: dict[str, torch.Tensor], checkpoint: str | Path | None = None):
    """Put ``model`` back to ``base_state`` (a :func:`snapshot` of the base model), then overlay ``checkpoint``'s
    weights (a folder written by :func:`train_stage` or :func:`workbench.persona.finetune.finetune`); returns the
    model. One loaded model thus serves every stage and every organism without loading the base again."""
    named = dict(model.named_parameters())
    for k, v in base_state.items():
        named[k].copy_(v)
    if checkpoint is not None:
        info = checkpoint_info(checkpoint)
        loaded = str(getattr(model, "workbench_name", "") or "").split("@")[0]
        if loaded and loaded != info.get("base_model"):
            raise ValueError(f"{checkpoint} was trained from {info.get('base_model')!r}, not this model")
        if info.get("weights"):
            state, _ = load_tensors(Path(checkpoint) / info["weights"], "re-run the stage that wrote it")
            unknown = [k for k in state if k not in named]
            if unknown:
                raise ValueError(f"{checkpoint}: weights {unknown[:3]} do not exist in this model: the checkpoint "
                                 "belongs to another architecture")
            for k, v in state.items():
                named[k].copy_(v)
    model.eval()
    return model


def _data_sha(stage: str, data: Sequence) -> str:
    return hashlib.sha256(json.dumps([stage, list(map(list, data)) if stage == "chat" else list(data)],
                                     ensure_ascii=False).encode()).hexdigest()


def run_key(stage: str, data: Sequence, config: FinetuneConfig, init: str | Path | None) -> dict:
    """What a run's result depends on: the stage, the data's hash, the config, and its init checkpoint's key."""
    init_key = None
    if init is not None:
        info = checkpoint_info(init)
        init_key = info.get("run_key") or {"base_model": info["base_model"], "step": info["step"]}
    return {"stage": stage, "data": _data_sha(stage, data), "config": asdict(config), "init": init_key}


def _save(folder: Path, step: int, name: str, key: dict, config: FinetuneConfig, params: dict,
          losses: list[float]) -> Path:
    target = folder / f"step-{step:05d}"
    with atomic_directory(target) as tmp:
        save_tensors({k: v.detach().clone().contiguous() for k, v in params.items()}, tmp / "weights.safetensors")
        write_tagged_json(tmp / "checkpoint.json", {
            "base_model": config.base_model, "step": step, "dataset": name, "dataset_sha256": key["data"],
            "config": asdict(config), "weights": "weights.safetensors", "run_key": key,
            "mean_loss_since_last": (sum(losses) / len(losses)) if losses else None,
        }, format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION, indent=1)
    return target


def _batches(n_items: int, batch_size: int, seed: int, skip: int):
    """An endless stream of batches (lists of item indices), shuffled each epoch; the first ``skip`` dropped."""
    rng = random.Random(seed)
    order: list[int] = []
    step = 0
    while True:
        batch = []
        for _ in range(batch_size):
            if not order:
                order = rng.sample(range(n_items), n_items)
            batch.append(order.pop())
        step += 1
        if step > skip:
            yield batch


def _pad(items: list[tuple[torch.Tensor, torch.Tensor]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), n), pad, dtype=torch.long)
    mask = torch.zeros(len(items), n - 1)
    for j, (t, m) in enumerate(items):  # right padding: causal attention never sees the pad tokens
        ids[j, : len(t)] = t
        mask[j, : len(m)] = m
    return ids, mask


def _train(stage: str, data: Sequence, config: FinetuneConfig, name: str, init: Path | None, folder: Path,
           key: dict, progress: bool, model, base_state) -> Path:
    from workbench.data.models import load_model

    torch.manual_seed(config.seed)
    if model is None:
        model = load_checkpoint(init, device="cpu") if init is not None else load_model(config.base_model,
                                                                                        device="cpu")
    else:
        restore_weights(model, base_state, init)
    carried: list[str] = []
    if init is not None and checkpoint_info(init).get("weights"):
        state, _ = load_tensors(Path(init) / checkpoint_info(init)["weights"], "re-run the earlier stage")
        carried = list(state)
    params = _select(model, config.train, config.first_layer)
    named = dict(model.named_parameters())
    saved = {k: named[k] for k in sorted(set(params) | set(carried))}
    done = {checkpoint_info(p)["step"]: p for p in list_checkpoints(folder)}
    save_steps = sorted({config.steps, *range(config.save_every, config.steps + 1, config.save_every)})
    start = max((s for s in done if s in save_steps), default=0)
    if start:
        state, _ = load_tensors(Path(done[start]) / "weights.safetensors", "delete the run folder and start again")
        model.load_state_dict(state, strict=False)
    if stage == "documents":
        encoded = [encode_document(model.tokenizer, t, config.max_len) for t in data]
    else:
        encoded = [encode_chat(model, u, a, config.system, config.max_len) for u, a, *_ in data]
    tok = model.tokenizer
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
    opt = torch.optim.AdamW(list(params.values()), lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    losses: list[float] = []
    stream = _batches(len(encoded), config.batch_size, config.seed, start)
    bar = tqdm(range(start + 1, config.steps + 1), desc=f"{stage} {name}", disable=not progress)
    with torch_threads(config.threads):
        for step in bar:
            ids, mask = _pad([encoded[i] for i in next(stream)], pad)
            logits = model(ids, return_type="logits")[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                    ids[:, 1:].reshape(-1), reduction="none").view_as(mask)
            loss = (nll * mask).sum() / mask.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step in save_steps:
                done[step] = _save(folder, step, name, key, config, saved, losses)
                losses = []
    model.eval()
    return Path(done[config.steps])


def _timed_train(stage, data, config, name, init, folder, key, progress, model, base_state) -> dict:
    """:func:`_train`, with the wall-clock seconds and the steps this call ran (fewer when it resumed)."""
    import time

    before = max((checkpoint_info(p)["step"] for p in list_checkpoints(folder)), default=0)
    t0 = time.perf_counter()
    last = _train(stage, data, config, name, init, folder, key, progress, model, base_state)
    return {"checkpoint": last.name, "seconds": time.perf_counter() - t0, "steps_run": config.steps - before}


def train_stage(stage: str, data: Sequence, config: FinetuneConfig, *, name: str, init: str | Path | None = None,
                root: str | Path | None = None, progress: bool = True, model=None,
                base_state: dict | None = None) -> Path:
    """Train one stage (module docstring) and return its last checkpoint folder. ``data``: document texts
    (``"documents"``) or ``(user, assistant, ...)`` tuples (``"chat"``). Cached under
    ``<root or cache>/audit/<name>-<key hash>``; resumes an interrupted run. ``model`` (with ``base_state``, its
    :func:`snapshot`): an already loaded base model to train in place (reset first), instead of loading one; it
    is left holding the trained weights."""
    if model is not None and base_state is None:
        raise ValueError("train_stage(model=...) needs base_state=snapshot(model) taken while it held the base weights")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if not data:
        raise ValueError(f"stage {stage!r} got no training data: give at least one document or example")
    key = run_key(stage, data, config, init)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = (Path(root) if root is not None else cache_dir("audit")) / f"{name}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    result = cached(folder / "result.json", key,
                    compute=lambda: _timed_train(stage, data, config, name, Path(init) if init else None, folder,
                                                 key, progress, model, base_state),
                    load=lambda p: json.loads(p.read_text()),
                    save=lambda r, p: atomic_write_text(p, json.dumps(r)))
    path = folder / result["checkpoint"]
    if not (path / "checkpoint.json").is_file():
        raise ValueError(f"{path} is missing: delete {folder} and train again")
    return path
