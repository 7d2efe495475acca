"""Every data-parallel learner lost at once: restarting them all from the last checkpoint.

When no rank of a :class:`~learner.training.group.LearnerGroup` survives an update (every
process died, or all were lost with their nodes), no rank holds a clean state to share.
The group then starts a new rank in every bundle and gives them all the state of the last
checkpoint (:func:`rewound_state`), within the same restart budget as a single loss
(``run.max_learner_restarts`` within ``run.restart_window_s``). Where no checkpoint has
been saved yet, the run ends as before (exit 1).

Where the state comes from: the group is handed a callable, ``saved_state``, which the
:class:`~learner.training.learner.Learner` sets to its
:meth:`~learner.training.learner.Learner.saved_learning_state` (the updater's part of
``latest.pt``, read from disk only when it is needed). The group itself never reads
checkpoints: the records code stays with the learner that saves them.

The counts go on: the restored ranks take the checkpoint's theta, inner-optimizer state,
eta and eta's optimizer state, but keep counting updates and meta steps from the
group's current counts. So the policy version never goes backwards (the actors' weights,
:class:`~impala_frodo.networks.weights.DelayedWeights`, the books' records and rates all
assume it), and the updates taken since the checkpoint are counted as undone
(``perf/rewound_updates``). Nothing of the rule reads these counts: the inner optimizer's
state (and Adam's step counts for eta) come whole from the checkpoint, and a meta
schedule's phase is its pending window, which a restore clears (a meta chain starts
afresh from the restored theta, as after a resume), and ``windows_ended``, a count of
this session's windows that every new rank starts at 0 alike. The meta-gradient's
column sampler is not in a checkpoint: every new rank keeps the generator it was seeded
with (the same on every rank), as after a resume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: The updater's state in the last checkpoint, or ``None`` where none has been saved.
SavedState = Callable[[], Mapping[str, Any] | None]


def no_saved_state() -> None:
    """A group's ``saved_state`` until a learner with checkpoints sets its own."""
    return None


def rewound_state(
    saved: Mapping[str, Any], num_updates: int, num_meta_updates: int
) -> dict[str, Any]:
    """A rank's state (:meth:`~learner.training.rank.RankLearner.restore`'s layout) from a
    checkpoint's updater state ``saved``, its counts replaced by the group's current
    ``num_updates`` and ``num_meta_updates`` (which are never fewer than the saved ones)."""
    if int(saved["num_updates"]) > num_updates:
        raise ValueError(
            f"the checkpoint is of update {saved['num_updates']}, after the group's "
            f"{num_updates}: not a checkpoint of this run's past"
        )
    counts = {"num_updates": num_updates, "num_meta_updates": num_meta_updates}
    return {"updater": dict(saved) | counts}
