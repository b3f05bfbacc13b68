"""Per-plugin parameters in a sweep, typed as a user types them: `critui sweep CONFIG --dry-run`.

A sweep that swaps plugins gives each its own settings with ``"deficit" = [{id = ..., size = 8},
...]``; a setting the swapped-in plugin does not declare (``[deficit] size = 3`` while the axis
swaps in ``deficits.flip``) is an error naming the setting and the plugin, never dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critui.plugins import get_registry
from critui.sweeps import expand, load_sweep

BASE = """\
[train]
epochs = 10
threads = 1

[dataset]
id = "datasets.synthetic"
n_train = 64
n_test = 64

[model]
id = "models.cnn"
width = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(BASE + text)
    return path


def one_paragraph(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_each_swapped_in_deficit_gets_its_own_settings(tmp_path, critui):
    path = write(tmp_path, '\n[sweep]\nseeds = [0]\n\n[sweep.removal]\nvalues = [1, 2]\nafter = 1\n\n[sweep.set]\n'
                 '"deficit" = [{id = "deficits.blur", size = 8}, {id = "deficits.noise", std = 0.5}, "deficits.flip"]\n')
    plan = " ".join(critui("sweep", str(path), "--dry-run", check=True).stdout.split())
    assert "6 runs" in plan
    for label in ("deficit=blur(size=8)", "deficit=noise(std=0.5)", "deficit=flip"):
        assert label in plan, plan
    # Each run's spec holds its plugin's own settings, and the window from the removal axis.
    runs = expand(load_sweep(path), get_registry())
    by_plugin = {(r.spec.deficit.id, r.axis["removal"]): r.spec.deficit.params for r in runs}
    assert by_plugin[("deficits.blur", 1)]["size"] == 8
    assert by_plugin[("deficits.noise", 2)]["std"] == 0.5
    assert by_plugin[("deficits.flip", 2)] == {"start": 0, "end": 2}
    # The sweep record keeps plain values: the axis value is the plugin with its settings, as text.
    assert {r.axis["deficit"] for r in runs} == {"deficits.blur(size=8)", "deficits.noise(std=0.5)", "deficits.flip"}


def test_a_base_setting_the_swapped_in_plugin_lacks_is_an_error_naming_both(tmp_path, critui):
    path = write(tmp_path, '\n[deficit]\nid = "deficits.blur"\nsize = 3\n\n[sweep]\nseeds = [0]\n\n'
                 '[sweep.set]\n"deficit.id" = ["deficits.blur", "deficits.flip"]\n')
    message = one_paragraph(critui("sweep", str(path), "--dry-run"))
    assert "line 16" in message  # size = 3 under [deficit]
    assert "deficits.flip" in message and "size" in message and "size = 3 in [deficit]" in message
    assert 'sweep.set "deficit.id"' in message and "never drops a setting" in message
    # The fix is this sweep in the per-plugin form.
    assert '"deficit" = [{id = "deficits.blur", size = 3}, "deficits.flip"]' in message
    assert "deficits.flip takes: start, end" in message


def test_a_base_setting_is_checked_against_each_per_plugin_entry(tmp_path, critui):
    path = write(tmp_path, '\n[deficit]\nid = "deficits.blur"\nsize = 3\n\n[sweep]\nseeds = [0]\n\n'
                 '[sweep.set]\n"deficit" = [{id = "deficits.blur", size = 8}, {id = "deficits.noise", std = 0.5}]\n')
    message = one_paragraph(critui("sweep", str(path), "--dry-run"))
    assert "deficits.noise" in message and "size = 3 in [deficit]" in message
    assert "deficits.noise takes: std, start, end" in message


def test_a_set_option_the_swapped_in_plugin_lacks_is_an_error_naming_it(tmp_path, critui):
    path = write(tmp_path, '\n[sweep]\nseeds = [0]\n\n[sweep.set]\n'
                 '"deficit" = [{id = "deficits.blur"}, {id = "deficits.noise"}]\n')
    message = one_paragraph(critui("sweep", str(path), "--dry-run", "--set", "deficit.std=0.2"))
    assert "--set deficit.std=0.2" in message and "deficits.blur" in message and "std" in message
    assert "remove std from --set" in message


def test_a_per_plugin_axis_is_checked_before_any_run(tmp_path, critui):
    cases = [
        ('"deficit" = [{size = 8}]', ["sweep.set \"deficit\"", "{'size': 8} is not a deficit",
                                      '{id = "deficits.blur", size = 8}']),
        ('"deficit" = ["deficits.blur", "deficits.blur"]', ["twice"]),
        ('"deficit" = ["deficits.blur"]\n"deficit.id" = ["deficits.flip"]', ['"deficit" and "deficit.id"']),
        ('"deficit" = [{id = "deficits.blurr"}]', ["deficits.blurr", "Did you mean deficits.blur?"]),
        ('"deficit" = [{id = "deficits.blur", size = "big"}]', ["size", "big"]),
    ]
    for axis, phrases in cases:
        path = write(tmp_path, f'\n[sweep]\nseeds = [0]\n\n[sweep.set]\n{axis}\n')
        message = one_paragraph(critui("sweep", str(path), "--dry-run"))
        for phrase in phrases:
            assert phrase in message, (axis, message)
        assert "line 18" in message, (axis, message)  # the axis's own line
    window = write(tmp_path, '\n[sweep]\nseeds = [0]\n\n[sweep.removal]\nvalues = [1]\nafter = 1\n\n[sweep.set]\n'
                   '"deficit" = [{id = "deficits.blur", start = 1}]\n')
    message = one_paragraph(critui("sweep", str(window), "--dry-run"))
    assert "start" in message and "sweep.removal" in message


@pytest.mark.slow
def test_a_per_plugin_sweep_trains_and_records_each_plugins_settings(tmp_path, home, critui):
    path = write(tmp_path, '\n[sweep]\nseeds = [0]\n\n[sweep.set]\n'
                 '"deficit" = [{id = "deficits.blur", size = 8, end = 1}, {id = "deficits.noise", std = 0.5, end = 1}]\n')
    path.write_text(path.read_text().replace("epochs = 10", "epochs = 1"))
    critui("sweep", str(path), check=True)
    (record_path,) = (home / "sweeps").glob("*/sweep.json")
    record = json.loads(record_path.read_text())
    assert record["axes"] == ["deficit", "seed"]
    specs = {e["axis"]["deficit"]: json.loads((home / "runs" / e["run_id"] / "spec.json").read_text())
             for e in record["runs"]}
    assert specs["deficits.blur(size=8, end=1)"]["deficit"]["params"]["size"] == 8
    assert specs["deficits.noise(std=0.5, end=1)"]["deficit"]["params"]["std"] == 0.5
    report = " ".join(critui("report", "last", "--no-chart", check=True).stdout.split())
    assert "deficits.blur(size=8, end=1)" in report and "deficits.noise(std=0.5, end=1)" in report, report
