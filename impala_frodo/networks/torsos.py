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

:class:`ResNetTorso` is IMPALA's deep network (Espeholt et al. 2018, figure 3, "deep"): three
sections of a 3x3 convolution (stride 1, same padding), a 3x3 max-pool with stride 2 (same
padding) and two residual blocks (ReLU, conv, ReLU, conv, plus the input), with 16, 32 and
32 channels; then a ReLU and dense ReLU layers (IMPALA's: one of 256). ``"auto"`` takes it
for images of at least :data:`RESNET_MIN_SIZE` pixels a side (Atari's 84 x 84 frames) and
MinAtar's convolution for smaller ones (10 x 10).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional

from impala_frodo.config.checks import TORSOS

#: MinAtar's convolution: 3x3, stride 1, no padding.
KERNEL_SIZE = 3
#: ``"auto"`` takes IMPALA's ResNet for images at least this many pixels high and wide.
RESNET_MIN_SIZE = 32
#: IMPALA's deep ResNet: the channels of its three sections.
RESNET_CHANNELS = (16, 32, 32)


def dense_relu_stack(in_features: int, hidden_sizes: Sequence[int]) -> tuple[nn.Sequential, int]:
    """Dense ReLU layers of ``hidden_sizes`` after ``in_features`` inputs, and their width."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


def is_image_shape(obs_shape: Sequence[int]) -> bool:
    """An image observation: rank 3, channels last ``[H, W, C]``."""
    return len(obs_shape) == 3


def resolve_torso(torso: str, obs_shape: Sequence[int]) -> str:
    """``"mlp"``, ``"conv"`` or ``"resnet"`` for ``torso`` in :data:`TORSOS` (``"auto"``:
    the ResNet for images of at least :data:`RESNET_MIN_SIZE` a side, conv for smaller
    images, the MLP for the rest)."""
    if torso not in TORSOS:
        raise ValueError(f"torso must be one of {', '.join(TORSOS)}; got {torso!r}")
    if torso == "auto":
        if not is_image_shape(obs_shape):
            return "mlp"
        return "resnet" if min(obs_shape[:2]) >= RESNET_MIN_SIZE else "conv"
    if torso in ("conv", "resnet"):
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
        self.dense, self.out_features = dense_relu_stack(size, hidden_sizes)

    def forward(self, obs: Tensor) -> Tensor:
        x = self.conv(obs.permute(0, 3, 1, 2)).relu()  # a view: [N, C, H, W], channels_last
        return self.dense(x.flatten(1))


class _ResidualBlock(nn.Module):
    """``x + conv1(relu(conv0(relu(x))))``, both 3x3 with same padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(self.conv0(x.relu()).relu())


class _ResNetSection(nn.Module):
    """conv 3x3 (same padding), max-pool 3x3 stride 2 (same padding), two residual blocks."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(_ResidualBlock(channels), _ResidualBlock(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = functional.max_pool2d(self.conv(x), 3, stride=2, padding=1)
        return self.blocks(x)


def resnet_output_size(size: int, sections: int = len(RESNET_CHANNELS)) -> int:
    """The height (or width) after ``sections`` max-pools 3x3, stride 2, padding 1."""
    for _ in range(sections):
        size = (size + 1) // 2
    return size


class ResNetTorso(nn.Module):
    """``[N, H, W, C]`` images to ``[N, width]`` features: IMPALA's deep ResNet, a ReLU, then
    dense ReLU layers (``hidden_sizes``; IMPALA's: ``(256,)``).

    On Atari's ``[84, 84, 4]`` frames the sections give 42 x 42, 21 x 21 and 11 x 11 maps:
    ``32 * 11 * 11 = 3872`` features into the dense layer. Parameter names:
    ``sections.<i>.conv``, ``sections.<i>.blocks.<j>.conv0|conv1``, ``dense.<k>``.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        channels: Sequence[int] = RESNET_CHANNELS,
        hidden_sizes: Sequence[int] = (256,),
    ) -> None:
        super().__init__()
        height, width, in_channels = check_image_shape(obs_shape)
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of ints >= 1, got {channels}")
        self.obs_shape = (height, width, in_channels)
        sections = []
        for c in channels:
            sections.append(_ResNetSection(in_channels, c))
            in_channels = c
        self.sections = nn.Sequential(*sections)
        size = in_channels * resnet_output_size(height, len(channels))
        size *= resnet_output_size(width, len(channels))
        self.dense, self.out_features = dense_relu_stack(size, hidden_sizes)

    def forward(self, obs: Tensor) -> Tensor:
        x = self.sections(obs.permute(0, 3, 1, 2))  # a view: [N, C, H, W], channels_last
        return self.dense(x.relu().flatten(1))
