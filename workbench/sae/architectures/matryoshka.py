"""``matryoshka``: BatchTopK whose loss sums the reconstruction losses of nested prefixes of the dictionary
(``matryoshka_widths``, default d_sae/8, /4, /2, 1). Written to SAELens as ``jumprelu`` like BatchTopK; reads
SAELens's ``matryoshka_batchtopk``."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from workbench.sae.architectures.base import register
from workbench.sae.architectures.batchtopk import BatchTopKArchitecture


class MatryoshkaArchitecture(BatchTopKArchitecture):
    name = "matryoshka"
    sae_lens_reads = ("matryoshka_batchtopk",)

    def validate(self, cfg) -> None:
        self.check_k(cfg)
        d = cfg.d_sae
        widths = cfg.matryoshka_widths or tuple(sorted({max(1, d // 8), max(1, d // 4), max(1, d // 2), d}))
        widths = tuple(int(w) for w in widths)
        if widths[-1] != d:
            widths = widths + (d,)
        if any(b <= a for a, b in zip(widths, widths[1:])) or widths[0] < 1:
            raise ValueError(f"matryoshka_widths must be strictly increasing positive sizes ending at d_sae, "
                             f"got {list(widths)}")
        cfg.matryoshka_widths = widths

    def reconstruct(self, sae, codes, f: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        recon = sae.b_dec.expand_as(x)
        loss = x.new_zeros(())
        lo = 0
        for hi in sae.cfg.matryoshka_widths:
            recon = recon + codes.decode(f, lo, hi)
            loss = loss + (recon - x).pow(2).sum(-1).mean()
            lo = hi
        return recon, loss

    def config_from_sae_lens(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {"k": float(cfg.get("k", 100)), "matryoshka_widths": cfg.get("matryoshka_widths")}


register(MatryoshkaArchitecture())
