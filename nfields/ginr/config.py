"""Typed configs of the generalizable-INR methods: shared encoder fields, then each decoder's own."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NfieldsError


@dataclass
class EncoderConfig:
    """The Transformer encoder (IPC's official setting)."""

    width: int = 768
    depth: int = 6
    heads: int = 12
    mlp_ratio: int = 4
    patch_size: int = 8  # pixels per patch side; must divide the image size
    # On the blocks' residual branches. The official IPC code uses 0.1; ours without it learned as fast per step
    # (benchmarks/results/ginr_reference_cuda.json: +0.3 to +0.5 dB at 1k-5k steps), so the default is none.
    dropout: float = 0.0


@dataclass
class TransINRConfig(EncoderConfig):
    """TransINR hyponet: every layer's weight is modulated by a group of tokens."""

    layers: int = 5  # linear layers, output layer included
    hidden_width: int = 256
    tokens_per_layer: int = 64  # g per layer, capped at the layer's fan-out (so 3 for an RGB output layer)
    fourier_frequencies: int = 64  # per input dimension: 2 * 64 * 2 = 256 features for 2D coordinates
    fourier_sigma: float = 64.0
    output_bias: float = 0.5


@dataclass
class IPCConfig(EncoderConfig):
    """IPC hyponet: one layer is modulated, W = U_instance @ V_shared of rank `tokens`."""

    tokens: int = 256
    layers: int = 5
    modulated_layer: int = 1  # the official code's modulated_layer_idxs [1]: the second layer (hidden -> hidden)
    hidden_width: int = 256
    fourier_frequencies: int = 64
    fourier_sigma: float = 64.0
    output_bias: float = 0.5


@dataclass
class LocalityConfig(EncoderConfig):
    """Locality-aware INR decoder (Lee et al. 2023), Appendix A's 178x178 setting."""

    tokens: int = 256
    fourier_features: int = 256  # d_F
    hidden_width: int = 256  # d
    sigmas: tuple = (128.0, 32.0)  # sigma_1 >= ... >= sigma_L, one per level; "128,32" is accepted too
    query_sigma: float = 16.0
    attention_heads: int = 2
    # The three details the paper leaves open; defaults are its most literal reading.
    shared_modulation: bool = False  # Eq. 7 writes W_m^(l): one W_m, b_m per level
    attention_projection: bool = True  # Eq. 5 says MultiHeadAttention, which has an output projection W^O
    token_norm: bool = False  # the paper puts no LayerNorm on the tokens before the cross-attention
    output_bias: float = 0.5  # ours, as in IPC's hyponet, whose code the paper builds on
    # Ablations of Table 3: "ipc" replaces selective token aggregation by IPC's weight modulation of the
    # sigma_q features; multiband False replaces the levels by a plain MLP of the same depth on m_v.
    aggregation: str = "attention"
    multiband: bool = True

    def __post_init__(self):
        if self.aggregation not in ("attention", "ipc"):
            raise NfieldsError(f"locality option 'aggregation' must be 'attention' or 'ipc', not "
                               f"{self.aggregation!r}.")
        sigmas = self.sigmas
        if isinstance(sigmas, str):
            try:
                sigmas = [float(s) for s in sigmas.split(",") if s.strip()]
            except ValueError:
                raise NfieldsError(f"locality option 'sigmas' must be numbers like '128,32', not {self.sigmas!r}.") \
                    from None
        self.sigmas = tuple(float(s) for s in (sigmas if isinstance(sigmas, (list, tuple)) else [sigmas]))
        # Any order is allowed (Table 4 trains (32, 128)); the paper's best is sigma_1 >= ... >= sigma_L.
        if not self.sigmas or any(s <= 0 for s in self.sigmas):
            raise NfieldsError(f"locality option 'sigmas' must be one or more positive bandwidths, "
                               f"got {self.sigmas}; give them as e.g. '128,32'.")
