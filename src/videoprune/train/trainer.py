"""The training loop: one process or torchrun (DDP / FSDP), exact checkpoint/resume, CSV + TensorBoard, HF export.

Data path of one optimizer step on rank r: ShardedSchedule picks the rank's micro-batches ->
VideoQADataset decodes and tokenises them -> the EVS-patched model prunes video tokens at the
language-model input with this micro-batch's rate and returns the loss on answer tokens (labels
gathered by the same KeepPlan) -> backward (gradients all-reduced by DDP on the last micro-batch)
-> clip, AdamW, LR schedule.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..stts.weights import SCORER_FILE as STTS_SCORER_FILE  # file names of the stts export
from ..stts.weights import SETTINGS_FILE as STTS_SETTINGS_FILE
from ..methods import get_method
from .config import TINY_MODELS, TrainConfig
from .rates import rate_for_step

__all__ = ["StepInfo", "TrainResult", "STTSTrainModule", "STTS_SCORER_FILE", "CorruptCheckpoint", "RUN_FILES", "train",
           "latest_checkpoint", "complete_checkpoints", "stts_config"]

CSV_FIELDS = ("step", "epoch", "loss", "rate", "lr", "kept_fraction", "aux_loss", "seconds")


@dataclass
class StepInfo:
    """What ``on_step`` sees after optimizer step ``step`` (1-based), gradients still in place."""

    step: int
    loss: float  # mean over ranks and micro-batches
    local_loss: float  # this rank's mean over its micro-batches
    rates: list[float]  # one per micro-batch (identical on every rank)
    lr: float
    kept_fraction: float  # video tokens kept / before, this rank's last micro-batch (1.0 without video)
    indices: list[int]  # this rank's sample indices (into the usable records) in this step
    model: torch.nn.Module  # as trained (DDP/FSDP-wrapped under torchrun; stts: an STTSTrainModule)
    rank: int
    world_size: int
    aux_loss: float | None = None  # stts: this rank's mean weighted auxiliary loss over its micro-batches


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)  # global mean task loss per step run in this call
    aux_losses: list[float] = field(default_factory=list)  # stts: global mean weighted aux loss per step
    export_dir: str | None = None
    checkpoint_dir: str | None = None
    skipped: list = field(default_factory=list)  # BadVideo entries dropped from the data


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world_size > 1:
            torch.distributed.barrier()


def _setup_distributed(cfg: TrainConfig) -> _Dist:
    import torch.distributed as dist

    want_cuda = cfg.device.startswith("cuda") if cfg.device else torch.cuda.is_available()
    if want_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    owns = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    local = int(os.environ.get("LOCAL_RANK", rank))
    if want_cuda:
        if cfg.device and ":" in cfg.device and world == 1:
            device = torch.device(cfg.device)
        else:
            device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return _Dist(rank, world, local, device, owns)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# model, tokenizer, method
# --------------------------------------------------------------------------------------------
def _load(cfg: TrainConfig, log):
    """(model float32 on CPU, tokenizer, processor or None)."""
    if cfg.model.startswith("tiny:"):
        from .tiny import tiny_model
        from .tokenizer import build_word_tokenizer

        if cfg.model not in TINY_MODELS:
            raise ValueError(f"model {cfg.model!r}: unknown built-in; known: {', '.join(TINY_MODELS)}")
        tok = build_word_tokenizer()
        model = tiny_model(cfg.model, tok, seed=cfg.seed)
        if cfg.attn_implementation:
            model.set_attn_implementation(cfg.attn_implementation)
        return model, tok, None
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from ..hub import resolve

    path = resolve(cfg.model)  # 'default' -> the embedded model; fails at once, not after hub retries
    source = resolve(cfg.tokenizer, what="tokenizer") if cfg.tokenizer else path
    extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, **extra)
    try:
        processor = AutoProcessor.from_pretrained(source)
        tok = getattr(processor, "tokenizer", processor)
    except (OSError, ValueError, TypeError) as e:
        log(f"no processor at {source!r} ({e}); the export will carry the tokenizer only")
        processor, tok = None, AutoTokenizer.from_pretrained(source)
    return model, tok, processor


def _apply_lora(cfg: TrainConfig, model):
    from peft import LoraConfig, get_peft_model

    names = [n.strip() for n in cfg.lora_targets.split(",") if n.strip()]
    if not names:
        raise ValueError("lora_targets must name at least one module")
    # Only the language model: vision towers reuse names like q_proj (SigLIP) that must stay frozen.
    pattern = r".*language_model.*\.(" + "|".join(names) + r")"
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=pattern)
    try:
        return get_peft_model(model, lcfg)
    except ValueError as e:
        raise ValueError(f"lora_targets {cfg.lora_targets!r} matched no language-model module: {e}") from None


def stts_config(cfg: TrainConfig, scorer_path: str | None = None):
    """The :class:`~videoprune.stts.STTSConfig` that ``method='stts'`` trains (and that reloads its export)."""
    return get_method("stts", "train").config(cfg.stts_ratio, prune_at=cfg.stts_prune_at,
                                              aux_loss_weight=cfg.stts_aux_weight, scorer_path=scorer_path)


class STTSTrainModule(torch.nn.Module):
    """What ``method='stts'`` trains: the (patched) model and the STTS scorer as one module.

    The scorer is not a submodule of the model (``handle.scorer`` lives beside it, so that the
    model's ``save_pretrained`` never contains it). Holding both here puts the scorer in the
    module DDP wraps (its gradients are all-reduced with the model's), in the optimizer and in
    the checkpoint (keys ``scorer.*``; the model's are ``model.*``). ``forward`` is the model's:
    the patched forward calls ``handle.scorer``, i.e. ``self.scorer``.
    """

    def __init__(self, model: torch.nn.Module, scorer: torch.nn.Module):
        super().__init__()
        self.model = model
        self.scorer = scorer

    def forward(self, **inputs):
        return self.model(**inputs)


# --------------------------------------------------------------------------------------------
# methods: what each one trains, patches, sets per step, adds to the loss and exports
# --------------------------------------------------------------------------------------------
class _MethodTraining:
    """How one method of the methods table trains; :func:`_method_training` picks it once from ``cfg.method``.

    The base class is what EVS uptraining and STTS share: every weight (or LoRA on the language
    model) trains, the task loss is the model's, nothing is exported beside the model.
    """

    kind = ""  # the Method.kind it trains

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.spec = get_method(cfg.method, "train")

    def trainable(self, model) -> tuple[torch.nn.Module, torch.nn.Module]:
        """``(module whose parameters train, base model to patch)``: LoRA adapters, or every weight."""
        if self.cfg.lora:
            trainable = _apply_lora(self.cfg, model)
            return trainable, trainable.get_base_model()
        for p in model.parameters():
            p.requires_grad_(True)
        return model, model

    def patch(self, base):
        """Switch the method on for ``base``; returns the handle."""
        raise NotImplementedError

    def module(self, trainable, handle) -> torch.nn.Module:
        """What DDP wraps, the optimizer steps and a checkpoint holds."""
        return trainable

    def step_rate(self, handle, step: int, micro: int) -> float:
        """Set the pruning of micro-batch ``micro`` of step ``step`` (0-based) on ``handle``; returns its rate."""
        raise NotImplementedError

    def loss(self, outputs) -> tuple[torch.Tensor, float | None]:
        """``(loss to backpropagate, its auxiliary part or None)`` from the patched model's outputs."""
        return outputs.loss, None

    def missing_stats(self) -> None:
        """Called when a training batch left no keep statistics (a batch without video, for EVS)."""

    def export_extras(self, d: _Dist, handle, path: Path) -> bool:
        """Write what the export holds beside the model; returns whether the model itself is written."""
        return True

    def training_record(self) -> dict:
        """``config.videoprune_training`` of the exported model: how it was trained."""
        raise NotImplementedError


class _EVSTraining(_MethodTraining):
    """EVS uptraining: the model trains with EVS on, the rate drawn per micro-batch (methods.md §1.4)."""

    kind = "evs"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.rates = cfg.rate_distribution

    def _rate(self, step: int, micro: int) -> float:
        return rate_for_step(self.rates, self.cfg.seed, step, micro)

    def patch(self, base):
        return self.spec.apply(base, self._rate(0, 0))

    def step_rate(self, handle, step: int, micro: int) -> float:
        rate = self._rate(step, micro)
        handle.config = dataclasses.replace(handle.config, rate=rate)
        return rate

    def training_record(self) -> dict:
        cfg = self.cfg
        return {"method": cfg.method, "rate_dist": cfg.rate_dist, "export_rate": cfg.serving_rate, "lora": cfg.lora}


class _STTSTraining(_MethodTraining):
    """STTS: the scorer trains (with the base model when ``train_base``) on the task loss plus its auxiliary loss."""

    kind = "stts"

    def trainable(self, model) -> tuple[torch.nn.Module, torch.nn.Module]:
        if self.cfg.train_base:
            return super().trainable(model)
        for p in model.parameters():  # only the scorer trains
            p.requires_grad_(False)
        return model, model

    def patch(self, base):
        import videoprune

        return videoprune.patch(base, stts_config(self.cfg))

    def module(self, trainable, handle) -> torch.nn.Module:
        return STTSTrainModule(trainable, handle.scorer)

    def step_rate(self, handle, step: int, micro: int) -> float:
        return self.cfg.stts_ratio

    def loss(self, outputs) -> tuple[torch.Tensor, float | None]:
        aux = getattr(outputs, "stts_aux_loss", None)
        if aux is None:
            raise RuntimeError("the STTS patch returned no outputs.stts_aux_loss in training mode")
        return outputs.loss + aux, float(aux.detach())  # the patch returns it already weighted by aux_loss_weight

    def missing_stats(self) -> None:
        raise RuntimeError("the STTS patch recorded no keep statistics for a training batch with video")

    def export_extras(self, d: _Dist, handle, path: Path) -> bool:
        """The scorer (``handle.save_scorer``) and the STTSConfig it was trained with; the model only with ``train_base``."""
        cfg = self.cfg
        if d.main:
            path.mkdir(parents=True, exist_ok=True)
            handle.save_scorer(str(path / STTS_SCORER_FILE))
            scfg = dataclasses.asdict(stts_config(cfg))
            scfg.pop("scorer_path")
            (path / STTS_SETTINGS_FILE).write_text(json.dumps(
                {"base_model": cfg.model, "base_model_exported": cfg.train_base, "stts": scfg}, indent=2) + "\n")
        return cfg.train_base

    def training_record(self) -> dict:
        cfg = self.cfg
        return {"method": cfg.method, "lora": cfg.lora, "stts_ratio": cfg.stts_ratio,
                "stts_prune_at": cfg.stts_prune_at, "scorer": STTS_SCORER_FILE}


#: how each kind of method in the methods table trains (``Method.kind`` -> strategy)
_TRAINING_BY_KIND: dict[str, type[_MethodTraining]] = {c.kind: c for c in (_EVSTraining, _STTSTraining)}


def _method_training(cfg: TrainConfig) -> _MethodTraining:
    """The training strategy of ``cfg.method``, from its kind in the methods table."""
    return _TRAINING_BY_KIND[get_method(cfg.method, "train").kind](cfg)


# --------------------------------------------------------------------------------------------
# output folder and checkpoints
# --------------------------------------------------------------------------------------------
#: what a run writes under output_dir (and all that --overwrite deletes)
RUN_FILES = ("metrics.csv", "tb", "checkpoints", "export")
COMPLETE = "COMPLETE"


class CorruptCheckpoint(ValueError):
    """A checkpoint file is missing or does not load; ``resume='auto'`` falls back past it."""


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step_"))
    except ValueError:
        return -1


def complete_checkpoints(output_dir) -> list[Path]:
    """The checkpoints under ``output_dir/checkpoints`` with a COMPLETE marker, oldest step first."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("step_*") if _step_of(p) >= 0 and (p / COMPLETE).exists()] if root.is_dir() else []
    return sorted(found, key=_step_of)


def latest_checkpoint(output_dir) -> Path | None:
    """The complete checkpoint with the highest step under ``output_dir/checkpoints``, or None."""
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _write_error(e: BaseException, file: Path) -> OSError:
    """One line naming ``file``: ``No space left on device: <file>`` for ENOSPC (also when torch wraps it)."""
    if isinstance(e, OSError) and e.errno:
        err = OSError(f"{os.strerror(e.errno)}: {file}")
        err.errno = e.errno
        return err
    # torch's own file writer reports a failed write as RuntimeError('[enforce fail at inline_container.cc...]
    # ... file write failed'), without the errno; a full disk is by far the commonest cause
    if "inline_container" in str(e) and shutil.disk_usage(file.parent if file.parent.exists() else ".").free < 2**20:
        err = OSError(f"{os.strerror(errno.ENOSPC)}: {file}")
        err.errno = errno.ENOSPC
        return err
    return OSError(f"could not write {file}: {_cause(e)}")


def _torch_write(obj, file: Path) -> None:
    """``torch.save`` through a Python file (so a failed write is an OSError with its errno), synced to disk."""
    try:
        with open(file, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, RuntimeError) as e:
        raise _write_error(e, file) from None


def _torch_read(file: Path):
    if not file.is_file():
        raise CorruptCheckpoint(f"checkpoint file is missing: {file}")
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 -- pickle, zip, EOF and torch errors all mean the bytes are bad
        raise CorruptCheckpoint(f"checkpoint file is corrupt: {file} ({_cause(e)})") from None


def _all_ok(ok: bool, d: _Dist) -> bool:
    """True when ``ok`` on every rank (one all-reduce under torch.distributed)."""
    if d.world_size == 1:
        return ok
    t = torch.tensor([1 if ok else 0], dtype=torch.int32, device=d.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item())


def _rng_state(d: _Dist) -> dict:
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if d.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(d.device)
    return rng


def _state_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def _save_checkpoint(path: Path, d: _Dist, model, optimizer, scheduler, step: int, cfg: TrainConfig,
                     rng: dict | None = None) -> None:
    """Write ``path`` atomically: every file into ``.tmp-<name>`` beside it, COMPLETE last, then one rename.

    A crash or a full disk mid-write leaves only the hidden temp folder (removed on failure),
    never a ``step_*`` folder that ``resume='auto'`` could pick; earlier checkpoints are not
    touched. A failed write raises one-line ``OSError`` (``No space left on device: <file>``).
    ``rng``: the RNG state to record (default: the current one).
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer, options=_state_options())  # collective under FSDP
    tmp = path.parent / f".tmp-{path.name}"
    err = None
    if d.main:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        except OSError as e:
            err = _write_error(e, tmp)
    if _all_ok(err is None, d):
        try:
            if d.main:
                _torch_write({"model": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(),
                              "step": step, "world_size": d.world_size, "config": dataclasses.asdict(cfg)},
                             tmp / "trainer.pt")
            _torch_write(rng if rng is not None else _rng_state(d), tmp / f"rng_rank{d.rank}.pt")
        except OSError as e:
            err = e
    if _all_ok(err is None, d) and d.main:
        try:
            (tmp / COMPLETE).write_text(json.dumps({"step": step}))
            if path.exists():  # a leftover that does not load (resume='auto' skipped it): replace it
                old = path.parent / f".old-{path.name}"
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        except OSError as e:
            err = _write_error(e, path)
    if not _all_ok(err is None, d):
        if d.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise err or OSError(f"could not write checkpoint {path}: another rank failed to write its part")


# settings a resume refuses to change: they define the data, the model or the trajectory's randomness
_RESUME_REFUSED = ("data", "model", "tokenizer", "method", "rate_dist", "batch_size", "grad_accum", "seed", "lora",
                   "lora_r", "lora_alpha", "lora_targets", "strategy", "num_frames", "fps", "max_frames", "min_pixels",
                   "max_pixels", "on_bad_video", "stts_ratio", "stts_prune_at", "stts_aux_weight", "train_base")
# settings a resume applies from the resumed step on (and logs): the optimisation schedule and numerics
_RESUME_APPLIED = ("lr", "schedule", "warmup_steps", "max_steps", "epochs", "weight_decay", "max_grad_norm",
                   "lora_dropout", "precision", "attn_implementation", "export_rate")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _resume_changes(saved: dict, cfg: TrainConfig) -> list[str]:
    """``["lr 0.01 -> 0.005", ...]`` for the applied settings that changed; ValueError listing refused ones."""
    def diff(names):
        return [f"{k} {_fmt(saved[k])} -> {_fmt(getattr(cfg, k))}" for k in names
                if k in saved and saved[k] != getattr(cfg, k)]

    refused = diff(_RESUME_REFUSED)
    if refused:
        raise ValueError(f"resume: settings differ from the checkpoint's: {'; '.join(refused)}. A resume must keep "
                         "them; train a new run in another --output-dir (or --overwrite) to change them")
    return diff(_RESUME_APPLIED)


def _read_checkpoint(path: Path, d: _Dist) -> tuple[dict, dict]:
    """(trainer state, this rank's RNG state); CorruptCheckpoint when a file is missing or does not load."""
    if not (path / COMPLETE).exists():
        raise CorruptCheckpoint(f"resume: {str(path)!r} is not a complete checkpoint (no COMPLETE marker)")
    state = _torch_read(path / "trainer.pt")
    need = ("model", "optimizer", "step", "world_size", "config")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise CorruptCheckpoint(f"checkpoint file is corrupt: {path / 'trainer.pt'} (not a videoprune trainer "
                                "state)")
    rng = _torch_read(path / f"rng_rank{d.rank}.pt")
    if not isinstance(rng, dict) or any(k not in rng for k in ("python", "numpy", "torch")):
        raise CorruptCheckpoint(f"checkpoint file is corrupt: {path / f'rng_rank{d.rank}.pt'} (not an RNG state)")
    return state, rng


def _agreed_read(path: Path, d: _Dist) -> tuple[dict | None, dict | None, CorruptCheckpoint | None]:
    try:
        state, rng = _read_checkpoint(path, d)
        err = None
    except CorruptCheckpoint as e:
        state = rng = None
        err = e
    if not _all_ok(err is None, d) and err is None:
        err = CorruptCheckpoint(f"resume: {path} does not load on another rank")
    return state, rng, err


def _find_resume(cfg: TrainConfig, out: Path, d: _Dist, log) -> tuple[Path, dict, dict] | None:
    """The checkpoint to resume from, read: ``cfg.resume`` itself, or for 'auto' the newest one that loads."""
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        state, rng, err = _agreed_read(path, d)
        if err is not None:
            raise err
        return path, state, rng
    candidates = complete_checkpoints(out)
    skipped = []
    for path in reversed(candidates):
        state, rng, err = _agreed_read(path, d)
        if err is None:
            return path, state, rng
        log(f"resume=auto: skipping {path}: {err}")
        skipped.append(f"{path.name}: {err}")
    if skipped:
        raise ValueError(f"resume=auto: no checkpoint under {out / 'checkpoints'} loads ({'; '.join(skipped)})")
    return None


def _prepare_output(cfg: TrainConfig, out: Path, d: _Dist, log, resuming: Path | None) -> None:
    """Apply the output-folder rules (docs/train.md "Output folder, overwrite and resume") before anything is written.

    Without resume/overwrite the folder must be empty; ``overwrite`` deletes :data:`RUN_FILES`
    only; ``resume='auto'`` without any complete checkpoint starts over, replacing what a run
    writes before its first checkpoint (metrics.csv, tb/, unfinished checkpoints), but never
    an export; an explicit resume may not leave later checkpoints or another run's files behind.
    """
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    run_files = [n for n in RUN_FILES if n in entries]

    def listing(names):
        return ", ".join(names[:4]) + (f", ... ({len(names)} entries)" if len(names) > 4 else "")

    clear = []
    if cfg.overwrite:
        clear = run_files
        other = [n for n in entries if n not in RUN_FILES]
        if clear:
            log(f"overwrite: deleting the previous run's {listing(clear)} in {out}")
        if other:
            log(f"overwrite: leaving {listing(other)} in {out} (not written by a run)")
    elif not cfg.resume:
        if entries:
            raise ValueError(f"output_dir {str(out)!r} is not empty (it holds {listing(entries)}): add --resume auto "
                             "to continue the run there, or --overwrite to delete its run files and start over")
    elif resuming is None:  # resume='auto' and no complete checkpoint at all
        if "export" in entries:
            raise ValueError(f"resume=auto: {str(out)!r} holds an export but no complete checkpoint to resume from; "
                             "add --overwrite instead of --resume to delete it and start over")
        clear = run_files
        if clear:
            log(f"resume=auto: no complete checkpoint in {out}; starting from step 0 and replacing {listing(clear)}")
    else:
        ckdir = (out / "checkpoints").resolve()
        if resuming.resolve().parent == ckdir:
            step = _step_of(resuming)
            later = [p.name for p in complete_checkpoints(out) if _step_of(p) > step]
            if later and cfg.resume != "auto":
                raise ValueError(f"resume: {out / 'checkpoints'} holds checkpoints after {resuming.name} "
                                 f"({listing(later)}); resuming from {resuming.name} would mix two runs. Resume the "
                                 "newest (--resume auto), or delete the later ones first")
            if later:  # auto skipped them: they do not load
                log(f"resume=auto: {listing(later)} will be replaced when the run reaches their step")
        elif entries:
            raise ValueError(f"resume: output_dir {str(out)!r} is not empty (it holds {listing(entries)}) and "
                             f"{cfg.resume!r} is not one of its checkpoints; resuming there would mix two runs. "
                             "Give an empty --output-dir")
    if d.main:
        for name in clear:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    d.barrier()  # nobody writes before every rank has checked the folder


def _restore_rng(rng: dict, d: _Dist) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and d.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], d.device)


