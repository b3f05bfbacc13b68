"""A sweep's figure as a table: final accuracy per axis value, mean ± std over seeds.

Rows are grouped by every axis but the seed. The *series* of a row is its values on the
axes other than the primary one (the removal epoch, the onset, or the first swept
parameter); the drop is measured against the series' reference: its no-deficit baseline
when the sweep has one, else its earliest removal (or first value). Each run's final
accuracy is the mean test accuracy of its last 5 epochs, over its whole history (a forked
run's inherited epochs included, see :mod:`critui.runs.lineage`). A drop within the seeds'
spread is marked ``~`` (:func:`within_spread`), so a reader sees which points are noise.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from typing import Any

from critui.errors import CritUIError
from critui.events import FINAL_WINDOW, Problem
from critui.runs.lineage import read_spec, run_history
from critui.sweeps import axis_text

COLUMNS = ("series", "value", "runs", "finished", "final_acc_mean", "final_acc_std", "drop", "lr_at_removal",
           "drop_std", "within_spread")


def merge_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Several sweeps of one experiment (the same config run again with other seeds, say) as
    one record to report: their runs together, grouped as one sweep's would be.

    They must share the primary axis, and no run of one may repeat another's (the same axis
    values, seed included): a seed counted twice would weigh double in the mean.
    """
    if len(records) == 1:
        return records[0]
    ids = [r["id"] for r in records]
    if len(set(ids)) < len(ids):
        raise CritUIError(f"Sweep {next(i for i in ids if ids.count(i) > 1)} is named twice. Name each sweep once.")
    primaries = {r.get("primary") for r in records}
    if len(primaries) > 1:
        shown = ", ".join(f"{r['id']} varies {r.get('primary') or 'nothing'}" for r in records)
        raise CritUIError(f"These sweeps vary different axes ({shown}), so they are not one figure. "
                          "Report them one at a time.")
    seen: dict[tuple, str] = {}
    for record in records:
        for entry in record["runs"]:
            key = (bool(entry.get("baseline")), tuple(sorted((k, repr(v)) for k, v in entry["axis"].items())))
            if key in seen:
                point = ", ".join(axis_text(k, v) for k, v in entry["axis"].items())
                raise CritUIError(f"Sweeps {seen[key]} and {record['id']} both ran {point}, which would count "
                                  "twice in the mean. Report them one at a time, or leave one out.")
            seen[key] = record["id"]
    names = list(dict.fromkeys(str(r.get("name")) for r in records if r.get("name")))
    return {"id": " + ".join(ids), "name": " + ".join(names) or None, "primary": records[0].get("primary"),
            "runs": [entry for record in records for entry in record["runs"]]}


