"""The meta-parameters eta: FRODO's meta-network G_eta(tau), and MGRL's gamma and lambda.

Plain ``nn.Module`` s; the meta-gradient code calls them through
``torch.func.functional_call`` with parameters that carry a graph to eta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from impala_frodo.networks.torsos import ConvTorso, ResNetTorso, is_image_shape, resolve_torso


class MetaNet(nn.Module):
    """G_eta(tau): an LSTM run in reverse time, then Linear(hidden, 1) (DESIGN section 5).

    Per step the input is u_t = [phi(x_t), r_t, d_t, d_t V(x_{t+1})], and with
    ``ratio_input`` also the clipped log importance ratio log(pi/mu)_t. Running
    from t = T-1 down to 0 lets g_t gather future rewards as a return does. The
    recurrent state is reset where an episode ends (d_t = 0), and the next value
    enters as d_t V(x_{t+1}), so no target sees past the end of its own episode
    (after an auto-reset x_{t+1} is the next episode's first state).
    ``zero_init_head`` starts the output layer at zero: g = 0 everywhere at first.

    phi(x) is the flat observation, except for images ``[H, W, C]``: there it is a
    learned embedding (part of eta), MinAtar's convolution with ``embed_channels``
    channels, then one ReLU layer of ``embed_size`` units (:class:`ConvTorso`); for
    Atari-sized frames (the torso ``"auto"`` picks IMPALA's ResNet for) it is a ResNet of
    the same form with ``embed_channels``, ``2 embed_channels`` and ``2 embed_channels``
    channels (IMPALA's with 16), then ``embed_size`` units (:class:`ResNetTorso`).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        hidden_size: int = 32,
        *,
        ratio_input: bool = False,
        zero_init_head: bool = False,
        embed_size: int = 32,
        embed_channels: int = 16,
    ) -> None:
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.hidden_size = hidden_size
        self.ratio_input = ratio_input
        self.embed: ConvTorso | ResNetTorso | None = None
        phi_size = math.prod(self.obs_shape)
        if resolve_torso("auto", self.obs_shape) == "resnet":  # Atari frames
            channels = (embed_channels, 2 * embed_channels, 2 * embed_channels)
            self.embed = ResNetTorso(self.obs_shape, channels, (embed_size,))
            phi_size = embed_size
        elif is_image_shape(self.obs_shape):
            self.embed = ConvTorso(self.obs_shape, embed_channels, (embed_size,))
            phi_size = embed_size
        num_inputs = phi_size + 3 + int(ratio_input)
        self.cell = nn.LSTMCell(num_inputs, hidden_size)
        self.head = nn.Linear(hidden_size, 1)
        if zero_init_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(
        self,
        obs: Tensor,
        rewards: Tensor,
        discounts: Tensor,
        next_values: Tensor,
        log_rhos: Tensor | None = None,
    ) -> Tensor:
        """Targets g ``[T, B]`` from ``obs [T, B, *obs_shape]`` (x_0 .. x_{T-1}) and ``[T, B]``
        rewards r_t, discounts d_t, next values d_t V(x_{t+1}) and, with ``ratio_input``,
        log importance ratios (pass values and ratios detached: sg(.))."""
        steps, batch = rewards.shape
        if self.embed is None:
            phi = obs.reshape(steps, batch, -1)
        else:
            phi = self.embed(obs.reshape(-1, *self.obs_shape)).reshape(steps, batch, -1)
        features = [
            phi,
            rewards[..., None],
            discounts[..., None],
            next_values[..., None],
        ]
        if self.ratio_input:
            if log_rhos is None:
                raise ValueError("this MetaNet was built with ratio_input: pass log_rhos")
            features.append(log_rhos[..., None])
        inputs = torch.cat(features, dim=-1)
        continues = (discounts > 0).to(inputs.dtype).unsqueeze(-1)
        hidden = self._reverse_lstm(inputs, continues)
        return self.head(hidden).squeeze(-1)

    def _reverse_lstm(self, inputs: Tensor, continues: Tensor) -> Tensor:
        """``self.cell`` run from t = T-1 down to 0 over ``inputs [T, B, I]``, its state reset
        where ``continues [T, B, 1]`` is 0; the hidden states ``[T, B, H]`` in time order.

        The same function as calling the ``nn.LSTMCell`` per step (gates i, f, g, o), in
        fewer ops: the input projection of all steps is one matmul, each step one matmul
        and one sigmoid over all four gates; the first step (zero state) has none.
        """
        steps, batch, _ = inputs.shape
        size = self.hidden_size
        cell = self.cell
        projected = torch.addmm(
            cell.bias_ih + cell.bias_hh, inputs.reshape(steps * batch, -1), cell.weight_ih.t()
        ).reshape(steps, batch, 4 * size)
        weight_hh = cell.weight_hh.t()
        # unbind, not indexing: one backward node for all steps, not a zero-filled
        # [T, B, 4H] gradient per step.
        projected_steps = projected.unbind(0)
        continue_steps = continues.unbind(0)
        outputs: list[Tensor] = []
        h = c = None
        for t in range(steps - 1, -1, -1):
            if h is None:  # zero state: no recurrent term, no forget term
                gates = projected_steps[t]
            else:
                # Reset where the episode ends at step t: x_{t+1} belongs to the next one.
                h = h * continue_steps[t]
                c = c * continue_steps[t]
                gates = torch.addmm(projected_steps[t], h, weight_hh)
            i, f, g, o = gates.chunk(4, dim=1)
            i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
            g = torch.tanh(g)
            c = i * g if c is None else torch.addcmul(i * g, f, c)
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs[::-1], dim=0)


class MGRLMeta(nn.Module):
    """MGRL's meta-parameters (Xu et al. 2018): gamma and lambda through sigmoids."""

    def __init__(self, init_gamma: float = 0.99, init_lambda: float = 0.95) -> None:
        super().__init__()
        self.gamma_logit = nn.Parameter(torch.logit(torch.tensor(float(init_gamma))))
        self.lambda_logit = nn.Parameter(torch.logit(torch.tensor(float(init_lambda))))

    def forward(self) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(self.gamma_logit), torch.sigmoid(self.lambda_logit)
