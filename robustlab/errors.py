"""Exceptions a user can act on.

Every error robustlab raises on bad input derives from :class:`RobustlabError`; the CLI prints its
message as one line on stderr and exits non-zero. Messages say what was wrong and what to do.
"""


class RobustlabError(Exception):
    """Base class: a problem the user can fix (bad name, bad file, bad setting)."""


class UnknownNameError(RobustlabError, KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0] if self.args else ""


class ConfigError(RobustlabError, ValueError):
    """A setting is missing, of the wrong type, or out of range."""


class DataError(RobustlabError):
    """A dataset could not be found, read or validated."""


class CheckpointError(RobustlabError):
    """A checkpoint is missing, truncated, or does not fit the requested model."""


class InputError(RobustlabError, ValueError):
    """Tensors handed to a public function break the pixel/label contract."""


class TrainingDiverged(RobustlabError):
    """A loss became non-finite; the last good checkpoint was kept."""
