"""videoprune for vLLM: pre-encoder EVS, STTS and EVS through one ``videoprune`` block, no fork.

Install ``pip install "videoprune[vllm]"``; vLLM then loads :func:`register` in every process
(``vllm.general_plugins`` entry point). A model is configured by one block in ``hf_overrides``
or its ``config.json``::

    LLM(model=PATH, hf_overrides={"videoprune": {"method": "evs-pre", "rate": 0.75}})
    vllm serve PATH --hf-overrides '{"videoprune": {"method": "stts", "rate": 0.5, "scorer_path": "s.safetensors"}}'

* ``evs``: EVS on the LLM-side embeddings, after the encoder (the selection of vLLM's
  ``video_pruning_rate``, computed by :mod:`videoprune.core`);
* ``evs-pre``: EVS on pixels, before the encoder, which encodes the kept merge units only;
* ``stts``: a scorer saved by ``handle.save_scorer`` prunes inside the vision encoder.

Without a block the model is vLLM's own. Covered: Qwen2.5-VL (all three methods) and Qwen2-VL
(``evs`` and ``evs-pre``: STTS has no Qwen2-VL integration, and vLLM's own Qwen2-VL class has no
pruning support, which its subclass adds for a configured block; vLLM's ``video_pruning_rate``
stays unsupported on Qwen2-VL, as in vLLM). Not covered yet: Qwen3-VL (its prompts carry
per-frame timestamp text and deepstack features, which need their own placeholder and feature
handling); a block on it, or an ``stts`` block on Qwen2-VL, fails at engine start.
Tested on vLLM 0.32.x; another version fails at engine start unless
``VIDEOPRUNE_VLLM_ALLOW_UNTESTED=1``.
"""

from __future__ import annotations

__all__ = ["register"]

#: architectures replaced by a pruning-aware subclass: ``arch -> "module:Class"``
ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "videoprune.vllm.models:VideopruneQwen2_5_VL",
    "Qwen2VLForConditionalGeneration": "videoprune.vllm.models:VideopruneQwen2VL",
}


def register() -> None:
    """The ``vllm.general_plugins`` entry point: register the model subclasses and install the hooks.

    Safe to call more than once and in every vLLM process (vLLM calls it in each). On a vLLM
    version outside the tested range (and without ``VIDEOPRUNE_VLLM_ALLOW_UNTESTED=1``) only the
    start check is installed: vLLM's own classes and runners stay untouched for users who set no
    block, and a block fails at start naming the version.
    """
    import os

    import vllm
    from vllm import ModelRegistry

    from .config import TESTED_VLLM
    from .hooks import install, install_start_check

    minor = ".".join(str(vllm.__version__).split(".")[:2])
    if minor not in TESTED_VLLM and os.environ.get("VIDEOPRUNE_VLLM_ALLOW_UNTESTED") != "1":
        install_start_check()
        return
    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
    install()
