"""Contract checks for critui plugins, and the pytest plugin that hands them to your tests.

A plugin author checks their plugin against what critui relies on with one call per class::

    def test_my_deficit(critui_contract):
        critui_contract.check_deficit(MyDeficit)

``critui_contract`` is a pytest fixture: critui registers this module as a pytest plugin
(entry point group ``pytest11``), so it is there in every test session of an environment
where critui is installed. The checks are also plain functions (:func:`check_deficit`,
:func:`check_model`, :func:`check_dataset`, :func:`check_metric`, :func:`check_plugin`,
:func:`check_registered`) usable from any test runner. The fixture ``critui_scratch_env``
gives a :class:`ScratchEnv` to test a distribution's packaging: install it, run critui
there, uninstall it.

Each check raises ``AssertionError`` with one paragraph: which plugin, which property
failed, on which value, and how to fix it. Parameters default to the plugin's declared
defaults (plus the deficit window ``start``/``end`` for deficits); pass ``params`` to check
other values, e.g. a small ``width`` so a big model builds quickly.

``pytest --critui-device cuda`` (or ``CRITUI_TEST_DEVICE=cuda``) runs the checks on a GPU;
they are skipped there when CUDA is not available.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from critui.errors import CritUIError
from critui.kinds import BASES, Dataset, DatasetTensors, Deficit, MetricContext, Model, Plugin
from critui.params import ParamError, resolve

if TYPE_CHECKING:
    import torch

    from critui.plugins import PluginInfo

__all__ = [
    "Contract",
    "ScratchEnv",
    "check_dataset",
    "check_deficit",
    "check_launcher",
    "check_metric",
    "check_model",
    "check_plugin",
    "check_registered",
]

# A batch the size the training loop could hand over, small enough to be instant.
BATCH = 8
GENERATOR_SEED = 1234
AUGMENTATIONS = ("none", "crop-flip")


# --- messages ----------------------------------------------------------------------------------


def _label(cls: type) -> str:
    kind = getattr(cls, "kind", "") or "?"
    name = getattr(cls, "name", "") or cls.__name__
    return f"{kind}.{name} ({cls.__module__}.{cls.__qualname__})"


def _fail(cls: type, what: str, detail: str, fix: str) -> AssertionError:
    """One paragraph for the plugin author: the plugin, the failed property, the value, the fix."""
    return AssertionError(f"{_label(cls)} {what}: {detail} Fix: {fix}")


def _difference(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("first", "second")) -> str:
    """Where two same-shaped tensors differ most, for a message; ``names`` label ``a`` and ``b``."""
    import torch

    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} and {tuple(b.shape)} differ"
    diff = (a.double() - b.double()).abs() if a.is_floating_point() else (a != b).double()
    diff = torch.nan_to_num(diff, nan=math.inf)
    flat = int(diff.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
    changed = int((diff > 0).sum())
    return (
        f"{changed} of {a.numel()} entries differ, the most at index {index}: "
        f"{names[0]} {a.flatten()[flat].item():.6g}, {names[1]} {b.flatten()[flat].item():.6g}"
    )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    import torch

    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


# --- parameters --------------------------------------------------------------------------------


def plugin_params(cls: type[Plugin], params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters critui would hand ``cls``: declared defaults, deficit window, ``params``."""
    from critui.plugins import WINDOW_PARAMS

    _check_declaration(cls)
    schema = tuple(cls.params) + (WINDOW_PARAMS if issubclass(cls, Deficit) else ())
    try:
        return resolve(schema, dict(params or {}), f"{cls.kind}.{cls.name}")
    except ParamError as exc:
        raise _fail(cls, "was given parameters it does not accept", str(exc),
                    "pass only parameters the class declares in `params`, with valid values.") from None


def _check_declaration(cls: type) -> None:
    """What ``register`` requires of any class, checked before anything is built: the loader
    refuses the same declarations, in the same words."""
    from critui.plugins import declaration_problem

    problem = declaration_problem(cls)
    if problem is None:
        return
    what, detail, fix = problem
    if what == "is not a critui plugin class":
        raise AssertionError(
            f"{cls!r} is not a critui plugin class. Fix: subclass one of "
            f"{', '.join('critui.kinds.' + b.__name__ for b in BASES.values())}."
        )
    raise _fail(cls, what, detail, fix)


# --- global state ------------------------------------------------------------------------------


