"""Resume, fork and sweep --resume check where each plugin comes from now (defect 1)."""

from __future__ import annotations

import pytest

from critui.errors import CritUIError
from critui.runs.store import RunStore
from tests.conftest import FAST, events_of, index_docs
from tests.plugin_catalogue import deficit_source, plugin_site_fixture

plugin_site = pytest.fixture(plugin_site_fixture)


def occlude(site, dist: str, version: str, folder: str):
    site.install(dist, version, {f"tp_{folder}": deficit_source(("Occlude", "occlude"))}, {"occ": f"tp_{folder}"},
                 folder=folder)


def cancelled_run(home, site):
    """A cancelled run of deficits.occlude from tp-occlude 1.0, made in-process."""
    from critui.config import build_spec

    occlude(site, "tp-occlude", "1.0", "orig")
    registry = site.registry()
    spec = build_spec(registry, plugins=["deficits.occlude"],
                      sets=["train.epochs=2", "deficit.end=1", *FAST[1::2]])
    store = RunStore(home)
    used = [spec.dataset, spec.model, spec.deficit, *spec.metrics]
    versions = {p.id: {"distribution": registry.get(p.id).distribution, "version": registry.get(p.id).version}
                for p in used}
    assert versions["deficits.occlude"] == {"distribution": "tp-occlude", "version": "1.0"}
    doc = store.create(spec, versions)
    store.update(doc["id"], status="cancelled")
    return store, doc, registry


def test_nothing_changed_is_no_change(home, plugin_site):
    from critui.provenance import check_provenance

    store, doc, registry = cancelled_run(home, plugin_site)
    assert check_provenance(store.get(doc["id"]), registry) == []


def test_resume_refuses_a_run_whose_plugin_is_gone_before_any_worker_starts(critui, home, plugin_site):
    store, doc, _ = cancelled_run(home, plugin_site)
    result = critui("resume", doc["id"])  # PYTHONPATH without tp-occlude
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "deficits.occlude came from tp-occlude 1.0" in message
    assert "pip install 'tp-occlude==1.0'" in message and "Traceback" not in message
    assert store.get(doc["id"])["status"] == "cancelled"
    assert events_of(home, doc["id"]) == []


def test_resume_refuses_another_provider_naming_both_unless_allowed(critui, home, plugin_site):
    store, doc, _ = cancelled_run(home, plugin_site)
    impostor = plugin_site.root / "impostor"
    from tests.plugin_catalogue import install

    install(impostor, "tp-impostor", "0.5", {"tp_imp": deficit_source(("Occlude", "occlude"))}, {"occ": "tp_imp"})
    env = {"PYTHONPATH": str(impostor)}
    refused = critui("resume", doc["id"], env=env)
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "came from tp-occlude 1.0 and now comes from tp-impostor 0.5" in message
    assert "--allow-plugin-change" in message
    assert store.get(doc["id"])["status"] == "cancelled" and events_of(home, doc["id"]) == []

    allowed = critui("resume", doc["id"], "--allow-plugin-change", env=env)
    assert allowed.returncode == 0, allowed.stderr
    (entry,) = index_docs(home)
    assert entry["status"] == "finished"
    assert entry["plugins"]["deficits.occlude"] == {"distribution": "tp-impostor", "version": "0.5"}
    (change,) = [e for e in events_of(home, doc["id"]) if e["event"] == "plugins_changed"]
    assert change["changes"][0]["recorded"] == {"distribution": "tp-occlude", "version": "1.0"}
    shown = critui("show", doc["id"], env=env, check=True).stdout
    assert "Plugins changed at resume" in shown and "tp-impostor 0.5" in shown


def test_an_allowed_change_is_refused_when_the_new_provider_takes_other_parameters(critui, home, plugin_site):
    # Defect 1: with differing parameters the worker died with a raw KeyError: 'fraction'.
    store, doc, _ = cancelled_run(home, plugin_site)
    impostor = plugin_site.root / "impostor"
    from tests.plugin_catalogue import install

    source = deficit_source(("Occlude", "occlude")).replace("'gain'", "'fraction'")
    install(impostor, "tp-impostor", "0.5", {"tp_imp": source}, {"occ": "tp_imp"})
    refused = critui("resume", doc["id"], "--allow-plugin-change", env={"PYTHONPATH": str(impostor)})
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "even with --allow-plugin-change" in message and "Traceback" not in message
    assert "deficits.occlude from tp-impostor 0.5 takes fraction, which the run's settings lack" in message
    assert "does not take gain" in message
    assert store.get(doc["id"])["status"] == "cancelled" and events_of(home, doc["id"]) == []


def test_a_different_version_is_a_change_too(home, plugin_site):
    from critui.provenance import check_provenance

    store, doc, _ = cancelled_run(home, plugin_site)
    occlude(plugin_site, "tp-occlude", "1.1", "newer")
    plugin_site.monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if not p.endswith("orig")])
    registry = plugin_site.registry()
    assert registry.get("deficits.occlude").version == "1.1"
    with pytest.raises(CritUIError, match=r"tp-occlude 1\.0 and now comes from tp-occlude 1\.1"):
        check_provenance(store.get(doc["id"]), registry)
    (change,) = check_provenance(store.get(doc["id"]), registry, allow_change=True)
    assert change.now == ("tp-occlude", "1.1")


def test_fork_checks_the_parents_plugins(home, plugin_site):
    from critui.plugins import build_registry
    from critui.runs.lineage import fork_run

    store, doc, _ = cancelled_run(home, plugin_site)
    plugin_site.monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if not p.endswith("orig")])
    with pytest.raises(CritUIError, match=r"Cannot fork run .*tp-occlude==1\.0"):
        fork_run(store, build_registry(), doc["id"], 1)
    assert len(store.all()) == 1


def test_sweep_resume_checks_every_unfinished_run(home, plugin_site):
    from critui.cli import _check_sweep_provenance

    store, doc, _ = cancelled_run(home, plugin_site)
    plugin_site.monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if not p.endswith("orig")])
    from critui.plugins import build_registry

    docs = {d["id"]: d for d in store.all()}
    with pytest.raises(CritUIError, match="tp-occlude"):
        _check_sweep_provenance(store, build_registry(), {"runs": [{"run_id": doc["id"]}]}, docs, False)
    store.update(doc["id"], status="finished")  # a finished run is not continued: not checked
    docs = {d["id"]: d for d in store.all()}
    _check_sweep_provenance(store, build_registry(), {"runs": [{"run_id": doc["id"]}]}, docs, False)
