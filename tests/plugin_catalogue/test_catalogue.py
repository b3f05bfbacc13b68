"""The contract kit catches every plugin of the catalogue, with a hint naming the real cause.

One test per broken plugin. After each, the next test starts from clean global torch state:
the kit restores what a broken plugin changed (the last test checks it).
"""

from __future__ import annotations

import pytest
import torch

from critui.testing import check_plugin
from tests.plugin_catalogue.broken import CATALOGUE


@pytest.mark.parametrize("cls, options, words", CATALOGUE, ids=[c.__name__ for c, _, _ in CATALOGUE])
def test_the_kit_catches(cls, options, words):
    with pytest.raises(AssertionError) as caught:
        check_plugin(cls, **options)
    message = str(caught.value)
    assert words in message, message
    assert "Fix:" in message and "\n" not in message, message


def test_the_catalogue_is_large_and_covers_every_kind():
    kinds = {cls.kind for cls, _, _ in CATALOGUE}
    assert len(CATALOGUE) >= 60 and kinds == {"deficits", "models", "datasets", "metrics"}


def test_global_state_is_restored_after_a_check_that_caught_a_change():
    from tests.plugin_catalogue.broken import DefaultDtype, GradOff, TurnsGradOff

    for cls in (GradOff, DefaultDtype, TurnsGradOff):
        with pytest.raises(AssertionError):
            check_plugin(cls)
        assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32


def test_the_kit_accepts_every_real_number_the_worker_records():
    # Defect 5: an int passed while a numpy float32 was rejected; the worker records both as floats.
    np = pytest.importorskip("numpy")
    from critui.kinds import Metric
    from critui.testing import check_metric

    class Mixed(Metric):
        name = "mixed"
        description = "An int, a numpy float32 and a float."

        def compute(self, ctx):
            return {"count": 3, "mean": np.float32(0.25), "plain": 0.5}

    check_metric(Mixed)
