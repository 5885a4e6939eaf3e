"""Projectors from the spirogram embedding (and the tabular record) into the LLM's token space.

Only LLaVA's projector *builder* idea is borrowed (``multimodal_projector/builder.py``): a string
spec - ``linear``, ``mlp<N>x_gelu`` or ``identity`` - parsed in one small function that raises on
anything else. The output width is always the LLM's input-embedding width, never hard-coded.

A :class:`SoftTokenProjector` maps a ``(B, in_dim)`` feature to ``(B, k, d_model)`` soft tokens.
Each token goes through a LayerNorm and is then multiplied by a fixed scale so its norm matches the
mean norm of the LLM's own token embeddings: a soft token orders of magnitude larger or smaller
than real tokens either dominates attention or is ignored, and training then mostly fixes the scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from signals.errors import SpirolmInputError

_MLP_SPEC = re.compile(r"^mlp(\d+)x_gelu$")
PROJECTOR_SPECS = ("linear", "identity", "mlp<N>x_gelu")


def build_mlp(spec: str, in_dim: int, out_dim: int, hidden: int) -> nn.Module:
    """The feature MLP named by ``spec``.

    Args:
        spec: ``linear`` (one Linear), ``mlp<N>x_gelu`` (N Linear layers with GELU between; the
            hidden layers are ``hidden`` wide) or ``identity`` (needs ``in_dim == out_dim``).
        in_dim: input width.
        out_dim: output width (``k * d_model`` for soft tokens).
        hidden: hidden width of the MLP.

    Raises:
        SpirolmInputError: unknown spec, N < 1, or identity with mismatched widths.
    """
    if spec == "linear":
        return nn.Linear(in_dim, out_dim)
    if spec == "identity":
        if in_dim != out_dim:
            raise SpirolmInputError(f"projector 'identity' needs input width {in_dim} == output width {out_dim}",
                                    field="projector")
        return nn.Identity()
    match = _MLP_SPEC.match(spec)
    if match is None or int(match.group(1)) < 1:
        raise SpirolmInputError(f"unknown projector {spec!r}; use one of {', '.join(PROJECTOR_SPECS)}",
                                field="projector")
    depth = int(match.group(1))
    if depth == 1:
        return nn.Linear(in_dim, out_dim)
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
    for _ in range(depth - 2):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    layers += [nn.GELU(), nn.Linear(hidden, out_dim)]
    return nn.Sequential(*layers)


def embedding_norm(embedding: nn.Embedding) -> float:
    """Mean L2 norm of the LLM's input-embedding rows (the target norm of soft tokens)."""
    with torch.no_grad():
        return float(embedding.weight.float().norm(dim=-1).mean())