def _global_state() -> dict[str, Any]:
    """The process-wide torch state a plugin must leave alone."""
    import torch

    state = {
        "the global RNG (torch.manual_seed, or torch.rand/randn/randperm without generator=)": torch.get_rng_state(),
        "the default dtype (torch.set_default_dtype)": torch.get_default_dtype(),
        "grad mode (torch.set_grad_enabled)": torch.is_grad_enabled(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["the global CUDA RNG (torch.randn(..., device='cuda') without generator=)"] = torch.cat(
            torch.cuda.get_rng_state_all()
        )
    return state


def _check_global_state(cls: type, before: dict[str, Any], during: str) -> None:
    import torch

    after = _global_state()
    for what, value in before.items():
        same = torch.equal(value, after[what]) if isinstance(value, torch.Tensor) else value == after[what]
        if not same:
            raise _fail(cls, "changed process-wide torch state", f"{during} changed {what}.",
                        "keep state on the plugin object; draw randomness only from the generator "
                        "critui passes (or one you seed from the run seed), and restore anything you "
                        "change before returning.")


# --- device ------------------------------------------------------------------------------------


def _device(device: str | torch.device) -> torch.device:
    import torch

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AssertionError(
            f"Contract checks were asked to run on {device}, but CUDA is not available here. "
            "Fix: run them on cpu (the default), or on a machine with a GPU."
        )
    return device


@contextmanager
def _isolated() -> Iterator[None]:
    """Run a check on one CPU thread, and put torch's process-wide state back afterwards.

    Batches of a few 16×16 images gain nothing from intra-op threads, and when other
    processes (pytest-xdist workers, other jobs) share the cores, waiting for descheduled
    threads makes each op many times slower. A plugin that changes global state (grad mode,
    the default dtype, the RNG) fails its check, and that change must not leak into the
    next, correct test.
    """
    import torch

    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    dtype = torch.get_default_dtype()
    grad = torch.is_grad_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.use_deterministic_algorithms(deterministic)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _single_threaded(check: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _isolated():
            return check(*args, **kwargs)

    return wrapper


def _generator(device: torch.device, seed: int = GENERATOR_SEED) -> torch.Generator:
    import torch

    return torch.Generator(device=device).manual_seed(seed)


# --- deficits ----------------------------------------------------------------------------------


@_single_threaded
def check_deficit(
    cls: type[Deficit],
    params: Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] = (3, 16, 16),
    num_classes: int = 10,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch: int = BATCH,
    processes: bool = True,
    data: DatasetTensors | None = None,
    model: torch.nn.Module | None = None,
) -> None:
    """Check a deficit the way the training loop and ``metrics.deficit-accuracy`` use it.

    ``data`` (a loaded ``DatasetTensors``, e.g. a regression's) gives the batches instead of
    random images: its first ``2 × batch`` training inputs and targets; float targets are
    checked for finiteness instead of a class range, and the edge-case and second-process
    checks (which need random images) are skipped. ``model``: a deficit that overrides
    ``before_epoch`` is called on it inside and outside the window, and must set the same
    state for the same arguments and leave the weights alone.

    On a normalised float batch ``batch``×C×H×W on ``device``, with int64 labels:

    - ``level`` is ``"low"`` or ``"high"``;
    - ``apply`` returns ``(x, y)`` with the input's shapes, dtypes and device, finite
      images and labels in ``0..num_classes-1``, for a full batch and a smaller last one;
    - it leaves its inputs untouched: the batch is a slice of a larger "test set" tensor, as
      when ``metrics.deficit-accuracy`` scores the deficit on test data, and that whole
      tensor must be unchanged afterwards;
    - it is deterministic under a seed: two calls with generators seeded equally, two
      instances built with the same run seed, and calls under different global RNG states
      all give the same output;
    - with ``processes=True`` (and ``cls`` importable by its module), a second Python process
      with another ``PYTHONHASHSEED`` gives the same output too (no ``hash(str)``, no ``id``);
    - its randomness follows the run seed: output that changes from epoch to epoch but not
      with the run seed or the generator (a generator seeded from the epoch alone) fails;
    - edge-case batches (constant, all-zero, extreme values) give finite output;
    - it does not change process-wide torch state (global RNG, default dtype, grad mode).
    """
    import torch

    settings = plugin_params(cls, params)
    device = _device(device)
    if cls.level not in ("low", "high"):
        raise _fail(cls, "has an unknown `level`", f"level is {cls.level!r}.",
                    "set level = \"low\" for deficits that change input statistics (blur, noise), "
                    "\"high\" for ones that keep them and change the task (flip, label permutation).")
    if cls.apply is Deficit.apply:
        raise _fail(cls, "does not implement apply", "it still has Deficit.apply, which raises.",
                    "define apply(self, x, y, epoch, generator) returning (x, y).")

    if data is not None:
        batch = min(batch, len(data.train_x) // 2) or 1
        test_x = data.train_x[: 2 * batch].float().clone().to(device)
        test_y = data.train_y[: 2 * batch].clone().to(device)
        input_shape = tuple(data.train_x.shape[1:])
        if data.loss == "cross_entropy":
            num_classes = len(data.classes)
    else:
        data_gen = torch.Generator().manual_seed(seed)
        test_x = torch.randn((2 * batch, *input_shape), generator=data_gen).to(device)
        # Labels from 0 to num_classes - 1 in every batch, so an off-by-one shows up.
        spread = torch.linspace(0, num_classes - 1, batch).round().long()
        test_y = torch.cat([spread, spread.flip(0)]).to(device)
    pristine_x, pristine_y = test_x.clone(), test_y.clone()
    # Views into the larger tensors: an in-place change to x or y shows up in test_x / test_y.
    x, y = test_x[:batch], test_y[:batch]
    epoch = settings["start"]

    def build(global_seed: int, run_seed: int = seed) -> Deficit:
        torch.manual_seed(global_seed)
        state = _global_state()
        try:
            deficit = cls(dict(settings), run_seed, num_classes, input_shape)
        except Exception as exc:
            raise _fail(cls, "could not be built", f"{cls.__name__}(params, seed={seed}, num_classes={num_classes}, "
                        f"input_shape={input_shape}) raised {type(exc).__name__}: {exc}",
                        "accept (params, seed, num_classes, input_shape) and call super().__init__ "
                        "with them.") from exc
        _check_global_state(cls, state, "__init__")
        return deficit

    def call(deficit: Deficit, global_seed: int = 0, size: int = batch, inputs: torch.Tensor | None = None,
             at: int | None = None, gen_seed: int = GENERATOR_SEED, what: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(global_seed)
        state = _global_state()
        images = x[:size] if inputs is None else inputs
        at = epoch if at is None else at
        try:
            out = deficit.apply(images, y[:size], at, _generator(device, gen_seed))
        except Exception as exc:
            raise _fail(cls, "raised in apply", f"apply(x of shape {tuple(images.shape)} float32 on {device}{what}, "
                        f"y int64, epoch={at}, generator) raised {type(exc).__name__}: {exc}",
                        "make apply work on any batch N×C×H×W on the device it is given.") from exc
        _check_global_state(cls, state, "apply")
        return _check_output(cls, out, images, y[:size], num_classes, what)

    deficit = build(1)
    first = call(deficit)
    # The last batch of an epoch is usually smaller: nothing may depend on the batch size.
    call(deficit, size=max(1, batch // 2 - 1))
    if not (_same(test_x, pristine_x) and _same(test_y, pristine_y)):
        changed = "x" if not _same(test_x, pristine_x) else "y"
        whole, pristine = (test_x, pristine_x) if changed == "x" else (test_y, pristine_y)
        raise _fail(
            cls, f"modified its input {changed} in place",
            f"after apply, the tensor the batch was sliced from differs "
            f"({_difference(whole, pristine, ('now', 'before'))}). "
            "critui passes slices of the dataset: metrics.deficit-accuracy passes slices of the clean "
            "test set, so an in-place change corrupts the test data for the rest of the run.",
            "use out-of-place operations (x * a, x.flip(-2), torch.where(...)) instead of x.mul_(a), "
            "x[...] = v or y.copy_(...), or start with x = x.clone().",
        )
    checks = (
        ("the same instance, called twice with generators seeded equally", lambda: call(deficit),
         "draw all randomness from the `generator` argument (torch.rand(x.shape, generator=generator, "
         "device=x.device)) and keep no state that changes from call to call."),
        ("a second instance built with the same run seed", lambda: call(build(2)),
         "derive fixed state (a permutation, a noise pattern) in __init__ from `seed` with your own "
         "torch.Generator().manual_seed(seed), never from the global RNG, the clock or Python's random."),
        ("the same call under a different global RNG state", lambda: call(deficit, global_seed=99),
         "pass generator=generator to every torch.rand/randn/randint/randperm in apply."),
    )
    for how, again, fix in checks:
        second = again()
        for part, a, b in (("x", first[0], second[0]), ("y", first[1], second[1])):
            if not _same(a, b):
                raise _fail(cls, "is not deterministic under a seed",
                            f"{how} gave a different {part} ({_difference(a, b, ('first', 'then'))}).", fix)

    if model is not None and type(deficit).before_epoch is not Deficit.before_epoch:
        _check_before_epoch(cls, deficit, model, settings)
    if data is not None:
        return
    for what, images in _edge_batches(x):
        call(deficit, inputs=images, what=what)
    if settings["end"] - epoch >= 2:
        later = call(deficit, at=epoch + 1)[0]
        other_seed = call(build(1, seed + 1))[0]
        other_gen = call(deficit, gen_seed=GENERATOR_SEED + 1)[0]
        if not _same(first[0], later) and _same(first[0], other_seed) and _same(first[0], other_gen):
            raise _fail(cls, "draws the same randomness for every run seed",
                        f"its output changes from epoch {epoch} to {epoch + 1} but is identical for run seeds "
                        f"{seed} and {seed + 1} and for differently seeded generators: randomness seeded from "
                        "the epoch alone, so every seed of a sweep trains on the same noise.",
                        "draw from the `generator` argument (critui seeds it from the run seed and the epoch), "
                        "or seed your own from self.seed and the epoch together.")
    if processes and device.type == "cpu":
        _check_other_process(cls, settings, seed, num_classes, input_shape, batch, epoch)


def _check_before_epoch(cls: type, deficit: Deficit, model: torch.nn.Module, settings: dict[str, Any]) -> None:
    """``before_epoch`` on a model: weights untouched, and the same arguments give the same
    model state whatever came before (resume and fork call it from any epoch)."""
    def snapshot() -> tuple[dict[str, Any], dict[str, Any]]:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        extra = {k: v for k, v in vars(model).items() if not k.startswith("_") and k != "training"}
        return weights, extra

    start, end = settings["start"], max(settings["end"], settings["start"] + 1)
    before = snapshot()
    states = {}
    # Each state twice in a row: a deficit that toggles instead of setting shows up.
    for epoch, active in ((start, True), (start, True), (end, False), (end, False), (start, True)):
        try:
            deficit.before_epoch(model, epoch, active)
        except Exception as exc:
            raise _fail(cls, "raised in before_epoch", f"before_epoch(model, {epoch}, {active}) raised "
                        f"{type(exc).__name__}: {exc}", "make before_epoch work on the model it is checked "
                        "with (pass the model your deficit is meant for).") from exc
        weights, extra = snapshot()
        for key, value in weights.items():
            if not _same(value, before[0][key]):
                raise _fail(cls, "changed the model's weights in before_epoch", f"{key!r} differs afterwards.",
                            "set a switch on the model (a flag forward reads); never edit weights, which the "
                            "optimiser and checkpoints own.")
        if states.setdefault(active, extra) != extra:
            raise _fail(cls, "sets a state in before_epoch that depends on its history",
                        f"two calls with active={active} left different model attributes "
                        f"({_short_repr(states[active])} then {_short_repr(extra)}).",
                        "set the model's state from `active` alone, every call (never toggle it).")
    deficit.before_epoch(model, end, False)


def _edge_batches(x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Batches a real dataset produces and random noise never does."""
    import torch

    constant = torch.full_like(x, 0.7)
    constant_per_image = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
    return [
        (", every pixel the same (a constant image)", constant),
        (", constant within each image", constant_per_image),
        (", all zeros", torch.zeros_like(x)),
        (", extreme values (±12, a saturated pixel over a small std)", torch.where(x > 0, 12.0, -12.0)),
    ]


def deficit_fingerprint(cls: type[Deficit], settings: dict[str, Any], seed: int, num_classes: int,
                        input_shape: tuple[int, ...], batch: int, epoch: int) -> str:
    """A digest of one deficit output on a fixed batch (what the two-process check compares)."""
    import hashlib

    import torch

    data = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(seed))
    labels = torch.linspace(0, num_classes - 1, batch).round().long()
    deficit = cls(dict(settings), seed, num_classes, tuple(input_shape))
    out_x, out_y = deficit.apply(data, labels, epoch, _generator(torch.device("cpu")))
    digest = hashlib.sha256(repr(out_x.detach().double().flatten().tolist()).encode())
    digest.update(repr(out_y.flatten().tolist()).encode())
    return digest.hexdigest()


_CHILD = """
import importlib, json, sys
from critui.testing import deficit_fingerprint
args = json.loads(sys.argv[1])
target = importlib.import_module(args["module"])
for part in args["qualname"].split("."):
    target = getattr(target, part)
print(deficit_fingerprint(target, args["settings"], args["seed"], args["num_classes"], args["input_shape"],
                          args["batch"], args["epoch"]))
"""


def _check_other_process(cls: type, settings: dict[str, Any], seed: int, num_classes: int,
                         input_shape: tuple[int, ...], batch: int, epoch: int) -> None:
    """Build and apply the deficit in another Python process, with another ``PYTHONHASHSEED``.

    Resume and fork build the deficit again in a new worker: state derived from ``hash()`` of
    a string, ``id()`` or the set order of strings differs there. Skipped when the class
    cannot be imported by its module and qualified name (a class defined inside a function).
    """
    import json
    import subprocess
    import sys

    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        return
    here = deficit_fingerprint(cls, settings, seed, num_classes, input_shape, batch, epoch)
    args = json.dumps({"module": cls.__module__, "qualname": cls.__qualname__, "settings": settings, "seed": seed,
                       "num_classes": num_classes, "input_shape": list(input_shape), "batch": batch, "epoch": epoch})
    hash_seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", _CHILD, args], capture_output=True, text=True, env=env, timeout=300)
    if child.returncode != 0:
        return  # not importable there: nothing to compare
    there = (child.stdout.strip().splitlines() or [""])[-1]
    if there != here:
        raise _fail(cls, "is not deterministic across processes",
                    f"built and applied with the same run seed in a second Python process (PYTHONHASHSEED="
                    f"{hash_seed}), it gave a different output. Resume and fork rebuild the deficit in a new "
                    "worker, so a resumed run would not continue the same computation.",
                    "derive fixed state from `seed` only, with torch.Generator().manual_seed(...) or "
                    "hashlib (never hash() of a str, id(), or the iteration order of a set of strings).")


def _check_output(cls: type, out: Any, x: torch.Tensor, y: torch.Tensor, num_classes: int, what: str = ""):
    import torch

    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise _fail(cls, "returned the wrong thing from apply", f"it returned {type(out).__name__} {_short_repr(out)}.",
                    "return a pair of tensors (x, y), e.g. `return x.flip(-2), y`.")
    out_x, out_y = out
    for part, got, given in (("x", out_x, x), ("y", out_y, y)):
        if got.shape != given.shape:
            raise _fail(cls, f"changed the shape of {part}", f"apply got {tuple(given.shape)} and returned {tuple(got.shape)}.",
                        "return tensors shaped like the inputs (resize back, e.g. with F.interpolate, "
                        "and keep one label per image).")
        if got.dtype != given.dtype:
            raise _fail(cls, f"changed the dtype of {part}", f"apply got {given.dtype} and returned {got.dtype}.",
                        f"convert back with .to({given.dtype}); images stay float, labels int64.")
        if got.device != given.device:
            raise _fail(cls, f"moved {part} to another device", f"apply got it on {given.device} and returned it on {got.device}.",
                        "create new tensors with device=x.device and never call .cpu() in apply: "
                        "deficits run batched on the training device.")
        if got.requires_grad:
            raise _fail(cls, f"returned a {part} that requires grad", "its output is part of an autograd graph.",
                        "compute the deficit under torch.no_grad() or .detach() the result.")
    if not bool(torch.isfinite(out_x).all()):
        raise _fail(cls, "returned non-finite images", f"{int((~torch.isfinite(out_x)).sum())} entries of x are NaN "
                    f"or infinite, for a batch{what or ' of normal images'}.",
                    "avoid divisions by zero (a constant image has std 0: add an epsilon) and logs of "
                    "non-positive values (inputs are normalised: negative and zero values are normal).")
    if out_y.is_floating_point():  # a regression's targets
        if not bool(torch.isfinite(out_y).all()):
            raise _fail(cls, "returned non-finite targets", f"{int((~torch.isfinite(out_y)).sum())} entries of y are "
                        "NaN or infinite.", "return finite float targets.")
        return out_x, out_y
    bad = (out_y < 0) | (out_y >= num_classes)
    if bool(bad.any()):
        raise _fail(cls, "returned labels outside the class range",
                    f"label {int(out_y[bad][0])} with {num_classes} classes (valid: 0..{num_classes - 1}).",
                    "map labels within range(num_classes), e.g. with a permutation of self.num_classes.")
    return out_x, out_y


def _forward_hint(exc: Exception) -> str:
    """The likely cause of a failed forward pass, from its message."""
    text = str(exc).lower()
    if "double" in text or "dtype" in text or "scalar type" in text:
        return "build float32 layers: critui feeds float32 batches (no .double(), no dtype=torch.float64)."
    if "shape" in text or "size" in text:
        return ("make the network accept N×C×H×W for the input_shape given to build: compute layer sizes "
                "from input_shape (adaptive pooling helps with other image sizes).")
    return "make the network accept a float32 N×C×H×W batch for the input_shape given to build."


def _short_repr(value: Any) -> str:
    text = " ".join(repr(value).split())  # one line: a message is one paragraph
    return text if len(text) < 80 else text[:77] + "..."


# --- models ------------------------------------------------------------------------------------


@_single_threaded
def check_model(
    cls: type[Model],
    params: Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] = (3, 16, 16),
    num_classes: int = 10,
    device: str | torch.device = "cpu",
    batch: int = 4,
    fisher: bool = True,
    data: DatasetTensors | None = None,
) -> None:
    """Check that a model builds for ``input_shape`` and ``num_classes`` and trains.

    ``data`` (a loaded ``DatasetTensors``) gives the input shape, the number of outputs and
    the batch instead of random images; for a regression (``data.loss`` not cross-entropy)
    the output must match the targets' shape, the loss is the regression's, and the Fisher
    check (which samples class labels) is skipped.

    - ``build`` returns a ``torch.nn.Module``, the same one for the same ``torch.manual_seed``
      (the worker seeds torch's global RNG from the run seed just before building);
    - in train mode a batch gives finite float logits of shape N×``num_classes``, without
      changing its input in place; in eval mode a batch of one works too;
    - a backward pass reaches every trainable parameter, with finite gradients;
    - it has at least one convolution or linear layer, and (with ``fisher=True``) the
      built-in Fisher metric can measure it: per-sample gradients through ``torch.func``.
    """
    import torch
    import torch.nn.functional as F

    settings = plugin_params(cls, params)
    device = _device(device)
    regression = data is not None and data.loss != "cross_entropy"
    if data is not None:
        input_shape = tuple(data.train_x.shape[1:])
        num_classes = int(data.train_y[0].numel()) if regression else len(data.classes)
        fisher = fisher and not regression
    if cls.build is Model.build:
        raise _fail(cls, "does not implement build", "it still has Model.build, which raises.",
                    "define build(self, input_shape, num_classes, **params) returning an nn.Module.")

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        try:
            model = cls().build(tuple(input_shape), num_classes, **settings)
        except Exception as exc:
            raise _fail(cls, "could not be built",
                        f"build({tuple(input_shape)}, {num_classes}, **{settings}) raised {type(exc).__name__}: {exc}",
                        "accept input_shape (C, H, W), num_classes and every declared parameter as a "
                        "keyword argument.") from exc
        if not isinstance(model, torch.nn.Module):
            raise _fail(cls, "built something that is not a torch.nn.Module", f"build returned {type(model).__name__}.",
                        "return an nn.Module (nn.Sequential, or your own subclass).")
        lazy = [n for n, p in model.named_parameters() if isinstance(p, torch.nn.parameter.UninitializedParameter)]
        if lazy:
            raise _fail(cls, "has uninitialised (lazy) parameters", f"{lazy[0]!r} has no shape until a forward pass.",
                        "critui creates the optimiser and restores checkpoints right after build, before "
                        "any forward pass: compute the sizes from input_shape (nn.Linear, not nn.LazyLinear).")
        return model

    model = build()
    for key, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _fail(cls, "has non-finite initial weights", f"{key!r} holds NaN or infinite entries right after build.",
                        "check the initialisation (a division by a zero fan-in, torch.empty left uninitialised).")
    wide = [(n, p.dtype) for n, p in model.named_parameters() if p.dtype != torch.float32]
    if wide:
        raise _fail(cls, "has parameters that are not float32", f"{wide[0][0]!r} is {wide[0][1]}.",
                    "build float32 layers (no .double() or dtype=torch.float64): critui feeds float32 batches "
                    "and trains float32 weights (bf16 only through autocast).")
    again = build()
    theirs = dict(again.state_dict())
    for key, value in model.state_dict().items():
        if key not in theirs or not _same(value, theirs[key]):
            raise _fail(cls, "does not build deterministically under torch.manual_seed",
                        f"two builds after torch.manual_seed(0) differ in {key!r}.",
                        "initialise only from torch's global RNG (no numpy or Python random, no clock), "
                        "so that the run seed fixes the initial weights.")
    model.to(device).train()

    gen = torch.Generator().manual_seed(0)
    if data is not None:
        batch = min(batch, len(data.train_x))
        x = data.train_x[:batch].float().clone().to(device)
        y = data.train_y[:batch].clone().to(device)
    else:
        x = torch.randn((batch, *input_shape), generator=gen).to(device)
        y = (torch.arange(batch) % num_classes).to(device)
    pristine = x.clone()
    try:
        logits = model(x)
    except Exception as exc:
        raise _fail(cls, "failed in forward", f"a train-mode batch of shape {tuple(x.shape)} raised {type(exc).__name__}: {exc}",
                    _forward_hint(exc)) from exc
    if not _same(x, pristine):
        raise _fail(cls, "modified its input in place in forward", _difference(x, pristine, ("now", "before")) + ".",
                    "do not apply in-place operations (nn.ReLU(inplace=True), x.add_) to the input itself.")
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise _fail(cls, "returned logits of the wrong shape", f"a batch of {batch} gave {shape}; expected {(batch, num_classes)}.",
                    "end with a layer of num_classes outputs and flatten to N×num_classes (no softmax).")
    if not logits.is_floating_point() or not bool(torch.isfinite(logits).all()):
        raise _fail(cls, "returned non-finite or non-float logits", f"dtype {logits.dtype}, finite: "
                    f"{bool(torch.isfinite(logits).all()) if logits.is_floating_point() else 'n/a'}.",
                    "check the initialisation and any division or log in forward.")
    sums = logits.detach().float().sum(dim=1)
    if not regression and bool((logits >= 0).all()) and bool(((sums - 1).abs() < 1e-4).all()):
        raise _fail(cls, "returns probabilities, not logits",
                    f"every output is >= 0 and each row sums to 1 (row sums {sums.tolist()[:3]}...), as after softmax.",
                    "end with the last linear layer and return its raw scores: critui's loss (cross_entropy) "
                    "applies log_softmax itself, and a softmax before it trains at chance.")

    if regression:
        from critui.train.loop import task_loss

        task_loss(logits, y, data.loss).backward()
    else:
        F.cross_entropy(logits, y).backward()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:
            raise _fail(cls, "has a parameter the loss does not reach", f"{name!r} got no gradient in backward.",
                        "use every module you register in forward, or delete it: critui trains and "
                        "measures every parameter.")
        if not bool(torch.isfinite(param.grad).all()):
            raise _fail(cls, "has non-finite gradients", f"{name!r} has NaN or infinite gradient entries.",
                        "check the initialisation and any division or log in forward.")

    model.eval()
    with torch.no_grad():
        try:
            single = model(x[:1])
        except Exception as exc:
            raise _fail(cls, "failed on a batch of one in eval mode", f"{type(exc).__name__}: {exc}",
                        "evaluation may end with a batch of one: avoid layers that need several samples "
                        "in eval mode.") from exc
    if tuple(single.shape) != (1, num_classes):
        raise _fail(cls, "returned logits of the wrong shape", f"a batch of 1 gave {tuple(single.shape)}.",
                    "flatten to N×num_classes, never squeeze the batch dimension away.")
    model.train()

    from critui.train.fisher import fisher_layers, fisher_trace

    layers = fisher_layers(model)
    if not layers:
        raise _fail(cls, "has no convolution or linear layer", "the Fisher metric reports one trace per nn.Conv*/nn.Linear.",
                    "build the network from torch.nn layers.")
    if fisher:
        try:
            traces = fisher_trace(model, x, seed=0, epoch=0, samples=1, chunk=batch)
        except Exception as exc:
            raise _fail(cls, "cannot be measured by metrics.fisher",
                        f"per-sample gradients (torch.func.vmap over functional_call) raised {type(exc).__name__}: {exc}",
                        "avoid data-dependent Python control flow and .item() in forward; in-place "
                        "ops on intermediate tensors are fine.") from exc
        bad = {k: v for k, v in traces.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise _fail(cls, "gave invalid Fisher traces", f"{bad}.", "check for NaN in forward.")


# --- datasets ----------------------------------------------------------------------------------


@_single_threaded
def check_dataset(
    cls: type[Dataset],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    deterministic: bool = True,
) -> DatasetTensors:
    """Load a dataset and check what the worker relies on; returns the loaded tensors.

    - ``load(params, seed)`` returns a ``DatasetTensors``;
    - images are N×C×H×W, uint8 or float32 in 0..1, train and test of the same C×H×W
      (``input_shape`` when given);
    - labels are 1-D integers, one per image, in ``0..len(classes)-1``;
    - ``classes`` are distinct strings (``num_classes`` of them when given);
    - ``mean`` and ``std`` have one finite entry per channel, ``std`` > 0;
    - ``augment`` is ``"none"`` or ``"crop-flip"``;
    - with ``deterministic=True``, loading twice gives identical tensors.
    """
    import torch

    settings = plugin_params(cls, params)
    if cls.load is Dataset.load:
        raise _fail(cls, "does not implement load", "it still has Dataset.load, which raises.",
                    "define load(self, params, seed) returning a critui.kinds.DatasetTensors.")

    def load() -> DatasetTensors:
        try:
            data = cls().load(dict(settings), seed)
        except CritUIError as exc:
            raise _fail(cls, "could not be loaded", f"load({settings}, seed={seed}) reported a problem for the "
                        f"user: {exc}", "that is the right way to report missing data; give the check "
                        "parameters under which the data is there (a folder with a small copy, fewer "
                        "images).") from exc
        except Exception as exc:
            raise _fail(cls, "could not be loaded", f"load({settings}, seed={seed}) raised {type(exc).__name__}: {exc}",
                        "raise critui.errors.CritUIError with a message saying where the files go when "
                        "they are missing; anything else is a bug in load.") from exc
        if not isinstance(data, DatasetTensors):
            raise _fail(cls, "returned the wrong thing from load", f"load returned {type(data).__name__}.",
                        "return critui.kinds.DatasetTensors(train_x, train_y, test_x, test_y, classes, mean, std).")
        return data

    data = load()
    if data.loss != "cross_entropy":
        return _check_regression_dataset(cls, data, load if deterministic else None, seed)
    shapes = {}
    for part in ("train", "test"):
        images, labels = getattr(data, f"{part}_x"), getattr(data, f"{part}_y")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise _fail(cls, f"has {part} images of the wrong shape", f"{part}_x is {got}; expected N×C×H×W.",
                        "stack the images into one 4-D tensor; add a channel axis for grey images.")
        if images.dtype not in (torch.uint8, torch.float32):
            raise _fail(cls, f"has {part} images of an unsupported dtype", f"{part}_x is {images.dtype}.",
                        "use uint8 (0..255) or float32 (0..1).")
        if images.dtype == torch.float32 and len(images) and (
            not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1
        ):
            raise _fail(cls, f"has float {part} images outside 0..1",
                        f"{part}_x spans {images.min().item():.4g}..{images.max().item():.4g}.",
                        "scale float images into 0..1 (critui normalises them with mean/std itself).")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(images):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise _fail(cls, f"has {part} labels that do not match its images",
                        f"{part}_y is {got} for {len(images)} images.", "give one label per image, as a 1-D tensor.")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise _fail(cls, f"has non-integer {part} labels", f"{part}_y is {labels.dtype}.",
                        "use integer class indices (torch.long).")
        shapes[part] = tuple(images.shape[1:])
        if len(images) == 0:
            raise _fail(cls, f"has an empty {part} set", f"{part}_x has no images.", "return at least one image.")
    if shapes["train"] != shapes["test"]:
        raise _fail(cls, "has train and test images of different shapes", f"train {shapes['train']}, test {shapes['test']}.",
                    "resize or crop both to the same C×H×W.")
    if input_shape is not None and shapes["train"] != tuple(input_shape):
        raise _fail(cls, "has images of an unexpected shape", f"C×H×W is {shapes['train']}; expected {tuple(input_shape)}.",
                    "check the parameters, or the input_shape the test expects.")

    classes = data.classes
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise _fail(cls, "has class names that are not strings", f"classes is {_short_repr(classes)}.",
                    "give a list of str, one name per class index.")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise _fail(cls, "has too few or repeated class names", f"classes is {_short_repr(list(classes))}.",
                    "give at least two distinct names, one per class index.")
    if num_classes is not None and len(classes) != num_classes:
        raise _fail(cls, "has an unexpected number of classes", f"{len(classes)} names; expected {num_classes}.",
                    "check the parameters, or the num_classes the test expects.")
    for part in ("train", "test"):
        labels = getattr(data, f"{part}_y")
        bad = (labels < 0) | (labels >= len(classes))
        if bool(bad.any()):
            raise _fail(cls, f"has {part} labels outside the class range",
                        f"label {int(labels[bad][0])} with {len(classes)} class names (valid: 0..{len(classes) - 1}).",
                        "number classes 0..K-1 and give K names.")

    _check_statistics(cls, data, shapes["train"])
    if data.augment not in AUGMENTATIONS:
        raise _fail(cls, "names an unknown augmentation", f"augment is {data.augment!r}.",
                    f"use one of {', '.join(AUGMENTATIONS)}.")

    if deterministic:
        again = load()
        for part in ("train_x", "train_y", "test_x", "test_y"):
            a, b = getattr(data, part), getattr(again, part)
            if not _same(a, b):
                raise _fail(cls, "does not load deterministically", f"two loads with seed={seed} differ in {part} "
                            f"({_difference(a, b, ('first load', 'second'))}).",
                            "draw generated data from a torch.Generator seeded from the parameters or the "
                            "seed argument; pass deterministic=False if the data really changes between loads.")
    return data


def _check_regression_dataset(cls: type, data: DatasetTensors, load: Callable[[], DatasetTensors] | None,
                              seed: int) -> DatasetTensors:
    """A regression (``loss`` half_mse or half_sse): what the worker checks before training
    (float inputs, finite float targets one per input, one mean and std), and determinism."""
    from critui.train.plugin_guard import check_regression_tensors

    def bad(problem: str) -> AssertionError:
        return _fail(cls, "returned tensors a regression cannot train on", f"load returned {problem}.",
                     "see critui.kinds.DatasetTensors: float32 N×... inputs, float32 targets, loss "
                     "half_mse or half_sse, mean=(0.0,), std=(1.0,) to leave inputs as they are.")

    try:
        check_regression_tensors(data, bad)
    except CritUIError as exc:  # raised as the worker would; reported as the kit does
        raise bad(str(exc)) from exc
    if load is not None:
        again = load()
        for part in ("train_x", "train_y", "test_x", "test_y"):
            a, b = getattr(data, part), getattr(again, part)
            if not _same(a, b):
                raise _fail(cls, "does not load deterministically", f"two loads with seed={seed} differ in {part} "
                            f"({_difference(a, b, ('first load', 'second'))}).",
                            "draw generated data from a torch.Generator seeded from the parameters or the seed.")
    return data


def _check_statistics(cls: type, data: DatasetTensors, shape: tuple[int, ...]) -> None:
    """``mean`` and ``std``: one finite number per channel, in 0..1 units, near the data's own."""
    import numbers

    import torch

    channels = shape[0]
    last = shape[-1]
    if channels not in (1, 3, 4) and last in (1, 3, 4) and isinstance(data.mean, (list, tuple)) and len(data.mean) == last:
        raise _fail(cls, "has channels-last images", f"train_x is N×{'×'.join(map(str, shape))}: {channels} "
                    f"'channels' of {shape[1]}×{last}, while mean has {last} entries; the images look N×H×W×C.",
                    "permute them to N×C×H×W: train_x.permute(0, 3, 1, 2).contiguous().")
    for stat in ("mean", "std"):
        values = getattr(data, stat)
        if not (isinstance(values, (list, tuple)) and len(values) == channels):
            raise _fail(cls, f"has an invalid `{stat}`", f"{stat} is {_short_repr(values)} for {channels} channel(s).",
                        "give one float per channel, e.g. tuple(x.mean(dim=(0, 2, 3)).tolist()) with x the "
                        "training images in 0..1 (x = train_x.float() / 255 for uint8).")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise _fail(cls, f"has a non-finite or non-numeric `{stat}`", f"{stat} is {_short_repr(values)}.",
                        "give finite Python floats, one per channel.")
    if min(data.std) <= 0:
        raise _fail(cls, "has a zero or negative `std`", f"std is {_short_repr(data.std)}: normalising divides by it.",
                    "compute it from the training images in 0..1 units, "
                    "e.g. tuple((train_x.float() / 255).std(dim=(0, 2, 3)).tolist()); a channel that is constant "
                    "carries no information and should be dropped.")
    if max(data.mean) > 1 or min(data.mean) < 0 or max(data.std) > 1:
        raise _fail(cls, "gives `mean`/`std` in the wrong units", f"mean {_short_repr(data.mean)}, std "
                    f"{_short_repr(data.std)}: critui divides uint8 images by 255 first, so both are in 0..1 units "
                    "(a mean of 0..1, a std of at most 0.5).",
                    "divide 0..255 statistics by 255, e.g. mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26).")
    images = data.train_x[:2048]
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    actual = images.mean(dim=(0, 2, 3))
    off = (actual - torch.tensor([float(v) for v in data.mean])).abs()
    if bool((off > 0.25).any()):
        worst = int(off.argmax())
        raise _fail(cls, "gives a `mean` far from its images' own",
                    f"channel {worst}: mean says {float(data.mean[worst]):.4g}, the training images average "
                    f"{float(actual[worst]):.4g} (in 0..1 units).",
                    "compute mean and std from the training images in 0..1 units, or fix the channel order.")


# --- metrics -----------------------------------------------------------------------------------



def _tiny_model(input_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    from collections import OrderedDict

    from torch import nn

    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(input_shape[0], 4, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(4),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(4, num_classes),
    ))


@_single_threaded
def check_metric(
    cls: type,
    params: Mapping[str, Any] | None = None,
    model: torch.nn.Module | None = None,
    input_shape: tuple[int, int, int] = (3, 16, 16),
    num_classes: int = 10,
    device: str | torch.device = "cpu",
    seed: int = 0,
    epochs: int = 12,
    n_train: int = 64,
    n_test: int = 32,
    data: DatasetTensors | None = None,
) -> None:
    """Run a metric over ``epochs`` epochs of a small context, as the worker would.

    ``data`` (a loaded ``DatasetTensors``, with ``model`` built for it) replaces the random
    images and the vertical-flip deficit: the metric sees the first ``n_train``/``n_test``
    examples of that dataset, and no deficit.

    The deficit (a vertical flip) is active in the first half of the epochs. Checks:

    - ``when(epoch, epochs)`` returns a bool, and the metric runs at least once;
    - ``compute(ctx)`` returns a dict of str to finite Python floats (not tensors), with the
      same keys every epoch it returns any (an empty dict means "nothing this epoch");
    - it leaves the model (weights, buffers, gradients, train/eval mode) and the data as
      they were;
    - a second instance with the same seed gives the same values;
    - ``reference(ctx)``, where it is defined, returns None or curves of the keys it measures.
    """
    import torch

    from critui.kinds import Metric

    settings = plugin_params(cls, params)
    device = _device(device)
    if cls.compute is Metric.compute:
        raise _fail(cls, "does not implement compute", "it still has Metric.compute, which raises.",
                    "define compute(self, ctx) returning {key: float}.")
    torch.manual_seed(seed)
    if model is None:
        model = _tiny_model(input_shape, num_classes)
    model = model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    train_x = torch.randn((n_train, *input_shape), generator=gen).to(device)
    test_x = torch.randn((n_test, *input_shape), generator=gen).to(device)
    train_y = (torch.arange(n_train) % num_classes).to(device)
    test_y = (torch.arange(n_test) % num_classes).to(device)
    if data is not None:
        train_x, train_y = data.train_x[:n_train].float().to(device), data.train_y[:n_train].to(device)
        test_x, test_y = data.test_x[:n_test].float().to(device), data.test_y[:n_test].to(device)
        num_classes = int(data.train_y[0].numel()) if data.loss != "cross_entropy" else len(data.classes)
    # The built-in vertical flip: cheap and deterministic, so the metric sees a real deficit.
    from critui.builtin.deficits import VerticalFlip

    deficit = None if data is not None else VerticalFlip({"start": 0, "end": epochs // 2}, seed, num_classes,
                                                         input_shape)
    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    pristine = {k: v.clone() for k, v in data.items()}
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    grads = [p.grad for p in model.parameters()]

    def build() -> Any:
        try:
            return cls(dict(settings), seed)
        except Exception as exc:
            raise _fail(cls, "could not be built", f"{cls.__name__}(params, seed={seed}) raised {type(exc).__name__}: {exc}",
                        "accept (params, seed) and call super().__init__ with them.") from exc

    def context(epoch: int) -> MetricContext:
        return MetricContext(model=model, epoch=epoch, epochs=epochs, device=device, num_classes=num_classes,
                             seed=seed, deficit=deficit, deficit_active=epoch < epochs // 2, **data)

    def compute(metric: Any, epoch: int) -> dict[str, float]:
        grad, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
        try:
            values = metric.compute(context(epoch))
        except Exception as exc:
            raise _fail(cls, "raised in compute", f"epoch {epoch} of {epochs}: {type(exc).__name__}: {exc}",
                        "make compute work on the MetricContext it gets (tensors on ctx.device).") from exc
        if (torch.is_grad_enabled(), torch.get_default_dtype()) != (grad, dtype):
            raise _fail(cls, "changed process-wide torch state", f"compute at epoch {epoch} changed grad mode or the "
                        "default dtype, and training continues right after it.",
                        "use `with torch.no_grad():` (or torch.inference_mode) instead of torch.set_grad_enabled, "
                        "and pass dtype= instead of torch.set_default_dtype.")
        _check_values(cls, values, epoch)
        return values

    metric = build()
    results: dict[int, dict[str, float]] = {}
    for epoch in range(epochs):
        due = metric.when(epoch, epochs)
        if not isinstance(due, bool):
            raise _fail(cls, "returned a non-bool from when", f"when({epoch}, {epochs}) returned {due!r}.",
                        "return True or False (e.g. epoch % k == 0).")
        if due:
            results[epoch] = compute(metric, epoch)
    if not results:
        raise _fail(cls, "never ran", f"when(epoch, {epochs}) was False for every epoch 0..{epochs - 1}.",
                    "measure at least the last epoch (epoch == epochs - 1).")
    filled = {e: v for e, v in results.items() if v}
    if not filled:
        raise _fail(cls, "returned no values", f"compute returned an empty dict in every epoch it ran ({sorted(results)}).",
                    "return {key: float} at least in some epochs (an empty dict means nothing to report).")
    first_epoch, first = next(iter(filled.items()))
    for epoch, values in filled.items():
        if set(values) != set(first):
            raise _fail(cls, "returned unstable keys",
                        f"epoch {first_epoch} gave {sorted(first)} and epoch {epoch} gave {sorted(values)}.",
                        "return the same keys every epoch: they become the columns of the run's history.")

    for key, value in data.items():
        if not _same(value, pristine[key]):
            raise _fail(cls, f"modified ctx.{key} in place", _difference(value, pristine[key], ("now", "before")) + ".",
                        "treat the context's tensors as read-only; clone before changing them.")
    for key, value in model.state_dict().items():
        if not _same(value, weights[key]):
            raise _fail(cls, "changed the model",
                        f"{key!r} differs after compute ({_difference(value, weights[key], ('now', 'before'))}).",
                        "measure without training: no optimiser steps, and BatchNorm in eval mode "
                        "(critui.train.fisher.eval_mode) so running statistics stay put.")
    if [m.training for m in model.modules()] != modes:
        raise _fail(cls, "left the model in another train/eval mode", "some module's .training changed.",
                    "restore each module's mode afterwards (critui.train.fisher.eval_mode does).")
    for param, before in zip(model.parameters(), grads, strict=True):
        if param.grad is not before:
            raise _fail(cls, "left gradients on the model", "a parameter's .grad changed during compute.",
                        "use torch.func or torch.autograd.grad instead of .backward(), or restore .grad.")

    repeat = build()
    for epoch, values in results.items():
        if repeat.when(epoch, epochs):
            again = compute(repeat, epoch)
            differs = [k for k in values if k in again and not math.isclose(values[k], again[k], rel_tol=1e-6, abs_tol=1e-12)]
            if set(again) != set(values) or differs:
                raise _fail(cls, "is not deterministic under a seed",
                            f"a second instance with seed={seed} gave {_short_repr(again)} at epoch {epoch}, "
                            f"the first {_short_repr(values)}.",
                            "derive any sampling from ctx.seed and ctx.epoch (a seeded torch.Generator), "
                            "and keep the same probe of images every epoch.")
    if type(metric).reference is not Metric.reference:
        _check_reference(cls, metric, context(0), set(first))


def _check_reference(cls: type, metric: Any, ctx: Any, keys: set[str]) -> None:
    """``reference(ctx)``, where a metric defines it, returns None or curves the worker can
    record (:func:`critui.train.plugin_guard.clean_reference`), for keys it measures."""
    from critui.train.plugin_guard import clean_reference

    try:
        curves = clean_reference(metric.reference(ctx))
    except TypeError as exc:
        raise _fail(cls, "returned an unusable reference", str(exc) + ".",
                    "return None or {key: [(epoch, value), ...]} with finite numbers.") from exc
    except Exception as exc:
        raise _fail(cls, "raised in reference", f"{type(exc).__name__}: {exc}",
                    "make reference work on the MetricContext it gets, or return None.") from exc
    if unknown := sorted(set(curves) - keys):
        raise _fail(cls, "gave a reference for keys it does not measure", f"{unknown}; compute returns {sorted(keys)}.",
                    "name each reference curve after the key of compute's values it predicts.")


def _check_values(cls: type, values: Any, epoch: int) -> None:
    """What the worker records: str keys, real numbers (stored as floats), all finite."""
    import numbers

    import torch

    if not isinstance(values, dict):
        raise _fail(cls, "returned the wrong thing from compute", f"epoch {epoch}: {type(values).__name__} {_short_repr(values)}.",
                    "return a dict {key: float}.")
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise _fail(cls, "returned a bad key", f"epoch {epoch}: key {key!r}.", "use non-empty str keys.")
        if isinstance(value, torch.Tensor):
            raise _fail(cls, "returned a tensor instead of a float", f"epoch {epoch}: {key}={_short_repr(value)}.",
                        "convert with float(t) or t.item(); values go into JSON events.")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _fail(cls, "returned a value that is not a number", f"epoch {epoch}: {key}={value!r}.",
                        "return Python floats (ints and numpy floats are converted to float too).")
        if not math.isfinite(value):
            raise _fail(cls, "returned a non-finite value", f"epoch {epoch}: {key}={value!r}.",
                        "guard against divisions by zero; NaN cannot be plotted or compared across runs.")


# --- launchers ---------------------------------------------------------------------------------


# A tiny real run: the embedded dataset, a 4-channel CNN, one thread. Seconds per epoch at most.
LAUNCHER_RUN = ["dataset.n_train=64", "dataset.n_test=32", "model.width=4", "train.threads=1"]
WORKER_METHODS = ("poll", "wait", "send_signal", "terminate", "kill")
LAUNCHER_CHECK_DIR = "launcher-check"


def check_launcher(
    cls: type,
    params: Mapping[str, Any] | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout: float = 180.0,
) -> None:
    """Start real workers through a launcher, as ``critui run`` and ``critui sweep`` do.

    ``home`` is the critui home to use (a temporary folder by default); for a cluster, give
    one on the shared file system. Checks:

    - ``check()`` passes (or the launcher cannot work where the test runs: the message says so);
    - ``start(run_dir, env)`` returns at once with a worker that has ``poll``, ``wait``,
      ``send_signal``, ``terminate``, ``kill`` and ``pid``, and the worker trains a 2-epoch run
      to ``finished`` with exit code 0;
    - ``send_signal(SIGTERM)`` stops a long run cleanly: the worker records ``cancelled`` and
      exits with 130, within ``timeout`` seconds;
    - ``alive(job)``, for a worker with a ``job``, is not False while it runs, and not True
      once it has ended.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from critui.kinds import Launcher

    settings = plugin_params(cls, params)
    if cls.start is Launcher.start:
        raise _fail(cls, "does not implement start", "it still has Launcher.start, which raises.",
                    "define start(self, run_dir, env) returning a started worker (subprocess.Popen, or an "
                    "object with its poll, wait, send_signal, terminate and kill).")
    started: list[Any] = []
    # Removed when the check passes; kept when it fails, for the runs' log.txt it points to.
    root = Path(home if home is not None else tempfile.mkdtemp(prefix="critui-launcher-"))
    try:
        _launch_and_cancel(cls, settings, root, timeout, started)
    finally:  # a failed check leaves no worker behind
        for worker in started:
            if worker.poll() is None:
                worker.kill()
                try:
                    worker.wait(timeout=30)
                except Exception:  # noqa: BLE001 - it was asked to die; nothing more to do
                    pass
    shutil.rmtree(root / LAUNCHER_CHECK_DIR, ignore_errors=True)
    if home is None:
        shutil.rmtree(root, ignore_errors=True)


def _launch_and_cancel(cls: type, settings: dict[str, Any], root, timeout: float, started: list[Any]) -> None:
    """The body of :func:`check_launcher`; every worker it starts goes into ``started``."""
    import json
    import signal
    import time
    from pathlib import Path

    from critui.config import build_spec
    from critui.events import read_events
    from critui.plugins import get_registry

    launcher = cls(settings, root)
    try:
        launcher.check()
    except CritUIError as exc:
        raise _fail(cls, "says it cannot start workers here", f"check() raised: {exc}",
                    "run this check where the launcher works, or pass params that make it work here.") from None

    def run_dir(name: str, epochs: int) -> Path:
        spec = build_spec(get_registry(), sets=[*LAUNCHER_RUN, f"train.epochs={epochs}"])
        path = root / LAUNCHER_CHECK_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir(parents=True)
        (path / "spec.json").write_text(json.dumps(spec.to_json()))
        return path

    def ended(worker, where: Path, what: str) -> int:
        try:
            return worker.wait(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - TimeoutExpired, or the plugin's own
            worker.kill()
            tail = [e["event"] for e in read_events(where)][-3:]
            raise _fail(cls, f"did not see its worker {what} within {timeout:.0f} s",
                        f"wait() raised {type(exc).__name__}; the last events were {tail}; see {where / 'log.txt'}.",
                        "start `python -m critui.train.worker RUN_DIR` and return its process.") from None

    finished = run_dir("finish", 2)
    start = time.monotonic()
    worker = launcher.start(finished, {})
    started.append(worker)
    if time.monotonic() - start > 30:
        raise _fail(cls, "blocks in start", f"start() took {time.monotonic() - start:.0f} s.",
                    "return as soon as the worker is launched; critui follows it through its events.")
    missing = [m for m in (*WORKER_METHODS, "pid") if not hasattr(worker, m)]
    if missing:
        raise _fail(cls, "returned an incomplete worker", f"start() returned {worker!r}, without {missing}.",
                    "return a subprocess.Popen, or an object with poll, wait, send_signal, terminate, kill and pid.")
    job = getattr(worker, "job", None)
    if job is not None and worker.poll() is None and launcher.alive(job) is False:
        raise _fail(cls, "says a running worker is not alive", f"alive({job!r}) returned False while it ran.",
                    "return True for a queued or running job, None when the scheduler cannot tell.")
    code = ended(worker, finished, "finish")
    events = read_events(finished)
    if code != 0 or not events or events[-1]["event"] != "finished":
        raise _fail(cls, "did not train a run to the end", f"exit code {code}, last event "
                    f"{events[-1]['event'] if events else 'none'}; see {finished / 'log.txt'}.",
                    "run the worker unchanged, with the run directory as its only argument.")
    if job is not None and launcher.alive(job) is True:
        raise _fail(cls, "says an ended worker is alive", f"alive({job!r}) returned True after it exited 0.",
                    "return False (or None) once the job has ended.")

    cancelled = run_dir("cancel", 100_000)
    worker = launcher.start(cancelled, {})
    started.append(worker)
    deadline = time.monotonic() + timeout
    while not any(e["event"] == "epoch" for e in read_events(cancelled)):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise _fail(cls, "did not start a long run", f"no epoch within {timeout:.0f} s (exit code "
                        f"{worker.poll()}); see {cancelled / 'log.txt'}.",
                        "start the worker at once; give the check a longer timeout for a queue.")
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    code = ended(worker, cancelled, "stop after SIGTERM")
    events = read_events(cancelled)
    if code != 130 or events[-1]["event"] != "cancelled":
        raise _fail(cls, "does not stop a worker cleanly", f"after send_signal(SIGTERM): exit code {code}, "
                    f"last event {events[-1]['event']}.",
                    "deliver SIGTERM (or SIGINT) to the worker process; it records `cancelled` and exits 130.")


# --- registration ------------------------------------------------------------------------------


def check_registered(plugin_id: str, distribution: str | None = None, version: str | None = None) -> PluginInfo:
    """Check that ``plugin_id`` is discovered the way ``critui plugins`` finds it; returns its info.

    Builds a fresh registry (built-ins plus every entry point of group ``critui`` allowed by
    ``CRITUI_LOAD_PLUGINS``), so this passes only once the distribution is installed
    (``pip install -e .``). ``distribution`` and ``version``, when given, must match.
    """
    from critui.plugins import build_registry

    registry = build_registry()
    info = registry.plugins.get(plugin_id)
    if info is None:
        failures = [f for f in registry.failures if distribution in (None, f.distribution)]
        broken = "; ".join(f"{f.source} from {f.distribution} {f.version}: {f.error}" for f in failures)
        known = ", ".join(sorted(registry.plugins)) or "none"
        raise AssertionError(
            f"{plugin_id} is not registered. "
            + (f"Plugins that failed to load: {broken}. " if broken else "")
            + f"Registered: {known}. Fix: install the distribution (pip install -e .), declare its module "
            "under [project.entry-points.critui] in pyproject.toml, register the class in the hook "
            f"for its kind, and check that CRITUI_LOAD_PLUGINS ({_allow_list_text()}) does not exclude it."
        )
    if distribution is not None and info.distribution != distribution:
        raise AssertionError(
            f"{plugin_id} is registered by {info.distribution} {info.version}, not by {distribution}. "
            "Fix: uninstall the other distribution or rename your plugin."
        )
    if version is not None and info.version != version:
        raise AssertionError(
            f"{plugin_id} is registered by {info.distribution} {info.version}, not version {version}. "
            "Fix: reinstall the package (pip install -e .) after changing its version."
        )
    return info


def _allow_list_text() -> str:
    raw = os.environ.get("CRITUI_LOAD_PLUGINS")
    return "unset: everything loads" if raw is None else f"now {raw!r}"


CHECKS = {"deficits": check_deficit, "models": check_model, "datasets": check_dataset, "metrics": check_metric,
          "launchers": check_launcher}


def check_plugin(cls: type[Plugin], params: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """Run the check for ``cls``'s kind: ``check_deficit``, ``check_model``, ``check_dataset``,
    ``check_metric`` or ``check_launcher``, with ``options`` passed on."""
    _check_declaration(cls)
    return CHECKS[cls.kind](cls, params, **options)


# --- a scratch environment for install tests ---------------------------------------------------


class ScratchEnv:
    """A throwaway virtual environment for installing plugin distributions in tests, offline.

    It sees the packages of the environment running the tests (critui, torch, pytest, pip,
    setuptools) through a ``.pth`` file, so ``pip install --no-index --no-deps
    --no-build-isolation`` works without a network, while whatever is installed into it,
    editable or not, stays in ``path`` and can be uninstalled again without touching the
    environment running the tests. Commands run with this environment's Python, so
    ``critui run`` workers see the same plugins, and in this environment's own empty folder
    ``cwd`` (unless ``run`` is given another): ``python -m`` puts the working directory on
    ``sys.path``, where a project's ``*.egg-info`` would keep an uninstalled plugin importable.

    - ``pip_install(*args)``: ``pip install --no-index --no-deps --no-build-isolation ARGS``,
      e.g. ``env.pip_install("-e", str(project))`` (give absolute paths: commands do not run
      in your project's folder);
    - ``pip_uninstall(*names)``: ``pip uninstall --yes NAMES``;
    - ``critui(*args, env=None, check=True)``: ``python -m critui ARGS``;
    - ``run(*args, env=None, check=True, timeout=300, cwd=None)``: ``python ARGS``; returns the
      ``CompletedProcess`` (text output), raises ``AssertionError`` on a non-zero exit when
      ``check``; ``env`` adds variables (``CRITUI_HOME`` for a throwaway run history);
    - attributes ``path`` (the environment), ``python``, ``site_packages`` and ``cwd``.
    """

    def __init__(self, path: str | os.PathLike[str]):
        import site
        import subprocess
        import sys
        from pathlib import Path

        self.path = Path(path)
        self.cwd = self.path.with_name(self.path.name + "-cwd")
        self.cwd.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.path)],
                       check=True, capture_output=True)
        self.python = self.path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        self.site_packages = Path(self.run("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
        user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
        # Every site directory this process imports from, including ones a .pth added (as
        # when the tests themselves run inside a ScratchEnv).
        found = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
        outer = [p for p in dict.fromkeys(found + site.getsitepackages() + user) if Path(p).is_dir()]
        # addsitedir (not a bare path) so the outer environment's own .pth files (editable
        # installs such as critui's) are processed too.
        (self.site_packages / "_critui_outer_env.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in outer) + "\n"
        )

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_INDEX="1", VIRTUAL_ENV=str(self.path))
        env.update(extra or {})
        return env

    def run(self, *args: str, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 300,
            cwd: str | os.PathLike[str] | None = None):
        """``python ARGS`` in this environment, in folder ``cwd`` (default: the environment's own
        empty folder); returns the CompletedProcess (text output)."""
        import subprocess

        result = subprocess.run([str(self.python), *args], capture_output=True, text=True, timeout=timeout,
                                env=self.environment(env), cwd=self.cwd if cwd is None else cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"python {' '.join(args)} exited {result.returncode} in {self.path}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def pip_install(self, *args: str, **options: Any):
        """``pip install --no-index --no-deps --no-build-isolation ARGS`` (offline, deps from outside)."""
        return self.run("-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", *args, **options)

    def pip_uninstall(self, *names: str, **options: Any):
        return self.run("-m", "pip", "uninstall", "--yes", *names, **options)

    def critui(self, *args: str, **options: Any):
        """``critui ARGS`` run with this environment's Python."""
        return self.run("-m", "critui", *args, **options)


# --- the pytest plugin -------------------------------------------------------------------------


class Contract:
    """The checks, bound to the device chosen for this test session (``critui_contract``)."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def check_deficit(self, cls: type[Deficit], params: Mapping[str, Any] | None = None, **options: Any) -> None:
        check_deficit(cls, params, **{"device": self.device, **options})

    def check_model(self, cls: type[Model], params: Mapping[str, Any] | None = None, **options: Any) -> None:
        check_model(cls, params, **{"device": self.device, **options})

    def check_dataset(self, cls: type[Dataset], params: Mapping[str, Any] | None = None, **options: Any) -> DatasetTensors:
        return check_dataset(cls, params, **options)

    def check_metric(self, cls: type, params: Mapping[str, Any] | None = None, **options: Any) -> None:
        check_metric(cls, params, **{"device": self.device, **options})

    def check_launcher(self, cls: type, params: Mapping[str, Any] | None = None, **options: Any) -> None:
        check_launcher(cls, params, **options)

    def check_plugin(self, cls: type[Plugin], params: Mapping[str, Any] | None = None, **options: Any) -> Any:
        if cls.kind not in ("datasets", "launchers"):
            options = {"device": self.device, **options}
        return check_plugin(cls, params, **options)

    def check_registered(self, plugin_id: str, distribution: str | None = None, version: str | None = None) -> PluginInfo:
        return check_registered(plugin_id, distribution, version)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("critui", "critui plugin contract checks")
    group.addoption(
        "--critui-device",
        default=None,
        help="device for critui_contract checks: cpu (default), cuda or cuda:N; also CRITUI_TEST_DEVICE",
    )


@pytest.fixture
def critui_scratch_env(tmp_path_factory: pytest.TempPathFactory) -> ScratchEnv:
    """A fresh :class:`ScratchEnv`: install your distribution into it and run critui there."""
    return ScratchEnv(tmp_path_factory.mktemp("scratch-env") / "venv")


@pytest.fixture
def critui_contract(request: pytest.FixtureRequest) -> Contract:
    """critui's contract checks for plugin classes: check_deficit, check_model, check_dataset,
    check_metric, check_launcher, check_plugin and check_registered (see ``critui.testing``)."""
    device = request.config.getoption("--critui-device") or os.environ.get("CRITUI_TEST_DEVICE") or "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip(f"critui contract checks asked for {device}, but CUDA is not available")
    return Contract(device)