def build_report(store, record: dict[str, Any], problems: list[Problem] | None = None,
                 metric: str | None = None) -> dict[str, Any]:
    """The figure's data: one row per (series, primary value), with per-seed accuracies.

    A run whose events or spec.json cannot be read counts as unfinished; what was skipped
    goes to ``problems``. With ``metric`` (``NAME.KEY`` of a recorded metric, e.g. the
    deep-linear plugin's ``pathway-share.b``), each run's value is that metric's, as
    :func:`metric_final` takes it, in place of its test score; its drop is the reference's
    value minus the row's.
    """
    from critui.train.schedule import lr_at

    docs = {d["id"]: d for d in store.all()}
    primary = record.get("primary")
    scores: set[tuple[str, bool]] = set()  # (score name, higher is better) of the finished runs
    groups: dict[tuple[str, Any], dict[str, Any]] = {}
    for entry in record["runs"]:
        doc = docs.get(entry["run_id"])
        axis = entry["axis"]
        series = ", ".join(axis_text(k, v) for k, v in axis.items() if k not in (primary, "seed")) or "all"
        value: Any = "baseline" if entry.get("baseline") else axis.get(primary)
        group = groups.setdefault((series, _key(value)), {
            "series": series, "value": value, "baseline": bool(entry.get("baseline")),
            "accs": [], "runs": 0, "finished": 0, "lrs": [], "by_seed": {},
        })
        group["runs"] += 1
        group["by_seed"].setdefault(axis.get("seed"), None)
        if doc is None:
            continue
        history = run_history(store, doc, docs)
        if problems is not None:
            problems += history.problems
        spec = read_spec(store.run_dir(doc["id"]), problems)
        done = doc.get("status") == "finished" and spec is not None and history.epochs_done >= spec.epochs
        if done:
            scores.add((metric, True) if metric else history.score)
            group["finished"] += 1
            group["accs"].append(metric_final(history.rows, metric) if metric else history.final_acc)
            group["by_seed"][axis.get("seed")] = group["accs"][-1]
        window = spec.window() if spec else None
        removal = spec.removal_epoch() if spec else None  # None: the run ends inside its window
        if window and window[1] > window[0] and removal is not None and not entry.get("baseline"):
            group["lrs"].append(lr_at(spec, removal))
    rows_out = []
    for group in groups.values():
        accs = [a for a in group["accs"] if a is not None]
        mean = statistics.fmean(accs) if accs else None
        std = statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None)
        rows_out.append({
            "series": group["series"], "value": group["value"], "runs": group["runs"],
            "finished": group["finished"], "final_acc_mean": mean, "final_acc_std": std,
            "seeds": accs, "lr_at_removal": group["lrs"][0] if group["lrs"] else None,
            "baseline": group["baseline"],
            "per_seed": [{"seed": seed, "final_acc": acc}
                         for seed, acc in sorted(group["by_seed"].items(), key=lambda item: _key(item[0]))],
        })
    rows_out.sort(key=lambda r: (r["series"], not r["baseline"], _key(r["value"])))
    # A regression's score (test MSE) is better lower: its drop is this row's minus the
    # reference's, so a positive drop always means worse than the reference.
    score, higher = min(scores) if scores else ("test_acc", True)
    sign = 1 if higher else -1
    for row in rows_out:
        ref = _reference(rows_out, row["series"])
        row["drop"] = (sign * (ref["final_acc_mean"] - row["final_acc_mean"]) + 0.0  # no -0.0
                       if ref and ref["final_acc_mean"] is not None and row["final_acc_mean"] is not None else None)
        if not higher:
            row["lower_is_better"] = True
        if metric:
            row["raw"] = True  # a metric's own units, not accuracy points
        row["reference"] = "baseline" if ref and ref["baseline"] else (ref["value"] if ref else None)
        # Each seed's drop is from the same seed's reference run: the seeds' baselines differ
        # by several points on the demo, more than many of the drops.
        own = {item["seed"]: item["final_acc"] for item in ref["per_seed"]} if ref else {}
        for item in row["per_seed"]:
            base = own.get(item["seed"])
            item["drop"] = sign * (base - item["final_acc"]) + 0.0 if base is not None and item["final_acc"] is not None else None
        row["drop_std"] = None if row is ref else drop_spread(row)
        row["within_spread"] = None if row is ref else within_spread(row)
    return {
        "sweep": record["id"], "name": record.get("name"), "primary": primary, "final_window": FINAL_WINDOW,
        "rows": rows_out, **({} if score == "test_acc" else {"score": score, "higher_is_better": higher}),
        **({"metric": metric} if metric else {}),
    }


