"""Per-trait soft tokens, the probe-initialised projector and probe distillation (issue 5's quality work)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.helm.module import HeLMModule
from llm_bridge.llm import load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.projector import SoftTokenProjector, fit_embedding_probe
from llm_bridge.tiny import build_tiny_llm
from signals.errors import SpirolmInputError
from tests.helm_fixtures import records

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_llm(build_tiny_llm(tmp_path_factory.mktemp("llama_init"), "llama"))


def test_each_trait_reads_its_own_token_set(llama):
    model = HeLM(llama, HeLMConfig(tokens_per_trait=True, num_soft_tokens=3, seed=0))
    emb = torch.randn(2, 128)
    assert model.projector(emb).shape == (2, 6, llama.hidden_size)  # k tokens x 2 traits
    asthma = model.soft_tokens(2, emb, None, trait="asthma")
    copd = model.soft_tokens(2, emb, None, trait="copd")
    assert asthma.shape == copd.shape == (2, 3, llama.hidden_size)
    assert not torch.allclose(asthma, copd)
    torch.testing.assert_close(torch.cat([asthma, copd], dim=1), model.soft_tokens(len(emb), emb, None, every_set=True))
    with pytest.raises(ValueError, match="tokens_per_trait"):
        model.soft_tokens(2, emb, None)
    # the prefix-cache path and the full-sequence path still agree with separate sets
    ids = model.prefix_ids(records(2))
    with torch.no_grad():
        torch.testing.assert_close(model.score_prefix(model.encode_prefix(ids), emb), model.score_full(ids, emb),
                                   atol=1e-5, rtol=1e-4)


def test_a_gradient_of_one_trait_reaches_only_its_tokens(llama):
    model = HeLM(llama, HeLMConfig(tokens_per_trait=True, num_soft_tokens=2, projector="linear", seed=0))
    out = model.score_full(model.prefix_ids(records(2)), torch.randn(2, 128), traits=["copd"])
    out[..., 1].sum().backward()
    grad = model.projector.mlp.weight.grad.view(2, 2, llama.hidden_size, 128)  # (set, k, d, in)
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0  # copd is the second trait


def test_probe_init_passes_the_probe_logits_through_and_starts_constant():
    proj = SoftTokenProjector(8, 16, 2, "mlp2x_gelu", target_norm=1.0)
    w, b = torch.randn(2, 8), torch.randn(2)
    proj.init_from_probe(w, b)
    x = torch.randn(5, 8)
    h = proj.mlp[1](proj.mlp[0](x))
    torch.testing.assert_close(h[:, 0::2][:, :2] - h[:, 1::2][:, :2], x @ w.T + b)  # GELU(z) - GELU(-z) = z
    assert torch.all(h[:, 4:] == 0)  # every other hidden unit is silent: a probe bottleneck
    tokens = proj(x)
    torch.testing.assert_close(tokens, tokens[:1].expand_as(tokens))  # zero output layer: constant tokens
    opt = torch.optim.Adam(proj.parameters(), lr=1e-2)
    for _ in range(3):  # Adam would move any weight with a nonzero gradient by ~lr: the silent units stay silent
        opt.zero_grad()
        proj(x).pow(3).sum().backward()
        opt.step()
    assert torch.all(proj.mlp[0].weight[4:] == 0) and torch.all(proj.mlp[2].weight[:, 4:] == 0)
    assert proj.mlp[2].weight[:, :4].abs().sum() > 0  # while the probe units learn where to write
    with pytest.raises(SpirolmInputError, match="mlp2x_gelu"):
        SoftTokenProjector(8, 16, 2, "linear").init_from_probe(w, b)
    with pytest.raises(SpirolmInputError, match="does not fit"):
        SoftTokenProjector(8, 16, 2, "mlp2x_gelu", hidden=3).init_from_probe(w, b)


def test_per_set_probe_init_lets_each_token_set_read_only_its_own_probe():
    proj = SoftTokenProjector(8, 16, 4, "mlp2x_gelu", target_norm=1.0)  # 2 sets of 2 tokens
    w, b = torch.randn(2, 8), torch.randn(2)
    proj.init_from_probe(w, b, per_set=True)
    x = torch.randn(6, 8)
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        opt.zero_grad()
        proj(x).pow(3).sum().backward()
        opt.step()
    out = proj.mlp[2].weight.view(2, 2 * 16, -1)  # (set, rows of the set, hidden)
    assert torch.all(out[0, :, 2:] == 0) and torch.all(out[1, :, :2] == 0) and torch.all(out[1, :, 4:] == 0)
    assert out[0, :, :2].abs().sum() > 0 and out[1, :, 2:4].abs().sum() > 0
    # moving the input along a direction that probe 1's two units do not see leaves set 1's tokens alone
    seen = proj.mlp[0].weight[2:4].detach()  # (2, in) the trained input weights of probe 1's units
    v = torch.randn(8)
    v = v - seen.T @ torch.linalg.lstsq(seen.T, v.unsqueeze(1)).solution.squeeze(1)
    with torch.no_grad():
        torch.testing.assert_close(proj(x)[:, 2:], proj(x + 3 * v)[:, 2:])
        assert not torch.allclose(proj(x)[:, :2], proj(x + 3 * v)[:, :2])
    with pytest.raises(SpirolmInputError, match="sets"):
        SoftTokenProjector(8, 16, 3, "mlp2x_gelu").init_from_probe(w, b, per_set=True)


def test_probe_init_with_free_units_starts_as_the_probe_and_learns_more_than_one_number():
    """``free_units``: the model starts exactly where the bottleneck does (zero output layer), but the
    non-probe hidden units read the whole feature vector and their output weights train, so each token
    set can come to depend on directions of the input that its probe does not see."""
    proj = SoftTokenProjector(8, 16, 4, "mlp2x_gelu", target_norm=1.0, hidden=32)  # 2 sets of 2 tokens
    w, b = torch.randn(2, 8), torch.randn(2)
    proj.init_from_probe(w, b, per_set=True, free_units=True)
    x = torch.randn(6, 8)
    h = proj.mlp[1](proj.mlp[0](x))
    torch.testing.assert_close(h[:, 0:4:2] - h[:, 1:4:2], x @ w.T + b)  # the probe logits still pass through
    assert h[:, 4:].abs().sum() > 0  # the free units are live
    tokens = proj(x)
    torch.testing.assert_close(tokens, tokens[:1].expand_as(tokens))  # zero output layer: starts constant
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        proj(x).pow(3).sum().backward()
        opt.step()
    out = proj.mlp[2].weight.view(2, 2 * 16, -1)  # (set, rows of the set, hidden)
    assert torch.all(out[0, :, 2:4] == 0) and torch.all(out[1, :, :2] == 0)  # never another trait's probe
    assert out[0, :, 4:].abs().sum() > 0 and out[1, :, 4:].abs().sum() > 0  # both sets read the free units
    # a direction neither probe sees now moves both token sets
    v = torch.randn(8)
    v = v - w.T @ torch.linalg.lstsq(w.T, v.unsqueeze(1)).solution.squeeze(1)
    with torch.no_grad():
        assert not torch.allclose(proj(x)[:, 2:], proj(x + 3 * v)[:, 2:])
        assert not torch.allclose(proj(x)[:, :2], proj(x + 3 * v)[:, :2])


def test_fit_embedding_probe_ranks_cases_and_refuses_one_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)) * 3 + 5
    y = np.stack([(x[:, 0] + rng.normal(size=400) > 5).astype(float),
                  (x[:, 1] - x[:, 2] + rng.normal(size=400) > 0).astype(float)], axis=1)
    y[:10, 1] = np.nan  # unknown labels are left out, not read as controls
    w, b = fit_embedding_probe(x, y)
    logits = torch.from_numpy(x).float() @ w.T + b  # raw-scale weights: no scaler needed at use time
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y[:, 0], logits[:, 0]) > 0.85
    known = ~np.isnan(y[:, 1])
    assert roc_auc_score(y[known, 1], logits[known, 1]) > 0.85
    with pytest.raises(SpirolmInputError, match="cases and controls") as err:
        fit_embedding_probe(x, np.zeros((400, 1)), names=["asthma"])
    assert "asthma" in str(err.value)


def test_distillation_adds_the_probe_logit_error_to_the_loss(llama):
    model = HeLM(llama, HeLMConfig(tokens_per_trait=True, seed=0))
    teacher = (torch.randn(2, 128) * 0.1, torch.tensor([0.5, -1.0]))
    plain = HeLMModule(model, use_prefix_cache=False)
    distilled = HeLMModule(model, use_prefix_cache=False, teacher=teacher, distill_weight=0.5)
    distilled.log = plain.log = lambda *a, **k: None  # outside a Trainer
    df = records(3)
    emb = torch.randn(3, 128)
    batch = {"eid": df["eid"].tolist(), "prefix_ids": model.prefix_ids(df), "embedding": emb, "tab": None,
             "labels": torch.tensor(df[["asthma", "copd"]].to_numpy(), dtype=torch.float32)}
    with torch.no_grad():
        base, pairs = plain.model_step(batch, train=True)
        total, _ = distilled.model_step(batch, train=True)
        _, val_pairs = distilled.model_step(batch, train=False)
    target = emb @ teacher[0].T + teacher[1]
    expected = base + 0.5 * F.mse_loss(pairs[..., 1] - pairs[..., 0], target)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(val_pairs, pairs)  # validation is scored on the answer alone
    with pytest.raises(ValueError, match="teacher"):
        HeLMModule(model, distill_weight=1.0)


def test_checkpoints_from_before_the_options_load_as_one_shared_random_set():
    d = HeLMConfig().to_dict()
    del d["tokens_per_trait"], d["projector_init"]
    cfg = HeLMConfig.from_dict(d)
    assert cfg.tokens_per_trait is False and cfg.projector_init == "random"
    with pytest.raises(SpirolmInputError, match="projector_init"):
        HeLMConfig(projector_init="encoder")
