"""What a plugin author needs, in docs/plugins.md, checked against the code (issue 17, defect 7):
every base class's constructor, MetricContext's fields, open bounds, the conflict and
provenance rules, per-plugin parameters in a sweep, and where plugin metrics are seen."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from critui import kinds
from critui.config import tomllib  # tomli on Python 3.10
from critui.sweeps import parse_sweep

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
BASES = ("Deficit", "Model", "Dataset", "Metric", "Launcher")


def test_every_base_class_constructor_is_documented_as_critui_calls_it():
    for name in BASES:
        parameters = [p for p in inspect.signature(getattr(kinds, name).__init__).parameters
                      if p not in ("self", "args", "kwargs")]
        documented = f"`{name}({', '.join(parameters)})`"
        assert documented in DOC, f"{documented} is not in docs/plugins.md"


def test_every_metric_context_field_is_documented():
    table = DOC.split("`compute(ctx)` gets a `MetricContext`", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines()[2:])))
    assert documented == {f.name for f in dataclasses.fields(kinds.MetricContext)}


def test_open_bounds_conflicts_provenance_and_metric_views_are_documented():
    for phrase in ("min_open", "max_open", "(0, 1]", "### Which distribution owns an id",
                   "A built-in id", "refused in both", "CRITUI_LOAD_PLUGINS",
                   "### Where a run's plugins come from, checked again", "--allow-plugin-change",
                   "`critui show RUN` prints each metric", "Metrics tab", "The TUI's `r`"):
        assert phrase in DOC, phrase


def test_the_per_plugin_sweep_example_is_a_valid_sweep():
    section = DOC.split("### Swapping plugins in a sweep, each with its own parameters", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    sweep = parse_sweep({"sweep": {"seeds": [0], **tomllib.loads(example)["sweep"]}})
    assert sweep.sets["deficit"][0] == {"id": "deficits.blur", "size": 8}
    assert sweep.sets["deficit"][2] == {"id": "deficits.flip"}
    assert "never loses a parameter" in section and "an error" in section
