"""`videoprune export-lmms-task`: the synthetic temporal video-QA suite as an lmms-eval task folder that needs no hub.

:func:`export_lmms_task` writes into ``DIR``::

    videoprune_temporal_qa.yaml    the task (dataset_path: json, exact-match metric, 1 answer token)
    utils.py                       doc_to_visual / doc_to_text (standalone: needs no videoprune)
    videoprune_temporal_qa.jsonl   one line per clip: id, video (relative to DIR), question, answer, type
    data/<split>-seed<S>/          the clips and the full scene JSONL, as ``bench accuracy --data-dir DIR/data`` reads them

so ``lmms-eval --include_path DIR --tasks videoprune_temporal_qa --model ...`` runs offline,
and ``videoprune bench accuracy --data-dir DIR/data --seed S --num N`` scores the very same clips.
Clips are rendered with the preprocessing of ``model`` (frames, size, fps from its
``videoprune.json``; the model itself is not loaded). The task's answers are one token long,
as the benchmark scores them (the answer words are single tokens of the embedded model).
The YAML holds the JSONL's absolute path (``datasets`` resolves relative ``data_files``
against the working directory): re-export after moving the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TASK_NAME", "ExportTaskConfig", "export_lmms_task", "add_parser", "run"]

TASK_NAME = "videoprune_temporal_qa"

_UTILS = '''"""doc_to_visual / doc_to_text of the videoprune_temporal_qa task (written by `videoprune export-lmms-task`)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    """The document's clip as a one-element list of an absolute path; a missing clip names the document."""
    path = HERE / doc["video"]
    if not path.is_file():
        raise FileNotFoundError(f"videoprune_temporal_qa document {doc['id']!r}: video not found: {path}")
    return [str(path)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The question alone, exactly as `videoprune bench accuracy` asks it."""
    return doc["question"]
'''

_YAML = """# written by `videoprune export-lmms-task` (split {split}, seed {seed}, {num} clips, model {model})
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 1
  do_sample: false
  until: []
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@dataclass
class ExportTaskConfig:
    """Settings of `videoprune export-lmms-task` (the CLI flags are built from these fields)."""

    split: str = field(default="test", metadata={"help": "split of the synthetic suite: test or val (default: test)"})
    seed: int = field(default=0, metadata={"help": "seed of the generated clips (default: 0)"})
    num: int = field(default=200, metadata={"help": "number of clips (default: 200)"})
    model: str = field(default="default", metadata={
        "help": "model whose preprocessing (frames, size, fps) the clips are rendered for (default: the embedded one)"})

    def __post_init__(self):
        if self.split not in ("test", "val"):
            raise ValueError(f"split must be test or val (train clips are what models learn from); got {self.split!r}")
        if self.num < 1:
            raise ValueError(f"num must be >= 1, got {self.num}")


def _clip_settings(model: str) -> dict:
    """Frames, frame size and fps of ``model``'s ``videoprune.json``, without loading the weights."""
    from ..bundle import SPEC_FILE, ModelBundle
    from ..hub import resolve

    spec_path = Path(resolve(model)) / SPEC_FILE
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    defaults = ModelBundle.__dataclass_fields__
    return {"num_frames": spec.get("num_frames", defaults["num_frames"].default),
            "size": spec.get("frame_size") or 112,
            "fps": spec.get("fps", defaults["fps"].default)}


def export_lmms_task(out_dir: str | Path, cfg: ExportTaskConfig | None = None, progress: bool = True) -> dict:
    """Write the task folder ``out_dir`` (see the module docstring); return ``{task, out, yaml, jsonl, data_dir, num}``."""
    from ..bench.accuracy import read_records
    from ..data.synthetic import write_dataset

    cfg = cfg or ExportTaskConfig()
    out = Path(out_dir).resolve()
    data_dir = out / "data"
    clips = _clip_settings(cfg.model)
    if not clips["num_frames"]:
        raise ValueError(f"model {cfg.model!r} samples by fps; the synthetic clips need its fixed frame count")
    # the same folder and file bench accuracy's --data-dir reads, so both score the same clips
    full = write_dataset(data_dir / f"{cfg.split}-seed{cfg.seed}", cfg.split, cfg.num, cfg.seed,
                         num_frames=clips["num_frames"], size=clips["size"], fps=clips["fps"], progress=progress)
    jsonl = out / f"{TASK_NAME}.jsonl"
    with jsonl.open("w") as fh:
        for i, r in enumerate(read_records(full)):
            fh.write(json.dumps({"id": f"{cfg.split}-{cfg.seed}-{i:05d}",
                                 "video": str(Path(r["video"]).relative_to(out)),
                                 "question": r["question"], "answer": r["answer"], "type": r["type"]}) + "\n")
    (out / "utils.py").write_text(_UTILS)
    yaml = out / f"{TASK_NAME}.yaml"
    yaml.write_text(_YAML.format(task=TASK_NAME, jsonl=json.dumps(str(jsonl)), split=cfg.split, seed=cfg.seed,
                                 num=cfg.num, model=cfg.model))
    return {"task": TASK_NAME, "out": str(out), "yaml": str(yaml), "jsonl": str(jsonl), "data_dir": str(data_dir),
            "num": cfg.num}


# ---- `videoprune export-lmms-task` (registered in cli.SUBCOMMANDS) -----------------------------
def add_parser(p) -> None:
    """Flags of ``videoprune export-lmms-task DIR``: the folder, then :class:`ExportTaskConfig`'s fields."""
    from .._config_args import add_config_args

    p.add_argument("dir", help="folder to write the task into (created; files of an earlier export are replaced)")
    add_config_args(p, ExportTaskConfig)


def run(args) -> int:
    """Export, then print the run command on stderr and one JSON object as the last stdout line."""
    import sys

    from .._config_args import config_from_args

    cfg = config_from_args(ExportTaskConfig, args)
    result = export_lmms_task(args.dir, cfg, progress=sys.stderr.isatty() or getattr(args, "progress", False))
    print(f"run it: lmms-eval --include_path {result['out']} --tasks {TASK_NAME} --model videoprune "
          f"--model_args pretrained={cfg.model},method=evs,rate=0.75", file=sys.stderr)
    print(json.dumps(result))
    return 0