class SoftTokenProjector(nn.Module):
    """``(B, in_dim)`` features -> ``(B, k, d_model)`` soft tokens scaled to the LLM's embedding norm.

    Args:
        in_dim: feature width (128 for the spirogram encoder).
        d_model: the LLM's embedding width.
        num_tokens: soft tokens ``k``.
        spec: see :func:`build_mlp`.
        target_norm: desired per-token L2 norm (see :func:`embedding_norm`).
        hidden: MLP hidden width (default ``d_model``, as LLaVA).
    """

    def __init__(self, in_dim: int, d_model: int, num_tokens: int, spec: str = "mlp2x_gelu",
                 target_norm: float | None = None, hidden: int | None = None) -> None:
        super().__init__()
        if num_tokens < 1:
            raise SpirolmInputError(f"num_tokens must be >= 1, got {num_tokens}", field="num_soft_tokens")
        self.in_dim, self.d_model, self.num_tokens, self.spec = in_dim, d_model, num_tokens, spec
        self.mlp = build_mlp(spec, in_dim, num_tokens * d_model, hidden or d_model)
        self.norm = nn.LayerNorm(d_model)
        # LayerNorm output has norm ~sqrt(d); rescale to the LLM's token norm (a buffer, not trained).
        scale = 1.0 if target_norm is None else target_norm / math.sqrt(d_model)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Soft tokens ``(B, k, d_model)`` from features ``(B, in_dim)``."""
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise SpirolmInputError(f"projector expects features of shape (batch, {self.in_dim}), got "
                                    f"{tuple(features.shape)}", field="embedding")
        tokens = self.mlp(features).view(features.shape[0], self.num_tokens, self.d_model)  # (B, k, d)
        return self.norm(tokens) * self.scale


    @torch.no_grad()
    def init_from_probe(self, weight: torch.Tensor, bias: torch.Tensor, *, per_set: bool = False,
                        free_units: bool = False) -> None:
        """Start from a linear probe of the features: its logits feed the MLP, the output layer starts at zero.

        Why: a logistic-regression probe of the embedding already knows *what* to say, so training only
        has to learn *where* in the LLM's token space to write it. Hidden units ``2s`` and ``2s+1`` get
        ``+probe_s`` and ``-probe_s`` (``GELU(x) - GELU(-x) = x``).

        The other hidden units: with ``free_units`` they keep their random input weights, so they carry
        the whole feature vector and, through their (zero-started, trainable) output weights, the tokens
        can come to say more than one number per trait; the model starts as the probe and is free to
        leave it. Without, they start at zero and, with a zero output layer, stay there: a probe
        bottleneck (one number per trait; kept to measure against).

        With ``per_set`` (one token set per trait) set ``s`` reads its own probe's two units (and the
        free units), never another trait's probe; a gradient hook keeps the other output weights at zero.

        Args:
            weight: ``(S, in_dim)`` probe weights on the raw features; ``bias``: ``(S,)``.
            per_set: block-diagonal output layer over the probe units, one token set per probe.
            free_units: keep the non-probe hidden units live (see above).

        Raises:
            SpirolmInputError: the projector is not ``mlp2x_gelu``-shaped, too narrow for ``2S`` units,
                or (``per_set``) its tokens do not split into ``S`` sets.
        """
        layers = list(self.mlp.children()) if isinstance(self.mlp, nn.Sequential) else []
        if len(layers) != 3 or not isinstance(layers[1], nn.GELU):
            raise SpirolmInputError(f"probe initialisation needs an 'mlp2x_gelu' projector, not {self.spec!r}",
                                    field="projector_init")
        first, last = layers[0], layers[2]
        n = weight.shape[0]
        if weight.shape[1] != self.in_dim or 2 * n > first.out_features:
            raise SpirolmInputError(f"probe of shape {tuple(weight.shape)} does not fit a projector with input "
                                    f"{self.in_dim} and hidden width {first.out_features}", field="projector_init")
        if not free_units:
            first.weight.zero_()
            first.bias.zero_()
        for j in range(n):
            first.weight[2 * j], first.bias[2 * j] = weight[j], bias[j]
            first.weight[2 * j + 1], first.bias[2 * j + 1] = -weight[j], -bias[j]
        last.weight.zero_()
        if per_set:
            if self.num_tokens % n:
                raise SpirolmInputError(f"{self.num_tokens} soft tokens do not split into {n} per-probe sets",
                                        field="projector_init")
            rows = self.num_tokens // n * self.d_model  # output rows of one set
            mask = torch.zeros_like(last.weight)
            for j in range(n):
                mask[j * rows:(j + 1) * rows, 2 * j:2 * j + 2] = 1.0
            if free_units:
                mask[:, 2 * n:] = 1.0
            # a zero gradient leaves a zero weight at zero under Adam/AdamW (the same reason the silent units stay silent)
            last.weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device, grad.dtype))


def fit_embedding_probe(features: np.ndarray, labels: np.ndarray, c: float = 0.1, *, balanced: bool = False,
                        names: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-trait L2 logistic regressions of ``labels (N, S)`` (NaN = unknown) on ``features (N, F)``.

    ``balanced`` weights the classes as the HeLM loss does (so the probe's logits are on the scale
    the LLM is trained to). ``names`` are the traits of the label columns (for error messages).

    Returns ``(weight (S, F), bias (S,))`` on the raw feature scale (the standardisation used for
    fitting is folded in), for :meth:`SoftTokenProjector.init_from_probe`.

    Raises:
        SpirolmInputError: a trait without both classes among its known labels.
    """
    scaler = StandardScaler().fit(features)
    x = scaler.transform(features)
    weights, biases = [], []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if len(np.unique(y)) < 2:
            raise SpirolmInputError("probe initialisation needs cases and controls of every trait in the train split",
                                    field=names[j] if names is not None else f"label column {j}")
        lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced" if balanced else None).fit(x[known], y)
        w = lr.coef_[0] / scaler.scale_
        weights.append(w)
        biases.append(lr.intercept_[0] - float(np.dot(w, scaler.mean_)))
    return torch.tensor(np.array(weights), dtype=torch.float32), torch.tensor(np.array(biases), dtype=torch.float32)


class SoftPrompt(nn.Module):
    """A learnt, participant-independent soft prompt of ``n`` tokens (prompt tuning, Lester et al. 2021).

    Initialised from randomly chosen rows of the LLM's vocabulary embedding (their recipe), seeded.
    """

    def __init__(self, embedding: nn.Embedding, num_tokens: int, seed: int = 0) -> None:
        super().__init__()
        if num_tokens < 1:
            raise SpirolmInputError(f"soft prompt needs >= 1 token, got {num_tokens}", field="soft_prompt_tokens")
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, embedding.weight.shape[0], (num_tokens,), generator=gen)
        self.tokens = nn.Parameter(embedding.weight.detach()[rows].float().clone())

    def forward(self, batch_size: int) -> torch.Tensor:
        """``(B, n, d_model)`` copies of the prompt."""
        return self.tokens.unsqueeze(0).expand(batch_size, -1, -1)
