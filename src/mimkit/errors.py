"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""

import errno


class MimkitError(Exception):
    """Base class for errors caused by bad input (paths, options, files)."""


class ConfigError(MimkitError, ValueError):
    """A configuration value or command-line option is invalid."""


class DataError(MimkitError):
    """A data set path or its contents cannot be used."""


class CheckpointError(MimkitError):
    """A checkpoint or weights file is missing or does not match the model."""


class OutputError(MimkitError):
    """An output path cannot be written (a file where a folder should be, no permission,
    a read-only or full disk) or is in use by another run."""


class NonFiniteLossError(MimkitError):
    """The loss, the gradients or the weights became NaN or infinite. The step was not
    applied, and the checkpoint in place is the last one known good."""


class MimkitWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI prints it as one
    ``mimkit COMMAND: warning: ...`` line."""


_CAUSES = {
    getattr(errno, name): text
    for name, text in (
        ("ENOSPC", "disk full"),
        ("EDQUOT", "disk quota exceeded"),
        ("EROFS", "read-only file system"),
        ("EACCES", "permission denied"),
        ("EPERM", "permission denied"),
        ("ENOTDIR", "a part of the path is a file, not a folder"),
        ("EISDIR", "it is a folder"),
        ("ENAMETOOLONG", "name too long"),
    )
    if hasattr(errno, name)  # not every platform has every code
}


def output_error(path: object, err: OSError, action: str = "cannot write") -> OutputError:
    """One line naming the path and the cause of an OSError met while writing it."""
    cause = _CAUSES.get(err.errno) or err.strerror or type(err).__name__
    return OutputError(f"{action} {path}: {cause}")
