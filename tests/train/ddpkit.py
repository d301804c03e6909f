"""Worker of the 2-process gloo tests: one rank of a tiny training run that records what each step did."""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist

from trainkit import tiny_config


def worker(rank: int, world: int, init_file: str, data: str, out: str, overrides: dict) -> None:
    # Two ranks share 2 CPU cores with other jobs: one intra-op thread each avoids oversubscription.
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    steps = []

    def on_step(info):
        grads = torch.cat([p.grad.flatten() for p in info.model.parameters() if p.requires_grad and p.grad is not None])
        gathered = [torch.empty_like(grads) for _ in range(world)]
        dist.all_gather(gathered, grads)
        steps.append({"step": info.step, "loss": info.loss, "local_loss": info.local_loss, "indices": info.indices,
                      "rates": info.rates, "grads_equal": all(torch.equal(g, gathered[0]) for g in gathered),
                      "grad_norm": float(grads.norm()), "n_grads": int(grads.numel())})

    try:
        result = train_run(data, out, overrides, on_step)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump({"steps": steps, "export": result.export_dir}, fh)
    finally:
        dist.destroy_process_group()


def train_run(data, out, overrides, on_step):
    from videoprune.train import train

    return train(tiny_config(data, out, **overrides), on_step=on_step)
