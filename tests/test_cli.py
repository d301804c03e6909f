"""`videoprune` as a command: common flags at every level, defaults in --help, one-line errors, fast help."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import videoprune
from videoprune import hub
from videoprune.cli import add_config_args, build_parser, main

SRC = str(Path(videoprune.__file__).parents[1])
SAMPLE = str(hub.ASSETS / "sample.mp4")
TRAIN_REQUIRED = ["--data", "d.jsonl", "--model", "tiny:qwen2_vl", "--output-dir", "o"]

# every place a subcommand can stand, with the words it needs to parse
COMMANDS = [["analyze", "v.mp4"], ["train", *TRAIN_REQUIRED], ["ask"], ["bench", "speed"], ["bench", "accuracy"]]


def run_cli(*args: str, **env) -> subprocess.CompletedProcess:
    """``python -m videoprune.cli ARGS`` in a fresh interpreter (this checkout's sources first)."""
    environ = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-m", "videoprune.cli", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def parse(argv: list[str]):
    return build_parser(argv).parse_args(argv)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_help_imports_neither_torch_nor_transformers():
    """`videoprune --help` imports neither torch, transformers nor numpy, so the help stays instant."""
    code = ("import sys\nfrom videoprune.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": SRC}).stdout
    assert "HEAVY []" in out, out


def test_version_prints_the_package_version():
    """`videoprune --version` exits 0 and prints the package version."""
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"videoprune {videoprune.__version__}"


def test_bare_videoprune_prints_the_help_and_exits_0():
    """`videoprune` with no command prints the usage, listing the commands, and exits 0."""
    r = run_cli()
    assert r.returncode == 0 and r.stdout.startswith("usage: videoprune") and "ask" in r.stdout


def test_bare_bench_lists_the_benchmarks(capsys):
    """`videoprune bench` with no benchmark exits 0 and lists speed and accuracy."""
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert "speed" in out and "accuracy" in out


def placements(flag: str) -> list[list[str]]:
    """``flag`` before the command, right after its first word (after ``bench``) and at the end."""
    return [w[:i] + [flag] + w[i:] for w in COMMANDS for i in sorted({0, 1, len(w)})]


@pytest.mark.parametrize("argv", placements("--progress") + placements("--debug"), ids=" ".join)
def test_common_flags_work_at_every_level(argv):
    """--progress and --debug are accepted before the command, after its first word and at the end."""
    flag = next(a for a in argv if a in ("--progress", "--debug"))
    assert getattr(parse(argv), flag[2:]) is True


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_common_flags_are_off_unless_given(command):
    """--progress and --debug are off for every command unless given."""
    args = parse(command)
    assert args.progress is False and args.debug is False


def test_debug_before_the_command_lets_the_exception_through():
    """--debug before the command lets the original exception through instead of the one-line message."""
    with pytest.raises(ValueError):
        main(["--debug", "ask", SAMPLE, "q ?", "--rate", "1.5"])


def test_train_names_every_missing_required_flag_in_one_line(capsys):
    """`videoprune train` without its required flags exits 2 with one line naming all of them."""
    with pytest.raises(SystemExit) as e:
        main(["train"])
    assert e.value.code == 2
    assert "required: --data, --model, --output-dir" in one_line_error(capsys)


def test_a_bad_choice_is_one_line_listing_the_choices(capsys):
    """An invalid --method is one line naming the bad value and listing the valid choices."""
    with pytest.raises(SystemExit):
        main(["ask", "--method", "nope"])
    err = one_line_error(capsys)
    assert "invalid choice: 'nope'" in err and "evs-pixel" in err


def test_ask_help_lists_the_method_choices(capsys):
    """`videoprune ask --help` lists every method choice."""
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    assert "{evs,evs-pixel,evs-pre,random,stts,none}" in capsys.readouterr().out


def config_classes():
    from videoprune.ask import AskConfig
    from videoprune.bench.accuracy import AccuracyConfig
    from videoprune.bench.speed import SpeedConfig
    from videoprune.train.config import TrainConfig
    from videoprune.video.analyze import AnalyzeConfig
    from videoprune.video.decode import SamplingConfig, VideoLimits

    return [AskConfig, AnalyzeConfig, SamplingConfig, VideoLimits, TrainConfig, SpeedConfig, AccuracyConfig]


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_flag_that_is_not_a_switch_or_required_states_its_default(cls):
    """Every flag built from a config dataclass states its default in its help, unless it is a switch or required."""
    import argparse

    p = argparse.ArgumentParser()
    add_config_args(p, cls)
    for action in p._actions[1:]:
        if action.nargs == 0 or action.required:
            continue
        assert "default" in (action.help or ""), f"{cls.__name__} {action.option_strings}: {action.help!r}"


def test_a_dataclass_default_appears_in_the_help(capsys):
    """The default shown in the help is the dataclass field's own default, so the two cannot drift apart."""
    from videoprune.ask import AskConfig

    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    default = next(f.default for f in dataclasses.fields(AskConfig) if f.name == "max_new_tokens")
    assert f"(default: {default})" in " ".join(capsys.readouterr().out.split())


def test_an_uncached_hub_model_offline_is_one_line_naming_it(monkeypatch, capsys):
    """An uncached hub model with HF_HUB_OFFLINE set fails in one line naming the model and the variable, without
    touching the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_hub_reachable", lambda *a: pytest.fail("tried the network"))
    assert main(["ask", SAMPLE, "q ?", "--model", "Qwen/Nonexistent-xyz"]) == 1
    err = one_line_error(capsys)
    assert "'Qwen/Nonexistent-xyz'" in err and "HF_HUB_OFFLINE" in err


def test_a_missing_model_path_is_one_line_naming_it(capsys):
    """A --model path that does not exist fails in one line naming it."""
    assert main(["ask", SAMPLE, "q ?", "--model", "./no/such/export"]) == 1
    assert "'./no/such/export' does not exist" in one_line_error(capsys)


# --------------------------------------------------------------------------------------------
# ask: the note about the embedded model
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_ask(monkeypatch):
    """`ask` without a model: the CLI's own behaviour only."""
    from videoprune import ask as ask_module

    result = ask_module.AskResult("left", "left", 8, 8, [], 0.1, 0.1, "none", "m", None, "default", [0.1], [0.1], 1)
    monkeypatch.setattr(ask_module, "ask", lambda video, question, cfg: result)


@pytest.mark.parametrize("model, video, noted", [("default", "other", True), ("default-uptrained", "other", True),
                                                 ("default", "sample", False), ("{tmp}", "other", False)])
def test_the_embedded_model_on_another_video_gets_a_note(fake_ask, tmp_path, capsys, model, video, noted):
    """Only the embedded models, and only on a video that is not the bundled sample, get the note."""
    other = tmp_path / "bikes.mp4"
    other.write_bytes(b"")
    path = SAMPLE if video == "sample" else str(other)
    assert main(["ask", path, "what happens ?", "--model", model.format(tmp=tmp_path), "--json"]) == 0
    err = capsys.readouterr().err
    assert ("knows only the synthetic temporal video-QA" in err) is noted
    assert err.count("\n") <= 1


def test_json_output_is_unchanged_by_the_note(fake_ask, tmp_path, capsys):
    """The note about the embedded model goes to stderr only, so --json output stays parseable."""
    other = tmp_path / "bikes.mp4"
    other.write_bytes(b"")
    main(["ask", str(other), "what happens ?", "--json"])
    assert json.loads(capsys.readouterr().out)["answer"] == "left"
