"""Rollout actors: the plain :class:`~actors.rollout.RolloutActor` and its Ray wrapper."""

from actors.rollout import RolloutActor, make_ray_actor_class

__all__ = ["RolloutActor", "make_ray_actor_class"]
