"""Copy trained exports into the package as the embedded default models, plus the sample clip.

  python recipes/ship_default_model.py --base runs/base/run/export \
      --uptrained runs/up/run/export --stts runs/stts/run/export

Writes src/videoprune/assets/{default,default-uptrained}/ (safetensors weights, config,
tokenizer, videoprune.json; the STTS scorer and its stts_config.json beside the default model)
and assets/sample.mp4 + sample.json (a held-out clip: test split, never trained on). Refuses
to ship more than 20 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "src" / "videoprune" / "assets"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "videoprune.json")
LIMIT_MB = 20.0
SAMPLE = {"split": "test", "seed": 7, "index": 0, "qtype": "moved"}


def _copy_model(src: Path, dst: Path) -> None:
    missing = [f for f in MODEL_FILES if not (src / f).exists()]
    if missing:
        raise SystemExit(f"{src} lacks {missing}")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in MODEL_FILES:
        shutil.copy(src / f, dst / f)
    extra = src / "generation_config.json"
    if extra.exists():
        shutil.copy(extra, dst / extra.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="export of the base (unpruned) model")
    ap.add_argument("--uptrained", required=True, help="export of the EVS-uptrained model")
    ap.add_argument("--stts", required=True, help="export folder of the STTS scorer run")
    args = ap.parse_args()

    from videoprune.data.qa_model import FPS, FRAME_SIZE, NUM_FRAMES
    from videoprune.data.synthetic import make_scene, render_scene, write_clip
    from videoprune.stts.weights import SCORER_FILE, SETTINGS_FILE

    _copy_model(Path(args.base), ASSETS / "default")
    _copy_model(Path(args.uptrained), ASSETS / "default-uptrained")
    stts = Path(args.stts)
    shutil.copy(stts / SCORER_FILE, ASSETS / "default" / SCORER_FILE)
    meta = json.loads((stts / SETTINGS_FILE).read_text())
    meta["base_model"] = "default"
    (ASSETS / "default" / SETTINGS_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    scene = make_scene(SAMPLE["split"], SAMPLE["seed"], SAMPLE["index"], qtype=SAMPLE["qtype"],
                       num_frames=NUM_FRAMES, width=FRAME_SIZE, height=FRAME_SIZE, fps=FPS)
    write_clip(render_scene(scene), ASSETS / "sample.mp4", FPS)
    (ASSETS / "sample.json").write_text(json.dumps(
        {"question": scene.question, "answer": scene.answer, "type": scene.qtype, "source": SAMPLE,
         "scene": scene.to_json()}) + "\n")

    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) / 2**20
    print(f"shipped {ASSETS} ({total:.1f} MB)")
    if total > LIMIT_MB:
        raise SystemExit(f"assets are {total:.1f} MB > {LIMIT_MB} MB")


if __name__ == "__main__":
    main()
