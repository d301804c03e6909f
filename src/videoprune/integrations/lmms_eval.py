"""lmms-eval plug-in: the model ``videoprune``, any supported video VLM pruned by any ``bench accuracy`` method.

Registered through lmms-eval's entry-point group ``lmms_eval.models`` (:func:`manifests`), so
after installing videoprune with lmms-eval beside it::

    lmms-eval --model videoprune \\
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=evs-pre,rate=0.75 --tasks videomme

Model arguments: the fields of :class:`~videoprune.integrations.pruned_qa.EvalSettings`
(``pretrained, method, rate, threshold, scorer_path, max_frames, fps, max_pixels, min_pixels,
seed, max_new_tokens, dtype, log_tokens``); ``--batch_size`` and ``--device`` come from
lmms-eval's own flags. Answers are greedy whatever the task's generation kwargs ask for (only
``max_new_tokens`` and ``until`` are honoured). Each task document must give one video file
through ``doc_to_visual``; literal ``<image>`` / ``<video>`` markers in a prompt are dropped,
since the video goes before the text in our prompt. The mean kept fraction of video tokens is
in the results file under ``throughput.avg_kept_fraction`` (one record per request type run),
and per sample in lmms-eval's log (``INFO``) and, with ``log_tokens=PATH``, in a JSONL.

This module imports lmms-eval; nothing in videoprune imports this module.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger
from tqdm import tqdm

from .pruned_qa import EvalSettings, PrunedVideoQA

__all__ = ["VideoPrune", "manifests"]

MODEL_ID = "videoprune"


def manifests():
    """The ``lmms_eval.models`` entry point: one simple (non-chat) model, ``videoprune``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.VideoPrune")]


class VideoPrune(lmms):
    """lmms-eval model: a :class:`~videoprune.integrations.pruned_qa.PrunedVideoQA` behind lmms-eval's request API."""

    is_simple = True

    def __init__(self, batch_size=1, device=None, max_batch_size=None, **model_args) -> None:
        super().__init__()
        if isinstance(batch_size, str):
            if not batch_size.isdigit():
                raise ValueError(f"batch_size must be a positive integer for videoprune; got {batch_size!r}")
            batch_size = int(batch_size)
        settings = EvalSettings.from_args({**model_args, "batch_size": batch_size,
                                           **({"device": device} if device else {})})
        self.qa = PrunedVideoQA(settings)
        self.batch_size_per_gpu = settings.batch_size
        eval_logger.info(f"videoprune: {settings.pretrained} with method {settings.method} "
                         f"(rate {settings.rate}, threshold {settings.threshold})")

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self.qa.device

    # ---- request plumbing ----------------------------------------------------------------
    def _video(self, doc_to_visual, doc_id, task, split) -> str:
        """The one video file of a task document; a ValueError naming the document otherwise."""
        where = f"task {task!r}, split {split!r}, doc {doc_id}"
        visual = doc_to_visual(self.task_dict[task][split][doc_id])
        if isinstance(visual, (list, tuple)):
            if len(visual) != 1:
                raise ValueError(f"{where}: videoprune takes exactly one video per document, got {len(visual)} visuals")
            visual = visual[0]
        if not isinstance(visual, (str, os.PathLike)):
            raise ValueError(f"{where}: doc_to_visual gave {type(visual).__name__}, not a video file path")
        if not os.path.isfile(visual):
            raise ValueError(f"{where}: video not found: {visual}")
        return os.fspath(visual)

    @staticmethod
    def _text(context: str) -> str:
        return context.replace("<image>", "").replace("<video>", "").strip()

    def _log(self, start_samples: int, elapsed: float, gen_tokens: int, requests: int) -> None:
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        new = self.qa.samples[start_samples:]
        for rec in new:
            eval_logger.info(f"videoprune {rec['id']}: video tokens {rec['video_tokens_before']} -> "
                             f"{rec['video_tokens_after']}")
        before = sum(r["video_tokens_before"] for r in new)
        after = sum(r["video_tokens_after"] for r in new)
        log_metrics(total_elapsed_time=elapsed, total_gen_tokens=gen_tokens,
                    avg_speed=gen_tokens / elapsed if elapsed > 0 else 0.0,
                    additional_metrics={"kept_fraction": after / before if before else 1.0,
                                        "video_tokens_before": before, "video_tokens_after": after,
                                        "num_requests": requests})

    # ---- the lmms API --------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups = defaultdict(list)  # one batch never mixes generation settings
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        start, t0, gen_tokens = len(self.qa.samples), time.perf_counter(), 0
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="videoprune answering")
        for idx in groups.values():
            for k in range(0, len(idx), self.batch_size):
                chunk = idx[k : k + self.batch_size]
                items, ids = [], []
                for i in chunk:
                    context, gen_kwargs, doc_to_visual, doc_id, task, split = requests[i].args
                    items.append((self._video(doc_to_visual, doc_id, task, split), self._text(context)))
                    ids.append(f"{task}/{split}/{doc_id}")
                gen_kwargs = requests[chunk[0]].args[1] or {}
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                texts = self.qa.generate(items, ids, max_new_tokens=gen_kwargs.get("max_new_tokens"), until=until)
                for i, t in zip(chunk, texts):
                    results[i] = t
                    gen_tokens += len(self.qa.bundle.tokenizer(t, add_special_tokens=False)["input_ids"])
                bar.update(len(chunk))
        bar.close()
        self._log(start, time.perf_counter() - t0, gen_tokens, len(requests))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        out = []
        start, t0 = len(self.qa.samples), time.perf_counter()
        for req in tqdm(requests, disable=self.rank != 0, desc="videoprune scoring"):
            context, target, doc_to_visual, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            continuation = target(doc) if callable(target) else target
            if isinstance(continuation, (list, tuple)):
                continuation = continuation[0]
            video = self._video(doc_to_visual, doc_id, task, split)
            out.append(self.qa.loglikelihood(video, self._text(context), str(continuation), f"{task}/{split}/{doc_id}"))
        self._log(start, time.perf_counter() - t0, 0, len(requests))
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("videoprune answers single-turn video questions; multi-round tasks are not supported")
