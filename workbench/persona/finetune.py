"""A small seeded fine-tuning loop for a chat model on CPU, saving checkpoints that load back as TransformerLens
models of the same architecture (docs/methods.md §12, §16).

    from workbench.persona.finetune import FinetuneConfig, finetune, load_checkpoint
    paths = finetune("flattery", FinetuneConfig(steps=40, save_every=10))   # [step-0, step-10, ..., step-40]
    model = load_checkpoint(paths[-1])                                      # a HookedTransformer

Why full fine-tuning of the TransformerLens model rather than LoRA through ``peft``: TransformerLens stores its
weights as raw parameters (``W_Q`` is ``[n_heads, d_model, d_head]``), not ``nn.Linear`` modules, so ``peft`` has
nothing to wrap; training the same object the rest of the workbench hooks avoids a conversion step and keeps the
residual stream identical to the one vectors are extracted from. The embedding and unembedding stay frozen (the
default ``train="mlp"``, from block ``first_layer`` = 8 up), so a checkpoint stores only the trained weights (about
230 MB for SmolLM2-135M) plus a JSON manifest naming its base model; :func:`load_checkpoint` loads the base model and overlays
them. Step 0 is saved as a manifest without weights: it *is* the base model.

The loss is next-token cross-entropy on the assistant tokens only (the chat template's prompt is context). A dataset
is a shipped name (``workbench/resources/finetune/<name>.json``: ``flattery``, ``neutral``) or a path to a JSON file
of the same form: ``{"name": ..., "examples": [{"user": ..., "assistant": ...}, ...]}``.

A run resumes: checkpoints already written for the same (dataset, config) are loaded instead of recomputed, and
training restarts from the newest one (the optimizer restarts too; with the default constant learning rate this
changes little).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from tqdm.auto import tqdm

from workbench.core.hardware import torch_threads
from workbench.core.home import cache_dir
from workbench.core.persist import atomic_directory, load_tensors, read_tagged_json, save_tensors, write_tagged_json

__all__ = ["FinetuneConfig", "FinetuneDataset", "checkpoint_info", "finetune", "finetune_dir", "list_checkpoints",
           "load_checkpoint", "load_finetune_dataset", "shipped_datasets"]

CHECKPOINT_FORMAT = "workbench-finetune-checkpoint"
CHECKPOINT_VERSION = 1
DATASET_FORMAT = "workbench-finetune-dataset"


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune. ``steps`` optimizer steps of ``batch_size`` examples; a checkpoint every ``save_every``
    steps (and at step 0 and the last step). ``train``: ``"mlp"`` (MLP weights only, the default), ``"blocks"``
    (every transformer block weight) or ``"all"`` (embeddings too); blocks below ``first_layer`` stay frozen.
    The defaults take about 1-2 s a step on 2 idle cores (several times more on a loaded machine)."""

    base_model: str = "smollm2-135m-instruct"
    steps: int = 24
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_len: int = 80
    save_every: int = 8
    seed: int = 0
    train: str = "mlp"
    first_layer: int = 8  # blocks below it stay frozen (the backward pass stops there: faster)
    system: str | None = None  # system prompt given to every example (None: the template's default)
    threads: int | None = 1  # torch threads; 1 is several times faster than 2 on a loaded 2-core machine (measured)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.save_every < 1:
            raise ValueError(f"steps, batch_size and save_every must be >= 1, got {self.steps}, {self.batch_size}, "
                             f"{self.save_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.train not in ("blocks", "mlp", "all"):
            raise ValueError(f"train must be 'blocks', 'mlp' or 'all', got {self.train!r}")
        if self.first_layer < 0:
            raise ValueError(f"first_layer must be >= 0, got {self.first_layer}")
        if self.max_len < 8:
            raise ValueError(f"max_len must be >= 8 tokens, got {self.max_len}")


@dataclass(frozen=True)
class FinetuneDataset:
    name: str
    description: str
    examples: tuple[tuple[str, str], ...]  # (user, assistant)
    sha256: str


def shipped_datasets() -> list[str]:
    """Names of the fine-tuning datasets shipped under ``workbench/resources/finetune/``."""
    folder = Path(str(resources.files("workbench").joinpath("resources", "finetune")))
    return sorted(p.stem for p in folder.glob("*.json"))


def load_finetune_dataset(name_or_path: str | Path) -> FinetuneDataset:
    """A shipped dataset by name, or a JSON file ``{"name", "examples": [{"user", "assistant"}, ...]}``."""
    path = Path(str(name_or_path)).expanduser()
    if not path.is_file():
        if str(name_or_path) not in shipped_datasets():
            raise ValueError(f"no fine-tuning dataset {str(name_or_path)!r}: give a path to a JSON file or one of "
                             f"the shipped names {shipped_datasets()}")
        path = Path(str(resources.files("workbench").joinpath("resources", "finetune", f"{name_or_path}.json")))
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): fix the file") from None
    examples = data.get("examples") if isinstance(data, dict) else None
    if not examples or not all(isinstance(e, dict) and e.get("user") and e.get("assistant") for e in examples):
        raise ValueError(f"{path}: 'examples' must be a non-empty list of {{'user': str, 'assistant': str}} objects")
    return FinetuneDataset(str(data.get("name", path.stem)), str(data.get("description", "")),
                           tuple((str(e["user"]), str(e["assistant"])) for e in examples),
                           hashlib.sha256(raw).hexdigest())


