"""Benchmark harnesses (`videoprune bench NAME`): one registry entry per benchmark."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["BENCHES"]


def _speed_parser(p: argparse.ArgumentParser) -> None:
    from .._config_args import add_config_args
    from .speed import SpeedConfig

    add_config_args(p, SpeedConfig)


def _speed_run(args: argparse.Namespace) -> int:
    import json
    import sys

    from .._config_args import config_from_args
    from .speed import SpeedConfig, format_table, noise_warnings, run_speed, summary, write_outputs

    cfg = config_from_args(SpeedConfig, args)
    for warning in noise_warnings(cfg):  # before the run, so it can be stopped; also in the report
        print(f"videoprune bench speed: warning: {warning}", file=sys.stderr)
    report = run_speed(cfg, progress=sys.stderr.isatty() or getattr(args, "progress", False))
    json_path, png_path = write_outputs(report, cfg.out)
    print(format_table(report))
    print(f"wrote {json_path} (full report) and {png_path}")
    sys.stdout.flush()
    print(json.dumps(summary(report, json_path, png_path)))
    return 0


def _accuracy_parser(p: argparse.ArgumentParser) -> None:
    from .._config_args import add_config_args
    from .accuracy import AccuracyConfig

    add_config_args(p, AccuracyConfig)


def _accuracy_run(args: argparse.Namespace) -> int:
    import json
    import sys

    from .._config_args import config_from_args
    from .accuracy import AccuracyConfig, format_table, run_accuracy, summary

    cfg = config_from_args(AccuracyConfig, args)
    report = run_accuracy(cfg, progress=sys.stderr.isatty() or getattr(args, "progress", False))
    print(format_table(report["results"]))
    if report["calibration_num"]:
        print(f"evs-threshold calibrated on {report['calibration_num']} val clips (--calibration-num)")
    print(f"wrote {report['out']}/accuracy.json (full report) and {report['out']}/accuracy.png")
    sys.stdout.flush()
    print(json.dumps(summary(report)))
    return 0


#: name -> (one-line help, add flags, run). Adding a benchmark is adding an entry here.
BENCHES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "speed": ("TTFT / prefill / decode / memory of pruning methods over frames x rates", _speed_parser, _speed_run),
    "accuracy": ("accuracy vs kept-token fraction per method on the synthetic temporal video-QA",
                 _accuracy_parser, _accuracy_run),
}
