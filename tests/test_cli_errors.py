"""Bad input gets one clear paragraph and exit status 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"



@pytest.fixture
def critui(critui_refused):
    """Every command here is refused before a worker starts (or is a ``--dry-run``): run in this
    process through the console entry point; one that starts a worker fails its test."""
    return critui_refused


def assert_clean_error(result, *phrases: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in text, text


def test_unknown_plugin_id_names_known_ids_and_the_closest(critui):
    result = critui("run", "--plugin", "deficits.blurr")
    assert_clean_error(result, "Unknown deficits plugin 'deficits.blurr'", "Did you mean deficits.blur?",
                       "deficits.flip", "deficits.noise")


def test_unknown_kind_explains_the_id_form(critui):
    assert_clean_error(critui("run", "--plugin", "blur"), "KIND.NAME", "Did you mean deficits.blur?")


def test_two_plugins_of_one_single_kind_are_refused_not_silently_one_taken(critui):
    assert_clean_error(critui("run", "--plugin", "deficits.blur", "--plugin", "deficits.flip"),
                       "--plugin deficits.blur and --plugin deficits.flip both choose the deficit",
                       '"deficit.id" = ["deficits.blur", "deficits.flip"]')
    assert_clean_error(critui("run", "--plugin", "models.fc", "--plugin", "models.cnn"), "both choose the model")
    # one plugin under two names, and two metrics, are fine
    assert critui("run", "--plugin", "deficits.flip", "--plugin", "deficits.vflip", "--dry-run").returncode == 0
    assert critui("run", "--plugin", "metrics.fisher", "--plugin", "metrics.deficit-accuracy",
                  "--dry-run").returncode == 0


def test_bad_set_value_names_the_bound(critui):
    assert_clean_error(critui("run", "--plugin", "deficits.blur", "--set", "deficit.size=0"),
                       "deficit.size=0 is below its minimum of 1")
    assert_clean_error(critui("run", "--set", "optim.lr=fast"), "optim.lr must be a float")
    assert_clean_error(critui("run", "--set", "optim.lrr=0.1"), "Did you mean optim.lr?")


def test_malformed_toml_names_the_line(critui, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text("[train]\nepochs = 4\n[deficit\nid = 'deficits.blur'\n")
    assert_clean_error(critui("run", "--config", str(config)), "exp.toml is not valid TOML", "line 3")


def test_invalid_value_in_toml_names_the_line(critui, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text("[train]\nepochs = 4\n\n[optim]\nmomentum = 1.5\n")
    assert_clean_error(critui("run", "--config", str(config)), "exp.toml, line 5", "optim.momentum=1.5 is above its maximum of 1")


def test_a_setting_outside_its_table_says_which_table(critui, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text("name = 'x'\nlr = 0.1\n")
    assert_clean_error(critui("run", "--config", str(config)), "exp.toml, line 2", "lr is a setting of [optim]")


def test_cuda_without_cuda_says_what_to_do(critui):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_clean_error(critui("run", "--device", "cuda"), "--device cuda was asked for", "sees no CUDA GPU", "--device cpu")


def test_missing_cifar10_offline_says_where_to_put_the_files(critui, home, tmp_path):
    empty = tmp_path / "nodata"
    result = critui("run", "--plugin", "datasets.cifar10", "--epochs", "1", "--set", f"dataset.root={empty}",
                    env={"CRITUI_LOAD_PLUGINS": ""})
    assert_clean_error(result, "cifar-10-batches-py", str(empty), "pip install 'critui[vision]'", "CRITUI_DATA=DIR")
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run was created for a dataset that cannot load"


def test_a_sweep_whose_runs_could_only_fail_stops_before_creating_any(critui, home, tmp_path):
    # The paper's CIFAR-10 sweep without the data: one clear error, not 13 failed runs.
    empty = tmp_path / "nodata"
    result = critui("sweep", str(CONFIGS / "fig1-removal.toml"), "--set", f"dataset.root={empty}",
                    "--set", "dataset.download=false")
    assert_clean_error(result, "cifar-10-batches-py", str(empty))
    # A synthetic image size inside the parameter's bounds that the generator cannot draw.
    result = critui("sweep", str(CONFIGS / "demo-removal.toml"), "--set", "dataset.size=18")
    assert_clean_error(result, "dataset.size=18 is not a multiple of 4", "16 or 32")
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "runs were created that could only fail"


def test_unknown_run_and_home_errors(critui):
    assert_clean_error(critui("show", "nope"), "No run 'nope'")
    assert_clean_error(critui("run", "--set", "nonsense"), "KEY=VALUE")


def test_a_full_disk_gets_the_fix_and_leaves_no_half_made_run(home, monkeypatch, capsys):
    import errno
    import os

    from critui import cli

    real = Path.write_text

    def write_text(path, *args, **kwargs):
        if home in path.parents:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, *args, **kwargs)

    def atomic_write(path, *args, **kwargs):
        return write_text(Path(path), *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr("critui.runs.store.atomic_write", atomic_write)  # how a run's files are made
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--home", str(home), "--epochs", "1"])
    assert exited.value.code == 2
    text = " ".join(capsys.readouterr().err.split())
    assert "No space left on device" in text and "The disk is full" in text and "--home DIR" in text
    assert "Traceback" not in text
    assert not any((home / "runs").iterdir())  # no staging directory left behind


@pytest.mark.parametrize(("code", "fix"), [("ENOSPC", "The disk is full"), ("EROFS", "Choose a writable"), ("ENOENT", None)])
def test_only_errors_the_machine_caused_lose_their_traceback(code, fix):
    import errno
    import os

    from critui.errors import describe_os_error

    number = getattr(errno, code)
    message = describe_os_error(OSError(number, os.strerror(number), "/data/critui/history.json"))
    if fix is None:
        assert message is None  # anything else is a bug, and keeps its traceback
    else:
        assert fix in message and "(/data/critui/history.json)" in message and "--home DIR" in message


def test_home_before_the_command_is_the_commands_home(critui_subprocess, tmp_path):
    """`critui --home DIR runs` reads DIR, not CRITUI_HOME or the per-user folder."""
    critui = critui_subprocess  # it trains a run: a real worker, not a refusal
    other = tmp_path / "other-home"
    made = critui("--home", str(other), "run", "--epochs", "1", "--set", "dataset.n_train=300",
                  "--set", "dataset.n_test=200", "--set", "train.threads=1")
    assert made.returncode == 0, made.stderr
    assert (other / "runs").is_dir() and len(list((other / "runs").iterdir())) == 1
    listed = critui("--home", str(other), "runs", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1
    assert "No runs" in critui("runs").stdout or critui("runs", "--json").stdout.strip() == "[]"