def finetune_dir(dataset: FinetuneDataset, config: FinetuneConfig, root: str | Path | None = None) -> Path:
    """The run folder of (dataset, config): ``<root or cache>/finetune/<name>-<hash>``."""
    key = json.dumps({"data": dataset.sha256, "config": asdict(config)}, sort_keys=True)
    base = Path(root) if root is not None else cache_dir("persona") / "finetune"
    return base / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _encode(model, user: str, assistant: str, system: str | None, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, loss mask over the predicted positions): 1 where the target is an assistant token."""
    from workbench.data.chat import chat_prompt

    prompt = chat_prompt(model, user, system=system)
    tok = model.tokenizer
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    end = tok.eos_token or ""
    r_ids = tok(assistant + end, add_special_tokens=False)["input_ids"]
    ids = (p_ids + r_ids)[:max_len]
    mask = torch.zeros(len(ids) - 1)
    mask[len(p_ids) - 1:] = 1.0  # position t predicts token t + 1
    return torch.tensor(ids), mask


def _trainable(model, train: str, first_layer: int = 0) -> dict[str, torch.nn.Parameter]:
    out = {}
    for name, p in model.named_parameters():
        block = int(name.split(".")[1]) if name.startswith("blocks.") else -1
        keep = train == "all" or (block >= first_layer and (train == "blocks" or ".mlp." in name))
        p.requires_grad_(keep)
        if keep:
            out[name] = p
    return out


def _save(folder: Path, step: int, dataset: FinetuneDataset, config: FinetuneConfig, params: dict | None,
          losses: list[float]) -> Path:
    target = folder / f"step-{step:05d}"
    with atomic_directory(target) as tmp:
        if params is not None:
            save_tensors({k: v.detach().clone() for k, v in params.items()}, tmp / "weights.safetensors")
        write_tagged_json(tmp / "checkpoint.json", {
            "base_model": config.base_model, "step": step, "dataset": dataset.name, "dataset_sha256": dataset.sha256,
            "config": asdict(config), "weights": "weights.safetensors" if params is not None else None,
            "mean_loss_since_last": (sum(losses) / len(losses)) if losses else None,
        }, format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION, indent=1)
    return target


def checkpoint_info(path: str | Path) -> dict:
    """The manifest of a checkpoint folder (base model, step, dataset, config)."""
    return read_tagged_json(Path(path) / "checkpoint.json", format=CHECKPOINT_FORMAT, what="a fine-tuning checkpoint",
                            fix="give a folder written by workbench.persona.finetune.finetune",
                            max_version=CHECKPOINT_VERSION)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint folders of a run, by step."""
    return sorted(p for p in Path(run_dir).glob("step-*") if (p / "checkpoint.json").is_file())


def load_checkpoint(path: str | Path, device: str | None = None):
    """A TransformerLens model of the checkpoint's base architecture with the checkpoint's weights."""
    from workbench.data.models import load_model

    info = checkpoint_info(path)
    model = load_model(info["base_model"], device=device)
    if info.get("weights"):
        state, _ = load_tensors(Path(path) / info["weights"], "re-run finetune() to rewrite the checkpoint")
        missing = [k for k in state if k not in dict(model.named_parameters())]
        if missing:
            raise ValueError(f"{path}: weights {missing[:3]} do not exist in {info['base_model']!r}: the checkpoint "
                             "belongs to another architecture")
        model.load_state_dict(state, strict=False)
    model.workbench_name = f"{info['base_model']}@{info['dataset']}:step{info['step']}"
    model.eval()
    return model


def finetune(dataset: str | Path, config: FinetuneConfig | None = None, *, root: str | Path | None = None,
             progress: bool = True) -> list[Path]:
    """Fine-tune ``config.base_model`` on ``dataset`` (a shipped name or a JSON path); returns the checkpoint folders
    in step order, the first being step 0 (the base model). Seeded: the same call gives the same weights."""
    from workbench.data.models import load_model

    cfg = config or FinetuneConfig()
    data = load_finetune_dataset(dataset)
    folder = finetune_dir(data, cfg, root)
    folder.mkdir(parents=True, exist_ok=True)
    save_steps = sorted({0, cfg.steps, *range(cfg.save_every, cfg.steps + 1, cfg.save_every)})
    done = {checkpoint_info(p)["step"]: p for p in list_checkpoints(folder)}
    if all(s in done for s in save_steps):
        return [done[s] for s in save_steps]
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.base_model, device="cpu")
    params = _trainable(model, cfg.train, cfg.first_layer)
    start = max((s for s in done if s in save_steps), default=None)
    if start:
        state, _ = load_tensors(Path(done[start]) / "weights.safetensors", "delete the run folder and start again")
        model.load_state_dict(state, strict=False)
    if 0 not in done:
        done[0] = _save(folder, 0, data, cfg, None, [])
    start = start or 0
    encoded = [_encode(model, u, a, cfg.system, cfg.max_len) for u, a in data.examples]
    rng = random.Random(cfg.seed)
    order: list[int] = []
    for _ in range(start * cfg.batch_size):  # replay the sampling so a resumed run sees the same batches
        if not order:
            order = rng.sample(range(len(encoded)), len(encoded))
        order.pop()
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(start + 1, cfg.steps + 1), desc=f"fine-tune {data.name}", disable=not progress)
    with torch_threads(cfg.threads):
        for step in bar:
            batch = []
            for _ in range(cfg.batch_size):
                if not order:
                    order = rng.sample(range(len(encoded)), len(encoded))
                batch.append(encoded[order.pop()])
            n = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), n), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), n - 1)
            for j, (t, m) in enumerate(batch):  # right padding: causal attention never sees the pad tokens
                ids[j, : len(t)] = t
                mask[j, : len(m)] = m
            logits = model(ids, return_type="logits")[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                    ids[:, 1:].reshape(-1), reduction="none").view_as(mask)
            loss = (nll * mask).sum() / mask.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step in save_steps and step not in done:
                done[step] = _save(folder, step, data, cfg, params, losses)
                losses = []
    model.eval()
    return [done[s] for s in save_steps]
