"""The command line's console: third-party chatter hidden, their other warnings and all of ours kept."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from experiments.common.console import OUR_LOGGERS, THIRD_PARTY_LOGGERS, configure_console


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch):
    levels = {name: logging.getLogger(name).level for name in (*THIRD_PARTY_LOGGERS, *OUR_LOGGERS)}
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # keep transformers' global switch as it is
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root.setLevel(root_state[0])
    root.handlers[:] = root_state[1]


def test_third_party_info_hidden_warnings_kept(restored) -> None:
    configure_console()
    for name in ("lightning.pytorch", "mlflow"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
    assert logging.getLogger("experiments.pipeline.stages").isEnabledFor(logging.INFO)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    noise = [("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
              "lightning.pytorch.utilities._pytree"),
             ("Found 397 module(s) in eval mode at the start of training. This may ...", UserWarning,
              "lightning.pytorch.loops.fit_loop")]
    kept = [("The number of training batches (3) is smaller than the logging interval", UserWarning,
             "lightning.pytorch.loops.fit_loop"),
            ("Found 3 module(s) in eval mode at the start of training.", UserWarning, "experiments.helm.train")]
    for message, category, module in noise + kept:
        warnings.warn_explicit(message, category, f"{module}.py", 1, module=module)
    assert [str(w.message) for w in restored] == [m for m, _, _ in kept]
