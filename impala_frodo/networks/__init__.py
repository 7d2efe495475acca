"""Networks: the agent, the meta-network, and the agent's numpy twin for actors.

- :mod:`~impala_frodo.networks.agent`: :class:`AgentNet` (pi_theta, V_theta).
- :mod:`~impala_frodo.networks.meta`: FRODO's :class:`MetaNet` G_eta and MGRL's
  :class:`MGRLMeta` (gamma, lambda).
- :mod:`~impala_frodo.networks.torsos`: MLP, MinAtar's conv and IMPALA's ResNet torsos.
- :mod:`~impala_frodo.networks.weights`: weights packed into one vector for the actors.
- :mod:`~impala_frodo.networks.numpy_policy`, :mod:`~impala_frodo.networks.numpy_resnet`,
  :mod:`~impala_frodo.networks.torch_policy`: the behaviour policy mu as actors evaluate it.

``weights``, ``numpy_policy`` and ``numpy_resnet`` import no torch (actors use them); this
package's ``__init__`` imports nothing, so importing one of them does not load the others.
May import: ``config``, ``utils``.
"""
