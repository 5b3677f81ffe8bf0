"""The three hyponets: (B, N, d_in) coordinates + (B, R, D) tokens -> (B, N, d_out) values."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import NfieldsError
from .config import IPCConfig, LocalityConfig, TransINRConfig
from ..encodings import LogFourierFeatures


def base_weights(fan_ins: list[int], fan_outs: list[int]) -> tuple[nn.ParameterList, nn.ParameterList]:
    """Shared (fan_in, fan_out) weights U(+-1/sqrt(fan_out)) and zero (fan_out,) biases, as IPC's official
    hyponet (kaiming_uniform(a=sqrt(5)) on a (fan_in, fan_out) tensor, whose size(1) it takes for fan-in).
    The columns are normalised before use, so the scale only sets how fast Adam turns them."""
    weights, biases = nn.ParameterList(), nn.ParameterList()
    for fan_in, fan_out in zip(fan_ins, fan_outs):
        bound = 1.0 / math.sqrt(fan_out)
        weights.append(nn.Parameter(torch.empty(fan_in, fan_out).uniform_(-bound, bound)))
        biases.append(nn.Parameter(torch.zeros(fan_out)))
    return weights, biases


def hyponet_widths(features: int, hidden: int, layers: int, out_features: int) -> tuple[list[int], list[int]]:
    if layers < 1:
        raise NfieldsError(f"a hyponet needs at least 1 layer, got {layers}.")
    fan_ins = [features] + [hidden] * (layers - 1)
    return fan_ins, [hidden] * (layers - 1) + [out_features]


def apply_layer(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h (B, N, fan_in) @ weight ((B,) fan_in, fan_out) + bias."""
    return torch.matmul(h, weight) + bias


