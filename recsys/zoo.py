"""Models by name, as the CLI and the benchmarks build them: the pipeline and the baselines."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from recsys._protocols import RecommenderLike
from recsys.errors import ConfigError
from recsys.models.baselines import (
    EaseRecommender,
    PopularityRecommender,
    TransitionRecommender,
    ZeroShotTextRecommender,
    ZeroShotTextRecommenderConfig,
)
from recsys.models.memory_config import MemoryEncoderConfig
from recsys.models.memory_recommender import MemoryRecommender, MemoryRecommenderConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig

__all__ = ["DEFAULT_MODELS", "MODEL_NAMES", "make_model"]


def _pipeline(text: TextEncoderConfig, seed: int) -> RecommenderLike:
    return Recommender(RecommenderConfig(text=text, seed=seed))


def _memory(text: TextEncoderConfig, seed: int) -> RecommenderLike:
    encoder = MemoryEncoderConfig(seed=seed)
    return MemoryRecommender(MemoryRecommenderConfig(text=text, encoder=encoder))


def _pipeline_memory(text: TextEncoderConfig, seed: int) -> RecommenderLike:
    return Recommender(
        RecommenderConfig(text=text, seed=seed, user_encoder="memory", memory=MemoryEncoderConfig(seed=seed))
    )


def _zero_shot(text: TextEncoderConfig, seed: int) -> RecommenderLike:
    return ZeroShotTextRecommender(ZeroShotTextRecommenderConfig(text=text))


_FACTORIES: dict[str, Callable[[TextEncoderConfig, int], RecommenderLike]] = {
    "popularity": lambda text, seed: PopularityRecommender(),
    "transitions": lambda text, seed: TransitionRecommender(),
    "zero-shot-text": _zero_shot,
    "ease": lambda text, seed: EaseRecommender(),
    "pipeline": _pipeline,
    "memory": _memory,
    "pipeline-memory": _pipeline_memory,
}
MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)
DEFAULT_MODELS: tuple[str, ...] = ("popularity", "transitions", "zero-shot-text", "pipeline")
"""Run by ``recsys quickstart`` and by ``recsys evaluate`` without ``--model`` (the learned encoder trains for
minutes, so it is asked for by name)."""


def make_model(name: str, text: TextEncoderConfig | None = None, seed: int = 0) -> RecommenderLike:
    """A fresh, unfitted model by name (one of :data:`MODEL_NAMES`)."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown model {name!r}; choose from {list(MODEL_NAMES)}.")
    text = text or TextEncoderConfig()
    return _FACTORIES[name](dataclasses.replace(text), seed)