# --------------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------------
class _Logger:
    """Rank 0 only: ``metrics.csv`` (one row per logged step) and TensorBoard scalars under ``tb/``."""

    def __init__(self, out: Path, start_step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self.csv_path = out / "metrics.csv"
        rows = []
        if start_step > 0 and self.csv_path.exists():  # a resumed run rewrites the steps it redoes
            with self.csv_path.open() as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
        self.fh = self.csv_path.open("w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=CSV_FIELDS)
        self.writer.writeheader()
        self.writer.writerows(rows)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir=str(out / "tb"), purge_step=start_step + 1 if start_step else None)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        try:
            self.writer.writerow(row)
            self.fh.flush()
        except OSError as e:
            raise _write_error(e, self.csv_path) from None
        for key in ("loss", "rate", "lr", "kept_fraction", "aux_loss"):
            if row.get(key) not in (None, ""):
                self.tb.add_scalar(f"train/{key}", float(row[key]), row["step"])

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            self.tb.close()


def _lr_lambda(cfg: TrainConfig, total: int):
    """LR factor of step ``step`` (0-based): a pure function of the settings, so a resume can rebuild it."""
    import math

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return 1.0 - frac if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, on_step: Callable[[StepInfo], Any] | None = None, progress: bool | None = None) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.data`` with pruning on; see :class:`TrainConfig` and docs/train.md.

    Runs as one process, or as one rank of ``torchrun`` (or of a process group the caller has
    already initialised). Returns on every rank; the export is written by rank 0 to
    ``output_dir/export`` (a standard HF checkpoint, LoRA merged, ``config.video_pruning_rate``
    = :attr:`TrainConfig.serving_rate`).
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    d = _setup_distributed(cfg)

    def log(msg: str) -> None:
        if d.main:
            print(f"videoprune train: {msg}", file=sys.stderr, flush=True)

    try:
        run = _setup(cfg, d, log, progress)
        _loop(run, on_step)
        if not cfg.no_export:
            _export_run(run)
        d.barrier()
        return run.result
    finally:
        if d.owns_group:
            torch.distributed.destroy_process_group()


