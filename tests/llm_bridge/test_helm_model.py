"""HeLM model: frozen LLM, one training step, checkpoints with LLM identity, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from llm_bridge.calibration import RiskCalibrator
from llm_bridge.llm import load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.tiny import build_tiny_llm
from signals.errors import SpirolmInputError
from tests.helm_fixtures import records

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_llm(build_tiny_llm(tmp_path_factory.mktemp("llama"), "llama"))


def _step(model: HeLM, df, emb, use_cache: bool) -> float:
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    ids = model.prefix_ids(df)
    labels = torch.tensor(df[["asthma", "copd"]].to_numpy(), dtype=torch.float32)
    out = model.score_prefix(model.encode_prefix(ids), emb) if use_cache else model.score_full(ids, emb)
    loss = model.loss(out, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize("use_cache", [True, False])
def test_training_step_moves_only_trainable_weights(llama, use_cache):
    model = HeLM(llama, HeLMConfig(seed=1))
    before = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    proj_before = [p.detach().clone() for p in model.projector.parameters()]
    assert all(not p.requires_grad for p in model.llm.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.projector.parameters()}
    _step(model, records(4), torch.randn(4, 128), use_cache)
    for n, p in model.llm.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None, n
    assert any(not torch.equal(a, b) for a, b in zip(proj_before, model.projector.parameters()))


def test_frozen_llm_stays_in_eval_mode(llama):
    model = HeLM(llama, HeLMConfig()).train()
    assert model.projector.training and not model.llm.training


def test_lora_trains_adapters_only(llama):
    model = HeLM(llama, HeLMConfig(lora_r=2, lora_targets=("q_proj", "v_proj")))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in names)
    assert all("lora_" in n or n.startswith("projector.") for n in names)
    with pytest.raises(RuntimeError, match="LoRA"):
        model.score_prefix(model.encode_prefix(model.prefix_ids(records(2))), torch.randn(2, 128))
    _step(model, records(2), torch.randn(2, 128), use_cache=False)
    model.assert_llm_frozen()


def test_checkpoint_roundtrip_holds_only_trainable_weights(llama, tmp_path):
    cfg = HeLMConfig(variant="text", soft_prompt_tokens=3, traits=("copd",))
    model = HeLM(llama, cfg)
    with torch.no_grad():
        model.soft_prompt.tokens.add_(1.0)
    path = model.save_checkpoint(tmp_path / "helm.pt")
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["state"]) == {"soft_prompt.tokens"}
    assert ckpt["llm"]["weights_hash"] == llama.identity.weights_hash
    loaded = HeLM.load_checkpoint(path, llama)
    assert loaded.cfg == cfg
    torch.testing.assert_close(loaded.soft_prompt.tokens, model.soft_prompt.tokens)
    ids = model.prefix_ids(records(2))
    torch.testing.assert_close(loaded.score_full(ids), model.score_full(ids))


def test_checkpoint_refused_against_other_llm(llama, tmp_path):
    path = HeLM(llama, HeLMConfig()).save_checkpoint(tmp_path / "helm.pt")
    other_weights = load_llm(build_tiny_llm(tmp_path / "other", "llama", seed=7))
    with pytest.raises(SpirolmInputError, match="different weights"):
        HeLM.load_checkpoint(path, other_weights)
    wider = load_llm(build_tiny_llm(tmp_path / "wide", "gpt2", hidden=48))
    with pytest.raises(SpirolmInputError, match="hidden size 48"):
        HeLM.load_checkpoint(path, wider)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpirolmInputError, match="cannot read"):
        HeLM.load_checkpoint(tmp_path / "junk.pt", llama)


def test_nan_embedding_names_the_participant(llama):
    model = HeLM(llama, HeLMConfig())
    df = records(3)
    emb = torch.randn(3, 128)
    emb[1, 5] = float("nan")
    with pytest.raises(SpirolmInputError, match="non-finite") as err:
        model.score_full(model.prefix_ids(df), emb, eids=df["eid"].tolist())
    assert "1001" in str(err.value)


def test_bad_configs_are_clear(llama):
    with pytest.raises(SpirolmInputError, match="variant"):
        HeLMConfig(variant="image")
    with pytest.raises(SpirolmInputError, match="TabularScaler"):
        HeLM(llama, HeLMConfig(variant="tabmlp+spiro"))
    with pytest.raises(SpirolmInputError, match="spirogram embeddings"):
        HeLM(llama, HeLMConfig()).score_full([[5, 6]])


def test_loss_masks_missing_labels_and_weights_cases(llama):
    model = HeLM(llama, HeLMConfig())
    out = torch.tensor([[[0.0, 2.0], [1.0, 0.0]]])
    both = model.loss(out, torch.tensor([[1.0, float("nan")]]))
    only = torch.nn.functional.cross_entropy(out[0, :1], torch.tensor([1]))
    torch.testing.assert_close(both, only)
    assert float(model.loss(out, torch.tensor([[float("nan")] * 2]))) == 0.0


def test_random_llama_presets_build_frozen_sdpa_llamas_that_helm_scores():
    from transformers import AutoModelForCausalLM

    from llm_bridge.tiny import preset_config, random_llama

    with torch.device("meta"):  # the 1b preset's size without allocating it
        one_b = AutoModelForCausalLM.from_config(preset_config("1b", 512))
    assert 0.9e9 < sum(p.numel() for p in one_b.parameters()) < 1.3e9
    llm = random_llama("tiny", seed=3)
    assert llm.model.config._attn_implementation == "sdpa"
    assert not any(p.requires_grad for p in llm.model.parameters())
    assert llm.identity.weights_hash == "random:seed3"
    model = HeLM(llm, HeLMConfig())
    out = model.score_prefix(model.encode_prefix(model.prefix_ids(records(3))), torch.randn(3, 128))
    assert out.shape == (3, 2, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="preset"):
        random_llama("70b")


def test_checkpoint_carries_the_calibrators(llama, tmp_path):
    model = HeLM(llama, HeLMConfig(variant="text", soft_prompt_tokens=2, traits=("asthma", "copd")))
    model.calibration = {"copd": RiskCalibrator("platt", {"slope": 1.0, "intercept": -2.0}, 100)}
    loaded = HeLM.load_checkpoint(model.save_checkpoint(tmp_path / "helm.pt"), llama)
    assert loaded.calibration == model.calibration
    risks = np.array([[0.5, 0.5], [0.9, 0.9]])
    out = loaded.calibrated(risks)
    np.testing.assert_array_equal(out[:, 0], risks[:, 0])  # asthma has no calibrator: unchanged
    np.testing.assert_allclose(out[:, 1], expit(logit(risks[:, 1]) - 2.0))
    assert risks[1, 1] == 0.9  # the input is not modified
