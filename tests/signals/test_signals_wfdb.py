"""WFDB storage: exact round trips, safe names, and readable errors for bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from signals.errors import SpirolmInputError
from signals.ukb3066 import parse_3066
from signals.wfdb_io import read_blows_wfdb, record_name, write_blows_wfdb

DEMO = parse_3066(
    (Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()
).volume_ml


def three_blows() -> list[np.ndarray]:
    shorter = np.rint(DEMO[:900] * 0.97).astype(np.int32)
    return [DEMO, shorter, np.array([0, 2, 7, 7, 6], dtype=np.int32)]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    blows = three_blows()
    paths = write_blows_wfdb(tmp_path, 1234567, blows)
    assert [p.name for p in paths] == ["1234567_i0_b0.hea", "1234567_i0_b1.hea", "1234567_i0_b2.hea"]
    assert all(p.with_suffix(".dat").is_file() for p in paths)
    back = read_blows_wfdb(tmp_path, 1234567)
    assert len(back) == 3
    for original, restored in zip(blows, back):
        assert restored.dtype == np.int32
        np.testing.assert_array_equal(restored, original)


def test_header_is_lossless_mL_at_100_hz(tmp_path: Path) -> None:
    (path,) = write_blows_wfdb(tmp_path, 42, [DEMO], instance=2)
    lines = path.read_text().splitlines()
    assert lines[0].split()[:4] == ["42_i2_b0", "1", "100", str(DEMO.size)]
    fields = lines[1].split()
    assert fields[:3] == ["42_i2_b0.dat", "16", "1.0(0)/mL"] and fields[-1] == "volume"
    assert "# eid=42 instance=2 blow=0" in lines
    np.testing.assert_array_equal(read_blows_wfdb(tmp_path, 42, instance=2)[0], DEMO)


def test_large_volumes_switch_to_32_bit(tmp_path: Path) -> None:
    big = np.array([0, 20000, 40000, 70000], dtype=np.int64)
    (path,) = write_blows_wfdb(tmp_path, 7, [big])
    assert path.read_text().splitlines()[1].split()[1] == "32"
    np.testing.assert_array_equal(read_blows_wfdb(tmp_path, 7)[0], big)


def test_whole_mL_floats_are_accepted(tmp_path: Path) -> None:
    write_blows_wfdb(tmp_path, 8, [DEMO.astype(np.float64)])
    np.testing.assert_array_equal(read_blows_wfdb(tmp_path, 8)[0], DEMO)


def test_participants_and_instances_do_not_mix(tmp_path: Path) -> None:
    write_blows_wfdb(tmp_path, 12, [DEMO[:100]])
    write_blows_wfdb(tmp_path, 123, [DEMO[:200], DEMO[:300]])
    write_blows_wfdb(tmp_path, 12, [DEMO[:400]], instance=1)
    assert [b.size for b in read_blows_wfdb(tmp_path, 12)] == [100]
    assert [b.size for b in read_blows_wfdb(tmp_path, 123)] == [200, 300]
    assert [b.size for b in read_blows_wfdb(tmp_path, 12, instance=1)] == [400]


def test_existing_records_need_overwrite_and_stale_ones_are_removed(tmp_path: Path) -> None:
    write_blows_wfdb(tmp_path, 5, three_blows())
    with pytest.raises(SpirolmInputError, match="already exist"):
        write_blows_wfdb(tmp_path, 5, [DEMO])
    write_blows_wfdb(tmp_path, 5, [DEMO[:50]], overwrite=True)
    back = read_blows_wfdb(tmp_path, 5)
    assert len(back) == 1 and back[0].size == 50
    assert not (tmp_path / "5_i0_b2.dat").exists()


@pytest.mark.parametrize("eid", ["../etc", "12_3", "", "1 2", "a/b", "x*"])
def test_unsafe_participant_ids_are_refused(tmp_path: Path, eid: str) -> None:
    with pytest.raises(SpirolmInputError, match="record name"):
        write_blows_wfdb(tmp_path, eid, [DEMO])
    assert list(tmp_path.iterdir()) == []


def test_record_name_accepts_ukb_style_ids() -> None:
    assert record_name(1000017, 0, 2) == "1000017_i0_b2"
    assert record_name("-3", 1, 0) == "-3_i1_b0"  # withdrawn participants have negative eids
    with pytest.raises(SpirolmInputError, match="instance"):
        record_name(1, -1, 0)


@pytest.mark.parametrize(
    ("blow", "message"),
    [
        (np.array([0.0, 10.5, 20.0]), "fractional"),
        (np.array([0.0, np.nan]), "non-finite"),
        (np.array([3]), "at least 2"),
    ],
)
def test_unstorable_blows_are_refused(tmp_path: Path, blow: np.ndarray, message: str) -> None:
    with pytest.raises(SpirolmInputError, match=message) as info:
        write_blows_wfdb(tmp_path, 9, [DEMO, blow])
    assert "participant 9" in str(info.value) and "blow 1" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# --- reading damaged or missing data --------------------------------------------------------------


def test_missing_directory_and_missing_participant(tmp_path: Path) -> None:
    with pytest.raises(SpirolmInputError, match="does not exist") as info:
        read_blows_wfdb(tmp_path / "nope", 1)
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(SpirolmInputError, match="no WFDB records"):
        read_blows_wfdb(tmp_path, 1)


def test_gap_in_blow_indices_names_the_missing_record(tmp_path: Path) -> None:
    write_blows_wfdb(tmp_path, 3, three_blows())
    (tmp_path / "3_i0_b1.hea").unlink()
    with pytest.raises(SpirolmInputError, match="gap") as info:
        read_blows_wfdb(tmp_path, 3)
    assert "3_i0_b1.hea" in str(info.value)


def _damage_truncate(rec: Path) -> None:
    dat = rec.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:100])


def _damage_header(rec: Path) -> None:
    rec.write_text("this is not a header\n")


def _damage_flip(rec: Path) -> None:
    dat = rec.with_suffix(".dat")
    raw = bytearray(dat.read_bytes())
    raw[200] ^= 0x10
    dat.write_bytes(bytes(raw))


def _damage_delete_dat(rec: Path) -> None:
    rec.with_suffix(".dat").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_damage_truncate, "unreadable"),
        (_damage_header, "unreadable"),
        (_damage_flip, "checksum"),
        (_damage_delete_dat, "unreadable"),
    ],
)
def test_corrupt_record_names_the_file(tmp_path: Path, damage, message: str) -> None:
    (path,) = write_blows_wfdb(tmp_path, 77, [DEMO])
    damage(path)
    with pytest.raises(SpirolmInputError, match=message) as info:
        read_blows_wfdb(tmp_path, 77)
    assert str(path) in str(info.value) and "participant 77" in str(info.value)


def test_record_copied_under_another_participant_is_refused(tmp_path: Path) -> None:
    (path,) = write_blows_wfdb(tmp_path, 10, [DEMO])
    other = tmp_path / "11_i0_b0.hea"
    shutil.copy(path, other)
    shutil.copy(path.with_suffix(".dat"), other.with_suffix(".dat"))
    with pytest.raises(SpirolmInputError, match="does not name this participant"):
        read_blows_wfdb(tmp_path, 11)
