"""DVoRA (Liu et al. 2024, the DoRA paper's DoRA + VeRA variant): DoRA's weight decomposition with
VeRA's direction update, ``W' = m · (W0 + Λ_b B Λ_d A) / ‖W0 + Λ_b B Λ_d A‖_c``.

Everything VeRA's options set (``rank``, ``projection_seed``, ``save_projection``, ``d_initial``,
``dropout``, ``group_lr``) works as for ``method=vera``; the magnitude m (start ``‖W0‖_c``) is one
more adapter parameter, trained at the ``adapter`` rate. The paper gives DVoRA VeRA's setting
(MT-Bench, Table 5), so the defaults are VeRA's. No PEFT reference exists: the tests check the
output against DoRA's formula with VeRA's ΔV computed by hand.
"""
from __future__ import annotations

from ..adapters.dvora import DVoRALinear
from .dora import magnitude_stats
from .vera import VeRA, vera_stats


class DVoRA(VeRA):
    adapter_class = DVoRALinear

    def adapter_stats(self, adapter) -> dict[str, float]:
        return {**vera_stats(adapter), **magnitude_stats(adapter)}
