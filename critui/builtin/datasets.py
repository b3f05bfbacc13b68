"""Built-in datasets: an embedded synthetic one for CPU runs, and CIFAR-10 (the paper's).

``datasets.synthetic`` is generated on the fly, so the critical-period experiments run on a
laptop in minutes with nothing to download (PAPER.md, "Small, fast cases"). Its generative
model, for an image of class ``k`` on a ``size``×``size`` grid:

    image = 0.5 + scale * ( fine * tile_k(rolled by a random shift, repeated every 4 pixels)
                          + coarse * up(template_k + jitter * field)
                          + pink * pink_noise + white * white_noise )

- ``tile_k`` is a fixed 4×4 pattern with every row and column summing to zero, repeated
  across the image with a random per-image cyclic shift. The ``Blur`` deficit at its default
  size (16-pixel images to 4×4) is an antialiasing triangle filter that weighs the four
  phases of a 4-pixel period equally, so it erases this *fine cue* almost exactly (about
  0.4% of its RMS remains). The tile set is the most shift-separable of 64 random draws.
- ``template_k`` is a fixed random field on a (size/4)×(size/4) grid and ``field`` a fresh
  one per image; ``up`` is bilinear upsampling. Blur keeps this *coarse cue*, which alone
  identifies the class only about half of the time.
- ``pink_noise`` (amplitude 1/f) and ``white_noise`` are per-image nuisances.
- Classes come in pairs (0, 1), (2, 3), ... whose tiles and templates are vertical flips of
  each other (an odd last class is flip-symmetric), and the noises are isotropic. So a
  vertically flipped image looks like one of the partner class: the vertical flip deficit
  keeps every low-level statistic and only changes the task, as in the paper.

``scale`` is one constant for the whole dataset, chosen so that every pixel lies in 0..1
without clipping (clipping would leak the fine cue through blur). The dataset is drawn
from its own ``seed`` parameter, not from the run seed, so all runs of a sweep share it.

``datasets.cifar10`` reads the ``cifar-10-batches-py`` folder of the python version of
CIFAR-10, and downloads it with torchvision when that is installed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from critui.errors import CritUIError
from critui.hookspecs import hookimpl
from critui.kinds import Dataset, DatasetTensors
from critui.params import Param

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that compute, not here: listing the plugins and
# checking a run's settings (`critui plugins`, a `critui run` or `sweep` before its workers
# start, the TUI's form) then never pay its import, about 1.8 s of a 2-s command.

# The fine cue repeats every PERIOD pixels: the factor by which Blur's default size
# (8 for 32-pixel images, the same ratio for others) downsamples.
PERIOD = 4
# The most any amplitude of the synthetic images may be: far above a useful value, far below
# what overflows float32 (1e308 became inf, then NaN, inside the worker).
AMPLITUDE_MAX = 1000.0


# --- synthetic: the class patterns ------------------------------------------------------------


def flip_partner(label: int, num_classes: int) -> int:
    """The class whose patterns are the vertical flip of ``label``'s (itself for an odd last one)."""
    partner = label ^ 1
    return partner if partner < num_classes else label


