"""A pruned video-QA runner for evaluation harnesses: one model, one method, batched greedy answers and log-likelihoods.

What the lmms-eval plug-in (:mod:`videoprune.integrations.lmms_eval`) drives, kept free of
lmms-eval so it can be built and checked without it. Methods are the ones of
``videoprune bench accuracy`` (``uptrained`` excepted: that is another checkpoint, pass it as
``pretrained``), mapped to a patch by :func:`videoprune.bench.accuracy.method_config`, so a
method means the same here as in the benchmark. Videos are decoded and tokenised by
:mod:`videoprune.video` with the model's own preprocessing (:class:`videoprune.bundle.ModelBundle`).

Guarantees: a run asking for pruning either prunes every prefill or fails (a patch that did not
apply raises, and so does a prefill that went by unpruned); per sample, the video tokens before
and after pruning are recorded in :attr:`PrunedVideoQA.samples`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..methods import get_method, method_names

__all__ = ["METHODS", "EvalSettings", "PrunedVideoQA"]

#: every method of ``bench accuracy`` that is a way of running one checkpoint (the methods table's)
METHODS = method_names("eval")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EvalSettings:
    """The model arguments (``--model_args k=v,...`` in lmms-eval), validated on construction."""

    pretrained: str = field(default="default", metadata={
        "help": "checkpoint folder or hub id ('default' / 'default-uptrained' = embedded)"})
    method: str = field(default="none", metadata={"help": "one of " + ", ".join(METHODS)})
    rate: float | None = field(default=None, metadata={
        "help": "fraction of video tokens dropped, in [0, 1); every method but none needs it or a threshold"})
    threshold: float | None = field(default=None, metadata={
        "help": "EVS threshold instead of a rate (" + ", ".join(method_names("eval", threshold=True))
                + "; evs-threshold needs it)"})
    scorer_path: str | None = field(default=None, metadata={
        "help": "STTS scorer file (method stts only; default: the scorer shipped beside the model)"})
    max_frames: int | None = field(default=None, metadata={
        "help": "frames decoded per video (with fps: at most this many) (default: the model's)"})
    fps: float | None = field(default=None, metadata={"help": "sample frames at this rate instead of a fixed count"})
    max_pixels: int | None = field(default=None, metadata={"help": "pixel budget per frame (default: the model's)"})
    min_pixels: int | None = field(default=None, metadata={"help": "lower pixel bound per frame (default: the model's)"})
    seed: int = field(default=0, metadata={"help": "seed of method random"})
    max_new_tokens: int = field(default=32, metadata={"help": "answer length when the task does not set one"})
    batch_size: int = field(default=1, metadata={"help": "videos per forward pass"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda when present, else cpu)"})
    dtype: str | None = field(default=None, metadata={
        "help": "float32 / bfloat16 / float16 (default: as from_pretrained loads it)"})
    log_tokens: str | None = field(default=None, metadata={
        "help": "append one JSON line per sample (id, video tokens before/after) to this file"})

    def __post_init__(self):
        m = get_method(self.method, "eval")
        # no default rate: an evaluation names the budget it ran at
        self.rate, self.threshold = m.check_budget(self.rate, self.threshold, default=None)
        if m.kind == "none" and self.rate not in (None, 0.0):
            raise ValueError(f"method 'none' prunes nothing; rate={self.rate} needs a pruning method")
        if m.kind != "none" and self.rate is None and self.threshold is None:
            raise ValueError(f"method {self.method!r} needs rate=... in [0, 1)")
        if self.scorer_path is not None and self.method != "stts":
            raise ValueError(f"scorer_path is for method 'stts' only; method is {self.method!r}")
        for name in ("max_frames", "max_pixels", "min_pixels", "max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if self.fps is not None and (isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or self.fps <= 0):
            raise ValueError(f"fps must be a positive number; got {self.fps!r}")
        if self.method == "uniform" and self.fps is not None:
            raise ValueError("method 'uniform' decodes a fixed fraction of a fixed frame count: set max_frames, not fps")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {self.dtype!r}")

    @classmethod
    def from_args(cls, args: dict) -> "EvalSettings":
        """From a ``key=value`` dict; an unknown key is a ValueError naming it and the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown videoprune model argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**args)


