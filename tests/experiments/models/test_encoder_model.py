"""The encoder network, its loss, its export format and its config (no training, no cohort)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from experiments.common.config_io import parse_override
from experiments.encoder.export import FORMAT, load_encoder, save_encoder
from experiments.pipeline.config import load_run_config
from signals.encoder import (
    EncoderConfig,
    ResBlockD,
    SpiroEncoder,
    check_curves,
    masked_bce_with_logits,
)
from signals.errors import SpirolmInputError

TWO = ("flow_volume", "volume_time")
NORM = ("flow_volume", "flow_volume_norm")  # the CPU default profile before the position channel
ALL = ("flow_volume", "flow_volume_norm", "volume_time")


class ArbitraryObject:
    """A pickled class instance: what weights_only=True must refuse to unpickle."""


def _net(seed: int = 0, **kw) -> SpiroEncoder:
    torch.manual_seed(seed)
    return SpiroEncoder(EncoderConfig(**kw))


@pytest.mark.parametrize("channels", [("flow_volume",), TWO, NORM, ALL])
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_forward_shapes(channels: tuple[str, ...], width: float) -> None:
    net = _net(channels=channels, width_multiplier=width, traits=("asthma", "copd", "other"))
    x = torch.randn(3, len(channels), 1000)
    logits, loss = net(x)
    assert logits.shape == (3, 3) and loss is None
    assert net.encode(x).shape == (3, 128)


def test_width_scales_filters_and_params() -> None:
    small, full = EncoderConfig(width_multiplier=0.25), EncoderConfig()
    assert [small.scaled(f) for f in small.stage_filters] == [16, 32, 64, 128]
    assert [full.scaled(f) for f in full.stage_filters] == [64, 128, 256, 512]
    assert SpiroEncoder(full).num_params() > 10 * SpiroEncoder(small).num_params()


def test_encode_is_differentiable_and_nonnegative() -> None:
    """HeLM trains the encoder through the LLM, so encode must carry gradients; ReLU embedding >= 0."""
    net = _net()
    x = torch.randn(4, 1, 1000, requires_grad=True)
    z = net.encode(x)
    z.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert (z >= 0).all()


def test_encode_applies_stored_scaling() -> None:
    net = _net(channels=TWO).eval()
    x = torch.randn(2, 2, 1000) * 3 + 5
    net.set_scaling([5.0, 1.0], [3.0, 2.0])
    manual = net.backbone((x - torch.tensor([5.0, 1.0])[:, None]) / torch.tensor([3.0, 2.0])[:, None])
    torch.testing.assert_close(net.encode(x), manual)
    with pytest.raises(SpirolmInputError, match="std > 0"):
        net.set_scaling([0.0, 0.0], [1.0, 0.0])


def test_residual_block_starts_as_identity() -> None:
    """Zero-init of the last BN gamma (as ML-based COPD): a fresh block is relu(x)."""
    block = ResBlockD(8, 8, 3, stride=1).eval()
    x = torch.randn(2, 8, 50)
    torch.testing.assert_close(block(x), F.relu(x))
    assert torch.all(block.conv2.bn.weight == 0)


def test_masked_loss_ignores_missing_labels() -> None:
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 4.0]], requires_grad=True)
    nan = float("nan")
    y = torch.tensor([[1.0, nan], [0.0, 1.0], [nan, nan]])
    loss = masked_bce_with_logits(logits, y)
    # Per-trait means over observed labels, then the mean over traits.
    t0 = F.binary_cross_entropy_with_logits(logits[:2, 0], torch.tensor([1.0, 0.0]))
    t1 = F.binary_cross_entropy_with_logits(logits[1:2, 1], torch.tensor([1.0]))
    torch.testing.assert_close(loss, (t0 + t1) / 2)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[0, 1] == 0  # no gradient where label is NA
    # Changing a logit whose label is missing does not change the loss.
    other = logits.detach().clone()
    other[2] = 100.0
    torch.testing.assert_close(masked_bce_with_logits(other, y), loss.detach())


def test_masked_loss_all_missing_is_zero_and_pos_weight_applies() -> None:
    logits = torch.randn(4, 2, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.full((4, 2), float("nan")))
    assert loss.item() == 0.0 and loss.requires_grad
    y = torch.tensor([[1.0, 0.0]] * 4)
    plain = masked_bce_with_logits(logits, y)
    weighted = masked_bce_with_logits(logits, y, pos_weight=torch.tensor([3.0, 3.0]))
    assert not math.isclose(plain.item(), weighted.item())


def test_bad_curves_name_the_participant() -> None:
    cfg = EncoderConfig()
    curves = np.zeros((3, 1, 1000), np.float32)
    curves[1, 0, 17] = np.nan
    with pytest.raises(SpirolmInputError, match="participant 502") as err:
        check_curves(curves, [501, 502, 503], cfg)
    assert err.value.eid == 502 and err.value.field == "flow_volume"
    with pytest.raises(SpirolmInputError, match=r"participant 501.*\(n, 1, 1000\)"):
        check_curves(np.zeros((3, 1, 999), np.float32), [501, 502, 503], cfg)
    with pytest.raises(SpirolmInputError, match="expects curves shaped"):
        _net().encode(torch.zeros(2, 2, 1000))


def test_known_channels_are_the_curve_channels() -> None:
    """The encoder accepts exactly what ``signals.curves.curves_batch`` builds, ML-based COPD's
    flow-volume first (an exported encoder's channel 0 means the same in every profile)."""
    from signals.curves import CHANNELS
    from signals.encoder import KNOWN_CHANNELS

    assert KNOWN_CHANNELS == CHANNELS and KNOWN_CHANNELS[0] == "flow_volume"


def test_config_refuses_bad_values() -> None:
    with pytest.raises(SpirolmInputError, match="channels"):
        EncoderConfig(channels=("volume_time", "flow_volume"))
    with pytest.raises(SpirolmInputError, match="channels"):
        EncoderConfig(channels=("flow",))
    with pytest.raises(SpirolmInputError, match="in that order"):  # flow_volume stays channel 0
        EncoderConfig(channels=("flow_volume_norm", "flow_volume"))
    with pytest.raises(SpirolmInputError, match="in that order"):
        EncoderConfig(channels=("flow_volume", "volume_time", "flow_volume_norm"))
    with pytest.raises(SpirolmInputError, match="unknown encoder config keys"):
        EncoderConfig.from_dict({"widht_multiplier": 0.5})
    cfg = EncoderConfig(channels=TWO, width_multiplier=0.5)
    assert EncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_fingerprint_tracks_architecture() -> None:
    assert _net(0).fingerprint() == _net(1).fingerprint()  # weights do not matter
    assert _net(width_multiplier=0.5).fingerprint() != _net().fingerprint()
    assert _net(channels=TWO).fingerprint() != _net().fingerprint()
    assert _net(channels=NORM).fingerprint() not in {_net(channels=TWO).fingerprint(), _net().fingerprint()}


def test_export_round_trip(tmp_path) -> None:
    net = _net(channels=TWO, width_multiplier=0.25).eval()
    net.set_scaling([1.0, 2.0], [0.5, 1.5])
    save_encoder(net, tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")  # directory or file both work
    x = torch.randn(5, 2, 1000)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), net.encode(x))
        torch.testing.assert_close(loaded(x)[0], net(x)[0])
    assert loaded.cfg == net.cfg and not loaded.training
    meta = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert meta["fingerprint"] == net.fingerprint()
    # The file holds only tensors and plain types: a weights_only load succeeds on its own.
    assert torch.load(tmp_path / "enc" / "encoder.pt", weights_only=True)["format"] == FORMAT


