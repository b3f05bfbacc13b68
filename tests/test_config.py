"""Building a run spec from defaults, TOML, --plugin and --set."""

import pytest

from critui.config import RunSpec, build_spec, deficit_label, load_toml
from critui.errors import CritUIError
from critui.plugins import get_registry


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def test_defaults_are_the_cpu_demo(registry):
    spec = build_spec(registry)
    assert spec.dataset.id == "datasets.synthetic"
    assert spec.model.id == "models.cnn"
    assert spec.deficit is None
    assert spec.optim["name"] == "sgd"


def test_plugin_and_set_resolve_the_deficit_window(registry):
    spec = build_spec(registry, plugins=["deficits.blur"], sets=["deficit.end=3", "deficit.size=4"])
    assert spec.deficit.id == "deficits.blur"
    assert spec.window() == (0, 3)
    assert [spec.deficit_active(e) for e in range(5)] == [True, True, True, False, False]


def test_alias_resolves_to_the_canonical_id(registry):
    assert build_spec(registry, plugins=["deficits.vflip"]).deficit.id == "deficits.flip"


def test_setting_a_metric_parameter_enables_the_metric(registry):
    spec = build_spec(registry, sets=["metrics.fisher.every=1"])
    assert [m.id for m in spec.metrics] == ["metrics.fisher"]
    assert spec.metrics[0].params["every"] == 1


def test_precedence_config_then_plugin_then_set_then_flags(registry):
    config = {"deficit": {"id": "deficits.blur", "end": 5}, "train": {"epochs": 9}}
    spec = build_spec(registry, config, plugins=[], sets=["deficit.end=6"], overrides={"epochs": 4})
    assert spec.window() == (0, 6)
    assert spec.epochs == 4


def test_unknown_plugin_names_known_ids_and_closest(registry):
    with pytest.raises(CritUIError) as err:
        build_spec(registry, plugins=["deficits.blurr"])
    message = str(err.value)
    assert "Did you mean deficits.blur?" in message
    assert "deficits.noise" in message and "deficits.flip" in message


def test_window_end_before_start_is_an_error(registry):
    with pytest.raises(CritUIError, match="deficit.end=1 is before deficit.start=3"):
        build_spec(registry, plugins=["deficits.blur"], sets=["deficit.start=3", "deficit.end=1"])


def test_deficit_params_without_deficit_say_how_to_choose_one(registry):
    with pytest.raises(CritUIError, match="--plugin deficits.NAME"):
        build_spec(registry, sets=["deficit.end=3"])


def test_toml_errors_name_the_line(registry, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[deficit]\nid = \"deficits.blur\"\nsize = 0\n")
    config, text = load_toml(path)
    with pytest.raises(CritUIError) as err:
        build_spec(registry, config, source=(str(path), text))
    assert "line 3" in str(err.value) and "minimum of 1" in str(err.value)
    broken = tmp_path / "broken.toml"
    broken.write_text("[train]\nepochs = = 3\n")
    with pytest.raises(CritUIError, match="line 2"):
        load_toml(broken)


def test_spec_round_trips_through_json_and_hash_ignores_the_name(registry):
    spec = build_spec(registry, plugins=["deficits.blur", "metrics.fisher"])
    again = RunSpec.from_json(spec.to_json())
    assert again == spec
    again.name = "renamed"
    assert again.spec_hash() == spec.spec_hash()


def test_an_empty_window_is_labelled_as_no_deficit():
    assert deficit_label("deficits.blur", (0, 8)) == "blur [0,8)"
    assert deficit_label("deficits.blur", (0, 0)) == "none"  # the t0 = 0 baseline of a removal sweep
    assert deficit_label("deficits.flip", (5, 5)) == "none"
    assert deficit_label(None, None) == "none"


@pytest.mark.parametrize(
    ("window", "epochs", "removal", "note"),
    [
        ((0, 8), 24, 8, None),
        ((0, 8), 9, 8, None),  # epoch 8 is the last, and clean
        ((0, 8), 8, None, "never removed"),
        ((0, 8), 3, None, "never removed"),
        ((10, 12), 10, None, "never sees the deficit"),
        ((0, 0), 4, 0, None),  # the t0 = 0 baseline: no deficit, nothing to warn about
    ],
)
def test_removal_epoch_and_window_note(registry, window, epochs, removal, note):
    spec = build_spec(
        registry,
        plugins=["deficits.blur"],
        sets=[f"deficit.start={window[0]}", f"deficit.end={window[1]}", f"train.epochs={epochs}"],
    )
    assert spec.removal_epoch() == removal
    got = spec.window_note()
    assert got is None if note is None else note in got
    assert build_spec(registry, sets=[f"train.epochs={epochs}"]).window_note() is None
