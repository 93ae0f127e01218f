"""The exceptions latentrec raises. Library code raises them; only the CLI prints them."""

from __future__ import annotations


class LatentrecError(Exception):
    """Base class of every error latentrec raises on purpose (bad input, unknown ids, ...)."""


class DataError(LatentrecError, ValueError):
    """Rating data that cannot be read or used: a missing file, a malformed line, a bad column."""


class ConfigError(LatentrecError, ValueError):
    """A configuration value out of its allowed range; the message names the field."""


class UnknownIdError(LatentrecError, KeyError):
    """A raw user or item id the model does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelFileError(LatentrecError):
    """A model directory that is missing, damaged or not written by latentrec."""


class TrainingError(LatentrecError):
    """Training that cannot go on, such as a loss that stopped being finite (diverged)."""


class DatabaseError(LatentrecError):
    """A database of visitors' ratings that cannot be reached or used: a bad URL, a server out
    of reach, a schema behind the code. The message never holds the URL's password."""


class StoreLimitError(DatabaseError):
    """Ratings that would take a visitor past the most one visitor may keep stored."""


def listed(names: list[str]) -> str:
    """Names for a message: "a", "a and b", "a, b and c"."""
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"