def metric_final(rows: list[dict[str, Any]], metric: str) -> float | None:
    """A run's final value of a recorded metric ``NAME.KEY``: the mean of its last
    FINAL_WINDOW recorded values, as the final test score is taken; None if it has none."""
    values = [v for r in rows if isinstance(v := r.get(metric), (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)]
    tail = values[-FINAL_WINDOW:]
    return sum(tail) / len(tail) if tail else None


def check_metric(report: dict[str, Any], store, record: dict[str, Any]) -> None:
    """Refuse a ``--metric`` no finished run of the sweep recorded, naming the ones they did."""
    metric = report.get("metric")
    if not metric or any(r["seeds"] for r in report["rows"]):
        return
    docs = {d["id"]: d for d in store.all()}
    keys: set[str] = set()
    for entry in record["runs"]:
        if (doc := docs.get(entry["run_id"])) is not None:
            keys |= {k for row in run_history(store, doc, docs).rows for k in row
                     if "." in k and not k.startswith("fisher.")}
    known = ", ".join(sorted(keys)[:20]) or "none"
    raise CritUIError(f"No finished run of sweep {report['sweep']} recorded the metric {metric}. Give it as "
                      f"NAME.KEY, the metric's name without `metrics.` and one of its keys; its runs recorded: "
                      f"{known} (fisher.LAYER keys aside).")


# -- is a drop more than the seeds' spread? ------------------------------------------------------

# A row's drop is marked as within the seeds' spread when |drop| < SPREAD_SIGMAS × the
# standard deviation over seeds of its per-seed drops. Each seed's drop is taken from the
# same seed's reference run, so what the seeds share (a high or low draw of the data and the
# initialisation, which moves the demo's baselines by several points) cancels; what is left is
# how much the difference itself changes from seed to seed. 2 std is a screen, not a test: with
# 3 seeds, a drop that clears it is a consistent one, and one that does not could be noise.
SPREAD_SIGMAS = 2.0
SPREAD_MARK = "~"


def drop_spread(row: dict[str, Any]) -> float | None:
    """The sample standard deviation (n - 1) over seeds of the row's per-seed drops, in
    accuracy units; None with fewer than two seeds that have a drop (both runs finished)."""
    drops = [item["drop"] for item in row.get("per_seed", []) if _number(item.get("drop"))]
    return statistics.stdev(drops) if len(drops) > 1 else None


def within_spread(row: dict[str, Any]) -> bool | None:
    """Whether the row's drop is within the seeds' spread: |drop| < SPREAD_SIGMAS × its
    :func:`drop_spread`. None when that cannot be said: no drop, or fewer than two seeds."""
    spread = drop_spread(row)
    if spread is None or not _number(row.get("drop")):
        return None
    return abs(row["drop"]) < SPREAD_SIGMAS * spread


def spread_legend() -> str:
    """What the mark means, for a table's caption."""
    return (f"{SPREAD_MARK}: within the seeds' spread, |drop| < {SPREAD_SIGMAS:g} × the std over seeds of "
            "each seed's drop from its own reference")


def _key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def _reference(rows: list[dict[str, Any]], series: str) -> dict[str, Any] | None:
    same = [r for r in rows if r["series"] == series]
    base = [r for r in same if r["baseline"]]
    return base[0] if base else (same[0] if same else None)


# -- output ----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    return str(value)


def one_seed(report: dict[str, Any]) -> bool:
    """Whether every row has one seed: then a std (always 0) says nothing and is not shown."""
    return all(r["runs"] <= 1 for r in report["rows"])


def row_cells(row: dict[str, Any], single: bool) -> list[str]:
    """A report row's seeds, final accuracy, drop and LR at removal, as the CLI and the TUI
    show them; ``single`` (see :func:`one_seed`) leaves the std out."""
    if row.get("lower_is_better") or row.get("raw"):  # a regression's error or a metric: raw values
        acc = "-" if row["final_acc_mean"] is None else f"{row['final_acc_mean']:.4g}"
        if row["final_acc_mean"] is not None and not single:
            acc += f" ± {row['final_acc_std'] or 0.0:.2g}"
        drop = "-" if row["drop"] is None else f"{row['drop']:+.4g}"
        lr = "-" if row["lr_at_removal"] is None else f"{row['lr_at_removal']:.4g}"
        return [f"{row['finished']}/{row['runs']}", acc, drop, lr]
    acc = "-" if row["final_acc_mean"] is None else f"{row['final_acc_mean']:.4f}"
    if row["final_acc_mean"] is not None and not single:
        acc += f" ± {row['final_acc_std'] or 0.0:.4f}"
    drop = "-" if row["drop"] is None else f"{row['drop'] * 100:+.2f} pts"
    lr = "-" if row["lr_at_removal"] is None else f"{row['lr_at_removal']:.4g}"
    return [f"{row['finished']}/{row['runs']}", acc, drop, lr]


def series_column(names: list[str]) -> tuple[str, dict[str, str]]:
    """The series column's header and each series' label in it. Series named by the same
    settings (``deficit=blur, optim.after_removal=reset``) are headed by the settings and
    labelled by their values (``blur, reset``), which keeps a table of long plugin and
    parameter names within 80 columns."""
    parts = {name: [item.partition("=") for item in name.split(", ")] for name in names}
    keys = {tuple(key for key, _, _ in items) for items in parts.values()}
    if len(keys) == 1 and all(eq for items in parts.values() for _, eq, _ in items):
        labels = {name: ", ".join(value for _, _, value in items) for name, items in parts.items()}
        return ", ".join(keys.pop()), labels
    return "series", {name: name for name in names}


def rich_table(report: dict[str, Any]):
    from rich import box
    from rich.table import Table

    primary = report["primary"] or "value"
    # One seed per row: a std of 0.0000 on every row says nothing and would push the table
    # past 80 columns, so only the mean is shown.
    single = one_seed(report)
    score = report.get("score")
    table = Table(title=f"sweep {report['sweep']}: final {score or 'test accuracy'} (mean of the last "
                  f"{report['final_window']} "
                  + ("values recorded)" if report.get("metric") else "epochs)")
                  + (", one seed" if single else ", mean ± std over seeds"), box=box.SIMPLE_HEAD,
                  pad_edge=False)
    header, labels = series_column(series_names(report))
    multi = has_series(list(labels))
    if multi:
        table.add_column(header, overflow="fold")
    rows = [[str(r["value"]), *row_cells(r, single)] for r in report["rows"]]
    columns = [primary, "seeds", f"final\n{score}" if score else "final acc", "drop", "lr at\nremoval"]
    # The mark gets its own column after the drop (a terminal strips the padding a drop without
    # it would need to stay aligned), and only where some row has more than one seed.
    marks = [r["within_spread"] if "within_spread" in r else within_spread(r) for r in report["rows"]]
    marked = any(m is not None for m in marks)
    if marked:
        columns.insert(4, "")
        for cells, mark in zip(rows, marks, strict=True):
            cells.insert(4, SPREAD_MARK if mark else "")
    for i, column in enumerate(columns):
        # numbers keep their width; only the series labels may be cut on a narrow terminal
        widest = max([len(row[i]) for row in rows] + [len(part) for part in column.split("\n")])
        table.add_column(column, justify="left" if marked and i == 4 else "right", no_wrap=True, min_width=widest)
    for r, cells in zip(report["rows"], rows, strict=True):
        table.add_row(*([labels[r["series"]]] if multi else []), *cells)
    ref = next((r for r in report["rows"] if r["drop"] is not None), None)
    if ref is not None:
        if report.get("metric"):
            lead = f"drop: the reference's {score} minus this row's, per series; the reference is "
        elif score:
            lead = "drop: this row's error minus the reference's (lower is better), per series; the reference is "
        else:
            lead = "drop: reference accuracy minus this row's, per series; the reference is "
        table.caption = lead + reference_text(report).replace("its ", "the ", 1)
        if single:
            table.caption += f". {one_seed_caveat(not report.get('metric') and not score)}"
        elif marked:
            table.caption += f". {spread_legend()}"
    return table


def seed_list(report: dict[str, Any]) -> list[Any]:
    """Every seed of the sweep, in order."""
    seeds = {item["seed"] for r in report["rows"] for item in r.get("per_seed", [])}
    return sorted(seeds, key=_key)


def per_seed_tables(report: dict[str, Any], width: int = 10_000) -> list:
    """Each seed's final accuracy, and its drop from the same seed's reference, in points: one
    table, or, where the seeds do not fit ``width`` columns side by side, several, each with
    the series and value columns again, so that no cell is cut."""
    from rich import box
    from rich.table import Table

    seeds = seed_list(report)
    header, labels = series_column(series_names(report))
    multi = has_series(list(labels))
    value_name = report["primary"] or "value"
    cells = {id(r): seed_cells(r, seeds) for r in report["rows"]}
    fixed = len(value_name) + 2
    fixed = max([fixed, *(len(str(r["value"])) + 2 for r in report["rows"])])
    if multi:
        fixed += min(30, max(len(header), *(len(label) for label in labels.values()))) + 2
    need = [max(13, len(f"seed {seed}"), *(len(cells[id(r)][i]) for r in report["rows"])) + 2
            for i, seed in enumerate(seeds)]
    parts: list[list[int]] = [[]]
    used = fixed
    for i in range(len(seeds)):
        if parts[-1] and used + need[i] > width:
            parts.append([])
            used = fixed
        parts[-1].append(i)
        used += need[i]
    title = (f"sweep {report['sweep']}: final {report.get('score') or 'test accuracy'} per seed "
             f"(drop{'' if report.get('score') else ' in points'} from that seed's reference)")
    tables = []
    def span(part: list[int]) -> str:
        return f"seeds {seeds[part[0]]}–{seeds[part[-1]]}" if len(part) > 1 else f"seed {seeds[part[0]]}"

    for n, part in enumerate(parts):
        shown = f", {span(part)}" if len(parts) > 1 else ""
        table = Table(title=title.replace(" per seed (", f" per seed{shown} (", 1) if n == 0 else f"… {span(part)}",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        if multi:
            table.add_column(header, overflow="fold")
        table.add_column(value_name, justify="right", no_wrap=True)
        for i in part:
            table.add_column(f"seed {seeds[i]}", justify="right", no_wrap=True, min_width=13)
        for r in report["rows"]:
            table.add_row(*([labels[r["series"]]] if multi else []), str(r["value"]), *(cells[id(r)][i] for i in part))
        tables.append(table)
    tables[-1].caption = per_seed_caption(report)
    return tables


def seed_cells(row: dict[str, Any], seeds: list[Any]) -> list[str]:
    """A report row's ``0.8983 (+5.0)`` per seed: final accuracy, and drop in points from the
    same seed's reference; ``-`` for a seed not run or not finished."""
    by_seed = {item["seed"]: item for item in row.get("per_seed", [])}
    cells = []
    for seed in seeds:
        item = by_seed.get(seed)
        if item is None or item["final_acc"] is None:
            cells.append("-")
        elif row.get("lower_is_better"):
            drop = "" if item["drop"] is None else f" ({item['drop']:+.3g})"
            cells.append(f"{item['final_acc']:.4g}{drop}")
        else:
            drop = "" if item["drop"] is None else f" ({item['drop'] * 100:+.1f})"
            cells.append(f"{item['final_acc']:.4f}{drop}")
    return cells


def per_seed_caption(report: dict[str, Any]) -> str:
    unit = "" if report.get("score") or report.get("metric") else " in points"  # points: of accuracy only
    return (reference_text(report).replace("its ", f"In brackets: the drop{unit} from each seed's ", 1)
            + ". -: not run, or not finished.")


def per_seed_csv(report: dict[str, Any]) -> str:
    """One line per (series, value, seed): the long form, for pandas and spreadsheets."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("series", "value", "seed", "final_acc", "drop"))
    for r in report["rows"]:
        for item in r.get("per_seed", []):
            writer.writerow([r["series"], r["value"], item["seed"],
                             *("" if item[c] is None else item[c] for c in ("final_acc", "drop"))])
    return out.getvalue()


# On the demo, single runs of one setting differ by several points (docs/results.md, "How
# far one seed can be trusted"), so a one-seed drop near a threshold says little alone.
ONE_SEED_CAVEAT = ("One seed: {drop} can be run-to-run noise; add seeds "
                   "(--seeds 0,1,2) for mean ± std")


def one_seed_caveat(accuracy: bool) -> str:
    """The one-seed caveat, in points of accuracy or, for another score, in no unit."""
    return ONE_SEED_CAVEAT.format(drop="a drop of a few points" if accuracy else "a small drop")


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in report["rows"]:
        writer.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
    return out.getvalue()


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


# -- the figure: shared by `critui report` and the TUI's sweep view -------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series_names(report: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["series"] for r in report["rows"]))


def has_series(names: list[str]) -> bool:
    """Whether a table needs a series column: a sweep with one axis has one series, "all"."""
    return names != ["all"]


def reference_row(report: dict[str, Any], series: str) -> dict[str, Any] | None:
    """The row the series' drop is measured against (as build_report chose it), if it has a mean."""
    rows = [r for r in report["rows"] if r["series"] == series]
    ref = next((r["reference"] for r in rows if r.get("reference") is not None), None)
    if ref is None:
        return None
    if ref == "baseline":
        row = next((r for r in rows if r["baseline"]), None)
    else:
        row = next((r for r in rows if not r["baseline"] and r["value"] == ref), None)
    return row if row and row["final_acc_mean"] is not None else None


def reference_text(report: dict[str, Any]) -> str:
    """What the reference lines are: ``its no-deficit baseline`` or ``its first removal value``."""
    if any(r["baseline"] for r in report["rows"]):
        return "its no-deficit baseline"
    return f"its first {report.get('primary') or 'axis'} value"


def figure_points(report: dict[str, Any]) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """Per series, the (x, mean final accuracy) of its finished axis values; and the x labels
    when the axis is not numeric (then x is the value's position)."""
    values = [r["value"] for r in report["rows"] if not r["baseline"]]
    categorical = any(not _number(v) for v in values)
    labels = [str(v) for v in dict.fromkeys(values)] if categorical else []
    points: dict[str, list[tuple[float, float]]] = {}
    for series in series_names(report):
        pts = []
        for r in report["rows"]:
            if r["series"] != series or r["baseline"] or r["final_acc_mean"] is None:
                continue
            x = labels.index(str(r["value"])) if categorical else float(r["value"])
            pts.append((x, r["final_acc_mean"]))
        points[series] = sorted(pts)
    return points, labels


# One marker per series, so the chart reads without colour (in a file, a pipe, a results page).
MARKERS = ("•", "x", "o", "+", "*", "#", "@", "%")


def terminal_chart(report: dict[str, Any], width: int = 80, height: int = 18) -> str:
    """The figure as text (plotext): final accuracy against the primary axis, one line per
    series in its own marker, each series' reference as a horizontal line (as in the TUI's
    sweep view), and the legend under the plot, where it hides no point."""
    import plotext as plt

    points, labels = figure_points(report)
    names = [name for name in series_names(report) if points.get(name)]
    if not names:
        return ""
    plt.clear_figure()
    plt.theme("clear")
    legend = []
    for i, series in enumerate(names):
        marker = MARKERS[i % len(MARKERS)]
        xs, ys = zip(*points[series], strict=True)
        plt.plot(list(xs), list(ys), marker=marker)
        if series != "all":
            legend.append(f"{marker} {series}")
    references = {ref["final_acc_mean"] for name in names if (ref := reference_row(report, name))}
    for y in references:
        plt.hline(y)
    if references:
        whose = "each series'" if len(names) > 1 else "the"
        legend.append(f"── {whose} reference, {reference_text(report)}")
    if labels:
        plt.xticks(list(range(len(labels))), labels)
        plt.xlim(-0.5, len(labels) - 0.5)
    lines = packed(legend, width - 6)
    plt.plotsize(width, height)  # the legend goes under it: a terminal scrolls
    plt.title(f"final {report.get('score') or 'test accuracy'} vs {report['primary']}")
    plt.xlabel(str(report["primary"]))
    return "\n".join([plt.build().rstrip("\n"), *("      " + line for line in lines)])


def packed(entries: list, width: int, gap: str = "   ") -> list:
    """``entries`` (str or rich Text) joined by ``gap`` into lines of at most ``width``
    characters, never splitting one: a chart's legend."""
    lines: list = []
    for entry in entries:
        if lines and len(lines[-1]) + len(gap) + len(entry) <= width:
            lines[-1] = lines[-1] + gap + entry
        else:
            lines.append(entry)
    return lines


def draw_png(report: dict[str, Any], path) -> None:
    """A matplotlib figure of the curve(s), with the std over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for series in dict.fromkeys(r["series"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["series"] == series and not r["baseline"]
                and r["final_acc_mean"] is not None and isinstance(r["value"], (int, float))]
        rows.sort(key=lambda r: r["value"])
        colour = None
        if rows:
            bars = ax.errorbar([r["value"] for r in rows], [r["final_acc_mean"] for r in rows],
                               yerr=[r["final_acc_std"] for r in rows], marker="o", capsize=3,
                               label=series if series != "all" else None)
            colour = bars.lines[0].get_color()
        # the reference line the terminal chart and the TUI's sweep view draw
        ref = reference_row(report, series)
        if ref is not None and ref.get("final_acc_mean") is not None:
            whose = f"{series}: " if series != "all" else ""
            ax.axhline(ref["final_acc_mean"], linestyle="--", linewidth=1, color=colour or "grey",
                       label=f"{whose}reference, {reference_text(report)}")
    ax.set_xlabel(str(report["primary"]))
    ax.set_ylabel(f"final {report.get('score') or 'test accuracy'} (mean of last {report['final_window']})")
    ax.set_title(str(report.get("name") or report["sweep"]))
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_chart(
    rows: list[dict[str, Any]],
    window: tuple[int, int] | None = None,
    width: int = 80,
    height: int = 14,
) -> str:
    """One run's curves as text (plotext): test accuracy, and the total Fisher trace when the
    run measured it, against the epoch. ``window`` (start, end) marks the deficit with two
    vertical lines. The Fisher trace gets its own chart: its scale is unrelated to accuracy."""
    import plotext as plt

    charts = []
    series = [("test_acc", "test accuracy")]
    if rows and "score" in rows[-1]:  # a regression: its score (test MSE) instead
        series = [("score", str(rows[-1].get("score_name") or "score"))]
    if any("fisher.total" in r for r in rows):
        series.append(("fisher.total", "Fisher trace, total"))
    for key, title in series:
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if not points:
            continue
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        xs, ys = zip(*points, strict=True)
        plt.plot(list(xs), list(ys), marker="braille")
        # whole epochs on a 1-2-5 step, never 2.5
        span = max(xs) - min(xs)
        step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if span // s + 1 <= max(width // 10, 2))
        plt.xticks(list(range(min(xs) - min(xs) % step, max(xs) + 1, step)))
        if window and window[1] > window[0]:
            for epoch in window:
                plt.vline(epoch)
            title += f"  (deficit in [{window[0]}, {window[1]}), between the vertical lines)"
        plt.title(title)
        plt.xlabel("epoch")
        charts.append(plt.build())
    return "\n".join(charts)
