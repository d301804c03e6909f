"""Run vLLM engines on the tiny checkpoints and write what they did as JSON (run in the vLLM venv).

Driven by tests/vllm/test_vllm_plugin.py through a subprocess: ``python engine_script.py SPEC OUT``.
SPEC (JSON) names the checkpoint and the cases (a case may name another checkpoint, e.g. the
tiny Qwen2-VL one); each case starts one in-process engine
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``distributed_executor_backend="uni"``, float32, eager),
generates greedily for the same video and records: the prompt and output token ids, the keep
masks the plug-in and vLLM's built-in EVS computed, and the patch rows entering each vision
block. The first cases may run without the plug-in (``"plugin": false``): the script is started
with ``VLLM_PLUGINS`` naming no plug-in, and :func:`videoprune.vllm.register` is called by hand
before the first case that wants it. Cases that should fail to start record the error line.
A case with ``"save_inputs": "NAME.pt"`` saves its video input (pixels, grid, seconds per grid)
beside OUT for the HF side (``true``: ``video_inputs.pt``).
A case with ``"batches"`` (and ``"limit"``, its ``limit_mm_per_prompt``) instead runs each batch of
requests (several videos and an image per prompt) in one ``generate`` call (:func:`run_batches`),
then calls the model's ``embed_multimodal`` on the first ``"batch_videos"`` videos at once and one
at a time (:func:`batched_embed`): the multi-video call vLLM's GPU runner makes.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from functools import partial

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPT = ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe the video.<|im_end|>\n"
          "<|im_start|>assistant\n")


def make_image(seed: int, size: int):
    """A noise image with a bright square, as a PIL image (what vLLM's image items take)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    pixels[30:60, 30:60] = 200
    return Image.fromarray(pixels)


def request_input(req: dict, size: int, tag: str) -> dict:
    """One prompt of a batch case: ``req`` = ``{"videos": [[seed, frames], ...], "image": seed or None}``.

    The image (if any) comes first, then the videos, so the videos of a batch are adjacent in the
    encoder's input and reach ``embed_multimodal`` together. ``tag`` makes the items' ids (their
    cache keys) unique per run: a later run must encode them again, not reuse the cached embeddings.
    """
    parts, data, uuids = "", {}, {}
    if req.get("image") is not None:
        parts += "<|vision_start|><|image_pad|><|vision_end|>"
        data["image"] = [make_image(req["image"], size)]
        uuids["image"] = [f"{tag}-image"]
    parts += "<|vision_start|><|video_pad|><|vision_end|>" * len(req["videos"])
    data["video"] = [make_video(seed, frames, size) for seed, frames in req["videos"]]
    uuids["video"] = [f"{tag}-video{i}" for i in range(len(req["videos"]))]
    prompt = f"<|im_start|>user\n{parts}Describe the videos.<|im_end|>\n<|im_start|>assistant\n"
    return {"prompt": prompt, "multi_modal_data": data, "multi_modal_uuids": uuids}


def run_batches(llm, case: dict, record: dict, size: int, max_tokens: int) -> None:
    """Each batch of ``case["batches"]`` in one ``llm.generate`` call: per request its tokens, per batch its events."""
    from vllm import SamplingParams

    import videoprune.vllm.models as VM

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=1)
    calls = {"n": 0}
    parse = VM.parse_block

    def counted_parse(*a, **kw):
        calls["n"] += 1
        return parse(*a, **kw)

    VM.parse_block = counted_parse  # a request must not parse the block again (an stts block opens its scorer)
    record["batches"], record["batch_events"] = [], []
    try:
        for b, batch in enumerate(case["batches"]):
            first = len(record["events"])
            outs = llm.generate([request_input(r, size, f"b{b}r{i}") for i, r in enumerate(batch)], params)
            record["batches"].append([_request_record(o) for o in outs])
            record["batch_events"].append(record["events"][first:])
    finally:
        VM.parse_block = parse
    record["parse_calls_in_requests"] = calls["n"]


