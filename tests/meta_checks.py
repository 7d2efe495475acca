"""Signs that FRODO's meta-gradient was alive in a run, for the learning tests.

FRODO's default residual target g = sg(v_s) + G_eta(tau) starts with G_eta's output layer
at zero, so a run whose meta-gradient is dead learns exactly as IMPALA does and solves
Catch all the same: solving alone says nothing about eta. These checks do. A dead run
sits at exactly 0 on each (eta frozen by meta.lr = the smallest positive float: eta and
target; the inner steps' graph to eta cut: all three); the thresholds sit far below what
live runs reached on Catch 10 x 5 (default FRODO, to a mean return of 0.8; seen: the
synchronous trainer on seeds 0-2, the actor-learner in 4 runs): see the constants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

#: The least largest change of an element of eta over the run (and every tensor of eta
#: must change). Seen live: largest 0.045-0.072 (sync), 0.076-0.090 (distributed); the
#: tensor that moved least, 0.029-0.045 (sync), 0.0025-0.013 (distributed, the output
#: bias). Adam steps each element by about meta.lr = 1e-2.
ETA_MOVED = 1e-3
#: The least RMS of g - v_s (``meta/target_minus_return_rms``) at the end of a run. Seen
#: live: 0.07-0.12 (sync, mean of the last 10 updates), 0.018-0.046 (distributed, the
#: last log record).
TARGET_DEPARTED = 1e-3


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
    (per meta step, or per log record; seen live: 0.012 or more). ``final_target_rms``:
    ``meta/target_minus_return_rms`` at the end of the run.
    """
    signs = {}
    if not grad_norms or min(grad_norms) <= 0.0:
        signs["meta-gradient"] = f"meta/grad_norm not > 0 throughout: {list(grad_norms)[:10]}"
    moved = {k: (eta_after[k] - v).abs().max().item() for k, v in eta_before.items()}
    if not moved or max(moved.values()) <= ETA_MOVED or min(moved.values()) == 0.0:
        signs["eta"] = f"each tensor's largest change (all > 0, one > {ETA_MOVED}): {moved}"
    if not final_target_rms > TARGET_DEPARTED:
        signs["target"] = (
            f"the learned target's RMS distance from v_s ends at {final_target_rms:.3g} "
            f"<= {TARGET_DEPARTED}"
        )
    return signs
