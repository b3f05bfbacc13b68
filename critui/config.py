"""The run spec: one JSON-able description of a run, built from defaults, TOML and flags.

Precedence, lowest first: built-in defaults, ``--config FILE.toml``, ``--plugin``, ``--set``,
then the dedicated flags (``--epochs``, ``--seed``, ``--device``). Every value is checked
against the parameter declarations in :mod:`critui.params` and the plugins' own.

A config file mirrors the spec::

    [train]
    epochs = 20
    [dataset]
    id = "datasets.synthetic"
    [model]
    id = "models.cnn"
    depth = 6
    [deficit]
    id = "deficits.blur"
    end = 8
    [optim]
    lr = 0.05
    [metrics.fisher]
    every = 1
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from critui.errors import CritUIError
from critui.params import Param, ParamError, resolve, short_repr, unknown_name_message

if TYPE_CHECKING:  # only named in annotations: `critui runs` need not load pluggy and the plugins
    from critui.plugins import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRAIN_PARAMS = (
    Param("epochs", "int", 24, "number of training epochs (with a full-batch optim.batch_size, one epoch is one "
          "gradient step)", min=1, max=10_000_000),
    Param("seed", "int", 0, "run seed: model init, batch order, augmentation and deficit state", min=0,
          max=2**32 - 1),
    Param("device", "str", "auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"),
    Param(
        "augment",
        "choice",
        "auto",
        "training augmentation: the dataset's usual one (auto), pad-4 crop + horizontal flip, or none",
        choices=("auto", "crop-flip", "none"),
    ),
    Param(
        "threads",
        "int",
        0,
        "CPU threads for torch in the worker (0: auto, half the cores the worker may use and at least one; small models "
        "train faster on one thread than on two on a 2-core machine, and far faster when runs share cores)",
        min=0,
        max=1024,
    ),
    Param("eval_batch_size", "int", 1000, "batch size for evaluation passes", min=1),
    # Cadences for step-based runs (one full-batch step per epoch, 100k+ epochs): they change
    # what is recorded and how much a kill can lose, never what is trained.
    Param("log_every", "int", 1, "evaluate and write an epoch event (and run the metrics) every N epochs; the first "
          "and last epoch and each deficit window edge are always logged", min=1, max=10_000_000),
    Param("checkpoint_every", "int", 1, "replace the latest checkpoint every N epochs (and at the end and at every "
          "fork point); a killed run resumes from it, losing at most N epochs", min=1, max=10_000_000),
    # The GPU speed settings. "auto" is resolved by the worker on the device it trains on and
    # the resolved value replaces it in the run's spec.json (and its started event).
    Param(
        "precision",
        "choice",
        "auto",
        "arithmetic of training and evaluation: fp32, or bf16 autocast (weights and optimiser stay "
        "float32); auto is bf16 on a CUDA GPU that supports it and fp32 on the CPU",
        choices=("auto", "fp32", "bf16"),
    ),
    Param(
        "channels_last",
        "choice",
        "auto",
        "store the model and each batch in channels_last (NHWC) memory format, which tensor-core "
        "convolutions prefer: on, off, or auto (on with CUDA, off on the CPU)",
        choices=("auto", "on", "off"),
    ),
    Param(
        "compile",
        "choice",
        "auto",
        "torch.compile the model for training and evaluation: on, off, or auto (on with CUDA, off "
        "on the CPU); when compiling fails the run trains uncompiled and logs a warning",
        choices=("auto", "on", "off"),
    ),
)

# The paper's recipe is SGD, lr 0.05 x 0.97^epoch, wd 1e-3 (configs/ set it for CIFAR-10).
# The defaults here are the CPU demo's: the same shape with the decay compressed so that a
# demo epoch on the embedded dataset is about five paper epochs.
OPTIM_PARAMS = (
    Param("name", "choice", "sgd", "optimiser", choices=("sgd", "adam")),
    Param("lr", "float", 0.05, "initial learning rate", min=0.0, max=10.0),
    Param("decay", "float", 0.85, "LR is multiplied by this every epoch, counted from epoch 0", min=0.0, max=1.0),
    Param("momentum", "float", 0.9, "SGD momentum", min=0.0, max=1.0),
    Param("weight_decay", "float", 5e-4, "L2 weight decay", min=0.0, max=1.0),
    Param("batch_size", "int", 128, "training batch size", min=1, max=1_000_000),
    Param(
        "after_removal",
        "choice",
        "continue",
        "LR policy once the deficit is removed: keep decaying (the paper), restart from lr, or hold constant",
        choices=("continue", "reset", "constant"),
    ),
)

SINGLE_KINDS = {"dataset": "datasets", "model": "models", "deficit": "deficits"}
DEFAULT_IDS = {"dataset": "datasets.synthetic", "model": "models.cnn"}
SECTIONS = ("train", "optim", "dataset", "model", "deficit", "metrics")


@dataclass
class PluginSpec:
    """A chosen plugin and its resolved parameters."""

    id: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSpec:
    """Everything a worker needs to train one run, resolved and validated."""

    dataset: PluginSpec
    model: PluginSpec
    deficit: PluginSpec | None
    metrics: list[PluginSpec]
    optim: dict[str, Any]
    train: dict[str, Any]
    name: str = ""
    keep_checkpoints: list[int] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return int(self.train["epochs"])

    @property
    def seed(self) -> int:
        return int(self.train["seed"])

    def window(self) -> tuple[int, int] | None:
        """The deficit window ``[start, end)`` in epochs, or None without a deficit."""
        if self.deficit is None:
            return None
        return int(self.deficit.params["start"]), int(self.deficit.params["end"])

    def deficit_active(self, epoch: int) -> bool:
        window = self.window()
        return window is not None and window[0] <= epoch < window[1]

    def removal_epoch(self) -> int | None:
        """The first epoch after the deficit window, or None when the run ends before it
        (or has no deficit): its LR is the run's "LR at removal"."""
        window = self.window()
        if window is None or window[1] >= self.epochs:
            return None
        return window[1]

    def window_note(self) -> str | None:
        """A warning when the deficit window and the run's length make the experiment
        something other than deficit-then-recovery, or None. Not an error: a deficit kept
        to the end is a legitimate control."""
        window = self.window()
        if window is None or window[0] >= window[1]:
            return None
        start, end = window
        last = self.epochs - 1
        if start > last:
            return (
                f"the deficit window [{start},{end}) starts after the last epoch ({last}), so this "
                f"run never sees the deficit. Lower deficit.start or raise the epochs above {start}."
            )
        if end > last:
            return (
                f"the deficit window [{start},{end}) lasts to the last epoch ({last}), so the deficit "
                f"is never removed and the run shows no recovery. Raise the epochs above {end} "
                "or lower deficit.end, unless a deficit to the end is what you want."
            )
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        data = copy.deepcopy(data)
        return cls(
            dataset=PluginSpec(**data["dataset"]),
            model=PluginSpec(**data["model"]),
            deficit=PluginSpec(**data["deficit"]) if data.get("deficit") else None,
            metrics=[PluginSpec(**m) for m in data.get("metrics", [])],
            optim=data["optim"],
            train=data["train"],
            name=data.get("name", ""),
            keep_checkpoints=list(data.get("keep_checkpoints", [])),
        )

    def spec_hash(self) -> str:
        """A stable hash of what determines the training (not its name or bookkeeping)."""
        data = self.to_json()
        data.pop("name", None)
        data.pop("keep_checkpoints", None)
        drop_default_cadence(data)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line: dataset, model, deficit and window."""
        deficit = deficit_label(self.deficit.id if self.deficit else None, self.window())
        return f"{short_id(self.dataset.id)} / {short_id(self.model.id)} / {deficit}"


CADENCE_KEYS = ("log_every", "checkpoint_every")


def drop_default_cadence(data: dict[str, Any]) -> None:
    """Leave the default cadences out of what a spec hash covers, so that every spec written
    before they existed keeps its hash."""
    train = data.get("train")
    if isinstance(train, dict):
        for key in CADENCE_KEYS:
            if train.get(key) == 1:
                train.pop(key)


def window_note(spec: dict[str, Any]) -> str | None:
    """:meth:`RunSpec.window_note` of a stored ``spec.json``, or None if it cannot be read."""
    try:
        return RunSpec.from_json(spec).window_note()
    except (KeyError, TypeError, ValueError):
        return None


def short_id(plugin_id: str | None) -> str:
    """``deficits.blur`` -> ``blur``; ``-`` for none."""
    if not plugin_id:
        return "-"
    return plugin_id.split(".", 1)[1] if "." in plugin_id else plugin_id


def deficit_label(deficit_id: str | None, window) -> str:
    """``blur [0,8)``, or ``none`` when there is no deficit or its window is empty (the
    t0 = 0 baseline of a removal sweep trains with no deficit at all)."""
    if not deficit_id or not window or window[0] >= window[1]:
        return "none"
    return f"{short_id(deficit_id)} [{window[0]},{window[1]})"


def device_text(doc: dict[str, Any]) -> str:
    """Where a run trained, from its index entry: ``cpu (AMD EPYC), 1 thread, torch 2.13.0``.
    The thread count is part of it: on the CPU it changes the order of floating-point sums,
    so runs that differ only in it drift apart."""
    threads = doc.get("threads")
    count = f", {threads} thread{'s' if threads != 1 else ''}" if isinstance(threads, int) else ""
    return f"{doc.get('device') or '-'} ({doc.get('device_name') or '-'}){count}, torch {doc.get('torch') or '-'}"


def launcher_text(doc: dict[str, Any]) -> str | None:
    """What started a run's worker, when not this machine's default: ``launchers.slurm, job
    slurm:4242 (partition=gpu, time=600, ...)``; None for a local run."""
    if not doc.get("launcher"):
        return None
    job = f", job {doc['job']}" if doc.get("job") else ""
    settings = ", ".join(f"{k}={v}" for k, v in (doc.get("launcher_settings") or {}).items() if v != "")
    return f"{doc['launcher']}{job}" + (f" ({settings})" if settings else "")


# A config is a few kilobytes; a sweep listing 5,000 seeds is about 35 KB. Past these, a file
# is refused before it is parsed, so that parsing and checking it stay fast.
MAX_CONFIG_BYTES = 256 * 1024
MAX_DEPTH = 12  # [metrics.fisher] with a list of values is 4 deep


def load_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read a TOML file, turning every failure into a message that names the file and line.

    A file above :data:`MAX_CONFIG_BYTES`, or nested deeper than :data:`MAX_DEPTH`, is refused
    in bounded time (it is read only that far: ``/dev/zero`` is no config either).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise CritUIError(f"Config file {path} does not exist. Check the path.") from None
    except OSError as exc:
        raise CritUIError(f"Cannot read config file {path}: {exc.strerror or exc}.") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise CritUIError(f"Config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB, far more than a run "
                          "or sweep config needs; it is not read. Check that this is the config you meant.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CritUIError(f"Cannot read config file {path}: it is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start}).") from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CritUIError(
            f"{path} is not valid TOML: {exc}. Fix that line; strings need quotes and each "
            "table header looks like [deficit]."
        ) from None
    except (RecursionError, ValueError) as exc:  # nesting past Python's stack, an integer of 5,000 digits
        raise CritUIError(f"{path} cannot be read as a config: {_too_deep_or_long(exc)}.") from None
    if (depth := nesting(parsed)) > MAX_DEPTH:
        raise CritUIError(f"{path} nests tables or arrays {depth} deep; a config needs at most 4 "
                          f"(and {MAX_DEPTH} are allowed). Check that this is the config you meant.")
    return parsed, text


def _too_deep_or_long(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return f"its tables or arrays nest far deeper than a config needs (at most {MAX_DEPTH})"
    return f"{str(exc).split(';')[0]}"


def nesting(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:  # one past the limit is enough to refuse it
            stack.extend((child, depth + 1) for child in children)
    return deepest


# Characters a run name may not hold: control characters (escape sequences, carriage
# returns, NUL), line and paragraph separators, and the bidirectional overrides that make
# text display other than it reads.
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def check_name(name: Any, where: str = "name") -> str:
    """A run or sweep name, refused if it is not a string or holds a control character."""
    if not isinstance(name, str):
        raise SpecError(f"{where} = {short_repr(name)} must be a string, e.g. name = \"blur to epoch 8\".", key="name")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS), None)
    if bad is not None:
        raise SpecError(f"{where} {short_repr(name)} holds the control character U+{ord(bad):04X}; names are "
                        "shown in tables and terminals, so they may hold only printable text. Remove it.", key="name")
    return name


def check_shape(raw: dict[str, Any]) -> None:
    """Each section of a config is a table (``train = [1]`` is not), ``metrics`` a table of
    tables, and ``name`` a string: checked before any value is read from them."""
    for section in SECTIONS:
        table = raw.get(section)
        if table is not None and not isinstance(table, dict):
            raise SpecError(f"{section} = {short_repr(table)} must be a table: write a [{section}] header with its "
                            f"settings under it (e.g. [{section}] then {SECTION_EXAMPLES[section]}).", key=section)
    for name, table in (raw.get("metrics") or {}).items():
        if not isinstance(table, dict):
            raise SpecError(f"metrics.{name} must be a table like [metrics.{name}].", key=f"metrics.{name}")
    if "name" in raw:
        check_name(raw["name"])


SECTION_EXAMPLES = {"train": "epochs = 20", "optim": "lr = 0.05", "dataset": 'id = "datasets.synthetic"',
                    "model": 'id = "models.cnn"', "deficit": 'id = "deficits.blur"', "metrics": "[metrics.fisher]"}


def line_of(text: str, dotted: str) -> int | None:
    """The 1-based line where ``section.key`` (or a ``[section]`` header) is set, if found."""
    parts = dotted.split(".")
    key = parts[-1]
    section = ".".join(parts[:-1])
    lines = text.splitlines()
    current = ""
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        header = re.match(r"^\[([^\]]+)\]", stripped)
        if header:
            current = header.group(1).strip()
            if current == dotted:
                return number
            continue
        if current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def build_spec(
    registry: Registry,
    config: dict[str, Any] | None = None,
    plugins: list[str] | tuple[str, ...] = (),
    sets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
    source: tuple[str, str] | None = None,
) -> RunSpec:
    """Merge config, ``--plugin`` ids, ``--set key=value`` pairs and overrides into a RunSpec.

    ``source`` is ``(path, text)`` of the TOML file, so that errors can name its line.
    """
    raw: dict[str, Any] = copy.deepcopy(config or {})
    try:
        return _build(registry, raw, plugins, sets, overrides or {})
    except CritUIError as exc:
        if source is None:
            raise
        path, text = source
        key = getattr(exc, "key", None)
        line = line_of(text, key) if key else None
        where = f"{path}, line {line}" if line else str(path)
        raise CritUIError(f"{where}: {exc}") from None


def preflight(registry: Registry, specs: list[RunSpec]) -> None:
    """Fail before any run is created when a run could only fail in its worker.

    Checks each distinct device (``--device cuda`` without CUDA) and each distinct dataset
    setting (a ``check`` such as CIFAR-10's missing folder, or a synthetic image size that
    does not fit): one clear error now, instead of a history of failed runs. Every way of
    starting runs calls it (``critui run``, ``critui sweep``, the TUI's launch); dry runs
    do not, so a plan can be printed on a machine without the data.
    """
    from critui.devices import check_device

    for device in sorted({spec.train["device"] for spec in specs}):
        check_device(device)
    checked: set[str] = set()
    for spec in specs:
        key = json.dumps([spec.dataset.id, spec.dataset.params], sort_keys=True, default=str)
        if key not in checked:
            checked.add(key)
            registry.get(spec.dataset.id).cls().check(spec.dataset.params)


class SpecError(ParamError):
    """A spec problem tied to one dotted key, so that config errors can name its line."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _build(registry, raw, plugins, sets, overrides) -> RunSpec:
    check_shape(raw)
    for section in raw:
        if section not in SECTIONS and section != "name":
            home = next((table for table, params in (("train", TRAIN_PARAMS), ("optim", OPTIM_PARAMS))
                         if section in {p.name for p in params}), None)
            if home is not None:  # `epochs = 30` at the top of the file
                raise SpecError(f"{section} is a setting of [{home}], not of the whole config: move it under a "
                                f"[{home}] table (or use --set {home}.{section}=...).", key=section)
            raise SpecError(unknown_name_message(section, section, list(SECTIONS), "the config").replace(
                "the config.", ""), key=section)
    metrics_raw = {name: dict(table) for name, table in (raw.get("metrics") or {}).items()}

    picked: dict[str, str] = {}  # section -> the id --plugin chose for it
    for plugin_id in plugins:
        info = registry.get(plugin_id)
        if info.kind == "metrics":
            metrics_raw.setdefault(info.name, {})
        else:
            section = _section_of(info.kind)
            if picked.setdefault(section, info.id) != info.id:
                raise SpecError(
                    f"--plugin {picked[section]} and --plugin {info.id} both choose the {section}, and a "
                    f"run has one {section}. Keep one; to compare them, run a sweep over it "
                    f'(`[sweep.set] "{section}.id" = ["{picked[section]}", "{info.id}"]`).'
                )
            table = raw.setdefault(section, {})
            if table.get("id") and registry.get(table["id"]).id != info.id:
                table.clear()  # a different plugin: the old one's parameters no longer apply
            table["id"] = info.id

    for item in sets:
        key, value = _split_set(item)
        parts = key.split(".")
        if parts[0] == "metrics":
            if len(parts) != 3:
                raise SpecError(f"--set {item}: metric settings look like metrics.NAME.PARAM=VALUE.")
            metrics_raw.setdefault(parts[1], {})[parts[2]] = value
        elif parts[0] in SECTIONS and len(parts) == 2:
            raw.setdefault(parts[0], {})[parts[1]] = value
        elif len(parts) == 1 and parts[0] in {p.name for p in TRAIN_PARAMS}:
            raw.setdefault("train", {})[parts[0]] = value
        else:
            raise SpecError(
                f"--set {item}: {key!r} is not a setting. Settings look like SECTION.PARAM=VALUE "
                f"with SECTION one of {', '.join(SECTIONS)} (metrics take metrics.NAME.PARAM), "
                "e.g. --set deficit.end=3. `critui plugins` lists every plugin's parameters."
            )
    for name, value in overrides.items():
        if value is not None:
            raw.setdefault("train", {})[name] = value

    train = _resolve_table(TRAIN_PARAMS, raw.get("train", {}), "train")
    optim = _resolve_table(OPTIM_PARAMS, raw.get("optim", {}), "optim")
    chosen: dict[str, PluginSpec | None] = {}
    for section, kind in SINGLE_KINDS.items():
        table = dict(raw.get(section) or {})
        plugin_id = table.pop("id", None) or DEFAULT_IDS.get(section)
        if plugin_id is None:
            if table:
                first = next(iter(table))
                raise SpecError(
                    f"{section}.{first} is set but no {section} is chosen. Choose one with "
                    f"--plugin {kind}.NAME (known: {', '.join(sorted(p.id for p in registry.of_kind(kind)))}).",
                    key=f"{section}.{first}",
                )
            chosen[section] = None
            continue
        try:
            info = registry.get(str(plugin_id), kind)
        except CritUIError as exc:
            raise SpecError(str(exc), key=f"{section}.id") from None
        params = _resolve_table(info.params, table, section)
        chosen[section] = PluginSpec(info.id, params)

    metrics = []
    for name, table in metrics_raw.items():
        try:
            info = registry.get(f"metrics.{name}", "metrics")
        except CritUIError as exc:
            raise SpecError(str(exc), key=f"metrics.{name}") from None
        metrics.append(PluginSpec(info.id, _resolve_table(info.params, table, f"metrics.{name}")))

    deficit = chosen["deficit"]
    if deficit is not None and deficit.params["end"] < deficit.params["start"]:
        raise SpecError(
            f"deficit.end={deficit.params['end']} is before deficit.start={deficit.params['start']}. "
            "The window is start <= epoch < end; set end to at least start.",
            key="deficit.end",
        )
    return RunSpec(
        dataset=chosen["dataset"],  # type: ignore[arg-type]
        model=chosen["model"],  # type: ignore[arg-type]
        deficit=deficit,
        metrics=sorted(metrics, key=lambda m: m.id),
        optim=optim,
        train=train,
        name=check_name(raw.get("name", "")),
    )


def _section_of(kind: str) -> str:
    return {v: k for k, v in SINGLE_KINDS.items()}[kind]


def _split_set(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise SpecError(f"--set {item!r} needs the form KEY=VALUE, e.g. --set deficit.end=3.")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def _resolve_table(params: tuple[Param, ...], table: dict[str, Any], prefix: str) -> dict[str, Any]:
    try:
        return resolve(params, table, prefix)
    except ParamError as exc:
        bad = next((f"{prefix}.{k}" for k in table if f"{prefix}.{k}" in str(exc)), prefix)
        raise SpecError(str(exc), key=bad) from None
