"""Tags and notes from the command line, typed as a user types them: `critui tag RUN +a -b`,
`critui note RUN TEXT`, `critui runs --tag NAME`, and `critui show` showing both."""

from __future__ import annotations

import json
from pathlib import Path

from critui.runs.store import INDEX_FILE, RunStore
from tests.conftest import index_docs
from tests.synthetic_home import T0, write_run

A, B = "20260101-000000-aaaa", "20260101-000100-bbbb"


def two_runs(home: Path) -> None:
    write_run(home, A, created=T0)
    write_run(home, B, created=T0 + 60, seed=1)
    RunStore(home).reconcile()


def clean_error(result, *phrases: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in text, text


def test_tag_adds_and_removes_and_runs_lists_by_tag(critui, home):
    two_runs(home)
    assert critui("tag", "aaaa", "+baseline", "+cifar", check=True).stdout.split() == [f"{A}:", "baseline", "cifar"]
    # -NAME removes (it is not taken for an option), a bare NAME adds
    out = critui("tag", "aaaa", "-cifar", "v2.1", check=True).stdout
    assert out.split() == [f"{A}:", "baseline", "v2.1"]
    # the run folder is the source of truth; the index holds a copy
    assert json.loads((home / "runs" / A / "tags.json").read_text())["tags"] == ["baseline", "v2.1"]
    assert {d["id"]: d.get("tags") for d in index_docs(home)}[A] == ["baseline", "v2.1"]
    listed = critui("runs", "--tag", "baseline", check=True).stdout
    assert A in listed and B not in listed
    assert "No runs match" in critui("runs", "--tag", "cifar", check=True).stdout
    both = json.loads(critui("runs", "--tag", "baseline", "--tag", "v2.1", "--json", check=True).stdout)
    assert [d["id"] for d in both] == [A]


def test_note_is_shown_by_show_and_an_empty_note_clears_it(critui, home):
    two_runs(home)
    critui("tag", "bbbb", "+rerun", check=True)
    assert "lr too high?" in critui("note", "bbbb", "lr too high? compare seed 2", check=True).stdout
    shown = critui("show", "bbbb", check=True).stdout
    assert "rerun" in shown and "lr too high? compare seed 2" in shown
    critui("note", "bbbb", "", check=True)
    assert json.loads((home / "runs" / B / "tags.json").read_text()) == {"tags": ["rerun"], "note": None}
    assert "lr too high" not in critui("show", "bbbb", check=True).stdout


def test_bad_tag_names_and_notes_are_refused_in_one_paragraph(critui, home):
    two_runs(home)
    clean_error(critui("tag", "aaaa", "+two words"), "'two words' is not a tag name", "critui note")
    clean_error(critui("tag", "aaaa", "+"), "'' is not a tag name")
    clean_error(critui("runs", "--tag", "a/b"), "'a/b' is not a tag name")
    clean_error(critui("note", "aaaa", "line one\nline two"), "not one line of printable text")
    assert not (home / "runs" / A / "tags.json").exists()  # nothing half-done


def test_a_damaged_tags_file_breaks_only_its_own_run(critui, home):
    two_runs(home)
    critui("tag", "aaaa", "+good", check=True)
    (home / "runs" / B / "tags.json").write_text('{"tags": ["ok", ')  # cut short
    clean_error(critui("tag", "bbbb", "+x"), f"{home / 'runs' / B / 'tags.json'}", "not valid JSON",
                "Fix or delete that file")
    assert critui("tag", "aaaa", "+other", check=True).stdout.split() == [f"{A}:", "good", "other"]
    assert B in critui("runs", check=True).stdout
    # a lost index is rebuilt with the tags from each run folder; the damaged one is named
    (home / INDEX_FILE).unlink()
    (home / "history.journal").unlink(missing_ok=True)
    result = critui("runs", "--tag", "good", check=True)
    assert A in result.stdout and B not in result.stdout
    assert "tags.json" in " ".join(result.stderr.split())
