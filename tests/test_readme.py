"""The README's set-up commands are the ones CI runs, and its example config is valid."""

from pathlib import Path

from critui.config import build_spec, load_toml
from critui.plugins import get_registry

REPO = Path(__file__).resolve().parents[1]


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.startswith("python3 -m venv")]


def test_ci_runs_the_readme_commands_main_job_first_and_tests_last():
    readme = (REPO / "README.md").read_text()
    commands = ci_commands()
    assert len(commands) >= 2
    for command in commands:
        assert command in readme, command
    assert "critui run" in commands[0]
    assert "pytest" in commands[-1]
    assert readme.index(commands[0]) < readme.index(commands[-1])


def test_every_config_in_configs_is_valid():
    registry = get_registry()
    for path in sorted((REPO / "configs").glob("*.toml")):
        config, text = load_toml(path)
        if "sweep" in config:
            continue  # sweep files are checked by the sweep tests
        build_spec(registry, config, source=(str(path), text))


def test_the_demo_configs_pin_one_thread_so_their_numbers_do_not_depend_on_jobs():
    # With `--jobs 1` a sweep gives each run every core, and 2 threads instead of 1 moved
    # the demo's flip run removed at t0 = 16 by 3.9 points (docs/results.md).
    demos = sorted((REPO / "configs").glob("demo-*.toml"))
    assert len(demos) >= 5
    for path in demos:
        config, _text = load_toml(path)
        assert config.get("train", {}).get("threads") == 1, path.name
