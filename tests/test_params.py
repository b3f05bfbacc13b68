"""The typed parameter schema: parsing, bounds, and the messages a user sees."""

import pytest

from critui.params import Param, ParamError, resolve

SIZE = Param("size", "int", 8, "side to downsample to", min=1, max=32)


def test_parses_strings_and_toml_values_alike():
    assert SIZE.parse("4") == 4
    assert SIZE.parse(4) == 4
    assert Param("lr", "float", 0.1, "lr").parse("1e-3") == 0.001
    assert Param("on", "bool", False, "flag").parse("yes") is True
    assert Param("opt", "choice", "sgd", "optimiser", choices=("sgd", "adam")).parse("adam") == "adam"


def test_out_of_bounds_names_the_bound_and_the_setting():
    with pytest.raises(ParamError) as err:
        SIZE.parse("0", "deficit.size")
    assert "deficit.size=0 is below its minimum of 1" in str(err.value)
    with pytest.raises(ParamError) as err:
        SIZE.parse(99, "deficit.size")
    assert "above its maximum of 32: use an int from 1 to 32. (side to downsample to)" in str(err.value)
    with pytest.raises(ParamError, match="use an int of at least 1"):
        Param("probe", "int", 500, "probe images", min=1).parse("0", "metrics.fisher.probe")
    with pytest.raises(ParamError, match=r"must be a float of at most 1, got 'x'\. \(dropout\)$"):
        Param("p", "float", 0.0, "dropout", max=1.0).parse("x", "model.p")


@pytest.mark.parametrize("raw", ["four", "2.5", True, "nan"])
def test_wrong_type_is_rejected_with_the_expected_type(raw):
    with pytest.raises(ParamError) as err:
        SIZE.parse(raw, "deficit.size")
    assert "deficit.size must be an int from 1 to 32" in str(err.value)


def test_choice_lists_the_choices():
    param = Param("opt", "choice", "sgd", "optimiser", choices=("sgd", "adam"))
    with pytest.raises(ParamError, match="one of sgd, adam"):
        param.parse("rmsprop")


def test_resolve_fills_defaults_and_suggests_close_names():
    assert resolve((SIZE,), {}, "deficit") == {"size": 8}
    with pytest.raises(ParamError) as err:
        resolve((SIZE,), {"sise": 3}, "deficit")
    assert "Did you mean deficit.size?" in str(err.value)