@dataclass
class _Run:
    """One training run between setup, its steps and the export (what ``train`` used to keep in locals)."""

    cfg: TrainConfig
    d: _Dist
    out: Path
    log: Callable[[str], None]
    method: _MethodTraining
    result: TrainResult
    schedule: Any
    total: int
    tokenizer: Any
    processor: Any
    start: int = 0
    saved: int = 0  # the newest step with a checkpoint (start: the one resumed, or nothing at 0)
    trainable: Any = None  # the model as it trains (a peft model with LoRA)
    handle: Any = None  # the method's patch handle
    wrapped: Any = None  # what steps: the trained module, DDP/FSDP-wrapped under torchrun
    params: list = field(default_factory=list)
    optimizer: Any = None
    scheduler: Any = None
    autocast: Callable[[], Any] | None = None
    batches: Any = None  # iterator over this rank's micro-batches from ``start`` on
    logger: Any = None
    bar: Any = None

    def save(self, step_done: int, rng_state: dict | None = None) -> Path:
        """Checkpoint the state after ``step_done`` steps (``rng_state``: the RNG to record; default: now)."""
        ckpt = self.out / "checkpoints" / f"step_{step_done:07d}"
        _save_checkpoint(ckpt, self.d, self.wrapped, self.optimizer, self.scheduler, step_done, self.cfg, rng_state)
        self.saved = step_done
        self.result.checkpoint_dir = str(ckpt)
        return ckpt


