"""Signs that FRODO's meta-gradient was alive in a run, for the learning tests.

FRODO's default residual target g = sg(v_s) + G_eta(tau) starts with G_eta's output layer
at zero, so a run whose meta-gradient is dead learns exactly as IMPALA does and solves
Catch all the same: solving alone says nothing about eta. These checks do. Thresholds are
far from both sides of what was measured on Catch 10 x 5 (default FRODO, seeds 0-2, to a
mean return of 0.8): every tensor of eta moved by 0.029 to 0.072 (Adam's steps are about
meta.lr = 1e-2 each); the meta-gradient's norm was 0.012 or more at every meta step; the
RMS of g - v_s over the last 10 updates was 0.07 to 0.12. With eta frozen (meta.lr the
smallest positive float) or the inner steps' graph to eta cut, eta did not move at all and
g - v_s was 0.0; with the graph cut the meta-gradient was 0.0 too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

#: The least change of every tensor of eta (largest absolute change of an element).
ETA_MOVED = 1e-3
#: The least RMS of g - v_s (``meta/target_minus_return_rms``) at the end of a run.
TARGET_DEPARTED = 1e-2


def dead_meta_signs(
    eta_before: Mapping[str, torch.Tensor],
    eta_after: Mapping[str, torch.Tensor],
    grad_norms: Sequence[float],
    final_target_rms: float,
) -> dict[str, str]:
    """The checks a run fails, by name (``"meta-gradient"``, ``"eta"``, ``"target"``), each
    with what was seen; empty when the meta-gradient was alive.

    ``eta_before``: the meta-network's parameters before the first meta step;
    ``eta_after``: at the end. ``grad_norms``: ``meta/grad_norm`` as the run reported it
    (per meta step, or per log record). ``final_target_rms``: ``meta/target_minus_return_rms``
    at the end of the run.
    """
    signs = {}
    if not grad_norms or min(grad_norms) <= 0.0:
        signs["meta-gradient"] = f"meta/grad_norm not > 0 throughout: {list(grad_norms)[:10]}"
    moved = {k: (eta_after[k] - v).abs().max().item() for k, v in eta_before.items()}
    still = {k: change for k, change in moved.items() if change <= ETA_MOVED}
    if not eta_before or still:
        signs["eta"] = f"eta tensors that moved <= {ETA_MOVED}: {still or 'no eta'}"
    if not final_target_rms > TARGET_DEPARTED:
        signs["target"] = (
            f"the learned target's RMS distance from v_s ends at {final_target_rms:.3g} "
            f"<= {TARGET_DEPARTED}"
        )
    return signs
