"""A home holding every kind of damage and hostility at once, read by every command.

One home gets a real trained run (and a real fork of it), then, beside them: index entries
whose ids climb out of the home, a checkpoint whose unpickling would run code, pids that
would signal every process or an unrelated one, a launcher job id that reaches ``os.kill``,
symlinks planted at the old predictable temporary names, and damaged records of every file a
run or sweep has. Every command then runs over it: none may end in a traceback, write
outside the home, or signal a process; the healthy runs stay fully usable.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, index_docs

pytestmark = pytest.mark.slow

VICTIM_NAME = "victim"


class RunsCode:
    """Unpickling this writes a marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def snapshot_outside(root: Path, home: Path) -> dict[str, tuple[int, float]]:
    """Every file under ``root`` but outside ``home``, with its size and mtime."""
    out = {}
    for path in root.rglob("*"):
        if home in path.parents or path == home or path.is_symlink():
            continue
        if path.is_file():
            st = path.stat()
            out[str(path)] = (st.st_size, st.st_mtime)
    return out


def clone_run(home: Path, source_id: str, new_id: str) -> Path:
    target = home / "runs" / new_id
    shutil.copytree(home / "runs" / source_id, target)
    meta = json.loads((target / "run.json").read_text())
    meta["id"] = new_id
    (target / "run.json").write_text(json.dumps(meta))
    return target


