"""IMPALA's deep ResNet torso in numpy, for actors that act without torch.

The same function as :class:`~impala_frodo.networks.torsos.ResNetTorso`'s convolutional part, on
channels-last images ``[N, H, W, C]`` (as the envs store them), from the weights by name as
torch stores them (conv weights ``[O, C, 3, 3]``). A 3x3 convolution with same padding is one
matrix product: of im2col patches ``[N H W, 9 C]`` (a strided view of the padded input, copied
once by the reshape) with the ``[9 C, O]`` weight on large maps, or of the padded pixels
``[N H W, C]`` with all nine taps ``[C, 9 O]``, summed at their shifts, on small ones. The 3x3
max-pool with stride 2 is two passes of strided maxima (rows, then columns). Numpy's matrix
product runs on its BLAS: with one thread per actor process (Ray's default), not more.

:func:`resnet_features` returns the flattened features in torch's ``[N, C, H, W]`` order, so
the dense layers that follow read the same weights as the torch torso's.
``tests/test_atari.py`` holds it to the torch torso's logits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

#: A parameter of the ResNet torso: ``torso.sections.<i>.conv.weight``.
_SECTION_CONV = re.compile(r"torso\.sections\.(\d+)\.conv\.weight")
#: A residual block's conv: ``torso.sections.<i>.blocks.<j>.conv<k>.weight``.
_BLOCK_CONV = re.compile(r"torso\.sections\.(\d+)\.blocks\.(\d+)\.conv[01]\.weight")


def is_resnet_layout(names: Iterable[str]) -> bool:
    """Whether an agent's parameter names are those of a ResNet torso."""
    return any(_SECTION_CONV.fullmatch(name) for name in names)


def resnet_structure(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``[(section prefix, [block prefixes])]`` in order, read from parameter names."""
    names = list(names)
    sections = sorted(int(m.group(1)) for n in names if (m := _SECTION_CONV.fullmatch(n)))
    out = []
    for i in sections:
        matches = [m for n in names if (m := _BLOCK_CONV.fullmatch(n))]
        blocks = sorted({int(m.group(2)) for m in matches if int(m.group(1)) == i})
        out.append((f"torso.sections.{i}", [f"torso.sections.{i}.blocks.{j}" for j in blocks]))
    return out


#: Maps of at most this many pixels are convolved by :func:`_conv_shifted_products`, larger
#: ones by :func:`_conv_im2col`: the faster of the two at each size, single-threaded
#: (benchmarks/bench_atari.py; docs/results-atari.md).
SHIFTED_PRODUCTS_MAX_PIXELS = 21 * 21


def conv3x3_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``conv2d`` 3x3, stride 1, padding 1 on ``x [N, H, W, C]``; ``weight [O, C, 3, 3]``.

    Returns ``[N, H, W, O]`` float32 (channels last).
    """
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2, w + 2, c), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = x
    if h * w <= SHIFTED_PRODUCTS_MAX_PIXELS:
        return _conv_shifted_products(padded, weight, bias)
    return _conv_im2col(padded, weight, bias)


def _conv_im2col(padded: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """One product of the im2col patches ``[N H W, C 9]`` with the weight ``[C 9, O]``."""
    n, h, w, c = padded.shape
    h, w = h - 2, w - 2
    out_channels = weight.shape[0]
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    # patches [N, H, W, C, 3, 3] viewed as [N, H, W, 3, 3, C]: the copy moves runs of C
    # contiguous floats rather than runs of 3 (faster: docs/results-atari.md), and the
    # weight is read in that order.
    cols = patches.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * w, 9 * c)
    y = cols @ weight.transpose(0, 2, 3, 1).reshape(out_channels, 9 * c).T
    y += bias
    return y.reshape(n, h, w, out_channels)


def _conv_shifted_products(padded: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Every pixel times all 9 taps at once (``[N (H+2) (W+2), C] @ [C, 9 O]``), then the 9
    products summed at their shifts: no patch copy, for small maps."""
    n, hp, wp, c = padded.shape
    h, w = hp - 2, wp - 2
    out_channels = weight.shape[0]
    taps = weight.transpose(1, 2, 3, 0).reshape(c, 9 * out_channels)  # [C, (dy, dx, O)]
    z = (padded.reshape(-1, c) @ taps).reshape(n, hp, wp, 9, out_channels)
    y = z[:, 0:h, 0:w, 0] + bias
    for k in range(1, 9):
        dy, dx = divmod(k, 3)
        y += z[:, dy : dy + h, dx : dx + w, k]
    return y


def max_pool3x3_s2(x: np.ndarray) -> np.ndarray:
    """``max_pool2d(kernel 3, stride 2, padding 1)`` on ``x [N, H, W, C]``: ``[N, ceil(H/2),
    ceil(W/2), C]`` (padding never wins: it is -inf)."""
    n, h, w, c = x.shape
    ho, wo = (h + 1) // 2, (w + 1) // 2
    padded = np.full((n, 2 * ho + 2, w, c), -np.inf, dtype=np.float32)
    padded[:, 1 : h + 1] = x
    rows = np.maximum(
        np.maximum(padded[:, 0 : 2 * ho : 2], padded[:, 1 : 2 * ho + 1 : 2]),
        padded[:, 2 : 2 * ho + 2 : 2],
    )  # [N, Ho, W, C]
    padded = np.full((n, ho, 2 * wo + 2, c), -np.inf, dtype=np.float32)
    padded[:, :, 1 : w + 1] = rows
    return np.maximum(
        np.maximum(padded[:, :, 0 : 2 * wo : 2], padded[:, :, 1 : 2 * wo + 1 : 2]),
        padded[:, :, 2 : 2 * wo + 2 : 2],
    )


def resnet_features(
    x: np.ndarray,
    params: Mapping[str, np.ndarray],
    structure: list[tuple[str, list[str]]] | None = None,
) -> np.ndarray:
    """``x [N, H, W, C]`` float32 to the torso's flat features ``[N, C' H' W']``, after the
    final ReLU and before its dense layers, flattened in torch's channels-first order."""
    if structure is None:
        structure = resnet_structure(params)
    for section, blocks in structure:
        x = conv3x3_same(x, params[f"{section}.conv.weight"], params[f"{section}.conv.bias"])
        x = max_pool3x3_s2(x)
        for block in blocks:
            y = np.maximum(x, 0.0)
            y = conv3x3_same(y, params[f"{block}.conv0.weight"], params[f"{block}.conv0.bias"])
            np.maximum(y, 0.0, out=y)
            y = conv3x3_same(y, params[f"{block}.conv1.weight"], params[f"{block}.conv1.bias"])
            x = x + y
    np.maximum(x, 0.0, out=x)
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
