"""Persona vectors (docs/methods.md §12, §16, §32): traits as data (``traits``), judges (``judge``, ``judge_llm``),
extraction (``extract``), other elicitation strategies compared with it (``elicit``), steering sweeps with controls
(``steer``), monitoring by projection (``monitor``), decomposition into SAE features (``decompose``), tracing across
checkpoints (``trace``) and a small CPU fine-tuning loop whose checkpoints the tracing and model-diffing code reuse
(``finetune``); reused persona features (``reuse``) and emergent misalignment (``misalign``), docs §34."""
from workbench.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Trait": ".traits", "load_trait": ".traits", "shipped_traits": ".traits",
    "RubricJudge": ".judge", "JudgeScore": ".judge", "judge_agreement": ".judge",
    "OpenAIJudge": ".judge_llm",
    "ExtractConfig": ".extract", "PersonaVector": ".extract", "extract_persona_vector": ".extract",
    "filter_pairs": ".extract", "load_persona_vector": ".extract",
    "compare_strategies": ".elicit", "evaluate_strategies": ".elicit", "elicitation_data": ".elicit",
    "SteerConfig": ".steer", "steering_sweep": ".steer", "choose": ".steer",
    "monitor_trait": ".monitor", "projection": ".monitor",
    "decompose": ".decompose",
    "trace_checkpoints": ".trace", "projection_shift": ".trace", "CheckpointRef": ".trace",
    "FinetuneConfig": ".finetune", "finetune": ".finetune", "load_checkpoint": ".finetune",
    "list_checkpoints": ".finetune", "load_finetune_dataset": ".finetune",
    "span_feature_acts": ".reuse", "overlap_row": ".reuse", "FeatureSetClamp": ".reuse", "streetlight": ".reuse",
    "load_misalignment": ".misalign", "MisalignmentJudge": ".misalign", "misalignment_agreement": ".misalign",
    "feature_rise": ".misalign",
})
