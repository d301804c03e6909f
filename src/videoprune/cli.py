"""`videoprune` command line: one function pair per subcommand, flags built from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable

__all__ = ["main", "SUBCOMMANDS", "add_config_args", "config_from_args"]


# --------------------------------------------------------------------------------------------
# dataclass -> argparse
# --------------------------------------------------------------------------------------------
def _base_type(cls, f: dataclasses.Field):
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def add_config_args(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """Add one flag per field of dataclass ``cls`` (help from ``field.metadata["help"]``).

    The flag is ``metadata["flag"]`` or ``--<prefix><name with dashes>``; bools become switches;
    the parsed value lands in ``args.<prefix><name>``; defaults stay the dataclass's.
    """
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag", "--" + (prefix + f.name).replace("_", "-"))
        kind = _base_type(cls, f)
        kwargs = {"dest": prefix + f.name, "default": None, "help": f.metadata.get("help")}
        if kind is bool:
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, type=kind, metavar=f.name.upper(), **kwargs)


def config_from_args(cls, args: argparse.Namespace, prefix: str = ""):
    """Build ``cls`` from the flags :func:`add_config_args` added; unset flags keep the defaults."""
    given = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if v is not None and v is not False})


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


def _bench_parser(p: argparse.ArgumentParser) -> None:
    from .bench import BENCHES  # noqa: PLC0415

    sub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, (help_text, add_flags, _) in BENCHES.items():
        add_flags(sub.add_parser(name, help=help_text, description=help_text))


def _bench_run(args: argparse.Namespace) -> int:
    from .bench import BENCHES  # noqa: PLC0415

    return BENCHES[args.bench][2](args)


Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

# name -> (one-line help, add flags, run). Adding a subcommand is adding an entry here.
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

    cfg = config_from_args(AskConfig, args)
    if args.video is None:
        args.video, args.question = sample_video(), args.question or sample_question()
        print(f"video         {args.video} (bundled sample)\nquestion      {args.question}", file=sys.stderr)
    if args.question is None:
        raise ValueError("give a question after the video")
    result = ask(args.video, args.question, cfg)
    print(json.dumps(result.to_json()) if args.json else format_answer(result))
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "analyze": ("show which video tokens EVS keeps: summary, PNG contact sheet, JSON report",
                _analyze_parser, _analyze_run),
    "train": ("fine-tune a video VLM with pruning on (EVS uptraining; torchrun for DDP/FSDP) and export it",
              _train_parser, _train_run),
    "ask": ("answer a question about a video with a pruned VLM (default: the embedded model) and show the savings",
            _ask_parser, _ask_run),
    "bench": ("benchmarks: 'bench speed' (TTFT, prefill, decode, memory) and 'bench accuracy' (accuracy vs kept tokens)",
              _bench_parser, _bench_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoprune", description="Prune temporally redundant video tokens.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_flags, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_flags(p)
        p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
        p.add_argument("--progress", action="store_true", help="show progress bars even when stderr is not a terminal")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``videoprune`` script; returns the exit status (0 ok, 1 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
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