def _setup(cfg: TrainConfig, d: _Dist, log, progress: bool | None) -> _Run:
    """Everything before the first step, in an order that keeps a run reproducible and resumable.

    Output folder and the checkpoint to resume (before anything is written or loaded); the
    data (every rank reads the same usable list; its shard comes from the schedule); the model
    (identical initial weights on every rank, then per-rank RNG); optimizer, resumed state, LR
    schedule; then the data loader, logs and progress bar.
    """
    from ..video import SamplingConfig, get_family
    from .data import ShardedSchedule, VideoQADataset, read_jsonl

    if cfg.strategy == "fsdp" and d.device.type != "cuda":  # up front, on every rank, before any collective
        raise ValueError(f"strategy='fsdp' needs CUDA devices (torch FSDP has no CPU backend; this run is on "
                         f"{d.device}); use strategy='ddp' on CPU")
    if cfg.strategy == "fsdp" and d.world_size == 1:
        log("strategy=fsdp with a single rank: nothing to shard, training the model unwrapped")
    out = Path(cfg.output_dir)
    found = _find_resume(cfg, out, d, log) if cfg.resume else None
    _prepare_output(cfg, out, d, log, found[0] if found else None)
    out.mkdir(parents=True, exist_ok=True)
    records, skipped = read_jsonl(cfg.data, cfg.on_bad_video, progress=bool(progress) and d.main,
                                  confine=cfg.confine_videos)
    for bad in skipped:
        log(f"{cfg.data}:{bad.line}: skipped bad video {bad.video!r}: {bad.reason}")
    _seed_all(cfg.seed)
    model, tokenizer, processor = _load(cfg, log)
    family = get_family(model.config.model_type).name
    sampling = SamplingConfig(fps=cfg.fps, num_frames=cfg.num_frames, max_frames=cfg.max_frames)
    dataset = VideoQADataset(records, tokenizer, family, sampling=sampling, min_pixels=cfg.min_pixels,
                             max_pixels=cfg.max_pixels)
    schedule = ShardedSchedule(len(records), cfg.batch_size, d.rank, d.world_size, cfg.seed)
    total = cfg.max_steps or cfg.epochs * (schedule.micro_per_epoch // cfg.grad_accum)
    if total < 1:
        raise ValueError(f"{schedule.micro_per_epoch} micro-batches per rank per epoch cannot fill one step of "
                         f"grad_accum={cfg.grad_accum}; set max_steps or use more data")
    run = _Run(cfg, d, out, log, _method_training(cfg), TrainResult(steps=0, skipped=skipped), schedule, total,
               tokenizer, processor)
    _build_model(run, model)
    rng = _resume(run, found)
    del found  # the checkpoint's tensors are in the model and optimizer now
    _open_data_and_logs(run, dataset, progress)
    if rng is not None:
        _restore_rng(rng, d)
    log(f"{len(records)} samples ({len(skipped)} skipped), {d.world_size} rank(s), {total} steps, "
        f"{'bf16 autocast' if _use_bf16(cfg, d) else 'fp32'} on {d.device}")
    return run


def _build_model(run: _Run, model) -> None:
    """Freeze / LoRA, patch the method, move to the device, wrap for DDP/FSDP; the optimizer over what trains."""
    cfg, d = run.cfg, run.d
    run.trainable, base = run.method.trainable(model)
    run.handle = run.method.patch(base)
    module = run.method.module(run.trainable, run.handle)
    module.to(d.device)
    _seed_all(cfg.seed * 1000 + d.rank)  # dropout etc. differ per rank, reproducibly
    run.wrapped = _wrap(cfg, d, module)
    run.params = [p for p in run.wrapped.parameters() if p.requires_grad]
    run.optimizer = torch.optim.AdamW(run.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for group in run.optimizer.param_groups:  # the key a checkpoint's param_groups carry (LambdaLR adds it)
        group["initial_lr"] = cfg.lr


def _resume(run: _Run, found: tuple[Path, dict, dict] | None) -> dict | None:
    """Load the checkpoint found (if any) and build the LR schedule at its step; returns its RNG state."""
    cfg = run.cfg
    rng = None
    if found is not None:
        path, state, rng = found
        run.start = _apply_checkpoint(path, state, run.d, run.wrapped, run.optimizer, cfg, run.total, run.log)
    elif cfg.resume:
        run.log("resume=auto: no complete checkpoint yet, starting from step 0")
    # The schedule is a function of (step, settings): rebuilt at the resumed step, so a changed lr /
    # schedule / warm-up / length applies from there on (the optimizer's saved lr is overwritten).
    for group in run.optimizer.param_groups:
        group["initial_lr"] = cfg.lr
        group["weight_decay"] = cfg.weight_decay
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, _lr_lambda(cfg, run.total),
                                                      last_epoch=run.start - 1)
    run.saved = run.result.steps = run.start
    return rng


def _use_bf16(cfg: TrainConfig, d: _Dist) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and d.device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())


