"""The spirogram encoder: a 1-D ResNet18-D over 1000-point curves, with one small head per trait.

Modelled on the ML-based COPD encoder (Cosentino et al., "Inference of chronic obstructive pulmonary
disease with deep learning on raw spirograms identifies new genetic loci", Nature Genetics 2023;
public code: Google-Health/genomics-research ``ml-based-copd/learning/models.py``):

* ResNet-D tweaks (He et al. 2019, "Bag of Tricks", arXiv:1812.01187 §4.2) on ResNet18
  (He et al. 2016, arXiv:1512.03385), converted to 1-D: a three-conv stem instead of one 7-wide conv,
  and an average-pool + 1x1 conv shortcut when a block downsamples;
* the last BatchNorm of every residual block starts at gamma = 0, so each block starts as identity;
* a 128-d ReLU embedding layer (the part HeLM's LLM bridge consumes) split from per-trait heads
  (64 -> 32 -> 16 -> 1, swish, as the paper's ``binary_head_config``).

One file, blocks defined before the model that uses them (nanoGPT style). Training code lives in
``experiments/``; this module knows nothing about Lightning, cohorts or files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from signals.errors import SpirolmInputError

CURVE_POINTS = 1000
"""Samples per curve: 1000 points on 0-6.58 L (flow-volume), on volume/FVC 0-1 (normalised
flow-volume) or 10 s at 100 Hz (volume-time)."""

KNOWN_CHANNELS = ("flow_volume", "flow_volume_norm", "volume_time", "position")
"""Curve channels ``signals.curves.curves_batch`` can build (``signals.curves.CHANNELS``), in the
order the encoder stacks them: ML-based COPD's flow-volume first, then spirolm's size-free shape
channel (flow/PEF over volume/FVC), then the volume-time curve, then the grid position (CoordConv). Adding a channel does not change what
an existing state_dict means, so ``ARCH_VERSION`` stays."""

ARCH_VERSION = "spirolm-resnet18d-1d/v1"
"""Bumped whenever the code below changes what a state_dict means, so old files are refused."""


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of :class:`SpiroEncoder`; everything needed to rebuild it from a state_dict.

    Attributes:
        channels: curve channels fed to the network, a subset of :data:`KNOWN_CHANNELS` in that order.
        traits: one binary head per trait, named like the cohort's 0/1 trait columns.
        stem_filters: the ResNet-D stem's three 3-wide convolutions (paper: 32, 32, 64).
        stage_filters: filters of the four residual stages (paper: 64, 128, 256, 512).
        blocks_per_stage: residual blocks per stage (2 gives ResNet18).
        kernel_size: convolution width (paper: 3).
        embedding_dim: width of the penultimate embedding the LLM bridge consumes (paper: 128).
        head_dims: hidden widths of each trait head (paper: 64, 32, 16).
        width_multiplier: scales stem and stage filters; < 1 buys CPU speed (see docs/encoder.md).
        curve_points: input length; the paper's curves are 1000 points.
        input_padding: zeros added at both ends before the stem (the paper pads 12; it keeps the
            curve edges away from the conv padding and makes 1000 -> 1024, a power of two).
    """

    __pydantic_config__ = {"extra": "forbid"}  # read strictly when nested in a YAML config
    channels: tuple[str, ...] = ("flow_volume",)
    traits: tuple[str, ...] = ("asthma", "copd")
    stem_filters: tuple[int, int, int] = (32, 32, 64)
    stage_filters: tuple[int, ...] = (64, 128, 256, 512)
    blocks_per_stage: int = 2
    kernel_size: int = 3
    embedding_dim: int = 128
    head_dims: tuple[int, ...] = (64, 32, 16)
    width_multiplier: float = 1.0
    curve_points: int = CURVE_POINTS
    input_padding: int = 12

    def __post_init__(self) -> None:
        # Tuples, not lists: a frozen config must be hashable and compare equal after a JSON round trip.
        for name in ("channels", "traits", "stem_filters", "stage_filters", "head_dims"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        bad = [c for c in self.channels if c not in KNOWN_CHANNELS]
        if not self.channels or bad or list(self.channels) != [c for c in KNOWN_CHANNELS if c in self.channels]:
            raise SpirolmInputError(
                f"encoder channels must be a non-empty subset of {KNOWN_CHANNELS} in that order; got {self.channels}",
                field="channels",
            )
        if not self.traits or len(set(self.traits)) != len(self.traits):
            raise SpirolmInputError(f"encoder needs one or more distinct traits; got {self.traits}", field="traits")
        if len(self.stem_filters) != 3:
            raise SpirolmInputError("stem_filters must have exactly 3 entries (ResNet-D stem)", field="stem_filters")
        if not self.stage_filters or self.blocks_per_stage < 1:
            raise SpirolmInputError("need at least one stage with at least one block", field="stage_filters")
        if self.width_multiplier <= 0 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise SpirolmInputError(
                "width_multiplier must be > 0 and kernel_size a positive odd number", field="width_multiplier"
            )
        if self.embedding_dim < 1 or self.curve_points < 8 or self.input_padding < 0:
            raise SpirolmInputError("embedding_dim, curve_points and input_padding out of range", field="embedding_dim")

    @property
    def in_channels(self) -> int:
        """Number of input channels (one per entry of :attr:`channels`)."""
        return len(self.channels)

    def scaled(self, filters: int) -> int:
        """Filters after the width multiplier; at least 8 so that BatchNorm statistics stay meaningful."""
        return max(8, int(round(filters * self.width_multiplier)))

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused so a typo never falls back to a default."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpirolmInputError(f"unknown encoder config keys {unknown}; known: {sorted(names)}", field="model")
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# Building blocks


class ConvBN(nn.Module):
    """Conv1d (no bias) -> BatchNorm -> optional ReLU: the paper's ``_resnet18_1d_v0_convblock``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        # Keras momentum=0.1 in the paper means "keep 10% of the old statistic"; in PyTorch's convention
        # that is momentum=0.9. We keep PyTorch's default 0.1 (slower, steadier running stats), which
        # matters only for eval-mode statistics on small cohorts.
        self.bn = nn.BatchNorm1d(c_out, eps=1e-5)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))  # (B, C_out, T / stride)
        return F.relu(x) if self.relu else x


class ResBlockD(nn.Module):
    """A ResNet-D basic block: two 3-wide convs, average-pool + 1x1 conv shortcut when downsampling."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(c_in, c_out, kernel_size, stride=stride)
        self.conv2 = ConvBN(c_out, c_out, kernel_size, relu=False)
        # Zero-init the last BN gamma: the block starts as identity, which stabilises early training.
        nn.init.zeros_(self.conv2.bn.weight)
        self.shortcut: nn.Module
        if stride != 1 or c_in != c_out:
            # ResNet-D: downsample by averaging (no information is skipped), then project channels.
            self.shortcut = nn.Sequential(
                nn.AvgPool1d(stride, stride=stride) if stride > 1 else nn.Identity(),
                ConvBN(c_in, c_out, 1, relu=False),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))  # (B, C_out, T / stride)
        return F.relu(h + self.shortcut(x))


