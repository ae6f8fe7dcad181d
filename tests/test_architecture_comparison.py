"""The architecture comparison's pieces that need no model: its SAEs, the matched-L0 choice, the table and plot."""
from __future__ import annotations

import pytest

from workbench.studies.architectures import (ArchitectureComparison, ArchitectureComparisonConfig,
                                             comparison_specs)


def test_specs_cover_every_family_with_grids_and_unique_names():
    cfg = ArchitectureComparisonConfig(relu_l1=(1.0, 4.0), jumprelu_l0=(2.0,), extra=("gated",))
    specs = comparison_specs(cfg)
    assert [s.architecture for s in specs] == ["topk", "batchtopk", "matryoshka", "relu", "relu", "jumprelu",
                                               "gated"]
    assert len({s.resolved_name for s in specs}) == len(specs)
    assert [s.l1_coefficient for s in specs if s.architecture == "relu"] == [1.0, 4.0]
    assert all(s.d_sae == cfg.d_sae and s.lr == cfg.lr for s in specs)


def _row(name, arch, l0, ev, probe):
    return {"name": name, "architecture": arch, "l0": l0, "explained_variance": ev, "ce_loss_score": 0.9,
            "kl_div_score": 0.9, "dead_fraction": 0.0, "probe_en_k1": probe, "probe_en_to_es_fr_k1": probe - 0.05}


def test_matched_picks_the_nearest_l0_on_a_log_scale(tmp_path):
    rows = [_row("topk", "topk", 32, 0.9, 0.8), _row("relu-a", "relu", 100, 0.95, 0.7),
            _row("relu-b", "relu", 20, 0.8, 0.75), _row("relu-c", "relu", 8, 0.7, 0.7)]
    cmp = ArchitectureComparison(rows=rows, target_l0=32)
    matched = {r["architecture"]: r["name"] for r in cmp.matched()}
    assert matched == {"topk": "topk", "relu": "relu-b"}  # |log(20/32)| < |log(100/32)|
    assert "relu-b" in cmp.format_table() and "relu-a" not in cmp.format_table()
    fig = cmp.figure()
    assert {t.name for t in fig.data} >= {"topk", "relu", "en"}
    back = ArchitectureComparison.load(cmp.save(tmp_path))
    assert back.rows == rows and back.target_l0 == 32


def test_unknown_extra_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        comparison_specs(ArchitectureComparisonConfig(extra=("astrology",)))
