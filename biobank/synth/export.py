"""Assemble synthetic participants into the UK Biobank field-ID export (docs/design.md 'Export format').

Streaming: participants are generated in RNG blocks of :data:`RNG_BLOCK` with
``SeedSequence(seed, spawn_key=(block,))``, so participant ``i`` is the same whatever ``n`` and
``chunk_size`` are (the output for ``n`` is a prefix of the output for a larger ``n``). ``chunk_size`` only
sets how many participants are appended to the CSV / Parquet at once, which bounds memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from biobank.synth.config import SynthConfig
from biobank.synth.curves import synthesize_volumes
from biobank.synth.faults import draw_blows
from biobank.synth.labels import TRAITS, draw_labels, phenotype_codes, true_risks
from biobank.synth.physiology import draw_latents, lung_function
from biobank.synth.population import draw_population
from signals.errors import SpirolmInputError
from signals.ukb3066 import format_3066

RNG_BLOCK = 1000
"""Participants per independent random stream (the unit of reproducibility)."""
EID_START = 1_000_001
"""First synthetic participant id (UKB eids are 7-digit)."""
EXPORT_NAME = "ukb_export.csv"
LATENTS_NAME = "latents.parquet"


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate_export` wrote and how fast."""

    export_csv: Path
    latents_parquet: Path
    n: int
    seed: int
    prevalence: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def participants_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")


def export_columns(cfg: SynthConfig) -> list[str]:
    """The export's column order (fixed by the config's slot counts)."""
    cols = ["eid", "31-0.0", "21022-0.0", "50-0.0", "21001-0.0", "20116-0.0", "20161-0.0", "21000-0.0",
            "189-0.0", "24006-0.0"]
    for fld, n in (("6152", cfg.touchscreen_slots), ("20107", cfg.touchscreen_slots),
                   ("20110", cfg.touchscreen_slots), ("20002", cfg.selfreport_slots),
                   ("41270", cfg.icd10_slots), ("41271", cfg.icd9_slots), ("3066", cfg.blow_slots)):
        cols += [f"{fld}-0.{a}" for a in range(n)]
    return cols + [f"true_risk_{t}" for t in TRAITS]


def generate_chunk(n: int, rng: np.random.Generator, cfg: SynthConfig = SynthConfig(),
                   eid_start: int = EID_START) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate ``n`` participants in memory.

    Args:
        n: number of participants (> 0).
        rng: the random stream; every draw of the model comes from it, in a fixed order.
        cfg: model configuration.
        eid_start: eid of the first participant (eids are consecutive).

    Returns:
        ``(export_df, latents_df)``: the UKB-format rows (columns :func:`export_columns`) and the side
        table with latents, true curve parameters, true labels, risks and per-blow fault codes.
    """
    if n <= 0:
        raise SpirolmInputError(f"number of participants must be positive, got {n}", field="n")
    _check_config(cfg)
    pop = draw_population(n, rng, cfg.population)
    lat = draw_latents(pop, rng, cfg.physiology)
    phys = lung_function(pop, lat, rng, cfg.physiology, cfg.curves)
    owner, fault, blow_params = draw_blows(phys, lat["latent_obstruction"].to_numpy(), rng, cfg.curves, cfg.faults)
    volumes = synthesize_volumes(blow_params, rng, cfg.curves)
    risks = true_risks(pop, lat, cfg.labels)
    labels = draw_labels(risks, rng)
    slots = {"6152": cfg.touchscreen_slots, "20107": cfg.touchscreen_slots, "20110": cfg.touchscreen_slots,
             "20002": cfg.selfreport_slots, "41270": cfg.icd10_slots, "41271": cfg.icd9_slots}
    codes = phenotype_codes(labels, lat["hay_fever_eczema"].to_numpy(), pop["father_copd"].to_numpy(),
                            pop["mother_copd"].to_numpy(), rng, cfg.labels, slots)
    eids = eid_start + np.arange(n, dtype=np.int64)

    export = _tabular_columns(eids, pop, rng, cfg)
    for fld, lists in codes.items():
        export.update(_array_columns(fld, lists, slots[fld]))
    blow_cols, fault_cols = _blow_columns(owner, fault, volumes, n, cfg.blow_slots)
    export.update(blow_cols)
    for t in TRAITS:
        export[f"true_risk_{t}"] = np.round(risks[f"true_risk_{t}"].to_numpy(), 7)
    export_df = pd.DataFrame(export)[export_columns(cfg)]

    latents_df = pd.concat([pd.DataFrame({"eid": eids}), lat, phys, labels, risks], axis=1)
    latents_df["n_blows"] = np.bincount(owner, minlength=n).astype(np.int8)
    for a, codes_a in fault_cols.items():
        latents_df[f"fault_{a}"] = codes_a
    for name in ("age", "male", "height_cm", "bmi", "smoking", "pack_years", "gli_ethnicity"):
        latents_df[f"true_{name}"] = pop[name].to_numpy()
    return export_df, latents_df


def generate_export(n: int, seed: int, out_dir: Path, cfg: SynthConfig = SynthConfig(),
                    chunk_size: int = 5000, progress: bool = True) -> SynthResult:
    """Stream ``n`` synthetic participants to ``out_dir/ukb_export.csv`` and ``out_dir/latents.parquet``.

    Memory is bounded by ``chunk_size`` (not ``n``): each chunk is generated, appended and dropped.
    The same ``(n, seed, cfg)`` gives byte-identical files, whatever ``chunk_size``.

    Raises:
        SpirolmInputError: ``n``/``chunk_size`` not positive, or ``out_dir`` exists as a file.
    """
    if n <= 0:
        raise SpirolmInputError(f"number of participants must be positive, got {n}", field="n")
    if chunk_size <= 0:
        raise SpirolmInputError(f"chunk_size must be positive, got {chunk_size}", field="chunk_size")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpirolmInputError("output path exists and is not a directory", file=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, pq_path = out_dir / EXPORT_NAME, out_dir / LATENTS_NAME
    chunk_size = max(RNG_BLOCK, (chunk_size // RNG_BLOCK) * RNG_BLOCK)
    cases = dict.fromkeys(TRAITS, 0)
    start = time.perf_counter()
    writer: pq.ParquetWriter | None = None
    try:
        with open(csv_path, "w", newline="", encoding="utf-8") as fh, \
                tqdm(total=n, unit="participant", desc="synth cohort", disable=not progress) as bar:
            for first in range(0, n, chunk_size):
                export_df, latents_df = _generate_range(first, min(first + chunk_size, n), seed, cfg)
                export_df.to_csv(fh, header=first == 0, index=False, na_rep="", lineterminator="\n")
                table = pa.Table.from_pandas(latents_df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(pq_path, table.schema)
                writer.write_table(table.cast(writer.schema))
                for t in TRAITS:
                    cases[t] += int(latents_df[t].sum())
                bar.update(len(export_df))
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    return SynthResult(csv_path, pq_path, n, seed, {t: cases[t] / n for t in TRAITS}, seconds)


def _generate_range(first: int, stop: int, seed: int, cfg: SynthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Participants ``first..stop-1``, block by block with block-keyed random streams."""
    parts = []
    for b0 in range(first, stop, RNG_BLOCK):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b0 // RNG_BLOCK,)))
        parts.append(generate_chunk(min(RNG_BLOCK, stop - b0), rng, cfg, eid_start=EID_START + b0))
    return (pd.concat([p[0] for p in parts], ignore_index=True),
            pd.concat([p[1] for p in parts], ignore_index=True))


