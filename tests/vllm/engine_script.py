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
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPT = ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe the video.<|im_end|>\n"
          "<|im_start|>assistant\n")


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
        for i, blk in enumerate(model.visual.blocks):  # vLLM's compile wrapper skips module hooks
            blk.forward = _counting(blk.forward, record["blocks_in"][i])
        orig = model._process_video_input

        def process(video_input):
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
                  max_model_len=2048, max_num_seqs=2, limit_mm_per_prompt={"video": 1, "image": 0}, seed=0)
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
    _install_probes(llm, record)
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
