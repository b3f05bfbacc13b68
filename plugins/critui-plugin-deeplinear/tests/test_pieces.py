"""The pieces against the paper's code, and the contract kit's new checks failing where they should."""

from __future__ import annotations

import pytest
import torch
from critui_deeplinear import Hierarchy, MatrixCompletion, PathwayFreeze, PathwayShare, TaskSwitch
from critui_deeplinear.networks import Factorisation, Pathways
from critui_deeplinear.tasks import hierarchy_targets, low_rank_target

from critui.kinds import Deficit, MetricContext


def test_targets_are_low_rank_with_unit_rms_entries():
    w = low_rank_target(30, 4, seed=1, purpose="target")
    assert torch.linalg.matrix_rank(w, rtol=1e-4) == 4  # float32: rounding leaves ~1e-7 singular values
    assert w.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-5)  # Frobenius norm n


def test_factorisation_predicts_entries_of_its_product_and_starts_small():
    torch.manual_seed(0)
    model = Factorisation(100, 3, 1e-3)
    product = model.layers[2].weight @ model.layers[1].weight @ model.layers[0].weight
    assert torch.allclose(model.end_to_end(), product.T, atol=1e-9)
    x = torch.tensor([[3.0, 7.0], [0.0, 99.0]])
    assert torch.equal(model(x).squeeze(1), model.end_to_end()[[3, 0], [7, 99]])
    # The paper asserts the initial end-to-end Frobenius norm is within 20% of init_scale·√n.
    assert 0.8 <= torch.linalg.matrix_norm(model.end_to_end()).item() / (1e-3 * 10) <= 1.2


def test_task_switch_gives_the_first_target_at_the_same_positions():
    data = MatrixCompletion().load({"n": 20, "rank": 2, "observed": 50, "test_on": "unobserved"}, 3)
    assert len(data.test_x) == 400 - 50
    deficit = TaskSwitch({"n": 20, "rank": 5, "start": 0, "end": 10}, 3, 1, (2,))
    x, y = deficit.apply(data.train_x, data.train_y, 0, torch.Generator())
    first = low_rank_target(20, 5, 3, "first-target")
    rows, cols = data.train_x.long().T
    assert x is data.train_x and torch.equal(y.squeeze(1), first[rows, cols])
    assert not torch.allclose(y, data.train_y)
    with pytest.raises(Exception, match="matrix positions"):
        deficit.apply(torch.zeros(4, 3), torch.zeros(4, 1), 0, torch.Generator())


def test_pathway_freeze_stops_learning_in_b_only_while_active():
    torch.manual_seed(0)
    model = Pathways(8, 15, 2, 6, 0.1)
    freeze = PathwayFreeze({"pathway": "b", "start": 0, "end": 1}, 0, 15, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = Hierarchy().load({}, 0).train_x, hierarchy_targets()

    def step(active):
        freeze.before_epoch(model, 0, active)
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.zero_grad()
        (0.5 * (model(x) - y).pow(2).sum()).backward()
        optimizer.step()
        moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
        return moved[:2], moved[2:]  # pathway a's two layers, then b's

    a, b = step(active=True)
    assert all(a) and not any(b)
    a, b = step(active=False)
    assert all(a) and all(b)


def test_pathway_share_sums_to_one_and_follows_the_maps():
    torch.manual_seed(0)
    model = Pathways(8, 15, 2, 6, 0.1)
    with torch.no_grad():
        for layer in model.b:
            layer.weight.mul_(0.01)
    data = Hierarchy().load({}, 0)
    ctx = MetricContext(model=model, epoch=0, epochs=1, device=torch.device("cpu"), train_x=data.train_x,
                        train_y=data.train_y, test_x=data.test_x, test_y=data.test_y, num_classes=15, seed=0)
    values = PathwayShare({"every": 1}, 0).compute(ctx)
    assert values["share_a"] + values["share_b"] == pytest.approx(1.0)
    assert values["share_b"] < 0.01 < 0.99 < values["share_a"]


class Toggle(Deficit):
    """A model-side deficit done wrong: it flips a flag instead of setting it from `active`."""

    name = "toggle"
    description = "Toggles a flag on the model."
    level = "high"

    def apply(self, x, y, epoch, generator):
        return x, y

    def before_epoch(self, model, epoch, active):
        model.flag = not getattr(model, "flag", False)


def test_kit_refuses_a_model_side_deficit_with_history(critui_contract):
    data = Hierarchy().load({}, 0)
    with pytest.raises(AssertionError, match="depends on its history"):
        critui_contract.check_deficit(Toggle, {"end": 4}, data=data, model=Pathways(8, 15, 2, 4, 0.01))


def test_kit_refuses_a_regression_model_of_the_wrong_output_width(critui_contract):
    from critui_deeplinear import TwoPathway

    data = Hierarchy().load({}, 0)
    data.train_y = data.train_y[:, :14]  # 14 targets; the model is built for 14 and gives 14: fine
    critui_contract.check_model(TwoPathway, {"width": 4, "depth": 2}, data=data)
    data.test_y = data.test_y[:, :3]  # train and test targets disagree: the dataset check refuses it
    from critui.testing import _check_regression_dataset

    with pytest.raises(AssertionError, match="regression cannot train on"):
        _check_regression_dataset(Hierarchy, data, None, 0)
