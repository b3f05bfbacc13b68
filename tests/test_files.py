"""Atomic writes: whole or nothing, never through a planted symlink, never over a device."""

import os
import stat

import pytest

from critui.errors import CritUIError
from critui.files import TEMP_SUFFIX, atomic_copy, atomic_file, atomic_write, remove_stale_temps


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "index.json"
    target.write_text("old")
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o044, "readable like a file open() made"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "spec.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


def test_a_symlink_planted_at_the_old_predictable_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.csv"
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".out.csv.{pid}.tmp").symlink_to(victim)
    atomic_write(target, "data")
    assert victim.read_text() == "precious"
    assert target.read_text() == "data"


def test_a_symlink_target_is_refused_not_replaced(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.csv"
    link.symlink_to(victim)
    with pytest.raises(CritUIError, match="symbolic link"):
        atomic_write(link, "data")
    assert link.is_symlink() and victim.read_text() == "precious"


def test_a_device_is_written_in_place_never_replaced_by_a_file():
    atomic_write("/dev/null", "anything")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_folder_target_is_refused(tmp_path):
    with pytest.raises(CritUIError, match="folder"):
        atomic_write(tmp_path, "x")


def test_atomic_copy_and_stale_temporaries_are_cleared(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"\x00" * 3_000_000)
    atomic_copy(tmp_path / "a.pt", tmp_path / "b.pt")
    assert (tmp_path / "b.pt").read_bytes() == (tmp_path / "a.pt").read_bytes()
    stale = tmp_path / f".latest.pt.abc123{TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    (tmp_path / ".hidden-but-not-ours").write_text("keep")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and (tmp_path / ".hidden-but-not-ours").exists()
    fresh = tmp_path / f".x{TEMP_SUFFIX}"
    fresh.write_text("being written")
    assert remove_stale_temps(tmp_path, older_than_s=3600) == []


def test_ids_accept_only_crituis_own_forms():
    from critui.runs.ids import is_run_id, is_sweep_id, new_run_id, new_sweep_id

    assert is_run_id(new_run_id()) and is_run_id("20261130-142452-89f4")
    for bad in ("", "..", "../../victim", "/etc", "20261130-142452-89f4/..", "20261130-142452-89F4\n", 5, None):
        assert not is_run_id(bad), bad
    sid = new_sweep_id("Demo removal!")
    assert is_sweep_id(sid) and sid.startswith("demo-removal-")
    assert is_sweep_id("demo-removal-20261129-101010"), "sweeps made before the random suffix"
    assert new_sweep_id("x") != new_sweep_id("x")
    for bad in ("", "..", "a/b-20261129-101010", "/abs-20261129-101010", "-x-20261129-101010"):
        assert not is_sweep_id(bad), bad