def _open_data_and_logs(run: _Run, dataset, progress: bool | None) -> None:
    """The micro-batch loader from the start step on, autocast, the CSV/TensorBoard logger and the progress bar."""
    from tqdm.auto import tqdm

    from .data import _MicroBatches

    cfg, d, start = run.cfg, run.d, run.start
    use_bf16 = _use_bf16(cfg, d)
    run.autocast = lambda: torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16)
    loader = torch.utils.data.DataLoader(
        _MicroBatches(dataset, run.schedule, start * cfg.grad_accum, run.total * cfg.grad_accum,
                      run.tokenizer.pad_token_id),
        batch_size=None, shuffle=False, num_workers=cfg.num_workers,
        worker_init_fn=_ignore_sigint if cfg.num_workers else None)
    run.batches = iter(loader)
    run.logger = _Logger(run.out, start, d.main)
    show = (sys.stderr.isatty() if progress is None else progress) and d.main
    run.bar = tqdm(total=run.total, initial=start, desc=f"train {cfg.method}", unit="step", disable=not show,
                   file=sys.stderr)


def _loop(run: _Run, on_step) -> None:
    """Steps ``start .. total - 1``: each one optimizer step, then its logs, checkpoint and the Ctrl-C check."""
    cfg = run.cfg
    run.wrapped.train()
    stop = _StopOnSigint(run.log)
    with stop, _closing(run.bar, run.logger):
        for step in range(run.start, run.total):
            t0 = time.perf_counter()
            info, mean_aux = _step(run, step)
            run.result.steps = step + 1
            if on_step is not None:
                on_step(info)
            _log_step(run, step, info, mean_aux, t0)
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == run.total:
                run.save(step + 1)
            if stop.requested(run.d):
                if run.saved < step + 1:
                    ckpt = run.save(step + 1)
                    run.log(f"interrupted: saved {ckpt}; continue with the same command plus --resume auto")
                else:
                    run.log(f"interrupted after step {step + 1} (checkpoint {run.result.checkpoint_dir})")
                raise KeyboardInterrupt


