"""impala_frodo: FRODO meta-gradient RL, its baselines and the pure core they share.

Importing the package registers its Gymnasium ids (``impala_frodo/Catch-v0``,
``impala_frodo/RandomWalk-v0``), so ``gymnasium.make`` finds them after
``import impala_frodo``, as with ale_py or minigrid.
"""

import impala_frodo.envs  # noqa: F401 (registers the Gymnasium ids)
