"""latentrec: collaborative filtering with PyTorch, from rating files to recommendations."""

from latentrec.data import IdMap, Ratings, Split, load_ratings, synthetic_ratings
from latentrec.errors import (
    ConfigError,
    DatabaseError,
    DataError,
    LatentrecError,
    ModelFileError,
    StoreLimitError,
    TrainingError,
    UnknownIdError,
)
from latentrec.models import (
    MODELS,
    Als,
    AlsConfig,
    DotConfig,
    DotProductBias,
    Ease,
    EaseConfig,
    EmbeddingNN,
    ModelConfig,
    NNConfig,
    build_model,
)
from latentrec.recommend import NewUser, Recommendation, Recommender, evaluate_ranking
from latentrec.storage import SavedModel, load, publish, save
from latentrec.training import EpochStats, History, TrainConfig, evaluate, fit
from latentrec.tuning import TuneResult, tune

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 (plain sorted(), as a test checks)
    "Als",
    "AlsConfig",
    "ConfigError",
    "DataError",
    "DatabaseError",
    "DotConfig",
    "DotProductBias",
    "Ease",
    "EaseConfig",
    "EmbeddingNN",
    "EpochStats",
    "History",
    "IdMap",
    "LatentrecError",
    "MODELS",
    "ModelConfig",
    "ModelFileError",
    "NNConfig",
    "NewUser",
    "Ratings",
    "Recommendation",
    "Recommender",
    "SavedModel",
    "Split",
    "StoreLimitError",
    "TrainConfig",
    "TrainingError",
    "TuneResult",
    "UnknownIdError",
    "__version__",
    "build_model",
    "evaluate",
    "evaluate_ranking",
    "fit",
    "load",
    "load_ratings",
    "publish",
    "save",
    "synthetic_ratings",
    "tune",
]
