"""The models latentrec trains, one module each, and the registry that names them.

Adding a model is one module (its config, network, scoring, item vectors, fold-in) and one
line in `MODELS`; `tests/test_contract.py` then checks it as it checks every model here (see
docs/adding-a-model.md). Nothing outside this package asks a model's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentrec.errors import ConfigError
from latentrec.models.als import Als, AlsConfig
from latentrec.models.base import (
    HUGE_PAGE,
    SCORE_CHUNK_BYTES,
    Interactions,
    LatentModel,
    ModelConfig,
    shown,
    y_range_for,
    zeros_in_huge_pages,
)
from latentrec.models.bayes import Bayes, BayesConfig
from latentrec.models.dot import DotConfig, DotProductBias
from latentrec.models.ease import Ease, EaseConfig
from latentrec.models.nn import EmbeddingNN, NNConfig, embedding_size

MODELS: dict[str, type[LatentModel]] = {
    "dot": DotProductBias,
    "nn": EmbeddingNN,
    "ease": Ease,
    "als": Als,
    "bayes": Bayes,
}
DEFAULT_MODEL = "dot"


def model_class(name: Any) -> type[LatentModel]:
    """The registered model called `name`; ConfigError listing the names otherwise."""
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {shown(name)}")
    return MODELS[name]


def build_model(config: ModelConfig) -> LatentModel:
    """A freshly initialised model of the configured architecture."""
    return model_class(config.kind).from_config(config)


def config_from_json(data: Any) -> ModelConfig:
    """The config a model file or checkpoint holds (`ModelConfig.to_json`); `ConfigError`
    names the first field that is wrong.

    Files written before each model had a config of its own list every model's fields: those
    of other registered models are dropped."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a model config is a JSON object, got {type(data).__name__}")
    values = dict(data)
    cls = model_class(values.pop("kind", DEFAULT_MODEL)).Config
    own = cls.field_names()
    others = {name for m in MODELS.values() for name in m.Config.field_names()} - own
    return cls.from_json({**cls.earlier, **{k: v for k, v in values.items() if k not in others}})


__all__ = [
    "DEFAULT_MODEL",
    "HUGE_PAGE",
    "MODELS",
    "SCORE_CHUNK_BYTES",
    "Als",
    "AlsConfig",
    "Bayes",
    "BayesConfig",
    "DotConfig",
    "DotProductBias",
    "Ease",
    "EaseConfig",
    "EmbeddingNN",
    "Interactions",
    "LatentModel",
    "ModelConfig",
    "NNConfig",
    "build_model",
    "config_from_json",
    "embedding_size",
    "model_class",
    "y_range_for",
    "zeros_in_huge_pages",
]
