"""The continual-learning harness of workbench.sdm: the GABA switch is over before task 2, the inputs are scaled
from the first task only, the penalty step is stable, centring is what lets the SDMLP keep old tasks, the wiki
split, and the two SDM views."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.sdm.continual import (ContinualConfig, _proximal_penalty_step, continual_table, digits_split,
                                     run_method, standardise)
from workbench.sdm.sdmlp import MLPConfig, SparseMLP
from workbench.sdm.wiki_embeddings import WikiEmbeddingConfig, WikiEmbeddings, wiki_split

CC = ContinualConfig(epochs=2, seeds=1, width=100, k=5, progress=False)


@pytest.fixture(scope="module")
def digits():
    return digits_split()


def test_the_gaba_switch_is_over_when_task_two_starts(digits):
    r = run_method(digits, "sdmlp", CC, 0)
    assert r.k_at_task2 == CC.k
    assert run_method(digits, "relu", CC, 0).k_at_task2 == CC.width  # no Top-K: every unit


def test_standardise_uses_the_first_task_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g) * 5 + 3
    first = torch.zeros(40, dtype=torch.bool)
    first[:10] = True
    xtr, xte = standardise(x, x[:4] * 100, first)
    assert torch.allclose(xtr[first].mean(0), torch.zeros(6), atol=1e-5)
    assert float(xtr[first].pow(2).mean()) == pytest.approx(1.0, rel=1e-5)
    shifted = x.clone()
    shifted[10:] += 1000  # later tasks' data must not move the scaling
    assert torch.allclose(standardise(shifted, x[:4], first)[0][:10], xtr[:10])


def test_the_penalty_step_is_implicit_and_stable():
    m = SparseMLP(4, 2, MLPConfig(width=6, k=2, bias=True), seed=0)
    anchor = [torch.zeros_like(p) for p in m.parameters()]
    omega = [torch.ones_like(p) for p in m.parameters()]
    before = [p.detach().clone() for p in m.parameters()]
    _proximal_penalty_step(m, omega, anchor, 0.25)  # theta / (1 + 2 * 0.25)
    for p, b in zip(m.parameters(), before):
        assert torch.allclose(p, b / 1.5)
    _proximal_penalty_step(m, omega, anchor, 1e12)  # an explicit step this large would blow up
    assert all(torch.isfinite(p).all() and p.abs().max() < 1e-6 for p in m.parameters())


def test_a_huge_ewc_lambda_freezes_instead_of_diverging(digits):
    from dataclasses import replace

    r = run_method(digits, "ewc", replace(CC, ewc_lambda=1e8), 0)
    assert np.isfinite(r.per_task).all() and r.per_task[0] > 0.9  # task 1 learnt, then held


def test_continual_table_takes_a_lambda_per_method(digits):
    t = continual_table(digits, CC, ("mas",), lambdas={"mas": 1.0})
    assert set(t) == {"mas"} and len(t["mas"]["per_task_mean"]) == 5 and 0.2 < t["mas"]["final_mean"] <= 1


def test_wiki_split_makes_tasks_of_two_topics():
    n, topics = 10, [f"t{i}" for i in range(6)]
    y = torch.arange(6).repeat_interleave(n)
    train = torch.tensor([i % n >= 3 for i in range(6 * n)])
    emb = WikiEmbeddings(torch.randn(6 * n, 8), y, train, topics, [""] * (6 * n))
    data = wiki_split(emb)
    assert data.tasks == [[0, 1], [2, 3], [4, 5]] and data.class_names == topics
    assert len(data.y_train) == 6 * 7 and len(data.y_test) == 6 * 3
    with pytest.raises(ValueError, match="even number"):
        WikiEmbeddingConfig(topics=5)


def _tables():
    from workbench.sdm.attention import AttentionSDMTable, HeadSDM

    heads = [HeadSDM(0, h, beta, beta, None, 20, 0.8, 0.1, 1.0, 0.9 if h == 0 else 0.1, 0.1, 0.1, 1.0)
             for h, beta in enumerate((2.0, 5.0, 8.0, 50.0))]
    return {"m": AttentionSDMTable("m", 64, (4.3, 9.0), heads)}


def test_the_beta_view_reports_the_in_band_share_and_checks_its_inputs():
    from widgets.sdm_beta_view import SDMBetaView

    view = SDMBetaView(_tables())
    assert view.plain_text() == "SDMBetaView (beta_norm): m 50% in band"
    html = view.to_html()
    assert "Attention as SDM" in html and "[4.30, 9.00]" in html and "50%" in html
    assert view.select("m", 0, 3).head().beta_norm == 50.0
    with pytest.raises(ValueError, match="no head L0 H9"):
        view.select("m", 0, 9)
    with pytest.raises(ValueError, match="QK-norm"):
        view.set_beta("beta_weights")


def test_the_continual_view_sorts_methods_by_final_accuracy():
    from widgets.sdm_continual_view import ContinualView

    row = lambda a: {"final_mean": a[-1], "final_sem": 0.0, "per_task_mean": a}  # noqa: E731
    view = ContinualView({"relu": row([1.0, 0.4]), "sdmlp": row([1.0, 0.8])})
    html = view.table_html()
    assert html.index("sdmlp") < html.index("relu") and "0.800" in html
    with pytest.raises(ValueError, match="not in the table"):
        view.show(["ewc"])
