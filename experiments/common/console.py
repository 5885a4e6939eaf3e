"""What a ``spirolm`` command prints: our log lines (one or two per stage, with its time), our progress bars,
and warnings; not third-party chatter.

Why a filter and not a fix: the chatter is informational output of libraries we call. Lightning's
"GPU available" / "TPU available" lines and litlogger tip; MLflow's database set-up lines, signature
validation notes and the progress bar of copying a local artifact; transformers' "Loading weights" bar on
each load of a local model. Two warnings are not ours to act on: a ``FutureWarning`` that Lightning's own
code (``lightning.pytorch.utilities._pytree``) triggers in torch, which only a Lightning release fixes, and
Lightning's note that modules are in eval mode (HeLM's frozen LLM is, on purpose). Every other warning,
third-party or ours, still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: Our packages: logged from ``level``.
OUR_LOGGERS = ("experiments", "biobank", "signals", "llm_bridge")
#: Libraries whose INFO records are hidden (their warnings still show).
THIRD_PARTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic", "httpx",
                       "urllib3", "transformers", "huggingface_hub", "ray")

#: Third-party loggers whose INFO records about distributed start-up are kept: how the processes of a
#: multi-process (DDP) run joined is the user's first question when one hangs or runs alone.
KEPT_DISTRIBUTED_INFO = ("lightning.fabric.utilities.distributed", "lightning.fabric.utilities.rank_zero",
                         "lightning.pytorch.utilities.rank_zero")


class _DistributedStartOnly(logging.Filter):
    """Passes WARNING and above, and INFO records about distributed start-up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "distributed" in record.getMessage()

#: ``(category, message regex, module regex)`` of third-party warnings that are not ours to act on.
IGNORED_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # Lightning builds torch's deprecated LeafSpec; fixed by a Lightning release, not by us.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    # HeLM trains a projector on a frozen LLM kept in eval mode on purpose (no dropout in the graft).
    (UserWarning, r"Found \d+ module\(s\) in eval mode at the start of training", r"lightning\.pytorch\.loops\.fit_loop"),
)


def configure_console(level: int = logging.INFO) -> None:
    """Log our records at ``level`` and third-party ones from WARNING; drop the known third-party noise.

    Call it after the libraries are imported: Lightning sets its own logger's level on import.
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is only defaulted, so a user's setting wins.
    """
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for name in KEPT_DISTRIBUTED_INFO:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(f, _DistributedStartOnly) for f in logger.filters):
            logger.addFilter(_DistributedStartOnly())
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # transformers' "Loading weights" bar on every (local, seconds-long) model load; it reads this when imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] not in ("0", "false", "False"):
        hf_logging.disable_progress_bar()
    for category, message, module in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