def _tabular_columns(eids: np.ndarray, pop: pd.DataFrame, rng: np.random.Generator,
                     cfg: SynthConfig) -> dict[str, object]:
    """Covariate columns with realistic missingness (true values stay in the side table)."""
    n = eids.size
    miss = cfg.missing
    u = rng.random((5, n))
    smoking = pop["smoking"].to_numpy().astype(np.int64)
    smoking_out = np.where(u[3] < miss.p_smoking_prefer_not, -3, smoking)
    pack_years = np.where((smoking_out > 0) & (u[1] >= miss.p_pack_years), pop["pack_years"].to_numpy(), np.nan)
    return {
        "eid": eids,
        "31-0.0": pop["male"].to_numpy().astype(np.int64),
        "21022-0.0": pop["age"].to_numpy().astype(np.int64),
        "50-0.0": pop["height_cm"].to_numpy(),
        "21001-0.0": np.where(u[0] < miss.p_bmi, np.nan, pop["bmi"].to_numpy()),
        "20116-0.0": smoking_out,
        "20161-0.0": pack_years,
        "21000-0.0": pop["ethnicity_code"].to_numpy(),
        "189-0.0": np.where(u[2] < miss.p_townsend, np.nan, pop["townsend"].to_numpy()),
        "24006-0.0": np.where(u[4] < miss.p_pm25, np.nan, pop["pm25"].to_numpy()),
    }


def _array_columns(fld: str, lists: list[list], n_slots: int) -> dict[str, pd.Series]:
    """One column per array slot; integer codes as nullable Int64, ICD codes as strings."""
    icd = fld in ("41270", "41271")
    cols = {}
    for a in range(n_slots):
        values = [codes[a] if a < len(codes) else None for codes in lists]
        cols[f"{fld}-0.{a}"] = pd.Series(values, dtype="string" if icd else "Int64")
    return cols


def _blow_columns(owner: np.ndarray, fault: np.ndarray, volumes: list[np.ndarray], n: int,
                  n_slots: int) -> tuple[dict[str, list], dict[int, list]]:
    """3066 strings per array slot (blow order = slot + 1) and the matching fault codes."""
    blows: dict[str, list] = {f"3066-0.{a}": [None] * n for a in range(n_slots)}
    faults: dict[int, list] = {a: [None] * n for a in range(n_slots)}
    slot = np.zeros(n, dtype=np.int64)
    for j, i in enumerate(owner):
        a = slot[i]
        slot[i] += 1
        if a >= n_slots:
            continue
        blows[f"3066-0.{a}"][i] = format_3066(a + 1, volumes[j])
        faults[a][i] = str(fault[j])
    return blows, faults


def _check_config(cfg: SynthConfig) -> None:
    """Fail early, with the field's name, on rates that cannot be probabilities."""
    f = cfg.faults
    total = f.p_slow_start + f.p_cough + f.p_early_termination + f.p_submaximal
    if not 0.0 <= total <= 1.0:
        raise SpirolmInputError(f"fault rates sum to {total:.3f}; they must lie in [0, 1]", field="faults")
    for name in ("p_bmi", "p_pack_years", "p_townsend", "p_smoking_prefer_not", "p_pm25"):
        p = getattr(cfg.missing, name)
        if not 0.0 <= p <= 1.0:
            raise SpirolmInputError(f"missingness rate {name}={p} is not a probability", field=f"missing.{name}")
    if cfg.blow_slots < 3:
        raise SpirolmInputError(f"blow_slots must be >= 3 (participants get up to 3 blows), got {cfg.blow_slots}",
                                field="blow_slots")