def _step(run: _Run, step: int) -> tuple[StepInfo, float | None]:
    """One optimizer step (0-based ``step``) over ``grad_accum`` micro-batches: ``(StepInfo, global mean aux loss)``."""
    cfg, d = run.cfg, run.d
    rng_before = _rng_state(d)  # what a checkpoint of the previous step records, if this one fails
    run.optimizer.zero_grad(set_to_none=True)
    losses, aux_losses, rates, indices, kept = [], [], [], [], 1.0
    for a in range(cfg.grad_accum):
        loss, aux, rate, idx, batch_kept = _micro_step(run, step, a, rng_before)
        losses.append(loss)
        if aux is not None:
            aux_losses.append(aux)
        rates.append(rate)
        indices += idx
        kept = kept if batch_kept is None else batch_kept
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    local = sum(losses) / len(losses)
    mean = _all_mean(local, d)
    run.result.losses.append(mean)
    local_aux = sum(aux_losses) / len(aux_losses) if aux_losses else None
    mean_aux = _all_mean(local_aux, d) if aux_losses else None
    if aux_losses:
        run.result.aux_losses.append(mean_aux)
    info = StepInfo(step + 1, mean, local, rates, lr, kept, indices, run.wrapped, d.rank, d.world_size, local_aux)
    return info, mean_aux