class Backbone(nn.Module):
    """Curves ``(B, C, T)`` -> embedding ``(B, embedding_dim)``: stem, four stages, pool, dense ReLU."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        s0, s1, s2 = (cfg.scaled(f) for f in cfg.stem_filters)
        k = cfg.kernel_size
        self.pad = cfg.input_padding
        self.stem = nn.Sequential(
            ConvBN(cfg.in_channels, s0, k, stride=2),
            ConvBN(s0, s1, k),
            ConvBN(s1, s2, k),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        c_in = s2
        for stage, filters in enumerate(cfg.stage_filters):
            c_out = cfg.scaled(filters)
            for b in range(cfg.blocks_per_stage):
                stride = 2 if (stage > 0 and b == 0) else 1  # downsample at the start of stages 2..4
                blocks.append(ResBlockD(c_in, c_out, k, stride))
                c_in = c_out
        self.stages = nn.Sequential(*blocks)
        # The paper's embedding: Dense(128, relu, no bias) after global average pooling.
        self.embed = nn.Linear(c_in, cfg.embedding_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad))  # (B, C, T + 2 * pad)
        x = self.stem(x)  # (B, s2, T' / 4)
        x = self.stages(x)  # (B, C_last, T' / 32)
        x = x.mean(dim=-1)  # global average pool -> (B, C_last)
        return F.relu(self.embed(x))  # (B, embedding_dim)


class TraitHead(nn.Module):
    """Embedding ``(B, E)`` -> one logit ``(B,)``: dense swish layers (64, 32, 16) then a linear output."""

    def __init__(self, embedding_dim: int, head_dims: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = embedding_dim
        for width in head_dims:
            layers += [nn.Linear(c_in, width), nn.SiLU()]
            c_in = width
        layers.append(nn.Linear(c_in, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z).squeeze(-1)  # (B,)


# ----------------------------------------------------------------------------------------------
# The model


class SpiroEncoder(nn.Module):
    """Backbone + one head per trait, with the train-split feature scaling stored as buffers.

    Why the scaling lives here: ``encode`` is called by the LLM bridge and by ``spirolm embed`` on raw
    curves; keeping mean/std in the state_dict means no caller can forget or mis-apply it.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Per-channel mean/std of the train split; identity until set_scaling is called.
        self.register_buffer("input_mean", torch.zeros(cfg.in_channels))
        self.register_buffer("input_std", torch.ones(cfg.in_channels))
        self.backbone = Backbone(cfg)
        self.heads = nn.ModuleDict({t: TraitHead(cfg.embedding_dim, cfg.head_dims) for t in cfg.traits})

    def set_scaling(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Store per-channel feature scaling fitted on the train split."""
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
        if mean_t.shape != self.input_mean.shape or std_t.shape != self.input_std.shape:
            raise SpirolmInputError(
                f"scaling needs {self.cfg.in_channels} values per statistic; got {tuple(mean_t.shape)}",
                field="input_mean",
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise SpirolmInputError("feature scaling must be finite with std > 0", field="input_std")
        self.input_mean.copy_(mean_t)
        self.input_std.copy_(std_t)

    def encode(self, curves: torch.Tensor) -> torch.Tensor:
        """Raw curves ``(B, C, T)`` -> penultimate embedding ``(B, embedding_dim)``.

        This is the API the LLM bridge uses. It is differentiable (HeLM trains the encoder through the
        frozen LLM); wrap it in ``torch.no_grad()`` for inference.

        Raises:
            SpirolmInputError: wrong shape or non-finite values (callers that know participant ids
                should run :func:`check_curves` first to get the id in the message).
        """
        self._check_shape(curves)
        x = (curves - self.input_mean[:, None]) / self.input_std[:, None]  # (B, C, T)
        return self.backbone(x)

    def forward(
        self, curves: torch.Tensor, targets: torch.Tensor | None = None, pos_weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Curves ``(B, C, T)`` -> ``(logits (B, K), loss or None)``, K = len(traits), nanoGPT style.

        Args:
            curves: raw (unscaled) curves.
            targets: ``(B, K)`` float labels with NaN where a label is missing.
            pos_weight: optional ``(K,)`` positive-class weights for the BCE loss.
        """
        z = self.encode(curves)  # (B, E)
        logits = torch.stack([self.heads[t](z) for t in self.cfg.traits], dim=1)  # (B, K)
        loss = None if targets is None else masked_bce_with_logits(logits, targets, pos_weight)
        return logits, loss

    def _check_shape(self, curves: torch.Tensor) -> None:
        want = (self.cfg.in_channels, self.cfg.curve_points)
        if curves.ndim != 3 or tuple(curves.shape[1:]) != want:
            raise SpirolmInputError(
                f"encoder expects curves shaped (batch, {want[0]}, {want[1]}) for channels {self.cfg.channels}; "
                f"got {tuple(curves.shape)}",
                field="curves",
            )

    def fingerprint(self) -> str:
        """Architecture fingerprint: config + every state_dict entry's name and shape + code version.

        Two models share a fingerprint exactly when one's state_dict loads into the other, so an exported
        file can be checked before any tensor is copied.
        """
        return architecture_fingerprint(self.cfg, {k: tuple(v.shape) for k, v in self.state_dict().items()})

    def num_params(self) -> int:
        """Number of parameters (trainable and not), for logs and docs."""
        return sum(p.numel() for p in self.parameters())


def architecture_fingerprint(cfg: EncoderConfig, shapes: dict[str, tuple[int, ...]]) -> str:
    """sha256 over the code version, the config and the state_dict layout (names and shapes)."""
    payload = json.dumps(
        {"arch": ARCH_VERSION, "config": cfg.to_dict(), "shapes": {k: list(v) for k, v in sorted(shapes.items())}},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE-with-logits over observed labels, averaged over traits that have any in the batch.

    Why per-trait means: a rare trait with few labels should not be drowned by a trait labelled for
    everyone; a trait with no labels in the batch contributes nothing (not NaN, not zero-weighted noise).

    Args:
        logits: ``(B, K)``.
        targets: ``(B, K)``; NaN marks a missing label.
        pos_weight: optional ``(K,)``.

    Returns:
        A scalar; zero (still attached to the graph) when nothing in the batch is labelled.
    """
    observed = ~torch.isnan(targets)  # (B, K)
    safe = torch.where(observed, targets, torch.zeros_like(targets)).to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits, safe, pos_weight=pos_weight, reduction="none")  # (B, K)
    per = per * observed
    counts = observed.sum(dim=0)  # (K,)
    has = counts > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    per_trait = per.sum(dim=0)[has] / counts[has]
    return per_trait.mean()


def check_curves(curves: np.ndarray, eids: Sequence[object], cfg: EncoderConfig, *, file: object = None) -> None:
    """Refuse curves the encoder cannot use, naming the first offending participant.

    Args:
        curves: ``(n, C, T)`` array as built by ``signals.curves.curves_batch``.
        eids: participant ids, one per row, used only for the error message.
        cfg: the encoder configuration (expected channels and length).
        file: the file the curves came from, for the message.

    Raises:
        SpirolmInputError: wrong shape (naming the first participant) or a non-finite value.
    """
    arr = np.asarray(curves)
    eid0 = eids[0] if len(eids) else None
    if arr.ndim != 3 or arr.shape[1:] != (cfg.in_channels, cfg.curve_points):
        raise SpirolmInputError(
            f"curves must be shaped (n, {cfg.in_channels}, {cfg.curve_points}) for channels {cfg.channels}; "
            f"got {arr.shape}",
            file=file, eid=eid0, field="curves",
        )
    if arr.shape[0] != len(eids):
        raise SpirolmInputError(f"{arr.shape[0]} curves but {len(eids)} participant ids", file=file, field="eid")
    finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        c = int(np.flatnonzero(~np.isfinite(arr[i]).all(axis=1))[0])
        raise SpirolmInputError(
            f"{cfg.channels[c]} curve contains NaN or infinite values ({int((~finite).sum())} participant(s) affected)",
            file=file, eid=eids[i], field=cfg.channels[c],
        )