def test_load_refuses_other_architectures(tmp_path) -> None:
    net = _net()
    save_encoder(net, tmp_path / "ok")
    blob = torch.load(tmp_path / "ok" / "encoder.pt", weights_only=True)

    # 1. another model's plain state_dict
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(SpirolmInputError, match="not a spirolm encoder export"):
        load_encoder(tmp_path / "linear.pt")
    # 2. a file written by another architecture version (fingerprint mismatch)
    torch.save({**blob, "fingerprint": "0123456789abcdef"}, tmp_path / "old.pt")
    with pytest.raises(SpirolmInputError, match="another architecture"):
        load_encoder(tmp_path / "old.pt")
    # 3. weights of another width under this file's config
    wide = _net(width_multiplier=0.5).state_dict()
    torch.save({**blob, "state_dict": wide}, tmp_path / "wrong_weights.pt")
    with pytest.raises(SpirolmInputError, match="do not match"):
        load_encoder(tmp_path / "wrong_weights.pt")
    # 4. a pickle with arbitrary objects is refused by weights_only, as an input error
    torch.save({"format": FORMAT, "obj": ArbitraryObject()}, tmp_path / "evil.pt")
    with pytest.raises(SpirolmInputError, match="weights_only"):
        load_encoder(tmp_path / "evil.pt")
    # 5. a consumer built for 2 channels refuses a 1-channel encoder
    with pytest.raises(SpirolmInputError, match="channels"):
        load_encoder(tmp_path / "ok", expected=EncoderConfig(channels=TWO))
    with pytest.raises(SpirolmInputError, match="not found"):
        load_encoder(tmp_path / "missing.pt")


def test_train_config_profiles_and_overrides(tmp_path) -> None:
    cfg = load_run_config().encoder
    assert cfg.model.width_multiplier == 0.25 and cfg.data.batch_size == 256
    full = load_run_config(profile="full").encoder
    assert full.model.width_multiplier == 1.0 and full.trainer.compile
    user = tmp_path / "user.yaml"
    user.write_text("encoder:\n  model:\n    channels: [flow_volume, volume_time]\n")
    run = load_run_config(config_file=user, overrides=["encoder.trainer.max_epochs=3", "traits=[copd]"])
    assert run.encoder.model.channels == TWO and run.encoder.trainer.max_epochs == 3 and run.traits == ("copd",)
    assert parse_override("a.b.c=1.5") == {"a": {"b": {"c": 1.5}}}
    with pytest.raises(SpirolmInputError, match="encoder.trainer.max_epoch"):
        load_run_config(overrides=["encoder.trainer.max_epoch=3"])
    with pytest.raises(SpirolmInputError, match="encoder.model.width_multiplier"):
        load_run_config(overrides=["encoder.model.width_multiplier=wide"])
    with pytest.raises(SpirolmInputError, match="key.path=value"):
        load_run_config(overrides=["max_epochs"])
    with pytest.raises(SpirolmInputError, match="unknown profile"):
        load_run_config(profile="huge")
    with pytest.raises(SpirolmInputError, match="encoder.model.traits: set the run's traits at the top level"):
        load_run_config(overrides=["encoder.model.traits=[copd]"])
