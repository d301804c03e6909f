"""`videoprune` command line: one function pair per subcommand, flags built from the config dataclasses.

Only the subcommand being run has its flags built (that imports its config module), so
``videoprune --help`` imports neither torch nor transformers. ``--debug`` / ``--progress`` are
accepted at every level (``videoprune --debug bench speed`` = ``videoprune bench speed --debug``).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Callable, Sequence

from ._config_args import add_config_args, config_from_args, states_default

__all__ = ["main", "build_parser", "SUBCOMMANDS", "add_config_args", "config_from_args"]


# --------------------------------------------------------------------------------------------
# parser pieces shared by every level
# --------------------------------------------------------------------------------------------
class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to each option whose help does not already say its default.

    Options with no meaningful default (None, switches that are off, suppressed) are left as
    they are; :func:`add_config_args` writes the dataclass defaults into the help text itself.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or states_default(text) or action.default in (None, False)
                or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage of a big subcommand is many)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _add_common_flags(p: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` and ``--progress``; below the top level they default to SUPPRESS so a flag given
    higher up (``videoprune --debug ask ...``) is not reset by a subparser's own default."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help="show full tracebacks on errors")
    p.add_argument("--progress", action="store_true", default=default,
                   help="show progress bars even when stderr is not a terminal")


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("videoprune")
    except metadata.PackageNotFoundError:
        from . import __version__  # noqa: PLC0415

        return __version__


def _wanted(argv: Sequence[str] | None) -> str | None:
    """The first word of ``argv`` that is not an option: the subcommand to build (None: all of them)."""
    if argv is None:
        return None
    return next((a for a in argv if not a.startswith("-")), "")


def add_commands(parser: argparse.ArgumentParser, table: dict, dest: str, argv: Sequence[str] | None = None,
                 with_argv: bool = False) -> None:
    """One subparser per entry ``name -> (help, add_flags, run)`` of ``table``.

    With ``argv`` (the words after ``parser``'s own), only the subcommand named there gets its
    flags built; the others stay bare (building flags imports their config modules, which
    import torch, and they are not parsed anyway). ``with_argv``: call ``add_flags(p, rest)``
    with the words after the subcommand (None when building all), for nested subcommands.
    """
    sub = parser.add_subparsers(dest=dest, metavar=dest.upper())
    wanted = _wanted(argv)
    for name, (help_text, add_flags, _) in table.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_parser=p)  # the innermost parser chosen, for printing its help
        if wanted is None or wanted == name:
            if with_argv:
                add_flags(p, None if argv is None else argv[argv.index(name) + 1:])
            else:
                add_flags(p)
        _add_common_flags(p, top=False)


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------
def _analyze_parser(p: argparse.ArgumentParser) -> None:
    from .video.analyze import AnalyzeConfig  # noqa: PLC0415
    from .video.decode import SamplingConfig, VideoLimits  # noqa: PLC0415

    p.add_argument("video", help="video file (mp4, mkv, webm, avi, mov, ...)")
    add_config_args(p.add_argument_group("selection"), AnalyzeConfig)
    add_config_args(p.add_argument_group("sampling"), SamplingConfig)
    add_config_args(p.add_argument_group("limits"), VideoLimits)
    p.add_argument("--json", action="store_true", help="print the JSON report to stdout instead of the summary")


def _analyze_run(args: argparse.Namespace) -> int:
    from .video.analyze import AnalyzeConfig, analyze, format_summary  # noqa: PLC0415
    from .video.decode import SamplingConfig, VideoLimits  # noqa: PLC0415

    cfg = config_from_args(AnalyzeConfig, args)
    sampling = config_from_args(SamplingConfig, args)
    limits = config_from_args(VideoLimits, args)
    report = analyze(args.video, cfg, sampling, limits, progress=sys.stderr.isatty() or args.progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_summary(report))
    return 0


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def _train_parser(p: argparse.ArgumentParser) -> None:
    from .train.config import TrainConfig  # noqa: PLC0415

    add_config_args(p, TrainConfig)


def _train_run(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train  # noqa: PLC0415

    cfg = config_from_args(TrainConfig, args)
    result = train(cfg, progress=sys.stderr.isatty() or args.progress)
    print(json.dumps({"steps": result.steps, "final_loss": result.losses[-1] if result.losses else None,
                      "checkpoint": result.checkpoint_dir, "export": result.export_dir,
                      "skipped_lines": [b.line for b in result.skipped]}))
    return 0


def _bench_parser(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
    from .bench import BENCHES  # noqa: PLC0415

    add_commands(p, BENCHES, "bench", argv)


def _bench_run(args: argparse.Namespace) -> int:
    from .bench import BENCHES  # noqa: PLC0415

    if args.bench is None:  # bare `videoprune bench`: the list of benchmarks
        args._parser.print_help()
        return 0
    return BENCHES[args.bench][2](args)


# --------------------------------------------------------------------------------------------
# ask
# --------------------------------------------------------------------------------------------
def _ask_parser(p: argparse.ArgumentParser) -> None:
    from .ask import AskConfig  # noqa: PLC0415

    p.add_argument("video", nargs="?", default=None,
                   help="video file (default: the bundled sample clip, for the default model)")
    p.add_argument("question", nargs="?", default=None,
                   help="question about the video (default: the sample clip's question)")
    add_config_args(p, AskConfig)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _ask_run(args: argparse.Namespace) -> int:
    from .ask import AskConfig, ask, format_answer  # noqa: PLC0415
    from .bundle import sample_question, sample_video  # noqa: PLC0415
    from .hub import is_embedded  # noqa: PLC0415

    cfg = config_from_args(AskConfig, args)
    if args.video is None:
        args.video, args.question = sample_video(), args.question or sample_question()
        print(f"video         {args.video} (bundled sample)\nquestion      {args.question}", file=sys.stderr)
    elif is_embedded(cfg.model) and not _same_file(args.video, sample_video()):
        print(f"note: the embedded model {cfg.model!r} knows only the synthetic temporal video-QA it was trained on "
              f"(clips like the bundled sample, questions like {sample_question()!r}); on other videos its answer "
              "is a guess from that task's words. Pass --model ID_OR_PATH for a real VLM.", file=sys.stderr)
    if args.question is None:
        raise ValueError("give a question after the video")
    result = ask(args.video, args.question, cfg)
    print(json.dumps(result.to_json()) if args.json else format_answer(result))
    return 0


def _same_file(a: str, b: str) -> bool:
    import os  # noqa: PLC0415

    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


Subcommand = tuple[str, Callable[..., None], Callable[[argparse.Namespace], int]]

# name -> (one-line help, add flags, run). Adding a subcommand is adding an entry here. add_flags
# gets the parser and, as its second argument, the words after the subcommand (None: build all).
SUBCOMMANDS: dict[str, Subcommand] = {
    "analyze": ("show which video tokens EVS keeps: summary, PNG contact sheet, JSON report",
                lambda p, argv: _analyze_parser(p), _analyze_run),
    "train": ("fine-tune a video VLM with pruning on (EVS uptraining; torchrun for DDP/FSDP) and export it",
              lambda p, argv: _train_parser(p), _train_run),
    "ask": ("answer a question about a video with a pruned VLM (default: the embedded model) and show the savings",
            lambda p, argv: _ask_parser(p), _ask_run),
    "bench": ("benchmarks: 'bench speed' (TTFT, prefill, decode, memory) and 'bench accuracy' (accuracy vs kept tokens)",
              _bench_parser, _bench_run),
    # lmms-eval integration (issue #20): the code lives in integrations/lmms_task.py
    "export-lmms-task": ("write the synthetic temporal video-QA as an offline lmms-eval task folder (clips, JSONL, YAML)",
                         lambda p, argv: _lazy("integrations.lmms_task", "add_parser")(p),
                         lambda args: _lazy("integrations.lmms_task", "run")(args)),
}


def _lazy(module: str, name: str):
    """``videoprune.<module>.<name>``, imported when a subcommand is used, not when the CLI starts."""
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(f"videoprune.{module}"), name)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``videoprune`` parser; given the ``argv`` it will parse, only the chosen subcommand gets its flags."""
    parser = Parser(prog="videoprune", description="Prune temporally redundant video tokens.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_common_flags(parser, top=True)
    add_commands(parser, SUBCOMMANDS, "command", None if argv is None else list(argv), with_argv=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``videoprune`` script; returns the exit status.

    0 ok (a bare ``videoprune`` prints the help and exits 0), 1 bad input at run time,
    2 bad flags (one line from argparse), 130 interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    run = SUBCOMMANDS[args.command][2]
    try:
        return run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("videoprune: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, RuntimeError) as e:  # VideoError is a ValueError
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"videoprune {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
