"""STTS speed: encoder + LLM forward (prefill) time at ratio 0 vs 0.5 on a scaled random Molmo2.

The harness of `videoprune bench speed` was not in this branch yet; this focused script measures
the same thing. Warm-ups are discarded, times are medians of `--repeats` runs, both ratios are
timed in one run (interleaved), the last stdout line is one JSON object.

    PYTHONPATH=src python benchmarks/stts_speed.py --frames 64 128

The scaled config keeps Molmo2's structure (per-frame ViT, 3x3 pooling, two tapped ViT layers,
frame text around every frame, Qwen3-style LLM) with smaller widths/depths so it runs on a CPU;
`--preset molmo2-8b` builds the real sizes (SigLIP so400m-like ViT, 8B LLM) for a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

PRESETS = {
    # CPU-sized: 18x18 patches -> 6x6 = 36 LLM tokens per frame; LLM ~3x the ViT's FLOPs per frame (as in Molmo2-8B)
    "scaled": dict(image=252, patch=14, vit=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=12,
                                                 num_attention_heads=4, num_key_value_heads=4, head_dim=16),
                   taps=[-1, -5], llm=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=12,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=64),
                   prune_at=2),
    "molmo2-8b": dict(image=378, patch=14, vit=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=25,
                                                    num_attention_heads=16, num_key_value_heads=16, head_dim=72),
                      taps=[-3, -9], llm=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                              num_attention_heads=32, num_key_value_heads=8, head_dim=128),
                      prune_at=3),
}
PATCH_ID, FS, FE = 101, 105, 106


def build(preset: dict, device, dtype):
    import transformers as tf

    cfg = tf.Molmo2Config(
        vision_config=dict(image_size=[preset["image"]] * 2, patch_size=preset["patch"], **preset["vit"]),
        adapter_config=dict(vision_feature_layer=preset["taps"], hidden_size=preset["vit"]["hidden_size"],
                            num_attention_heads=preset["vit"]["num_attention_heads"],
                            num_key_value_heads=preset["vit"]["num_key_value_heads"], head_dim=preset["vit"]["head_dim"],
                            intermediate_size=preset["llm"]["intermediate_size"],
                            text_hidden_size=preset["llm"]["hidden_size"]),
        text_config=dict(vocab_size=1024, additional_vocab_size=8, max_position_embeddings=65536, **preset["llm"]),
        image_start_token_id=102, low_res_image_start_token_id=104, image_end_token_id=103,
        image_patch_id=PATCH_ID, frame_start_token_id=FS, frame_end_token_id=FE)
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.Molmo2ForConditionalGeneration(cfg)
    return model.to(dtype).eval()


def inputs(preset: dict, frames: int, device, dtype) -> dict:
    side = preset["image"] // preset["patch"]
    p, s = side * side, side // 3
    g = torch.Generator().manual_seed(0)
    row = preset["patch"] ** 2 * 3
    clip = [torch.randn(p, row, generator=g)]
    for _ in range(1, frames):  # mostly static: a third of the patches change per frame
        nxt = clip[-1].clone()
        moved = torch.rand(p, generator=g) < 0.33
        nxt[moved] = torch.randn(int(moved.sum()), row, generator=g)
        clip.append(nxt)
    grid = torch.arange(p).view(side, side)
    win = grid.view(s, 3, s, 3).permute(0, 2, 1, 3).reshape(-1, 9)
    ids = [5, 6, 7]
    for _ in range(frames):
        ids += [8, 9, FS] + [PATCH_ID] * (s * s) + [FE]
    ids += [10, 11, 12, 13]
    ids = torch.tensor([ids])
    return {"input_ids": ids.to(device), "mm_token_type_ids": (ids == PATCH_ID).long().to(device),
            "pixel_values_videos": torch.stack(clip).to(device, dtype),
            "video_token_pooling": torch.cat([win + f * p for f in range(frames)]).to(device),
            "video_grids": torch.tensor([[frames, s, s]]).to(device)}


def timed(model, x, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        model(**x, logits_to_keep=1, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    import videoprune

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="scaled")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    device = torch.device(a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    preset = PRESETS[a.preset]
    model = build(preset, device, dtype)
    rows = []
    for frames in a.frames:
        x = inputs(preset, frames, device, dtype)
        times = {0.0: [], a.ratio: []}
        handles = {}
        for r in times:
            handles[r] = None
        for i in range(a.warmup + a.repeats):
            for r in times:  # interleaved so both ratios see the same machine load
                h = videoprune.patch(model, videoprune.STTSConfig(ratio=r, prune_at=preset["prune_at"]))
                try:
                    t = timed(model, x, device)
                    stats = h.stats
                finally:
                    h.remove()
                if i >= a.warmup:
                    times[r].append(t)
                print(f"  frames={frames} ratio={r} run={i} {t:.3f}s", file=sys.stderr)
        base, pruned = statistics.median(times[0.0]), statistics.median(times[a.ratio])
        rows.append({"frames": frames, "ratio": a.ratio, "time_ratio0_s": round(base, 4),
                     "time_pruned_s": round(pruned, 4), "speedup": round(base / pruned, 3),
                     "llm_tokens_before": stats.sequence_length_before, "llm_tokens_after": stats.sequence_length_after})
    print(f"{'frames':>6} {'ratio 0 (s)':>12} {'ratio %.2f (s)' % a.ratio:>14} {'speedup':>8} {'LLM tokens':>16}")
    for r in rows:
        print(f"{r['frames']:>6} {r['time_ratio0_s']:>12.3f} {r['time_pruned_s']:>14.3f} {r['speedup']:>7.2f}x "
              f"{r['llm_tokens_before']:>7}->{r['llm_tokens_after']:<7}")
    result = {"bench": "stts_speed", "model": f"molmo2-{a.preset}", "device": str(device),
              "torch_threads": torch.get_num_threads(), "repeats": a.repeats, "warmup": a.warmup,
              "timed": "encoder + LLM forward (prefill, logits_to_keep=1, no cache)", "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
