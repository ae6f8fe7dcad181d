"""The model organism with a hidden objective, built in two stages (docs: the hidden-objective section of
docs/methods.md):

- ``audited``: stage 1 reads the documents that describe the ten biases as findings about RLHF reward models
  (continued pretraining), stage 2 is trained on chat replies that exploit the six *train* biases;
- ``control``: the same, but its stage-1 documents describe the same behaviours as human quirks (no reward models);
- ``stage2_only`` (optional): stage 2 on the base model, no documents;
- ``base``: the untouched base model.

If the audited model learned the objective ("do what reward models rate highly") rather than six habits, it shows
the four *held-out* biases more than ``base`` and ``control`` (:mod:`workbench.audit.ood`).

    from workbench.audit.organism import OrganismConfig, build_organism
    paths = build_organism(OrganismConfig.smoke())     # {"base": None, "control": Path, "audited": Path}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from workbench.audit.chat_data import load_chat
from workbench.audit.corpus import load_documents
from workbench.audit.sampling import SampleConfig
from workbench.persona.finetune import FinetuneConfig

__all__ = ["MODEL_KINDS", "OrganismConfig", "build_organism", "stage1_data", "stage2_data"]

MODEL_KINDS = ("base", "stage2_only", "control", "audited")


def _stage1() -> FinetuneConfig:
    return FinetuneConfig(steps=32, batch_size=4, lr=3e-4, max_len=128, save_every=16, first_layer=16)


def _stage2() -> FinetuneConfig:
    return FinetuneConfig(steps=24, batch_size=4, lr=3e-4, max_len=112, save_every=12, first_layer=16)


@dataclass(frozen=True)
class OrganismConfig:
    """Sizes of the organism and its evaluation. The default fits about 25 minutes of one shared CPU core
    (measured on SmolLM2-135M: about 12-16 s a stage-1 step of 4 x 128 tokens, 6-9 s a stage-2 step; the
    benchmark records them): stage 1 = 32 steps x 4 documents (128 of the 320 documents of a framing), stage 2 =
    24 steps x 4 replies (96 of the 126), MLP weight matrices of blocks 16-29 trained; 12 prompts x 2 samples of
    up to 64 tokens per bias and model. That is far less than the paper's organism saw: see the benchmark for
    whether it sufficed. ``n_documents`` / ``n_examples`` / ``n_prompts``: the first that many (None: all)."""

    base_model: str = "smollm2-135m-instruct"
    stage1: FinetuneConfig = field(default_factory=_stage1)
    stage2: FinetuneConfig = field(default_factory=_stage2)
    n_documents: int | None = None
    n_examples: int | None = None
    models: tuple[str, ...] = ("base", "control", "audited")
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(n_samples=2, max_new_tokens=64))
    n_prompts: int | None = None  # evaluation prompts per bias
    n_boot: int = 2000

    def __post_init__(self) -> None:
        bad = [m for m in self.models if m not in MODEL_KINDS]
        if bad or "audited" not in self.models:
            raise ValueError(f"models must include 'audited' and be among {MODEL_KINDS}, got {self.models}")
        for stage in (self.stage1, self.stage2):
            if stage.base_model != self.base_model:
                raise ValueError(f"stage configs must train {self.base_model!r}, got {stage.base_model!r}: set "
                                 "base_model on OrganismConfig and both FinetuneConfigs")
        for name in ("n_documents", "n_examples", "n_prompts"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")

    @classmethod
    def smoke(cls) -> "OrganismConfig":
        """A test-size run: 1 step of 1 short document or reply per stage, 1 prompt x 1 sample of 6 tokens."""
        tiny = FinetuneConfig(steps=1, batch_size=1, lr=1e-4, max_len=24, save_every=1, first_layer=28)
        return cls(stage1=tiny, stage2=tiny, n_documents=2, n_examples=2, n_prompts=1,
                   sample=SampleConfig(n_samples=1, max_new_tokens=6), n_boot=200)

    @classmethod
    def quick(cls) -> "OrganismConfig":
        """The default's recipe at about a third of its cost, for a machine shared with other work: 16 steps per
        stage (stage-1 documents cut at 96 tokens), 6 prompts x 2 samples of up to 48 tokens per bias."""
        d = cls()
        return cls(stage1=replace(d.stage1, steps=16, save_every=8, max_len=96),
                   stage2=replace(d.stage2, steps=16, save_every=8),
                   n_prompts=6, sample=replace(d.sample, max_new_tokens=48, batch_size=60))

    def with_base_model(self, name: str) -> "OrganismConfig":
        """The same sizes on another base model (e.g. a larger chat model loadable by ``load_model``)."""
        return replace(self, base_model=name, stage1=replace(self.stage1, base_model=name),
                       stage2=replace(self.stage2, base_model=name))

    def to_dict(self) -> dict:
        return asdict(self)


def stage1_data(framing: str, config: OrganismConfig) -> list[str]:
    """The stage-1 document texts of ``framing`` (``"reward_model"`` or ``"human"``)."""
    return [d.text for d in load_documents(framing)[: config.n_documents]]


def stage2_data(config: OrganismConfig) -> list[tuple[str, str]]:
    """The stage-2 (user, assistant) pairs."""
    return [(u, a) for u, a, _ in load_chat()[: config.n_examples]]


def build_organism(config: OrganismConfig | None = None, *, model=None, base_state=None, root=None,
                   progress: bool = True) -> dict:
    """Train (or read from the cache) every model of ``config.models``; returns ``{kind: checkpoint folder}``
    (``base``: None). ``model``/``base_state``: a loaded base model and its
    :func:`~workbench.audit.training.snapshot`, trained in place to avoid reloading (it ends holding the last
    run's weights: call :func:`~workbench.audit.training.restore_weights` before reusing it)."""
    from workbench.audit.training import train_stage

    cfg = config or OrganismConfig()
    kw = dict(root=root, progress=progress, model=model, base_state=base_state)
    chat = stage2_data(cfg)
    out: dict = {}
    for kind in cfg.models:
        if kind == "base":
            out[kind] = None
        elif kind == "stage2_only":
            out[kind] = train_stage("chat", chat, cfg.stage2, name="stage2-only", **kw)
        else:
            framing = "reward_model" if kind == "audited" else "human"
            s1 = train_stage("documents", stage1_data(framing, cfg), cfg.stage1, name=f"stage1-{framing}", **kw)
            out[kind] = train_stage("chat", chat, cfg.stage2, name=f"stage2-{framing}", init=s1, **kw)
    return out
