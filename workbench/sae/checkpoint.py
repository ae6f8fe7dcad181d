"""One SAE's optimisation state (:class:`RunState`: the SAE, Adam, dead-latent counters, the running metrics) and the
checkpoints of a run (:class:`Checkpointer`): written whole or not at all, so a kill at any point resumes exactly."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from workbench.core.persist import atomic_directory, atomic_write_text, is_temp_name, save_tensors
from workbench.sae.io import read_safetensors
from workbench.sae.model import SAE
from workbench.sae.train_config import RunSpec, TrainConfig, lr_multiplier, warmup_multiplier
from workbench.core.errors import InputError

if TYPE_CHECKING:
    from workbench.sae.distributed import Distributed

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "Checkpointer", "RunState", "trim_log"]


CHECKPOINT_FORMAT = 1


class CheckpointError(InputError):
    """A checkpoint is unreadable or does not belong to this training configuration."""


# ----------------------------------------------------------------------------------------------------------------
# One SAE's optimisation state
# ----------------------------------------------------------------------------------------------------------------

_METRICS = ("loss", "mse", "sparsity_loss", "aux_loss", "l0", "fvu_num", "fvu_den", "sparse")
_PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


def _tensor_names(sae) -> tuple[str, ...]:
    """The SAE's trained tensors: its architecture's list (W_enc, b_enc, W_dec, b_dec and its own)."""
    return tuple(getattr(sae, "tensor_names", _PARAM_NAMES))


def _make_adam(params: list[Tensor], lr: float, config: TrainConfig) -> torch.optim.Adam:
    kwargs: dict[str, Any] = dict(lr=lr, betas=config.adam_betas, eps=config.adam_eps)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # fused Adam not built for this device / dtype
        return torch.optim.Adam(params, **kwargs)


class RunState:
    """An SAE in training: its optimiser, dead-latent counters and the metrics of the current log interval."""

    dist: Distributed | None = None  # when data parallel: gradients and statistics over ranks
    log_path: Path  # metrics.jsonl, set by the trainer when it opens the logs

    def __init__(self, spec: RunSpec, sae: SAE, config: TrainConfig):
        self.spec, self.sae, self.config = spec, sae, config
        self.name = spec.resolved_name
        self.base_lr = spec.resolved_lr
        self.param_names = [n for n in _tensor_names(sae) if isinstance(getattr(sae, n, None), torch.nn.Parameter)]
        self.params = [getattr(sae, n) for n in self.param_names]
        self.optimizer = _make_adam(self.params, self.base_lr, config)
        self.since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.device)
        self.final_density: Tensor | None = None  # per feature, from the last epoch's evaluation (sparsity file)
        self.selection_dtype = config.resolved_selection_dtype
        self._reset_interval()
        self.last: dict[str, float] = {}
        self.density: float | None = None  # the last step's code density: picks the next step's path

    def _reset_interval(self) -> None:
        self.interval = torch.zeros(len(_METRICS), dtype=torch.float64, device=self.sae.device)
        self.interval_steps = 0

    def dead_mask(self, window: int) -> Tensor:
        return self.since_fired >= window

    def step(self, x: Tensor, step: int, autocast) -> Tensor:
        """One optimisation step on the scaled batch ``x``; returns the detached loss (for the finite check)."""
        cfg = self.config
        sae = self.sae
        lr = self.base_lr * lr_multiplier(step, cfg.total_steps, cfg.lr_warmup_steps, cfg.lr_decay_fraction)
        warm = warmup_multiplier(step, cfg.total_steps, cfg.sparsity_warmup_fraction)
        with autocast:
            out = sae.training_loss(x, dead_mask=self.dead_mask(cfg.resolved_dead_window), sparsity_scale=warm,
                                    sparse_max_density=cfg.sparse_max_density, density_hint=self.density,
                                    selection_dtype=self.selection_dtype)
        out.loss.backward()
        dist = self.dist
        if dist is not None:
            dist.average_gradients(self.params)
            out.fired = dist.any_rank(out.fired)
            if out.min_active is not None:
                out.min_active = dist.minimum(out.min_active)
        sae.remove_parallel_decoder_grad()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sae.apply_constraints(out)
        rows = x.shape[0] * (dist.world_size if dist is not None and dist.data_parallel else 1)
        self.since_fired = torch.where(out.fired, torch.zeros_like(self.since_fired), self.since_fired + rows)
        stats = torch.stack([out.loss.detach().to(torch.float64), out.mse.to(torch.float64),
                             out.sparsity_loss.to(torch.float64), out.aux_loss.to(torch.float64),
                             out.l0.to(torch.float64), out.fvu_num.to(torch.float64), out.fvu_den.to(torch.float64),
                             torch.tensor(float(out.sparse), dtype=torch.float64, device=x.device)])
        if dist is not None:
            stats = dist.mean(stats)  # every rank then takes the same sparse/dense path next step
        self.interval += stats
        self.interval_steps += 1
        self.density = float(stats[4]) / sae.cfg.d_sae
        self.last_lr, self.last_warm = lr, warm
        return out.loss.detach()

    def flush_metrics(self, step: int, tokens: int) -> dict[str, float]:
        """Average the interval's metrics (one device sync) and start a new interval."""
        values = dict(zip(_METRICS, self.interval.tolist()))
        n = max(1, self.interval_steps)
        fvu = values["fvu_num"] / values["fvu_den"] if values["fvu_den"] > 0 else float("nan")
        window = self.config.resolved_dead_window
        dead = float(self.dead_mask(window).float().mean().item())
        self.last = {"step": step, "tokens": tokens, "loss": values["loss"] / n, "mse": values["mse"] / n,
                     "sparsity_loss": values["sparsity_loss"] / n, "aux_loss": values["aux_loss"] / n,
                     "l0": values["l0"] / n, "fvu": fvu, "explained_variance": 1.0 - fvu, "dead_fraction": dead,
                     "dead_window_tokens": window, "lr": getattr(self, "last_lr", self.base_lr),
                     "sparsity_warmup": getattr(self, "last_warm", 0.0), "sparse_step_fraction": values["sparse"] / n}
        self._reset_interval()
        return self.last

    # ----- checkpoint state -----

    def sae_tensors(self) -> dict[str, Tensor]:
        names = [n for n in _tensor_names(self.sae) if getattr(self.sae, n, None) is not None]
        return {n: getattr(self.sae, n).detach().contiguous().cpu() for n in names}

    @torch.no_grad()
    def load_sae_tensors(self, tensors: dict[str, Tensor], source: str) -> None:
        for name in [n for n in _tensor_names(self.sae) if getattr(self.sae, n, None) is not None]:
            target = getattr(self.sae, name)
            if name not in tensors or tuple(tensors[name].shape) != tuple(target.shape):
                raise CheckpointError(f"checkpoint file {source} lacks tensor {name} of shape {tuple(target.shape)}")
            target.copy_(tensors[name])

    def tracker_tensors(self) -> dict[str, Tensor]:
        out = {"since_fired": self.since_fired.cpu(), "interval": self.interval.cpu(),
               "interval_steps": torch.tensor(self.interval_steps)}
        if self.density is not None:
            out["density"] = torch.tensor(self.density, dtype=torch.float64)
        return out

    def load_tracker_tensors(self, tensors: dict[str, Tensor], source: str) -> None:
        ok = ("since_fired" in tensors and tuple(tensors["since_fired"].shape) == tuple(self.since_fired.shape)
              and "interval" in tensors and tuple(tensors["interval"].shape) == tuple(self.interval.shape))
        if not ok:
            raise CheckpointError(f"checkpoint file {source} lacks valid since_fired / interval tensors")
        self.since_fired = tensors["since_fired"].to(self.since_fired.device)
        self.interval = tensors["interval"].to(self.interval.device)
        self.interval_steps = int(tensors["interval_steps"])
        self.density = float(tensors["density"]) if "density" in tensors else None

    def optimizer_tensors(self) -> dict[str, Tensor]:
        out = {}
        for name, p in zip(self.param_names, self.params):
            for key, value in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{name}.{key}"] = value.detach().contiguous().cpu()
        return out

    def load_optimizer_tensors(self, tensors: dict[str, Tensor], source: str) -> None:
        state = {}
        for i, (name, p) in enumerate(zip(self.param_names, self.params)):
            entry = {}
            for key in ("exp_avg", "exp_avg_sq", "step"):
                t = tensors.get(f"{name}.{key}")
                if t is None:
                    continue
                if key == "step":
                    entry[key] = t.clone()
                else:
                    if tuple(t.shape) != tuple(p.shape):
                        raise CheckpointError(f"{source}: optimizer state {name}.{key} has shape {tuple(t.shape)}, "
                                              f"expected {tuple(p.shape)}")
                    entry[key] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(t)
            if entry:
                state[i] = entry
        sd = self.optimizer.state_dict()
        sd["state"] = state
        self.optimizer.load_state_dict(sd)


# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


class Checkpointer:
    """Atomic checkpoints under ``root``::

        root/step_00000123/state.json                      step, tokens, input scale, config fingerprint
        root/step_00000123/<run>/sae.safetensors           weights in training space (unfolded)
        root/step_00000123/<run>/optimizer.safetensors     Adam moments and step counts, by parameter name
        root/step_00000123/<run>/tracker.safetensors       tokens since each latent last fired
        root/LATEST                                        name of the newest complete checkpoint

    A checkpoint is built in a temporary folder (:func:`workbench.core.persist.atomic_directory`), each file
    fsynced, and renamed into place; then LATEST is replaced atomically, so a kill at any moment leaves the previous
    checkpoint intact. The oldest are pruned beyond ``keep``.
    """

    def __init__(self, root: str | Path, keep: int = 2):
        self.root = Path(root)
        self.keep = max(1, keep)

    def latest(self) -> Path | None:
        marker = self.root / "LATEST"
        if marker.is_file():
            candidate = self.root / marker.read_text().strip()
            if (candidate / "state.json").is_file():
                return candidate
        done = sorted(p for p in self.root.glob("step_*") if (p / "state.json").is_file())
        return done[-1] if done else None

    def save(self, step: int, state: dict, runs: Sequence[RunState]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:08d}"
        final = self.root / name
        with atomic_directory(final) as tmp:
            for run in runs:
                d = tmp / run.name
                d.mkdir()
                save_tensors(run.sae_tensors(), d / "sae.safetensors")
                save_tensors(run.optimizer_tensors(), d / "optimizer.safetensors")
                save_tensors(run.tracker_tensors(), d / "tracker.safetensors")
            atomic_write_text(tmp / "state.json", json.dumps(state, indent=2))
        atomic_write_text(self.root / "LATEST", name)
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        done = sorted(p for p in self.root.glob("step_*") if (p / "state.json").is_file())
        for old in done[: max(0, len(done) - self.keep)]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.iterdir():  # folders of a save that was killed (this and the older naming)
            if stale.is_dir() and (is_temp_name(stale.name) or stale.name.startswith(".tmp-")):
                shutil.rmtree(stale, ignore_errors=True)

    @staticmethod
    def read_state(path: Path) -> dict:
        state_file = path / "state.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"checkpoint file {state_file} is unreadable or corrupt ({err}): delete {path} to "
                                  f"resume from an earlier checkpoint, or start afresh (resume=False)") from err
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint file {state_file} has format {state.get('format')!r}, expected "
                                  f"{CHECKPOINT_FORMAT}")
        return state

    @staticmethod
    def read_tensors(path: Path) -> dict[str, Tensor]:
        try:
            return read_safetensors(path)
        except ValueError as err:
            raise CheckpointError(f"checkpoint file {path} is corrupt or truncated: delete {path.parent.parent} to "
                                  f"resume from an earlier checkpoint, or start afresh (resume=False). ({err})") from err


# ----------------------------------------------------------------------------------------------------------------


def trim_log(path: Path, step: int) -> None:
    """Drop the lines of a JSON-lines log (``metrics.jsonl``) written after ``step`` (a kill between a checkpoint
    and the next one leaves them; the resumed run logs those steps again) and a torn last line. Atomic."""
    path = Path(path)
    if not path.is_file():
        return
    kept, dropped = [], False
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped = True
            continue
        if isinstance(record, dict) and (int(record.get("step", 0) or 0) > step or record.get("event") == "end"):
            dropped = True  # an "end" line is written again when the resumed run ends
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
