"""Training on torch.distributed: EVS uptraining with per-step random rates, and STTS scorer training.

``videoprune.train.train(TrainConfig(...))`` or ``videoprune train ...``; see docs/train.md.
"""

from .config import TINY_MODELS, TrainConfig
from .rates import RateDistribution, rate_for_step
from .tokenizer import build_word_tokenizer
from .trainer import StepInfo, TrainResult, latest_checkpoint, train

__all__ = ["TINY_MODELS", "TrainConfig", "RateDistribution", "rate_for_step", "build_word_tokenizer", "StepInfo",
           "TrainResult", "latest_checkpoint", "train"]