def _micro_step(run: _Run, step: int, micro: int, rng_before: dict) -> tuple[float, float | None, float, list, float | None]:
    """Forward + backward of one micro-batch: ``(task loss, aux loss or None, rate, sample indices, kept fraction or None)``."""
    cfg, d, handle, wrapped = run.cfg, run.d, run.handle, run.wrapped
    batch = _next_batch(run, step, rng_before)
    indices = batch.pop("index").tolist()
    batch = {k: v.to(d.device) for k, v in batch.items()}
    rate = run.method.step_rate(handle, step, micro)
    handle.stats = None
    sync = micro == cfg.grad_accum - 1 or d.world_size == 1 or not hasattr(wrapped, "no_sync")
    with (contextlib.nullcontext() if sync else wrapped.no_sync()), run.autocast():
        outputs = wrapped(**batch)
        loss, aux = run.method.loss(outputs)
    (loss / cfg.grad_accum).backward()
    kept = None
    if handle.stats is not None and handle.stats.tokens_before:
        kept = handle.stats.tokens_after / handle.stats.tokens_before
    else:
        run.method.missing_stats()
    return float(outputs.loss.detach()), aux, rate, indices, kept


def _next_batch(run: _Run, step: int, rng_before: dict) -> dict:
    """The next micro-batch; on a video that fails to decode, checkpoint the end of the last step first (one process)."""
    from .data import DataError

    try:
        return next(run.batches)
    except DataError as e:  # a video that passed the header check fails to decode
        text = _data_error_text(e)
        # The model is still at the end of `step`: keep it (one process only; under torchrun the
        # other ranks are blocked in a collective and cannot join the save).
        if run.d.world_size == 1 and run.saved < step:
            try:
                run.log(f"data error; saved {run.save(step, rng_before)} first")
            except OSError as save_error:
                run.log(f"data error; could not save a checkpoint first: {save_error}")
        raise DataError(text) from None


