"""The errors of loading a weights file: each message names the file and the problem."""

from __future__ import annotations

__all__ = ["CheckpointError", "CheckpointNotFoundError", "NotATorchFileError", "UnsafeCheckpointError",
           "UnknownLayoutError", "MissingKeysError", "UnexpectedKeysError", "ShapeMismatchError"]


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError):
    pass


class NotATorchFileError(CheckpointError):
    pass


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary code to unpickle (weights_only=True refused it)."""


class UnknownLayoutError(CheckpointError):
    pass


class MissingKeysError(CheckpointError):
    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


class UnexpectedKeysError(CheckpointError):
    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


class ShapeMismatchError(CheckpointError):
    def __init__(self, message: str, mismatches: list[tuple[str, tuple, tuple]]):
        super().__init__(message)
        self.mismatches = mismatches
