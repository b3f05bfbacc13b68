"""The dashboard's runs table, driven with Pilot: columns, filters, sideways scroll, tags and
notes (`t`), the run just launched, a large home, and keys typed while a screen loads."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from critui.runs.store import RunStore
from tests.conftest import index_docs
from tests.test_tui import T0, fake_home, make_app, wait_for, write_run


def named_home(root: Path) -> Path:
    """The four fake runs, two of them named and in a sweep, one tagged."""
    home = fake_home(root)
    for run_id, name, sweep in (("20260101-000100-bbbb", "removal at 10", "sweep-20260101-0001-ab12"),
                                ("20260101-000200-cccc", "clean baseline", None)):
        path = home / "runs" / run_id / "run.json"
        meta = json.loads(path.read_text())
        path.write_text(json.dumps({**meta, "name": name, "sweep": sweep}))
    (home / "history.json").unlink()
    (home / "history.journal").unlink(missing_ok=True)
    store = RunStore(home)
    store.reconcile()
    store.annotate("20260101-000000-aaaa", add=["keep"])
    return home


@pytest.fixture
def registry(monkeypatch):
    from critui.plugins import build_registry

    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "")
    return build_registry()


def test_name_seed_sweep_columns_and_filters_by_name_sweep_and_tag(tmp_path):
    home = named_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            assert table.cell("20260101-000100-bbbb", "name") == "removal at 10"
            assert table.cell("20260101-000100-bbbb", "sweep") == "sweep-20260101-0001-ab12"
            assert table.cell("20260101-000100-bbbb", "seed") == "1"
            assert table.cell("20260101-000000-aaaa", "tags") == "keep"
            for query, expected in (("name:baseline", ["20260101-000200-cccc"]),
                                    ("sweep:ab12", ["20260101-000100-bbbb"]),
                                    ("tag:keep", ["20260101-000000-aaaa"]),
                                    ("tag:kee", []),  # a tag matches whole
                                    ("removal", ["20260101-000100-bbbb"]),  # any text, names too
                                    ("finished tag:keep", ["20260101-000000-aaaa"])):
                await pilot.press("slash", "ctrl+a", "ctrl+k", *query)
                await pilot.pause()
                assert table.shown == expected, query
            await pilot.press("ctrl+a", "ctrl+k", "enter")
            assert await wait_for(pilot, lambda: len(table.shown) == 4)

    asyncio.run(scenario())


def test_at_80_columns_right_scrolls_to_every_column_with_the_id_kept(tmp_path):
    home = named_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            header = lambda: table.render_line(0).text  # noqa: E731
            assert "final" in header() and "fork of" not in header()
            for _ in range(12):
                await pilot.press("right")
            await pilot.pause()
            assert table.scroll_x > 0
            assert "fork of" in header() and "model" in header()
            assert header().lstrip().startswith("id")  # the id column stays put
            row = table.render_line(1 + table.cursor_row - int(table.scroll_y)).text
            assert table.current_id[-4:] in row
            await pilot.press("left", "left", "left", "left", "left", "left", "left", "left", "left",
                              "left", "left", "left")
            await pilot.pause()
            assert table.scroll_x == 0

    asyncio.run(scenario())


def test_t_edits_tags_and_note_and_the_filter_finds_them(tmp_path):
    home = named_home(tmp_path)

    async def scenario():
        from textual.widgets import Input

        from critui.tui.screens.tags import TagsScreen
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            await pilot.press("end")  # the oldest run: aaaa, tagged keep
            await pilot.press("t")
            assert await wait_for(pilot, lambda: isinstance(app.screen, TagsScreen))
            dialog = app.screen
            assert dialog.query_one("#tags-input", Input).value == "keep"
            await pilot.press("space", *"bad/tag", "enter")  # refused inline, dialog stays
            await pilot.pause()
            assert isinstance(app.screen, TagsScreen)
            assert "is not a tag name" in str(dialog.query_one("#tags-error").render())
            await pilot.press(*["backspace"] * 8, " ", *"paper", "tab", *"rerun with seed 3", "enter")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, TagsScreen))
            saved = json.loads((home / "runs" / "20260101-000000-aaaa" / "tags.json").read_text())
            assert saved == {"tags": ["keep", "paper"], "note": "rerun with seed 3"}
            assert await wait_for(pilot, lambda: table.cell("20260101-000000-aaaa", "tags") == "keep paper")
            await pilot.press("slash", *"tag:paper", "enter")
            assert await wait_for(pilot, lambda: table.shown == ["20260101-000000-aaaa"])

    asyncio.run(scenario())


def test_the_run_just_launched_is_highlighted_and_charted_even_under_a_filter(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        from textual.screen import Screen

        from critui.tui.widgets.charts import Chart
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            dashboard = app.screen
            table = dashboard.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            await pilot.press("slash", *"blur", "enter")
            assert await wait_for(pilot, lambda: table.shown == ["20260101-000300-dddd"])
            # What the form leaves behind when it has launched a run (the form itself is
            # tested in test_tui.py with a real run): the dashboard picks it up on return.
            new = "20260101-000500-ffff"
            dashboard.form = SimpleNamespace(launched=new)
            await app.push_screen(Screen())
            write_run(home, new, epochs=16, done=3, end=None, created=T0 + 300)
            RunStore(home).reconcile()
            app.pop_screen()
            assert await wait_for(pilot, lambda: table.current_id == new, timeout=5)
            assert table.shown[0] == new and len(table.shown) == 5  # the filter gave way
            chart = dashboard.query_one("#acc-chart", Chart)
            assert await wait_for(pilot, lambda: chart.points == 3)

    asyncio.run(scenario())


def test_final_is_shown_only_for_finished_runs(tmp_path):
    home = tmp_path / "home"
    write_run(home, "20260101-000000-aaaa", epochs=16, done=14, end="cancelled", created=T0)
    write_run(home, "20260101-000100-bbbb", epochs=16, done=6, end=None, created=T0 + 60)
    write_run(home, "20260101-000200-cccc", epochs=16, created=T0 + 120)
    RunStore(home).reconcile()

    async def scenario():
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 3)
            assert table.cell("20260101-000000-aaaa", "final") == "-"
            assert table.cell("20260101-000000-aaaa", "acc") != "-"
            assert table.cell("20260101-000100-bbbb", "final") == "-"
            assert table.cell("20260101-000200-cccc", "final").startswith("0.")

    asyncio.run(scenario())


def test_a_large_home_is_drawn_without_reading_every_run_s_events(tmp_path):
    home = tmp_path / "home"
    count = 120
    for i in range(count):
        write_run(home, f"20260101-{i // 60:02d}{i % 60:02d}00-{i:04x}", epochs=4, created=T0 + i, seed=i)
    RunStore(home).reconcile()

    async def scenario():
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == count)
            # only the highlighted run's events were read (for its charts), not 120 files
            assert len(dict.keys(app.feed.histories)) <= 2
            assert table.shown[0].endswith(f"{count - 1:04x}")  # newest first
            await pilot.press("end")
            # the scroll lands on a later refresh, on a loaded machine a poll or two later
            assert await wait_for(pilot, lambda: table.current_id.endswith("0000") and table.scroll_y > 0)
            last_line = table.render_line(table.scrollable_content_region.height - 1).text
            assert "0000" in last_line
            await pilot.press("home", "pagedown")
            assert await wait_for(pilot, lambda: table.cursor_row > 10)
            await pilot.press("s")  # sort by status, over all 120
            assert len(table.shown) == count

    asyncio.run(scenario())


def test_end_pressed_as_the_rows_arrive_scrolls_the_last_run_into_view(tmp_path):
    """Rows that arrived since the last layout have no scrollbar yet; End must scroll anyway.
    Textual drops a scroll on a widget without a scrollbar, which left the cursor on the last
    run and the view on the first (a CI failure of the test above)."""
    home = tmp_path / "home"
    count = 60
    for i in range(count):
        write_run(home, f"20260101-{i // 60:02d}{i % 60:02d}00-{i:04x}", epochs=4, created=T0 + i, seed=i)
    RunStore(home).reconcile()
    docs = index_docs(home)

    async def scenario():
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(tmp_path / "empty", poll_interval=3600)
        async with app.run_test(size=(120, 30)) as pilot:
            table = app.screen.query_one(RunsTable)
            await pilot.pause()
            table.show_runs(docs, {})
            table.action_cursor_to(-1)  # in the same tick: no layout in between
            assert table.cursor_row == count - 1
            assert table.scroll_y > 0

    asyncio.run(scenario())


def test_the_dashboard_says_it_is_reading_the_runs_until_the_first_poll_lands(tmp_path):
    home = fake_home(tmp_path)
    gate = threading.Event()

    async def scenario():
        from textual.widgets import Input, Static

        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        real_poll = app.feed.poll

        def slow_poll():
            gate.wait(30)
            return real_poll()

        app.feed.poll = slow_poll
        async with app.run_test(size=(120, 40)) as pilot:
            selection = app.screen.query_one("#selection", Static)
            assert await wait_for(pilot, lambda: "reading the runs" in str(selection.render()))
            await pilot.press("slash", *"blur")  # typed while loading: kept in the filter
            gate.set()
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: table.shown == ["20260101-000300-dddd"])
            assert app.screen.query_one("#filter", Input).value == "blur"
            assert "1/4 runs" in str(selection.render())

    asyncio.run(scenario())


async def open_form_with_every_focused_and_empty(app, pilot):
    """Open the new-experiment form, empty ``metrics.fisher.every`` and focus it."""
    from textual.widgets import Input

    from critui.tui.widgets.param_form import ParamField

    await pilot.press("n")
    screen = app.screen
    assert await wait_for(pilot, lambda: screen.ready and screen.query(ParamField))
    every = screen.field("metrics.fisher.every")
    every.query_one(Input).focus()
    every.set_value("")
    await pilot.pause()
    return screen, every


def test_keys_typed_while_the_form_rebuilds_its_fields_reach_the_field_they_were_typed_into(tmp_path, registry):
    async def scenario():
        from textual.widgets import Input, Select

        app = make_app(tmp_path / "home", registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen, every = await open_form_with_every_focused_and_empty(app, pilot)
            probe_before = screen.field("metrics.fisher.probe").raw
            # A slow machine: a plugin picked, its fields removed and mounted again, while
            # the user goes on typing into `every` and then tabs on.
            screen.hold_keys()
            await pilot.press("1")
            assert screen.held_keys and screen.field("metrics.fisher.every").raw == ""
            screen.query_one("#pick-deficit", Select).value = "deficits.blur"
            await screen.rebuild_plugin_fields()
            screen.release_keys()
            await pilot.pause()
            # The pick's own Changed message rebuilds the fields once more: wait until it is done.
            assert await wait_for(
                pilot,
                lambda: screen.ready
                and screen.query("#f-metrics-fisher-every")
                and screen.field("metrics.fisher.every").raw == "1"
                and app.focused is screen.field("metrics.fisher.every").query_one(Input),
                timeout=30,
            )
            assert screen.field("metrics.fisher.probe").raw == probe_before
            assert app.focused is screen.field("metrics.fisher.every").query_one(Input)

    asyncio.run(scenario())


def test_a_key_already_queued_for_a_field_survives_a_rebuild_for_another_plugin(tmp_path, registry):
    """The race a loaded machine hit: the app had already forwarded a digit to the focused
    ``every`` Input when a deficit pick rebuilt the fields. Fields of plugins still chosen are
    not remounted, so the Input is still there to take its key."""
    async def scenario():
        from textual import events
        from textual.widgets import Input, Select

        app = make_app(tmp_path / "home", registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen, every = await open_form_with_every_focused_and_empty(app, pilot)
            every_input = every.query_one(Input)
            deficit_before = screen.query_one("#pick-deficit", Select).value
            every_input.post_message(events.Key("1", "1"))  # in the Input's queue, not yet handled
            screen.query_one("#pick-deficit", Select).value = "deficits.blur"
            await screen.rebuild_plugin_fields()  # before the Input's task has run
            assert await wait_for(pilot, lambda: screen.ready and screen.field("metrics.fisher.every").raw == "1")
            assert screen.field("metrics.fisher.every") is every and app.focused is every_input
            assert deficit_before != "deficits.blur" and screen.query("#f-deficit-size")

    asyncio.run(scenario())