def batched_embed(model, inputs: list[dict], record: dict) -> dict:
    """``embed_multimodal`` on all ``inputs`` (one video each) at once against one at a time.

    vLLM's GPU runner batches the videos of several requests into one call; the CPU runner sends
    one video per call, so the engine runs above never take the multi-video path: this does, on the
    engine's model, with the inputs those runs encoded. Returns the largest difference of the
    outputs (embeddings and position channels), the per-video kept counts of both and their masks.
    """
    import torch

    def embed(items: list[dict]):
        first = len(record["events"])
        kwargs = {k: torch.cat([i[k] for i in items]) for k in ("pixel_values_videos", "video_grid_thw")}
        if items[0].get("second_per_grid_ts") is not None:
            kwargs["second_per_grid_ts"] = torch.cat([i["second_per_grid_ts"] for i in items])
        with torch.no_grad():
            out = model.embed_multimodal(**kwargs)
        return list(out), [k for e in record["events"][first:] for k in _per_video(e)]

    together, keeps = embed(inputs)
    alone = [embed([i]) for i in inputs]
    singles = [o for out, _ in alone for o in out]
    return {"videos": len(inputs), "shapes_equal": [list(a.shape) for a in together] == [list(b.shape) for b in singles],
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(together, singles)) if
            [a.shape for a in together] == [b.shape for b in singles] else None,
            "keeps": keeps, "single_keeps": [k for _, ks in alone for k in ks],
            "kept": [int(o.shape[0]) for o in together]}


