"""impala_frodo: FRODO meta-gradient RL, its baselines and the pure core they share.

The core in rooms, each a subpackage with one job; a room imports only the rooms below it
(``tests/test_layout.py`` checks it), and none imports Ray, ``actors`` or ``learner``:

- ``utils``: small helpers (devices, seeding, errors, atomic files). Imports no room.
- ``config``: the run's settings and the named presets.
- ``envs``: Catch, the random walk, MinAtar, Atari, any Gymnasium env, batched.
- ``networks``: the agent, the meta-network, and mu as actors evaluate it.
- ``acting``: unrolls and the trajectory format.
- ``rule``: the learning rule (V-trace, losses, meta-gradient, the update).
- ``records``: run directories, logs and checkpoints.
- ``sizing``: what a run's sizes ask of memory (estimates made before it starts).
- ``reports``: figures, tables and probes.

Importing the package registers its Gymnasium ids (``impala_frodo/Catch-v0``,
``impala_frodo/RandomWalk-v0``), so ``gymnasium.make`` finds them after
``import impala_frodo``, as with ale_py or minigrid.
"""

import impala_frodo.envs  # noqa: F401 (registers the Gymnasium ids)