def _log_step(run: _Run, step: int, info: StepInfo, mean_aux: float | None, t0: float) -> None:
    """A CSV/TensorBoard row every ``log_every`` steps (and at the last); the progress bar every step."""
    cfg, rates = run.cfg, info.rates
    if (step + 1) % cfg.log_every == 0 or step + 1 == run.total:
        run.logger.log({"step": step + 1, "epoch": f"{(step * cfg.grad_accum) / run.schedule.micro_per_epoch:.4f}",
                        "loss": f"{info.loss:.6f}", "rate": f"{sum(rates) / len(rates):.6f}", "lr": f"{info.lr:.6g}",
                        "kept_fraction": f"{info.kept_fraction:.6f}",
                        "aux_loss": f"{mean_aux:.6f}" if mean_aux is not None else "",
                        "seconds": f"{time.perf_counter() - t0:.3f}"})
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{info.loss:.4f}", rate=f"{rates[-1]:.2f}", kept=f"{info.kept_fraction:.2f}")


def _export_run(run: _Run) -> None:
    """Write the export; a full disk is one line naming the export folder."""
    try:
        run.result.export_dir = _export(run, run.out / "export")
    except Exception as e:  # noqa: BLE001 -- safetensors reports a full disk as its own error type
        if isinstance(e, OSError) or "No space left on device" in str(e) or "os error 28" in str(e):
            raise _write_error(e if isinstance(e, OSError) else OSError(errno.ENOSPC, str(e)),
                               run.out / "export") from None
        raise
    run.log(f"exported to {run.result.export_dir}")


@contextlib.contextmanager
def _closing(bar, logger):
    """Close the progress bar and the logs (flushing TensorBoard) however the loop ends."""
    try:
        yield
    finally:
        bar.close()
        logger.close()


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes the step and checkpoints."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StopOnSigint:
    """The first SIGINT asks the loop to stop after the current step (it checkpoints, then raises
    KeyboardInterrupt); a second one interrupts at once. Only in the main thread (signal's rule)."""

    def __init__(self, log):
        self.log, self.flag, self.previous = log, False, None

    def _handle(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        self.log("interrupt: finishing this step, then saving a checkpoint (interrupt again to stop at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def requested(self, d: _Dist) -> bool:
        """Whether any rank was interrupted (ranks agree, so they checkpoint together)."""
        return not _all_ok(not self.flag, d) if d.world_size > 1 else self.flag


def _data_error_text(e: BaseException) -> str:
    """The one-line ``FILE:LINE: ...`` of a DataError, also when a DataLoader worker wrapped it in a traceback."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split("DataError: ", 1)[1] if "DataError: " in last else last
    return text


def _apply_checkpoint(path: Path, state: dict, d: _Dist, model, optimizer, cfg: TrainConfig, total: int, log) -> int:
    """Load a read checkpoint into model and optimizer after checking the settings; returns its step."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    if state["world_size"] != d.world_size:
        raise ValueError(f"resume: checkpoint was written by {state['world_size']} ranks, this run has "
                         f"{d.world_size}; exact resume needs the same world size")
    changes = _resume_changes(state["config"], cfg)
    step = int(state["step"])
    if step >= total:
        raise ValueError(f"resume: {path} is at step {step}, nothing left of {total} steps (raise --max-steps to "
                         "train on)")
    try:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True, strict=False))
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"resume: {path / 'trainer.pt'} does not fit this model ({_cause(e)})") from None
    log(f"resumed from {path} at step {step}")
    for change in changes:
        log(f"resume: {change} (applied from step {step + 1} on)")
    return step

def _all_mean(value: float, d: _Dist) -> float:
    if d.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / d.world_size


def _wrap(cfg: TrainConfig, d: _Dist, model):
    if d.world_size == 1:
        return model
    if cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = {type(m) for m in model.modules() if type(m).__name__ in names}
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layers) if layers else None
    return FSDP(model, auto_wrap_policy=policy, use_orig_params=True,
                device_id=d.device if d.device.type == "cuda" else None)


def _export(run: _Run, path: Path) -> str:
    """Rank 0 writes a standard HF checkpoint: patch removed, LoRA merged, the serving rate in its config.

    What the method exports beside it comes first (``method='stts'``: the scorer and the
    STTSConfig it was trained with; the model itself only when it was trained, ``train_base``).
    """
    cfg, d = run.cfg, run.d
    if not run.method.export_extras(d, run.handle, path):
        return str(path)
    full = None
    if cfg.strategy == "fsdp" and d.world_size > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(run.wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.main:
        run.handle.remove()
        model = run.trainable.merge_and_unload() if cfg.lora else run.trainable
        rate = cfg.serving_rate
        if rate is not None:
            model.config.video_pruning_rate = rate  # the key serving engines read (vLLM, SGLang)
        model.config.videoprune_training = run.method.training_record()
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(path), state_dict=full)
        (run.processor or run.tokenizer).save_pretrained(str(path))
    return str(path)