def _per_video(event: dict) -> list[list[bool]]:
    """An observer event's keep mask split per video (an event may cover several)."""
    sizes = [t * h * w // 4 for t, h, w in event["grid_thw"]]
    keep, out = event["keep"], []
    for n in sizes:
        out.append(keep[:n])
        keep = keep[n:]
    return out


def _request_record(out) -> dict:
    done = out.outputs[0]
    return {"prompt_token_ids": list(out.prompt_token_ids), "output_token_ids": list(done.token_ids),
            "output_logprobs": [step[tok].logprob for tok, step in zip(done.token_ids, done.logprobs)]}


def make_video(seed: int, frames: int, size: int):
    """A moving-square clip with noise: ``(frames, size, size, 3)`` uint8, deterministic."""
    import numpy as np

    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, size=(frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        x = (f * size // frames) % (size - 24)
        video[f, 20:44, x:x + 24] = 230
    meta = {"fps": 2.0, "duration": frames / 2.0, "total_num_frames": frames, "frames_indices": list(range(frames)),
            "video_backend": "opencv", "do_sample_frames": False}
    return video, meta


def _install_probes(llm, record: dict) -> None:
    """Record the video input, the rows entering each vision block, and the encoder CUDA graph modalities."""
    def probe(model):
        import torch

        record["blocks_in"] = [[] for _ in model.visual.blocks]
        record["videos_per_call"] = []
        for i, blk in enumerate(model.visual.blocks):  # vLLM's compile wrapper skips module hooks
            blk.forward = _counting(blk.forward, record["blocks_in"][i])
        orig = model._process_video_input

        def process(video_input):
            record["videos_per_call"].append(int(video_input["video_grid_thw"].shape[0]))
            if "_video_inputs" in record:  # a batch case: its inputs, for batched_embed
                record["_video_inputs"].append(
                    {k: video_input.get(k) for k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")})
            if "video_input" not in record:
                pixels = model.visual.input_norm(video_input["pixel_values_videos"], torch.float32)
                record["video_input"] = {"pixel_values_videos": pixels, "video_grid_thw": video_input["video_grid_thw"],
                                         "second_per_grid_ts": video_input.get("second_per_grid_ts")}
            return orig(video_input)

        model._process_video_input = process
        # which modalities the model lets vLLM capture in encoder CUDA graphs (they skip the pruning hooks)
        record["cudagraph_modalities"] = list(model.get_encoder_cudagraph_config().modalities)
        return True

    llm.apply_model(probe)


def _counting(forward, rows: list):
    def counted(x, *args, **kwargs):
        rows.append(int(x.shape[0]))
        return forward(x, *args, **kwargs)

    return counted


def run_case(case: dict, ckpt: str, video, max_tokens: int, out_dir: str) -> dict:
    import torch
    from vllm import LLM, SamplingParams

    import videoprune.vllm.models as VM
    from vllm.model_executor.models import qwen2_5_vl as Q

    record: dict = {"name": case["name"], "events": [], "builtin_masks": []}
    kwargs = dict(model=ckpt, dtype="float32", enforce_eager=True, distributed_executor_backend="uni",
                  max_model_len=2048, max_num_seqs=2, limit_mm_per_prompt=case.get("limit", {"video": 1, "image": 0}), seed=0)
    if case.get("hf_overrides"):
        kwargs["hf_overrides"] = case["hf_overrides"]
    if case.get("video_pruning_rate"):
        kwargs["video_pruning_rate"] = case["video_pruning_rate"]
    if case.get("model_impl"):
        kwargs["model_impl"] = case["model_impl"]
    orig_mask = Q.compute_retention_mask

    def builtin_mask(*a, **kw):
        mask = orig_mask(*a, **kw)
        record["builtin_masks"].append(mask.cpu().tolist())
        return mask

    Q.compute_retention_mask = builtin_mask
    VM.observers[:] = [lambda ev: record["events"].append({**ev, "keep": ev["keep"].tolist()})]
    t0 = time.time()
    import vllm

    real_version = vllm.__version__
    vllm.__version__ = case.get("fake_vllm_version", real_version)  # the version check reads it at start
    try:
        llm = LLM(model=case.get("checkpoint", ckpt), **{k: v for k, v in kwargs.items() if k != "model"})
    except Exception as e:  # a case that must fail at start
        lines = [ln.strip() for ln in str(e).splitlines() if "videoprune" in ln or "vllm version" in ln]
        record["start_error"] = lines[0] if lines else (str(e).strip().splitlines() or [type(e).__name__])[-1]
        record["start_error_type"] = type(e).__name__
        return record
    finally:
        Q.compute_retention_mask = orig_mask
        vllm.__version__ = real_version
    record["start_s"] = time.time() - t0
    Q.compute_retention_mask = builtin_mask
    if case.get("batches"):
        record["_video_inputs"] = []
    _install_probes(llm, record)
    if case.get("batches"):
        run_batches(llm, case, record, 112, max_tokens)
        engine_calls = len(record["videos_per_call"])
        record["batched_embed"] = llm.apply_model(partial(batched_embed, inputs=record.pop("_video_inputs")[:case["batch_videos"]],
                                                          record=record))[0]
        # the direct calls' video counts, apart from the engine's own
        record["videos_per_call"], record["batched_embed"]["videos_per_call"] = (
            record["videos_per_call"][:engine_calls], record["videos_per_call"][engine_calls:])
        record.pop("video_input", None)
        Q.compute_retention_mask = orig_mask
        VM.observers[:] = []
        del llm
        gc.collect()
        return record
    outs = llm.generate({"prompt": PROMPT, "multi_modal_data": {"video": video}},
                        SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=1))
    Q.compute_retention_mask = orig_mask
    VM.observers[:] = []
    record["prompt_token_ids"] = list(outs[0].prompt_token_ids)
    done = outs[0].outputs[0]
    record["output_token_ids"] = list(done.token_ids)
    record["output_logprobs"] = [step[tok].logprob for tok, step in zip(done.token_ids, done.logprobs)]
    vi = record.pop("video_input", None)
    if vi is not None and case.get("save_inputs"):
        name = case["save_inputs"] if isinstance(case["save_inputs"], str) else "video_inputs.pt"
        torch.save({"pixel_values_videos": vi["pixel_values_videos"].cpu(), "video_grid_thw": vi["video_grid_thw"].cpu(),
                    "second_per_grid_ts": vi.get("second_per_grid_ts")}, os.path.join(out_dir, name))
    del llm
    gc.collect()
    return record


def main(spec_path: str, out_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    video = make_video(spec.get("seed", 0), spec.get("frames", 8), spec.get("size", 112))
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "videoprune"]
    result = {"entry_point": eps[0].value if eps else None, "cases": []}
    registered = False
    for case in spec["cases"]:
        if case.get("plugin", True) and not registered:
            eps[0].load()()  # what vLLM does for an enabled plug-in
            # vLLM caches the model class per checkpoint; the plug-in-free case above filled it
            from vllm.model_executor.model_loader import utils as loader_utils

            loader_utils._MODEL_ARCH_BY_HASH.clear()
            registered = True
        try:
            result["cases"].append(run_case(case, spec["checkpoint"], video, spec.get("max_tokens", 8),
                                            os.path.dirname(out_path)))
        except Exception:
            result["cases"].append({"name": case["name"], "crash": traceback.format_exc()})
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
