"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""


class MimkitError(Exception):
    """Base class for errors caused by bad input (paths, options, files)."""


class ConfigError(MimkitError, ValueError):
    """A configuration value or command-line option is invalid."""


class DataError(MimkitError):
    """A data set path or its contents cannot be used."""


class CheckpointError(MimkitError):
    """A checkpoint or weights file is missing or does not match the model."""
