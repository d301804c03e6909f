"""Stage 0 of the default model's recipe: the fresh model learns `direction` alone, in memory.

The default model (videoprune.data.qa_model, the "default" size) is trained on --ntrain
`direction` clips rendered in memory (no video files), half of them with one mover only (the
named object moves, the distractor stays still: the one-mover step that makes reading motion
direction learnable at this scale, docs/accuracy.md), then saved as a bundle for
`recipes/train_default_model.py --stage base --init OUT`. Validation (`val` split only):
--nval two-mover `direction` clips plus --nval-single one-mover clips (100), printed every --every steps as
one JSON line. AdamW, linear warm-up over 100 steps, cosine decay; one thread by default.

The one-mover clips are `moved` scenes relabelled with the `direction` question of their mover
(this is how the shipped stage was made; the generator's `direction_single` type builds the
same kind of clip from its own random stream, and `train_default_model.py --extra-only
--extra-types direction,direction_single` is the recipe's equivalent stage).

Usage (the stage behind the shipped default; 3000 steps took 29 and 34 min on one core in two runs):
  python recipes/direction_stage.py --out runs/direction --ntrain 4000 --nval 200 --steps 3000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="bundle folder written at the end")
    ap.add_argument("--ntrain", type=int, default=4000)
    ap.add_argument("--nval", type=int, default=200)
    ap.add_argument("--nval-single", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

    from videoprune.bundle import EMBEDDED, SPEC_FILE
    from videoprune.data import qa_model
    from videoprune.data.synthetic import answer_from_scene, make_scene, render_scene
    from videoprune.train.tokenizer import build_word_tokenizer
    from videoprune.video import clip_from_frames, preprocess
    from videoprune.video.prompt import build_prompt

    def patch_embed(self, x):  # the Conv3d with kernel == stride as the matmul it is (same weights, faster on CPU)
        w = self.proj.weight
        return torch.nn.functional.linear(x.to(w.dtype).view(-1, w[0].numel()), w.view(w.shape[0], -1), self.proj.bias)

    modeling_qwen2_5_vl.Qwen2_5_VisionPatchEmbed.forward = patch_embed
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = build_word_tokenizer()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    size = qa_model.FRAME_SIZE

    def one_mover(split, i):
        s = make_scene(split, 0, i, qtype="moved")
        (mover,) = [o for o in s.objects if len(set(o.xy)) > 1]  # a `moved` scene has exactly one
        s.question = f"which direction did the {mover.colour[0]} object move ?"
        s.answer, s.qtype = answer_from_scene(s), "single"
        return s

    def encode(split, n):
        xs, t0 = [], time.time()
        for i in range(n):
            single = (split == "train" and i % 2 == 0) or (split == "val" and i >= a.nval)
            s = one_mover(split, i) if single else make_scene(split, 0, i, qtype="direction")
            vt = preprocess(clip_from_frames(render_scene(s), fps=qa_model.FPS), "qwen2_5_vl",
                            min_pixels=size * size, max_pixels=size * size)
            ids = tok(build_prompt(vt, s.question, system=None), add_special_tokens=False)["input_ids"]
            ans = tok(s.answer, add_special_tokens=False)["input_ids"] + [end]
            xs.append((ids, ans, vt.pixel_values_videos.to(torch.bfloat16), vt.video_grid_thw, vt.second_per_grid_ts,
                       s.qtype))
        print(split, n, "clips encoded in", round(time.time() - t0), "s", flush=True)
        return xs

    train, val = encode("train", a.ntrain), encode("val", a.nval + a.nval_single)
    model = qa_model.build_qa_model(tok, "default")
    torch.manual_seed(a.seed)
    model.apply(model._init_weights)
    model.set_attn_implementation("eager")
    vid = model.config.video_token_id

    def batch(items, with_answer=True):
        seqs = [(x[0] + (x[1] if with_answer else [])) for x in items]
        length = max(map(len, seqs))
        ids = torch.full((len(items), length), tok.pad_token_id)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for r, (x, s) in enumerate(zip(items, seqs)):
            off = length - len(s)
            ids[r, off:], mask[r, off:] = torch.tensor(s), 1
            if with_answer:
                labels[r, off + len(x[0]):] = torch.tensor(x[1])
        out = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == vid).long() * 2,
                   pixel_values_videos=torch.cat([x[2] for x in items]).float(),
                   video_grid_thw=torch.cat([x[3] for x in items]),
                   second_per_grid_ts=torch.cat([x[4] for x in items]))
        if with_answer:
            out["labels"] = labels
        return out

    @torch.no_grad()
    def evaluate():
        model.eval()
        hits = {}
        for i in range(0, len(val), 50):
            items = val[i:i + 50]
            pred = model(**batch(items, False)).logits[:, -1].argmax(-1).tolist()
            for x, p in zip(items, pred):
                hits.setdefault(x[5], []).append(p == x[1][0])
        model.train()
        flat = [h for hs in hits.values() for h in hs]
        return round(sum(flat) / len(flat), 3), {k: round(sum(v) / len(v), 2) for k, v in hits.items()}

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    rng, t0, run = random.Random(a.seed), time.time(), []
    for step in range(1, a.steps + 1):
        loss = model(**batch(rng.sample(train, a.bs))).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        run.append(loss.item())
        if step % a.every == 0 or step == a.steps:
            acc, per_type = evaluate()
            print(json.dumps({"step": step, "loss": round(sum(run) / len(run), 3), "val": acc, "per_type": per_type,
                              "t": round(time.time() - t0)}), flush=True)
            run = []
    model.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    shutil.copy(EMBEDDED["default"] / SPEC_FILE, f"{a.out}/{SPEC_FILE}")  # the same preprocessing as every stage
    print(json.dumps({"export": a.out, "steps": a.steps}))


if __name__ == "__main__":
    main()
