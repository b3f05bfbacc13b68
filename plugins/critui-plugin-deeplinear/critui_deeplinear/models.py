"""Deep linear models: a product of bias-free linear layers, and two such pathways summed.

Their networks (networks.py) initialise from torch's global RNG only (critui seeds it from
the run seed before ``build``), with the paper's small Gaussian scale, so the end-to-end map
starts near zero.
"""

from __future__ import annotations

from critui.errors import CritUIError
from critui.kinds import Deficit, Model
from critui.params import Param

# torch is imported inside build (networks.py), not here: listing the plugins and checking a
# run's settings then never pay its import.


class DeepLinear(Model):
    """Deep matrix factorisation for ``datasets.matrix-completion``."""

    name = "deep-linear"
    description = ("Deep linear matrix factorisation (Kleinman et al. 2024): the product of `depth` bias-free n×n "
                   "layers, Gaussian init of end-to-end scale init_scale; predicts the entries it is asked for.")
    params = (
        Param("depth", "int", 3, "number of n×n layers in the product (1: no critical period)", min=1, max=16),
        Param("n", "int", 100, "width of every layer: the matrix size of the dataset", min=2, max=2000),
        Param("init_scale", "float", 1e-3, "end-to-end scale at initialisation (the paper's init_scale)",
              min=1e-12, max=10.0),
    )

    def build(self, input_shape, num_classes, depth, n, init_scale):
        if tuple(input_shape) != (2,) or num_classes != 1:
            raise CritUIError(f"models.deep-linear predicts matrix entries from (row, column) inputs, one value each; "
                              f"it got inputs of shape {tuple(input_shape)} and {num_classes} outputs. Use it with "
                              "datasets.matrix-completion.")
        from critui_deeplinear.networks import Factorisation

        return Factorisation(n, depth, init_scale)


class TwoPathway(Model):
    """The multipath network: two deep linear pathways summed."""

    name = "two-pathway"
    description = ("Two deep linear pathways (a and b) from the input to the output, summed (Kleinman et al. "
                   "2024, multipath); deficits.pathway-freeze detaches one of them.")
    params = (
        Param("depth", "int", 4, "layers per pathway", min=1, max=16),
        Param("width", "int", 100, "hidden width of each pathway", min=1, max=4096),
        Param("init_scale", "float", 0.01, "end-to-end scale of each pathway at initialisation (the paper's eps)",
              min=1e-12, max=10.0),
    )

    def build(self, input_shape, num_classes, depth, width, init_scale):
        if len(input_shape) != 1:
            raise CritUIError(f"models.two-pathway takes vector inputs; it got inputs of shape {tuple(input_shape)}. "
                              "Use it with datasets.hierarchy or another dataset of N×D inputs.")
        from critui_deeplinear.networks import Pathways

        return Pathways(input_shape[0], num_classes, depth, width, init_scale)


class PathwayFreeze(Deficit):
    """Detach one pathway's output while the window is open: it keeps contributing to the
    output but learns nothing. Acts on the model (``before_epoch``), not on the data."""

    name = "pathway-freeze"
    description = ("Freeze one pathway of models.two-pathway during the window (its output detached, the "
                   "paper's gate_path deficit); acts on the model, the data is untouched.")
    level = "high"
    params = (Param("pathway", "choice", "b", "the pathway to freeze", choices=("a", "b")),)

    def apply(self, x, y, epoch, generator):
        return x, y

    def before_epoch(self, model, epoch, active):
        if not hasattr(model, "frozen"):
            raise CritUIError(f"deficits.pathway-freeze acts on a model with pathways (models.two-pathway); this "
                              f"run's model is a {type(model).__name__}. Choose --plugin models.two-pathway.")
        model.frozen = frozenset({self.settings["pathway"]}) if active else frozenset()
