"""The vLLM internals the plug-in hooks besides its model class (vLLM 0.32), each idempotent.

1. ``EngineArgs.create_engine_config`` (``vllm/engine/arg_utils.py``, used by ``LLM`` and
   ``vllm serve``): every engine start validates a ``videoprune`` block in the model config,
   whatever the architecture, so a bad or uncovered block fails at start with one line naming
   the field instead of being ignored.
2. ``load_model`` of ``GPUModelRunner`` (``vllm/v1/worker/gpu_model_runner.py``) and of the CPU
   ``CPUModelRunner`` (``vllm/v1/worker/cpu_model_runner.py``): after loading, the runner's
   ``is_multimodal_pruning_enabled`` flag (which makes it call ``recompute_mrope_positions`` and
   encode videos one at a time) is turned on when the model prunes: for a configured block, and,
   as a work-around, for vLLM's own ``video_pruning_rate`` on the CPU runner, whose
   ``load_model`` never sets the flag (vLLM then fails with ``shape mismatch: value tensor of
   shape [16, 132] ...``).
3. ``maybe_create_mm_pruner`` as imported by ``vllm/v1/worker/gpu/model_states/default.py``
   (the V2 GPU runner): a model with a block gets vLLM's ``MultiModalPruner`` as with EVS.
"""

from __future__ import annotations

import functools
import os

__all__ = ["install"]

_MARK = "_videoprune_hooked"


def _wrapped(fn, after, on_result: bool = False):
    """``fn`` followed by ``after(self)`` (or ``after(result)``), marked so it is never wrapped twice."""
    if getattr(fn, _MARK, False):
        return fn

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        out = fn(self, *args, **kwargs)
        after(out if on_result else self)
        return out

    setattr(wrapper, _MARK, True)
    return wrapper


def _check_config(vllm_config) -> None:
    from .config import BLOCK, check_vllm_version, parse_block

    model_config = getattr(vllm_config, "model_config", None)
    hf_config = getattr(model_config, "hf_config", None)
    block = getattr(hf_config, BLOCK, None)
    if block is None:
        return
    import vllm

    check_vllm_version(vllm.__version__, os.environ.get("VIDEOPRUNE_VLLM_ALLOW_UNTESTED") == "1")
    parse_block(block, hf_config.model_type, getattr(hf_config, "vision_config", None))
    _check_served(model_config)


def _check_served(model_config) -> None:
    """ValueError unless vLLM builds one of the plug-in's classes (``--model-impl transformers`` would not)."""
    from .config import BLOCK, SERVED

    arch = getattr(model_config, "architecture", None)
    if arch not in SERVED:
        impl = getattr(model_config, "model_impl", "auto")
        raise ValueError(f"{BLOCK}: vLLM resolved this model to {arch} (model_impl={impl}), which the plug-in does "
                         f"not replace, so the block would be ignored; the plug-in serves {', '.join(SERVED)} "
                         "with vLLM's default model implementation")


def _model_prunes(runner) -> bool:
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning

    model = runner.get_model()
    if getattr(model, "videoprune", None) is not None:
        return True
    mm = runner.model_config.multimodal_config
    return supports_multimodal_pruning(model) and mm is not None and mm.is_multimodal_pruning_enabled()


def _set_pruning_flag(runner) -> None:
    if _model_prunes(runner):
        runner.is_multimodal_pruning_enabled = True


def _hook_v2_pruner() -> None:
    try:
        from vllm.v1.worker.gpu.model_states import default as states
        from vllm.v1.worker.gpu.model_states.mm_pruning import MultiModalPruner
    except ImportError:  # no V2 runner in this build
        return
    orig = states.maybe_create_mm_pruner
    if getattr(orig, _MARK, False):
        return

    @functools.wraps(orig)
    def maybe_create_mm_pruner(model_config, model, rope_state, encoder_cache):
        if getattr(model, "videoprune", None) is not None and rope_state is not None and encoder_cache is not None:
            return MultiModalPruner(model, rope_state, encoder_cache, model_config.get_inputs_embeds_size())
        return orig(model_config, model, rope_state, encoder_cache)

    setattr(maybe_create_mm_pruner, _MARK, True)
    states.maybe_create_mm_pruner = maybe_create_mm_pruner


def install_start_check() -> None:
    """Install hook 1 alone: every engine start validates a ``videoprune`` block (safe to call again)."""
    from vllm.engine.arg_utils import EngineArgs

    EngineArgs.create_engine_config = _wrapped(EngineArgs.create_engine_config, _check_config, on_result=True)


def install() -> None:
    """Install the three hooks (safe to call again, in every vLLM process)."""
    install_start_check()
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    GPUModelRunner.load_model = _wrapped(GPUModelRunner.load_model, _set_pruning_flag)
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # a GPU build without the CPU runner
        CPUModelRunner = None
    if CPUModelRunner is not None and "load_model" in CPUModelRunner.__dict__:
        CPUModelRunner.load_model = _wrapped(CPUModelRunner.load_model, _set_pruning_flag)
    _hook_v2_pruner()
