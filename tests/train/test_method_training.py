"""train(): one strategy object per method kind, chosen once from the methods table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")

from videoprune import EVSConfig  # noqa: E402
from videoprune.train import TrainConfig, rate_for_step  # noqa: E402
from videoprune.train.trainer import (  # noqa: E402
    STTS_SCORER_FILE,
    _EVSTraining,
    _method_training,
    _STTSTraining,
)

PATHS = dict(data="d.jsonl", model="tiny:qwen2_5_vl", output_dir="out")


def test_the_strategy_is_chosen_by_the_methods_kind():
    """method evs trains with the EVS strategy, stts with the STTS one."""
    assert type(_method_training(TrainConfig(**PATHS))) is _EVSTraining
    assert type(_method_training(TrainConfig(**PATHS, method="stts"))) is _STTSTraining


def test_evs_sets_each_micro_batchs_drawn_rate_on_the_handle():
    """EVS: micro-batch (step, micro) prunes at rate_for_step of the run's distribution and seed."""
    cfg = TrainConfig(**PATHS, rate_dist="uniform:0.3,0.9", export_rate=0.6, seed=5)
    handle = SimpleNamespace(config=EVSConfig(rate=0.1))
    rate = _EVSTraining(cfg).step_rate(handle, 3, 1)
    assert rate == rate_for_step(cfg.rate_distribution, 5, 3, 1) == handle.config.rate


def test_stts_adds_its_auxiliary_loss_and_refuses_outputs_without_it():
    """STTS: loss = task loss + weighted aux loss; no aux loss in training mode is an error."""
    import torch

    strategy = _STTSTraining(TrainConfig(**PATHS, method="stts", stts_ratio=0.4))
    loss, aux = strategy.loss(SimpleNamespace(loss=torch.tensor(2.0), stts_aux_loss=torch.tensor(0.25)))
    assert float(loss) == 2.25 and aux == 0.25
    assert strategy.step_rate(None, 0, 0) == 0.4
    with pytest.raises(RuntimeError, match="no outputs.stts_aux_loss"):
        strategy.loss(SimpleNamespace(loss=torch.tensor(2.0)))
    with pytest.raises(RuntimeError, match="no keep statistics"):
        strategy.missing_stats()


def test_each_method_records_how_it_was_trained_once():
    """config.videoprune_training is the method's own record (written once; STTS's is not EVS's overwritten)."""
    evs = _EVSTraining(TrainConfig(**PATHS, rate_dist="fixed:0.5", lora=True)).training_record()
    assert evs == {"method": "evs", "rate_dist": "fixed:0.5", "export_rate": 0.5, "lora": True}
    stts = _STTSTraining(TrainConfig(**PATHS, method="stts", stts_prune_at=1)).training_record()
    assert stts == {"method": "stts", "lora": False, "stts_ratio": 0.5, "stts_prune_at": 1, "scorer": STTS_SCORER_FILE}
