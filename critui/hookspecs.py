"""The plugin contract: one hook per kind of plugin, each handed a ``register`` callable.

A plugin is a module (shipped in a distribution with an entry point in group ``critui``)
that implements any of these hooks with ``@critui.hookimpl``. Each hook is called once when
critui loads its plugins. The implementation calls ``register(SomeClass)`` once per plugin
class it provides; the class subclasses the matching base in :mod:`critui.kinds` and sets
``name``, ``description`` and ``params``. The plugin's id is then ``KIND.NAME``
(``deficits.blur``). Hooks return nothing. An exception raised by a hook is caught and
reported by ``critui plugins``; other plugins keep working. A module function named
``critui_*`` that is not one of these hooks (``critui_register_deficit``, singular), or a hook
without ``@hookimpl``, makes the module fail to load, since it would register nothing. Each
registered class is checked on its own; an id registered by two distributions is refused in
both (see :mod:`critui.plugins`).

Example ``pyproject.toml`` of a plugin distribution::

    [project.entry-points.critui]
    mydeficits = "mydeficits"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("critui")
hookimpl = pluggy.HookimplMarker("critui")

Register = Callable[[type], None]


@hookspec
def critui_register_deficits(register: Register) -> None:
    """Register deficit classes (subclasses of ``critui.kinds.Deficit``).

    Called once at plugin load. A deficit's ``apply(x, y, epoch, generator)`` transforms a
    normalised training batch on the device while the run's window ``start <= epoch < end``
    is open; test data is never touched. Every deficit automatically gets the ``start`` and
    ``end`` window parameters besides its own. A deficit that acts on the learner instead
    (freezing a pathway, gating a layer) overrides ``before_epoch(model, epoch, active)``,
    called at the start of every epoch, and returns ``(x, y)`` unchanged from ``apply``.

    Example::

        class Invert(Deficit):
            name = "invert"
            description = "Negate every pixel."
            level = "low"

            def apply(self, x, y, epoch, generator):
                return -x, y

        @hookimpl
        def critui_register_deficits(register):
            register(Invert)
    """


@hookspec
def critui_register_models(register: Register) -> None:
    """Register model classes (subclasses of ``critui.kinds.Model``).

    Called once at plugin load. ``build(input_shape, num_classes, **params)`` returns a new
    ``torch.nn.Module`` mapping a C×H×W batch to logits; ``params`` are the declared
    parameters, validated and with defaults filled in.

    Example::

        class Linear(Model):
            name = "linear"
            params = (Param("bias", "bool", True, "learn a bias"),)

            def build(self, input_shape, num_classes, bias):
                c, h, w = input_shape
                return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes, bias=bias))

        @hookimpl
        def critui_register_models(register):
            register(Linear)
    """


@hookspec
def critui_register_datasets(register: Register) -> None:
    """Register dataset classes (subclasses of ``critui.kinds.Dataset``).

    Called once at plugin load. ``load(params, seed)`` returns a ``DatasetTensors`` with
    the whole train and test sets, class names and normalisation constants. It runs in the
    training worker, once per run. Missing files raise ``CritUIError`` with a message that
    says where to put them.

    Example::

        class Digits(Dataset):
            name = "digits"
            params = (Param("root", "str", "", "folder holding digits.npz"),)

            def load(self, params, seed):
                ...
                return DatasetTensors(train_x, train_y, test_x, test_y,
                                      classes=[str(i) for i in range(10)],
                                      mean=(0.5,), std=(0.25,))

        @hookimpl
        def critui_register_datasets(register):
            register(Digits)
    """


@hookspec
def critui_register_metrics(register: Register) -> None:
    """Register metric classes (subclasses of ``critui.kinds.Metric``).

    Called once at plugin load. At the end of each epoch for which ``when(epoch, epochs)``
    is true, ``compute(ctx)`` gets a ``MetricContext`` (model, clean data on the device,
    epoch) and returns ``{key: float}``. Keys must be stable across epochs; values finite.
    The worker writes them as one ``metric`` event in the run's ``events.jsonl``.

    Example::

        class WeightNorm(Metric):
            name = "weight-norm"

            def compute(self, ctx):
                return {"l2": float(sum(p.pow(2).sum() for p in ctx.model.parameters()) ** 0.5)}

        @hookimpl
        def critui_register_metrics(register):
            register(WeightNorm)
    """


@hookspec
def critui_register_launchers(register: Register) -> None:
    """Register launcher classes (subclasses of ``critui.kinds.Launcher``).

    Called once at plugin load. ``start(run_dir, env)`` starts the training worker on a run
    directory somewhere (this machine, a cluster) and returns a ``critui.kinds.Worker``, the
    few ``subprocess.Popen`` methods the manager uses; ``alive(job)`` tells a later critui
    process whether that worker still runs. Chosen with ``--launcher NAME``, configured with
    ``--set launcher.PARAM=VALUE``.

    Example::

        class Nice(Launcher):
            name = "nice"
            description = "Workers on this machine at the lowest CPU priority."
            local = True

            def start(self, run_dir, env):
                return subprocess.Popen(["nice", "-n", "19", sys.executable, "-m",
                                         "critui.train.worker", str(run_dir)],
                                        env={**os.environ, **env}, start_new_session=True)

        @hookimpl
        def critui_register_launchers(register):
            register(Nice)
    """