def ended_as_cancelled(run_dir: Path) -> None:
    """Cut a finished run back to 'cancelled after its first epoch'."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kept = []
    for e in events:
        if e["event"] in ("finished",):
            break
        if e.get("epoch", 0) >= 1 and e["event"] in ("epoch", "metric"):
            continue
        kept.append(e)
    kept.append({"event": "cancelled", "time": kept[-1]["time"] + 1, "epoch": 1, "signal": "SIGTERM"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(root, home, healthy run id, sentinel process) with the damage in place."""
    root = tmp_path_factory.mktemp("hostile")
    home = root / "home"
    env = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160"}

    def critui(*args):
        return subprocess.run([sys.executable, "-m", "critui", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    trained = critui("run", "--epochs", "2", "--plugin", "deficits.blur", "--set", "deficit.end=1", *FAST)
    assert trained.returncode == 0, trained.stderr
    good = index_docs(home)[0]["id"]

    victim = root / VICTIM_NAME
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    runs = home / "runs"

    # a run whose checkpoint runs code when unpickled, cancelled so that it is resumable
    evil = clone_run(home, good, "20200101-000000-e111")
    ended_as_cancelled(evil)
    marker = root / "pwned.txt"
    with open(evil / "ckpt" / "latest.pt", "wb") as f:
        pickle.dump({"model": RunsCode(marker)}, f)

    # a 'running' run whose worker pid is -1, and one whose pid is an unrelated live process
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    for run_id, pid in (("20200101-000000-a001", -1), ("20200101-000000-a002", sentinel.pid),
                        ("20200101-000000-a003", "abc")):
        run_dir = clone_run(home, good, run_id)
        ended_as_cancelled(run_dir)
        lines = (run_dir / "events.jsonl").read_text().splitlines()[:-1]  # no end: 'running'
        lines.append(json.dumps({"event": "started", "time": 1.0, "epoch": 1, "pid": pid}))
        (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")
    job_run = clone_run(home, good, "20200101-000000-a004")
    meta = json.loads((job_run / "run.json").read_text())
    meta.update(job="local:-1", launcher={"id": "launchers.slurm", "settings": {"cluster": "local"}})
    (job_run / "run.json").write_text(json.dumps(meta))

    # damaged records, one kind per run
    damaged = {
        "20200101-000000-d001": ("run.json", "[1, 2, 3]"),
        "20200101-000000-d002": ("run.json", "\x00garbage{"),
        "20200101-000000-d003": ("spec.json", '{"dataset": {"id": "datasets.synth'),
        "20200101-000000-d004": ("events.jsonl", '{"event": "epoch", "time": 1}\n'
                                 '{"event": "epoch", "epoch": "three", "test_acc": "high"}\n'
                                 '{"event": "started", "pid": "abc"}\n[1]\n"text"\n'),
        "20200101-000000-d005": ("events.jsonl", b'{"event": "epoch", "epoch": 0, "test_acc": 0.5}\n\xff\xfe\n'),
    }
    for run_id, (name, content) in damaged.items():
        run_dir = clone_run(home, good, run_id)
        if isinstance(content, bytes):
            (run_dir / name).write_bytes(content)
        else:
            (run_dir / name).write_text(content)

    # a copy made with cp -a, under a name that is not a run id
    shutil.copytree(runs / good, runs / f"{good}-copy")

    # symlinks planted at the old predictable temporary names, aimed at the victim
    for pid in range(os.getpid(), os.getpid() + 50):
        for folder, name in ((home, "history.json"), (runs / good, "spec.json")):
            link = folder / f".{name}.{pid}.tmp"
            if not link.exists():
                link.symlink_to(victim / "precious.txt")

    # index entries that climb out of the home, and entries of the wrong shape
    data = json.loads((home / "history.json").read_text())
    table = data["_default"]
    table["9001"] = {**table[next(iter(table))], "id": f"../../{VICTIM_NAME}"}
    table["9002"] = {**table[next(iter(table))], "id": str(victim), "created": 4e9}
    table["9003"] = "not an object"
    table["9004"] = {"name": "no id"}
    (home / "history.json").write_text(json.dumps(data))

    # sweeps: garbage, and a record without runs
    for sweep_id, text in (("bad-20200101-000000", "{not json"), ("norun-20200101-000001", '{"id": "norun-20200101-000001"}')):
        folder = home / "sweeps" / sweep_id
        folder.mkdir(parents=True)
        (folder / "sweep.json").write_text(text)

    before = snapshot_outside(root, home)
    yield root, home, good, sentinel, marker, before, critui
    sentinel.kill()
    sentinel.wait()


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode in (0, 2), (result.returncode, result.stdout, result.stderr)


def assert_untouched(hostile) -> None:
    root, home, _good, sentinel, marker, before, _ = hostile
    assert not marker.exists(), "a checkpoint's pickle ran code"
    assert sentinel.poll() is None, "an unrelated process was signalled"
    assert (root / VICTIM_NAME / "precious.txt").read_text() == "keep me"
    assert snapshot_outside(root, home) == before, "something outside the home was written"


def test_listing_and_showing_survive_every_damage(hostile):
    _root, home, good, *_rest, critui = hostile
    listed = critui("runs")
    assert_no_traceback(listed)
    assert listed.returncode == 0 and good[-4:] in listed.stdout
    shown = critui("show", good)
    assert_no_traceback(shown)
    assert shown.returncode == 0
    for run_id in ("20200101-000000-d001", "20200101-000000-d003", "20200101-000000-d004",
                   "20200101-000000-d005", "20200101-000000-a003"):
        assert_no_traceback(critui("show", run_id))
    again = critui("runs", "--json")
    assert_no_traceback(again)
    ids = [d["id"] for d in json.loads(again.stdout)]
    assert len(ids) == len(set(ids)), "a run is listed twice"
    assert ids.count(good) == 1
    assert all(".." not in i and not i.startswith("/") for i in ids)
    assert_untouched(hostile)


def test_exports_and_reports_survive_every_damage(hostile, tmp_path):
    _root, home, good, *_rest, critui = hostile
    out = tmp_path / "runs.csv"
    exported = critui("export", good, "20200101-000000-d004", "-o", str(out))
    assert_no_traceback(exported)
    assert exported.returncode == 0 and out.exists()
    link = tmp_path / "linked.json"  # an export target that is a symlink is refused, not followed
    link.symlink_to(_root / VICTIM_NAME / "precious.txt")
    refused = critui("export", good, "--format", "json", "-o", str(link))
    assert_no_traceback(refused)
    assert refused.returncode == 2 and link.is_symlink()
    for ref in ("last", "bad-20200101-000000", "norun-20200101-000001"):
        assert_no_traceback(critui("report", ref))
    assert_untouched(hostile)


def test_resume_refuses_the_hostile_checkpoint(hostile):
    *_head, critui = hostile
    resumed = critui("resume", "20200101-000000-e111")
    assert_no_traceback(resumed)
    assert resumed.returncode == 2
    assert "latest.pt" in resumed.stderr
    assert_untouched(hostile)


def test_delete_never_leaves_the_home(hostile):
    root, *_rest, critui = hostile
    for ref in (f"../../{VICTIM_NAME}", str(root / VICTIM_NAME), ""):
        deleted = critui("delete", "-y", ref)
        assert_no_traceback(deleted)
        assert deleted.returncode == 2
    assert_untouched(hostile)


def test_the_tui_starts_over_the_hostile_home(hostile):
    _root, home, good, *_rest = hostile

    async def scenario():
        from critui.tui.app import CritUIApp
        from critui.tui.widgets.runs_table import RunsTable

        app = CritUIApp(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            for _ in range(100):
                if good in table.shown:
                    break
                await pilot.pause(0.2)
            assert good in table.shown
            table.move_cursor(row=table.shown.index("20200101-000000-a001"))
            await pilot.press("x")
            await pilot.pause(0.5)
            await pilot.press("y")
            await pilot.pause(0.5)
            await pilot.press("escape")

    asyncio.run(scenario())
    assert_untouched(hostile)
