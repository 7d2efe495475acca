"""The config's vocabulary: the allowed values of its fields, and the checks that refuse
anything else with a message naming the field, the allowed values and what was given.
"""

from __future__ import annotations

from typing import Any

ALGOS = ("impala", "frodo", "frodo-ext", "mgrl")
META_ALGOS = ("frodo", "frodo-ext", "mgrl")
TASKS = ("control", "prediction")
INNER_OPTIMIZERS = ("sgd", "rmsprop")
BETA_MODES = ("constant", "annealed")
DEVICES = ("auto", "cpu", "cuda")
TARGET_FORMS = ("residual", "plain", "plain-zero-head", "residual-centred")
#: The target forms that add the learned correction to the canonical V-trace target v_s.
RESIDUAL_FORMS = ("residual", "residual-centred")
#: ``meta.every = "auto"`` for FRODO with a residual target: a meta step in one window of
#: this many (chosen from the evidence in docs/results-price.md; 1 for everything else).
AUTO_EVERY = 4
META_SCHEDULES = ("chain", "sliding")
#: What the consistency term pulls the learned target g toward (MetaConfig's docstring).
CONSISTENCY_FORMS = ("canonical", "self", "self-unstopped")
#: Where the outer (meta) step is taken: inline in the learner's update, or by a
#: meta-learner beside it (impala_frodo.rule.meta_learner; docs/design.md,
#: "The async meta-learner").
META_MODES = ("inline", "async")
TORSOS = ("auto", "mlp", "conv", "resnet")  # impala_frodo.networks.torsos
#: How actors evaluate mu (impala_frodo.networks.torch_policy):
#: auto = torch for a ResNet, else numpy.
ACTOR_INFERENCE = ("auto", "numpy", "torch")
#: How data-parallel learners are placed over nodes (Ray placement-group strategies).
LEARNER_PLACEMENTS = ("pack", "spread", "strict-spread")
#: numpy seeds are 32-bit.
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A configuration value a user must fix; the message says which and how."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def positive_int(name: str, value: Any) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{name} must be an integer >= 1, got {value!r}",
    )


def positive_int_or_auto(name: str, value: Any) -> None:
    require(
        value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
        f"{name} must be an integer >= 1 or 'auto', got {value!r}",
    )


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    bracket = "(" if low_open else "["
    require(ok, f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def is_utf8(text: str) -> bool:
    """False for names with undecodable bytes (``surrogateescape``d from a non-UTF-8 argv)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    require(value in allowed, f"{name} must be one of {', '.join(allowed)}; got {value!r}")
