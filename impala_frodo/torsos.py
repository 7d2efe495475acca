"""Torsos for image observations, and the rule that picks a torso from the observation's shape.

An observation of rank 3 is an image, channels last ``[H, W, C]`` as Gymnasium's image
spaces are (MinAtar's ``10 x 10 x C``); any other rank is flattened into a vector for an
MLP. Images keep their layout from the env to the network: :class:`ConvTorso` views a
channels-last batch ``[N, H, W, C]`` as ``[N, C, H, W]`` with ``permute``, which copies
nothing (the view is in PyTorch's ``channels_last`` memory format, a layout ``conv2d``
supports directly).

:class:`ConvTorso` is MinAtar's network (Young & Tian 2019): one 3x3 convolution, stride 1,
no padding, with 16 channels and a ReLU, then dense ReLU layers (MinAtar's: one of 128).
The agent uses it as its torso, and FRODO's meta-network as its embedding phi(x) of image
observations.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from impala_frodo.config import TORSOS

#: MinAtar's convolution: 3x3, stride 1, no padding.
KERNEL_SIZE = 3


def is_image_shape(obs_shape: Sequence[int]) -> bool:
    """An image observation: rank 3, channels last ``[H, W, C]``."""
    return len(obs_shape) == 3


def resolve_torso(torso: str, obs_shape: Sequence[int]) -> str:
    """``"mlp"`` or ``"conv"`` for ``torso`` in :data:`TORSOS` (``"auto"``: conv for images)."""
    if torso not in TORSOS:
        raise ValueError(f"torso must be one of {', '.join(TORSOS)}; got {torso!r}")
    if torso == "auto":
        return "conv" if is_image_shape(obs_shape) else "mlp"
    if torso == "conv":
        check_image_shape(obs_shape)
    return torso


def check_image_shape(obs_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(H, W, C)``, or a ``ValueError`` if a 3x3 convolution cannot take ``obs_shape``."""
    shape = tuple(int(s) for s in obs_shape)
    if not is_image_shape(shape) or min(shape[:2]) < KERNEL_SIZE or shape[2] < 1:
        raise ValueError(
            f"a conv torso needs image observations [H, W, C] with H, W >= {KERNEL_SIZE} "
            f"(channels last); got shape {shape}"
        )
    return shape  # type: ignore[return-value]


class ConvTorso(nn.Module):
    """``[N, H, W, C]`` images to ``[N, width]`` features: conv 3x3 + ReLU, then dense ReLUs.

    With ``hidden_sizes = ()`` the features are the flattened conv activations.
    """

    def __init__(
        self, obs_shape: Sequence[int], channels: int = 16, hidden_sizes: Sequence[int] = (128,)
    ) -> None:
        super().__init__()
        height, width, in_channels = check_image_shape(obs_shape)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.obs_shape = (height, width, in_channels)
        self.conv = nn.Conv2d(in_channels, channels, KERNEL_SIZE)
        size = channels * (height - KERNEL_SIZE + 1) * (width - KERNEL_SIZE + 1)
        layers: list[nn.Module] = []
        for h in hidden_sizes:
            layers += [nn.Linear(size, h), nn.ReLU()]
            size = h
        self.dense = nn.Sequential(*layers)
        self.out_features = size

    def forward(self, obs: Tensor) -> Tensor:
        x = self.conv(obs.permute(0, 3, 1, 2)).relu()  # a view: [N, C, H, W], channels_last
        return self.dense(x.flatten(1))