class TransINRDecoder(nn.Module):
    """TransINR (Chen & Wang 2022): every layer's weight is W = normalize(W_base * tiled tokens).

    Layer l gets g_l = min(tokens_per_layer, fan_out) tokens; each -> LayerNorm -> Linear(D -> fan_in);
    output column j uses token j mod g_l; columns are L2-normalised over fan_in; biases are shared.
    """

    def __init__(self, in_features: int, out_features: int, token_width: int, config: TransINRConfig):
        super().__init__()
        self.config = config
        self.features = LogFourierFeatures(in_features, config.fourier_frequencies, config.fourier_sigma)
        fan_ins, fan_outs = hyponet_widths(self.features.out_features, config.hidden_width, config.layers,
                                           out_features)
        self.weights, self.biases = base_weights(fan_ins, fan_outs)
        self.groups = [min(config.tokens_per_layer, fan_out) for fan_out in fan_outs]
        for g, fan_out in zip(self.groups, fan_outs):
            if fan_out % g:
                raise NfieldsError(f"transinr option 'tokens_per_layer' ({g}) must divide the layer width "
                                   f"{fan_out}; choose e.g. a power of two.")
        self.token_maps = nn.ModuleList(nn.Sequential(nn.LayerNorm(token_width), nn.Linear(token_width, fan_in))
                                        for fan_in in fan_ins)
        self.num_tokens = sum(self.groups)

    def forward(self, coords: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h = self.features(coords)
        start = 0
        for i, (weight, bias, g, token_map) in enumerate(zip(self.weights, self.biases, self.groups, self.token_maps)):
            mod = token_map(tokens[:, start:start + g]).transpose(1, 2)  # (B, fan_in, g)
            start += g
            w = F.normalize(weight * mod.repeat(1, 1, weight.shape[1] // g), dim=1)
            h = apply_layer(h, w, bias)
            if i < len(self.weights) - 1:
                h = F.relu(h)
        return h + self.config.output_bias


class LowRankModulatedLinear(nn.Module):
    """IPC's modulated layer: x @ normalize(U_instance (fan_in x R) @ V_shared (R x fan_out)) + b.

    U's column k is token k -> LayerNorm -> Linear(D -> fan_in); no base weight; W is L2-normalised over fan_in.
    """

    def __init__(self, fan_in: int, fan_out: int, tokens: int, token_width: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(fan_out))
        # The shared factor V, N(0, 1 / (R fan_in)) as the official code: W is normalised, so this scale sets only
        # how fast Adam turns V.
        self.shared = nn.Parameter(torch.randn(tokens, fan_out) / math.sqrt(tokens * fan_in))
        self.token_map = nn.Sequential(nn.LayerNorm(token_width), nn.Linear(token_width, fan_in))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        instance = self.token_map(tokens).transpose(1, 2)  # U: (B, fan_in, R)
        return apply_layer(x, F.normalize(instance @ self.shared, dim=1), self.bias)


class IPCDecoder(nn.Module):
    """IPC (Kim et al. 2023): one hyponet layer, `modulated_layer` (the official code's index 1: the second,
    hidden -> hidden), is W = U_instance (fan_in x R) @ V_shared (R x fan_out), its base weight dropped, its bias
    kept; U's column k is token k -> LayerNorm -> Linear(D -> fan_in). Every weight (W included) is
    L2-normalised over fan_in; ReLU; output + output_bias.
    """

    def __init__(self, in_features: int, out_features: int, token_width: int, config: IPCConfig):
        super().__init__()
        self.config = config
        self.features = LogFourierFeatures(in_features, config.fourier_frequencies, config.fourier_sigma)
        fan_ins, fan_outs = hyponet_widths(self.features.out_features, config.hidden_width, config.layers,
                                           out_features)
        m = config.modulated_layer
        if not 0 <= m < config.layers:
            raise NfieldsError(f"ipc option 'modulated_layer' must be a layer index in 0..{config.layers - 1}, "
                               f"not {m}.")
        self.weights, self.biases = base_weights(fan_ins[:m] + fan_ins[m + 1:], fan_outs[:m] + fan_outs[m + 1:])
        self.modulated = LowRankModulatedLinear(fan_ins[m], fan_outs[m], config.tokens, token_width)
        self.num_tokens = config.tokens
        self._register_load_state_dict_pre_hook(self._legacy_names)

    @staticmethod
    def _legacy_names(state_dict, prefix, *_):
        """Runs saved before `modulated_layer` existed called the modulated layer `first`."""
        for key in [k for k in state_dict if k.startswith(prefix + "first.")]:
            state_dict[prefix + "modulated." + key[len(prefix + "first."):]] = state_dict.pop(key)

    def forward(self, coords: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h, shared = self.features(coords), iter(zip(self.weights, self.biases))
        for i in range(self.config.layers):
            if i == self.config.modulated_layer:
                h = self.modulated(h, tokens)
            else:
                weight, bias = next(shared)
                h = apply_layer(h, F.normalize(weight, dim=0), bias)  # dim 0 of an unbatched (fan_in, fan_out)
            if i < self.config.layers - 1:
                h = F.relu(h)
        return h + self.config.output_bias


def frequencies_per_input(fourier_features: int, in_features: int) -> int:
    if fourier_features < 2 * in_features:
        raise NfieldsError(f"locality option 'fourier_features' ({fourier_features}) must be at least 2 x {in_features} "
                           f"(a cosine and a sine per input dimension).")
    return fourier_features // (2 * in_features)


class FrequencyFeatures(nn.Module):
    """Eq. 3: h_F(v; sigma, W, b) = ReLU(W gamma_sigma(v) + b), gamma of size d_F.

    Ours: d_F is rounded down to a multiple of 2 d_in (256 -> 252 features for 6-D Plücker rays)."""

    def __init__(self, in_features: int, fourier_features: int, sigma: float, width: int):
        super().__init__()
        self.gamma = LogFourierFeatures(in_features, frequencies_per_input(fourier_features, in_features), sigma)
        self.linear = nn.Linear(self.gamma.out_features, width)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(self.gamma(coords)))


class TokenCrossAttention(nn.Module):
    """Eq. 5: multi-head attention from per-coordinate queries (B, N, d) to tokens (B, R, D)."""

    def __init__(self, width: int, token_width: int, heads: int, projection: bool):
        super().__init__()
        if width % heads:
            raise NfieldsError(f"locality decoder width {width} must be divisible by its {heads} attention heads.")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(token_width, width)
        self.v = nn.Linear(token_width, width)
        self.out = nn.Linear(width, width) if projection else nn.Identity()

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, n, d / heads)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        y = F.scaled_dot_product_attention(self.split(self.q(queries)), self.split(self.k(tokens)),
                                           self.split(self.v(tokens)))
        return self.out(y.transpose(1, 2).flatten(-2))


class LocalityDecoder(nn.Module):
    """Locality-aware INR decoder (Lee et al. 2023, Eq. 2-9).

    Selective token aggregation: m_v = MHA(query = h_F(v; sigma_q), key = value = tokens).
    Multi-band feature modulation, levels l = 1..L with sigma_1 >= ... >= sigma_L:
    m^(l) = ReLU(h_F(v; sigma_l) + W_m^(l) m_v + b_m^(l)); h^(1) = m^(1);
    h^(l) = ReLU(W^(l) (m^(l) + h^(l-1)) + b^(l)); y = sum_l f_out^(l)(h^(l)).
    """

    def __init__(self, in_features: int, out_features: int, token_width: int, config: LocalityConfig):
        super().__init__()
        self.config = config
        d, d_f, levels = config.hidden_width, config.fourier_features, len(config.sigmas)
        self.token_norm = nn.LayerNorm(token_width) if config.token_norm else nn.Identity()
        if config.aggregation == "attention":
            self.query = FrequencyFeatures(in_features, d_f, config.query_sigma, d)
            self.attention = TokenCrossAttention(d, token_width, config.attention_heads, config.attention_projection)
        else:  # ablation "w/o STA": IPC's low-rank weight modulation of the sigma_q features
            self.query_features = LogFourierFeatures(in_features, frequencies_per_input(d_f, in_features),
                                                     config.query_sigma)
            self.low_rank = LowRankModulatedLinear(self.query_features.out_features, d, config.tokens, token_width)
        if config.multiband:
            self.bands = nn.ModuleList(FrequencyFeatures(in_features, d_f, sigma, d) for sigma in config.sigmas)
            shared = nn.Linear(d, d)
            self.modulations = nn.ModuleList(shared if config.shared_modulation else nn.Linear(d, d)
                                             for _ in range(levels))
            self.hidden = nn.ModuleList(nn.Linear(d, d) for _ in range(levels - 1))  # W^(l), l = 2..L
            self.heads = nn.ModuleList(nn.Linear(d, out_features) for _ in range(levels))
        else:  # ablation "w/o multiFM": a plain ReLU MLP of L hidden layers on m_v
            self.mlp = nn.Sequential(*[m for _ in range(levels) for m in (nn.Linear(d, d), nn.ReLU())],
                                     nn.Linear(d, out_features))
        self.num_tokens = config.tokens

    def modulation(self, coords: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """m_v (B, N, d): the tokens aggregated for each coordinate."""
        tokens = self.token_norm(tokens)
        if self.config.aggregation == "attention":
            return self.attention(self.query(coords), tokens)
        return F.relu(self.low_rank(self.query_features(coords), tokens))

    def forward(self, coords: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        m = self.modulation(coords, tokens)
        if not self.config.multiband:
            return self.mlp(m) + self.config.output_bias
        out, h = 0.0, None
        for level, (band, modulate, head) in enumerate(zip(self.bands, self.modulations, self.heads)):
            m_level = F.relu(band(coords) + modulate(m))
            h = m_level if h is None else F.relu(self.hidden[level - 1](m_level + h))
            out = out + head(h)
        return out + self.config.output_bias