def pair_by_flip(first: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Stack K patterns from ``first`` (one per even class) so that class 2i+1 is 2i flipped.

    ``first`` is ceil(K/2)×C×H×W. An odd last class is made symmetric under flip so the
    set of patterns still maps onto itself.
    """
    import torch
    out = []
    for label in range(num_classes):
        base = first[label // 2]
        if label % 2 == 1:
            out.append(torch.flip(base, dims=(-2,)))
        elif flip_partner(label, num_classes) == label:
            out.append((base + torch.flip(base, dims=(-2,))) / 2)
        else:
            out.append(base)
    return torch.stack(out)


def random_tiles(num_classes: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """K×C×4×4 random fine patterns: every row and column sums to zero, unit RMS, flip-paired."""
    import torch
    raw = torch.randn((num_classes + 1) // 2, channels, PERIOD, PERIOD, generator=generator)
    # Double centring: zero row sums keep the cue out of the blurred image at the top and
    # bottom borders, zero column sums at the left and right ones; only the corners leak.
    raw = raw - raw.mean(dim=-1, keepdim=True)
    raw = raw - raw.mean(dim=-2, keepdim=True)
    tiles = pair_by_flip(raw, num_classes)
    return tiles / tiles.pow(2).mean(dim=(-3, -2, -1), keepdim=True).sqrt()


def shift_distance(tiles: torch.Tensor) -> torch.Tensor:
    """K×K RMS distance between tiles, minimised over the cyclic shifts an image may apply."""
    import torch
    rolled = torch.stack(
        [torch.roll(tiles, (dy, dx), dims=(-2, -1)) for dy in range(PERIOD) for dx in range(PERIOD)]
    )  # shifts×K×C×4×4
    diff = tiles[None, :, None] - rolled[:, None, :]
    return diff.pow(2).mean(dim=(-3, -2, -1)).sqrt().amin(dim=0)


def class_tiles(
    num_classes: int, channels: int, generator: torch.Generator, candidates: int = 64
) -> torch.Tensor:
    """The most separable of ``candidates`` random tile sets (largest smallest shift distance).

    A random draw sometimes holds two tiles, or a tile and its own flip, that nearly match
    after a shift; the fine cue then cannot tell those classes apart and clean accuracy
    would depend on the dataset seed.
    """
    import torch
    best, best_gap = None, -1.0
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool)
    for _ in range(candidates):
        tiles = random_tiles(num_classes, channels, generator)
        gap = shift_distance(tiles)[off_diagonal].min().item()
        if gap > best_gap:
            best, best_gap = tiles, gap
    return best


def class_templates(
    num_classes: int, channels: int, grid: int, generator: torch.Generator
) -> torch.Tensor:
    """K×C×grid×grid coarse random fields, flip-paired, with unit variance."""
    import torch
    raw = torch.randn((num_classes + 1) // 2, channels, grid, grid, generator=generator)
    templates = pair_by_flip(raw, num_classes)
    return templates / templates.std()


# --- synthetic: rendering images --------------------------------------------------------------


def upsample(fields: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling, the same interpolation Blur uses on its way back up."""
    import torch.nn.functional as F
    return F.interpolate(fields, size=(size, size), mode="bilinear", align_corners=False)


def fine_cue(
    tiles: torch.Tensor, labels: torch.Tensor, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Each image's class tile repeated across the image, cyclically shifted by a random (dy, dx)."""
    import torch
    n, channels = len(labels), tiles.shape[1]
    shifts = torch.randint(0, PERIOD, (n, 2), generator=generator)
    rows = (torch.arange(size)[None, :] + shifts[:, :1]) % PERIOD  # n×size
    cols = (torch.arange(size)[None, :] + shifts[:, 1:]) % PERIOD
    # Pixel (i, j) of image m shows tile entry ((i + dy_m) mod 4, (j + dx_m) mod 4).
    index = (rows[:, :, None] * PERIOD + cols[:, None, :]).flatten(1)  # n×size²
    flat = tiles[labels].flatten(2)  # n×C×16
    picked = torch.gather(flat, 2, index[:, None, :].expand(n, channels, -1))
    return picked.view(n, channels, size, size)


def coarse_cue(
    templates: torch.Tensor,
    labels: torch.Tensor,
    size: int,
    jitter: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The class template plus a per-image random field on the same grid, upsampled."""
    import torch
    fields = templates[labels]
    return upsample(fields + jitter * torch.randn(fields.shape, generator=generator), size)


def pink_noise(shape: tuple[int, int, int, int], generator: torch.Generator) -> torch.Tensor:
    """Stationary noise with amplitude spectrum 1/f (like natural images) and unit variance."""
    import torch
    h, w = shape[-2:]
    radius = (torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2).sqrt()
    # No DC term: the noise must not shift an image's mean brightness.
    gain = torch.where(radius > 0, 1 / radius.clamp(min=1e-12), torch.zeros(()))
    # Filtering unit white noise gives variance mean(gain²): divide by that constant rather
    # than by each batch's spread, so train and test images share one noise process.
    gain = gain / gain.pow(2).mean().sqrt()
    white = torch.randn(shape, generator=generator)
    return torch.fft.ifft2(torch.fft.fft2(white) * gain).real


def render(
    labels: torch.Tensor,
    tiles: torch.Tensor,
    templates: torch.Tensor,
    settings: dict[str, Any],
    generator: torch.Generator,
) -> torch.Tensor:
    """Zero-centred images N×C×size×size of the given labels (before scaling into 0..1)."""
    import torch
    size, n, channels = settings["size"], len(labels), tiles.shape[1]
    shape = (n, channels, size, size)
    return (
        settings["fine"] * fine_cue(tiles, labels, size, generator)
        + settings["coarse"] * coarse_cue(templates, labels, size, settings["jitter"], generator)
        + settings["pink"] * pink_noise(shape, generator)
        + settings["white"] * torch.randn(shape, generator=generator)
    )


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` labels in random order with every class as equally often as ``n`` allows."""
    import torch
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]


def synthetic_class_names(num_classes: int) -> list[str]:
    """``0a, 0b, 1a, 1b, ...``: the letters mark the two members of a flip pair."""
    return [f"{k // 2}{'ab'[k % 2]}" for k in range(num_classes)]


def synthetic_patterns(settings: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The class tiles (K×C×4×4) and coarse templates (K×C×g×g) that ``settings`` define."""
    import torch
    generator = torch.Generator().manual_seed(3 * settings["seed"])
    tiles = class_tiles(settings["classes"], settings["channels"], generator)
    grid = settings["size"] // PERIOD
    return tiles, class_templates(settings["classes"], settings["channels"], grid, generator)


def check_synthetic(settings: dict[str, Any]) -> None:
    """Refuse settings the generator cannot honour, with the fix."""
    size = settings["size"]
    if size % PERIOD:
        raise CritUIError(
            f"dataset.size={size} is not a multiple of {PERIOD}: the synthetic dataset's fine "
            f"cue repeats every {PERIOD} pixels and blur erases it only when whole periods fit. "
            f"Use a size such as 16 or 32."
        )


def generate_synthetic(settings: dict[str, Any]) -> DatasetTensors:
    """Draw the whole synthetic dataset from ``settings`` (the parameters of ``Synthetic``)."""
    import torch
    check_synthetic(settings)
    num_classes, seed = settings["classes"], settings["seed"]
    # Separate streams, so changing n_test does not redraw the patterns or the train images
    # (only the shared 0..1 scale below moves, which normalisation undoes).
    tiles, templates = synthetic_patterns(settings)
    train_gen, test_gen = (torch.Generator().manual_seed(3 * seed + i) for i in (1, 2))
    train_y = balanced_labels(settings["n_train"], num_classes, train_gen)
    test_y = balanced_labels(settings["n_test"], num_classes, test_gen)
    train_z = render(train_y, tiles, templates, settings, train_gen)
    test_z = render(test_y, tiles, templates, settings, test_gen)
    # One linear map into 0..1 for the whole dataset: clipping would be nonlinear and
    # would let the fine cue survive blur.
    peak = max(train_z.abs().max().item(), test_z.abs().max().item(), 1e-12)
    train_x = (0.5 + 0.5 * train_z / peak).float()
    test_x = (0.5 + 0.5 * test_z / peak).float()
    return DatasetTensors(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        classes=synthetic_class_names(num_classes),
        mean=tuple(train_x.mean(dim=(0, 2, 3)).tolist()),
        std=tuple(train_x.std(dim=(0, 2, 3)).tolist()),
        augment="none",
        info={"dataset_seed": seed},
    )


class Synthetic(Dataset):
    """Procedurally generated images with a fine cue that blur erases and a coarse one it keeps.

    The CPU default (PAPER.md, "Small, fast cases"); see the module docstring for the
    generative model. Drawn from its own ``seed``, so every run of a sweep sees the same data.
    The default strengths were tuned with ``models.cnn`` (depth 6; SGD lr 0.05·0.85^epoch,
    momentum 0.9, weight decay 5e-4, batch 128, 20 epochs; seeds 0-2): about 93% test
    accuracy clean (87-96%), about 40% on clean test images and 49% on blurred ones after 24
    blurred epochs, about 50% when blurred for 8-24 epochs before the 20 clean ones, and
    85-95% with vertical flip instead of blur. A weaker fine cue (0.16) made clean training
    find the tile only for some seeds (74-89% clean), which made the no-deficit baseline the
    noisiest run of a sweep (docs/results.md).
    """

    name = "synthetic"
    description = (
        "Generated 16×16 images, 10 classes: a fine 4-pixel tile that blur erases, a coarse "
        "cue it keeps, 1/f and white noise; flip-paired classes. No download."
    )
    params = (
        Param(
            "seed",
            "int",
            0,
            "seed of the dataset itself (not the run seed): all runs share one dataset",
            min=0,
            max=2**32 - 1,
        ),
        Param(
            "size",
            "int",
            16,
            "image side in pixels, a multiple of 4 (blur's default maps it to size/4)",
            min=8,
            max=256,
        ),
        Param(
            "channels",
            "int",
            1,
            "image channels; each draws its own patterns and noise",
            min=1,
            max=4,
        ),
        Param(
            "classes",
            "int",
            10,
            "number of classes, in vertical-flip pairs (0a, 0b, 1a, 1b, ...)",
            min=2,
            max=100,
        ),
        Param("n_train", "int", 3000, "training images, class-balanced", min=1, max=1_000_000),
        Param("n_test", "int", 2000, "test images, class-balanced", min=1, max=1_000_000),
        Param(
            "fine",
            "float",
            0.2,
            "amplitude of the fine cue: the class's zero-sum 4×4 tile, repeated with a random "
            "shift; blur erases it",
            min=0.0,
            max=AMPLITUDE_MAX,
        ),
        Param(
            "coarse",
            "float",
            1.0,
            "amplitude of the coarse cue: the class's random (size/4)² field, bilinearly "
            "upsampled; blur keeps it",
            min=0.0,
            max=AMPLITUDE_MAX,
        ),
        Param(
            "jitter",
            "float",
            2.3,
            "per-image random field added to the coarse template, relative to it: higher "
            "means the coarse cue alone identifies fewer images",
            min=0.0,
            max=AMPLITUDE_MAX,
        ),
        Param(
            "pink", "float", 0.4, "amplitude of the per-image 1/f (pink) nuisance noise", min=0.0,
            max=AMPLITUDE_MAX,
        ),
        Param("white", "float", 0.12, "amplitude of the per-image white noise", min=0.0, max=AMPLITUDE_MAX),
    )

    def check(self, params: dict[str, Any]) -> None:
        check_synthetic(params)

    def load(self, params: dict[str, Any], seed: int) -> DatasetTensors:
        return generate_synthetic(params)


# --- cifar10 ----------------------------------------------------------------------------------

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
# The normalisation constants of the paper's training setup (PAPER.md).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def default_data_root() -> Path:
    """Where datasets live when ``dataset.root`` is empty: $CRITUI_DATA, else a per-user folder."""
    from_env = os.environ.get("CRITUI_DATA", "").strip()
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("critui")) / "data"


def data_root(root: str) -> Path:
    """The folder that holds (or will hold) ``cifar-10-batches-py``."""
    return Path(root).expanduser() if root.strip() else default_data_root()


def missing_cifar_message(root: Path, reason: str) -> str:
    """One paragraph: the folder looked for, why it could not be fetched, and the fixes."""
    return (
        f"CIFAR-10 is not in {root / CIFAR_FOLDER} and {reason}. To fix it, put the extracted "
        f"'{CIFAR_FOLDER}' folder (from cifar-10-python.tar.gz, "
        f"https://www.cs.toronto.edu/~kriz/cifar.html) in {root}, or point critui at the folder "
        f"that holds it with --set dataset.root=DIR or CRITUI_DATA=DIR, or run "
        f"pip install 'critui[vision]' so that critui can download it (about 170 MB)."
    )


def download_cifar10(root: Path) -> None:
    """Fetch and extract CIFAR-10 into ``root`` with torchvision, or say why that cannot work."""
    try:
        import torchvision
    except ImportError:
        raise CritUIError(
            missing_cifar_message(root, "torchvision, which downloads it, is not installed")
        ) from None
    except Exception as err:  # a torchvision built for another torch fails in many ways
        raise CritUIError(
            missing_cifar_message(root, f"torchvision could not be imported ({err})")
        ) from err
    try:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # offline: URLError, socket errors, a truncated archive...
        reason = f"downloading it failed ({type(err).__name__}: {err}; are you offline?)"
        raise CritUIError(missing_cifar_message(root, reason)) from err


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×3×32×32 uint8) and labels (N int64) of one python-format CIFAR-10 batch.

    It unpickles the file, which trusts the folder it is in (see :class:`Cifar10`).
    """
    if not path.is_file():
        raise CritUIError(
            f"{path} is missing: the {CIFAR_FOLDER} folder is incomplete. It needs "
            f"{', '.join(CIFAR_TRAIN_FILES)} and {CIFAR_TEST_FILE}; extract "
            f"cifar-10-python.tar.gz again, or delete the folder to download it afresh."
        )
    try:
        with path.open("rb") as handle:
            # The official python version is pickled; latin1-era keys come back as bytes.
            batch = pickle.load(handle, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise CritUIError(
            f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err}). Extract "
            f"cifar-10-python.tar.gz (the python version) again."
        ) from err
    if len(images) != len(labels):
        raise CritUIError(
            f"{path} has {len(images)} images but {len(labels)} labels; extract it again."
        )
    return images, labels


def read_cifar_split(folder: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The concatenated batches ``files`` of ``folder`` as tensors."""
    import torch
    parts = [read_cifar_batch(folder / name) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def read_cifar_classes(folder: Path) -> list[str]:
    """Class names from ``batches.meta``, or the standard ten when it is absent."""
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CIFAR_CLASSES)
    with meta.open("rb") as handle:
        names = pickle.load(handle, encoding="bytes").get(b"label_names", [])
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] or list(CIFAR_CLASSES)


def balanced_prefix(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first ``n`` images taking classes in turn (the first of each class,
    then the second of each, ...), in file order. ``n`` = 0 or more than all: every index."""
    import torch
    if n <= 0 or n >= len(labels):
        return torch.arange(len(labels))
    rank = torch.empty_like(labels)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    # Stable sort by rank: round r holds the r-th image of every class, in file order.
    order = torch.sort(rank, stable=True).indices
    return order[:n].sort().values


class Cifar10(Dataset):
    """CIFAR-10, the paper's dataset, read from the python-format batches (torchvision optional).

    Looks for ``<root>/cifar-10-batches-py``; downloads it with torchvision when that is
    installed and ``download`` is on. ``n_train``/``n_test`` take a class-balanced prefix
    for quick runs.

    The python-format batches are pickles, and unpickling runs whatever code a pickle names:
    critui trusts the ``root`` folder as it would a program there. Point it only at a folder
    that you (or torchvision's download, which checks the archive's MD5) filled, never at one
    that others may write to. (Checkpoints are read without this trust: tensors only.)
    """

    name = "cifar10"
    description = "CIFAR-10 (50k/10k 32×32 colour images), from cifar-10-batches-py; pad-crop-flip augmentation."
    params = (
        Param(
            "root",
            "str",
            "",
            "folder holding cifar-10-batches-py; empty means $CRITUI_DATA, else the per-user "
            "critui data folder. Its batches are pickles, which can run code: trust this folder "
            "as you would a program (only one you or torchvision filled)",
        ),
        Param(
            "download",
            "bool",
            True,
            "download with torchvision when the folder is missing and torchvision is installed",
        ),
        Param(
            "n_train",
            "int",
            0,
            "use only this many training images, class-balanced (0 = all 50,000)",
            min=0,
            max=50_000,
        ),
        Param(
            "n_test",
            "int",
            0,
            "use only this many test images, class-balanced (0 = all 10,000)",
            min=0,
            max=10_000,
        ),
    )

    def check(self, params: dict[str, Any]) -> None:
        """Fail before a run is created when the folder is missing and cannot be downloaded."""
        root = data_root(params["root"])
        if (root / CIFAR_FOLDER).is_dir():
            return
        if not params["download"]:
            raise CritUIError(missing_cifar_message(root, "downloading is off (dataset.download=false)"))
        try:
            import torchvision  # noqa: F401
        except Exception:  # noqa: BLE001 - missing, or built for another torch
            raise CritUIError(
                missing_cifar_message(root, "torchvision, which downloads it, is not installed")
            ) from None

    def load(self, params: dict[str, Any], seed: int) -> DatasetTensors:
        root = data_root(params["root"])
        folder = root / CIFAR_FOLDER
        if not folder.is_dir():
            if not params["download"]:
                raise CritUIError(
                    missing_cifar_message(root, "downloading is off (dataset.download=false)")
                )
            download_cifar10(root)
        train_x, train_y = read_cifar_split(folder, CIFAR_TRAIN_FILES)
        test_x, test_y = read_cifar_split(folder, (CIFAR_TEST_FILE,))
        keep_train = balanced_prefix(train_y, params["n_train"])
        keep_test = balanced_prefix(test_y, params["n_test"])
        return DatasetTensors(
            train_x=train_x[keep_train],
            train_y=train_y[keep_train],
            test_x=test_x[keep_test],
            test_y=test_y[keep_test],
            classes=read_cifar_classes(folder),
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            augment="crop-flip",
            info={"folder": str(folder)},
        )


@hookimpl
def critui_register_datasets(register):
    register(Synthetic)
    register(Cifar10)