class PrunedVideoQA:
    """One loaded model, patched for one method, answering (video, question) pairs.

    ``samples``: one dict per answered sample, in call order: ``id``, ``video_tokens_before``,
    ``video_tokens_after`` (LLM video tokens of the full clip and of what reached the LLM).
    """

    def __init__(self, settings: EvalSettings):
        import videoprune

        from ..bench.accuracy import method_config
        from ..bundle import load_bundle
        from ..models import ADAPTERS
        from ..validate import check_pixel_budget
        from ..video.preprocess import FAMILIES

        self.settings = s = settings
        device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.bundle = b = load_bundle(s.pretrained, dtype=_DTYPES.get(s.dtype), device=device)
        model_type = b.model.config.model_type
        if b.family not in FAMILIES or model_type not in ADAPTERS:
            raise ValueError(f"pretrained={s.pretrained!r} is a {model_type!r} model (family {b.family!r}); videoprune "
                             f"supports {', '.join(sorted(set(FAMILIES) & set(ADAPTERS)))}")
        if s.fps is not None:
            b.num_frames, b.fps = None, float(s.fps)
        elif s.max_frames is not None:
            b.num_frames = s.max_frames
        if s.max_pixels is not None or s.min_pixels is not None:
            mx = s.max_pixels if s.max_pixels is not None else b.max_pixels
            mn = s.min_pixels if s.min_pixels is not None else b.min_pixels
            if mn is not None and mx is not None and s.min_pixels is None:
                mn = min(mn, mx)  # lowering the budget alone lowers the model's floor with it
            try:
                check_pixel_budget(mn, mx)
            except ValueError as e:
                raise ValueError(f"max_pixels/min_pixels: {e}") from e
            b.min_pixels, b.max_pixels = mn, mx
        self.device = torch.device(device)
        self.video_token_id = b.tokenizer.convert_tokens_to_ids(FAMILIES[b.family].video_token)
        rate = s.rate if s.rate is not None else 0.0
        # a pruning label never runs unpruned: patch() raises when it cannot apply (unknown family,
        # scorer_path not fitting the checkpoint), and each prefill is checked to have gone through it
        try:
            cfg, self.num_frames = method_config(s.method, rate, b, seed=s.seed, scorer=s.scorer_path or "default",
                                                 threshold=s.threshold)
            self.handle = videoprune.patch(b.model, cfg) if cfg is not None else None
        except (ValueError, FileNotFoundError) as e:
            if s.method != "stts" or "scorer_path" in str(e):
                raise
            raise ValueError(f"scorer_path={s.scorer_path or 'default'!r} does not fit pretrained={s.pretrained!r}: "
                             f"{e}") from e
        self.samples: list[dict] = []

    # ---- inputs --------------------------------------------------------------------------
    def _inputs(self, video: str, text: str) -> dict[str, torch.Tensor]:
        from ..video import prepare_inputs

        b, s = self.bundle, self.settings
        if s.fps is not None:
            from ..video import SamplingConfig

            sampling = SamplingConfig(fps=b.fps, max_frames=s.max_frames or 32)
        else:
            sampling = b.sampling(self.num_frames)
        return prepare_inputs(video, text, b.tokenizer, family=b.family, sampling=sampling, fps=b.fps,
                              min_pixels=b.min_pixels, max_pixels=b.max_pixels, system=b.system)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}

    def _record(self, ids: list[str], input_ids: torch.Tensor) -> None:
        """Per sample, video tokens before/after pruning; a pruning run whose prefill went unpruned raises."""
        n_video = (input_ids == self.video_token_id).sum(-1).tolist()
        if self.handle is not None:
            stats = self.handle.stats
            if stats is None or len(stats.videos) != len(ids):
                raise RuntimeError(f"method {self.settings.method!r} was asked for but the model ran unpruned "
                                   f"(no pruning stats for {len(ids)} videos); refusing to report its answers")
            pairs = [(v.tokens_before, v.tokens_after) for v in stats.videos]
            self.handle.stats = None
        elif self.num_frames:  # uniform: fewer frames decoded; the budget is relative to the full clip
            pairs = [(n * self.bundle.num_frames // self.num_frames, n) for n in n_video]
        else:
            pairs = [(n, n) for n in n_video]
        for sid, (before, after) in zip(ids, pairs):
            self.samples.append({"id": sid, "video_tokens_before": int(before), "video_tokens_after": int(after)})
        if self.settings.log_tokens:
            with Path(self.settings.log_tokens).open("a") as fh:
                for rec in self.samples[-len(ids):]:
                    fh.write(json.dumps({**rec, "method": self.settings.method, "rate": self.settings.rate}) + "\n")

    @property
    def kept_fraction(self) -> float | None:
        """Video tokens that reached the LLM over the full clips', summed over every sample so far."""
        before = sum(r["video_tokens_before"] for r in self.samples)
        return sum(r["video_tokens_after"] for r in self.samples) / before if before else None

    # ---- answers -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, items: list[tuple[str, str]], ids: list[str], max_new_tokens: int | None = None,
                 until: list[str] | None = None) -> list[str]:
        """Greedy answers to ``(video path, question)`` items, one forward batch; each cut at the first ``until`` string."""
        b = self.bundle
        batch = self._to_device(b.collate([self._inputs(v, q) for v, q in items]))
        if self.handle is not None:
            self.handle.stats = None
        eos = b.tokenizer.convert_tokens_to_ids("<|im_end|>")
        pad = b.tokenizer.pad_token_id if b.tokenizer.pad_token_id is not None else eos
        out = b.model.generate(**batch, max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
                               do_sample=False, eos_token_id=eos, pad_token_id=pad)
        self._record(ids, batch["input_ids"])
        new = out[:, batch["input_ids"].shape[1]:]
        texts = [b.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
        for stop in until or ():
            texts = [t.split(stop)[0] if stop else t for t in texts]
        return texts

    @torch.no_grad()
    def loglikelihood(self, video: str, context: str, continuation: str, sid: str) -> tuple[float, bool]:
        """``(log p(continuation | video, context), whether greedy decoding yields it)`` after the assistant cue."""
        b = self.bundle
        inp = self._inputs(video, context)
        cont = b.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if cont.shape[1] == 0:
            raise ValueError(f"{sid}: empty continuation {continuation!r}")
        inp["input_ids"] = torch.cat([inp["input_ids"], cont], 1)
        inp["attention_mask"] = torch.cat([inp["attention_mask"], torch.ones_like(cont)], 1)
        if "mm_token_type_ids" in inp:
            inp["mm_token_type_ids"] = torch.cat([inp["mm_token_type_ids"], torch.zeros_like(cont)], 1)
        inp = self._to_device(inp)
        if self.handle is not None:
            self.handle.stats = None
        # pruning shortens the sequence ahead of the text: the continuation is the tail either way
        logits = b.model(**inp).logits[0, -cont.shape[1] - 1 : -1].float()
        self._record([sid], inp["input_ids"][:, : -cont.shape[1]])
        logp = torch.log_softmax(logits, -1)
        target = cont[0].to(logp.device)
        total = float(logp.gather(-1, target[:, None]).sum())
        return total, bool((logp.argmax(-1) == target).all())

    def summary(self) -> dict:
        """Settings plus mean kept fraction and sample count, for a results file."""
        return {**asdict(self.settings), "kept_fraction": self.kept_fraction, "samples": len(self.samples)}
