"""The errors raised when a dataset's files are missing, or present but unreadable."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from bench_suite.data.base import DATA_ENV, DOWNLOAD_ENV

HOW_TO_FIX = (
    f"Point the suite at the data with --data-dir DIR or {DATA_ENV}=DIR, "
    f"or allow downloads with --download (or {DOWNLOAD_ENV}=1)."
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing and downloading is not allowed.

    ``dataset`` is the registry name, ``missing`` the expected files (relative to
    ``directory``) that were not found, ``directory`` the data directory searched
    (None when no data directory was given at all).
    """

    def __init__(self, dataset: str, missing: Sequence[str], directory: Optional[Path]) -> None:
        self.dataset = dataset
        self.missing = list(missing)
        self.directory = directory
        files = ", ".join(self.missing)  # one line: the command-line error is one line
        if directory is None:
            where = (
                f"no data directory was given (neither --data-dir nor ${DATA_ENV} is set); "
                f"it must contain"
            )
        else:
            where = f"missing {len(self.missing)} file(s) in data directory {directory}:"
        super().__init__(f"dataset {dataset!r}: {where} {files}. {HOW_TO_FIX}")

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0])

    def __reduce__(self):  # picklable across process boundaries (executors)
        return (type(self), (self.dataset, self.missing, self.directory))


class DatasetFileError(ValueError):
    """A dataset's files are present but cannot be read (truncated, corrupt, wrong format).

    Raised before any training, naming the dataset, the files read, the data directory
    and the loader's own complaint, instead of a traceback from deep inside DGL or OGB.
    """

    def __init__(self, dataset: str, files: Sequence[str], directory: Optional[Path], cause: str) -> None:
        self.dataset = dataset
        self.files = list(files)
        self.directory = directory
        self.cause = cause
        said = " ".join(str(cause).split())  # one line, whatever the loader's message looked like
        super().__init__(
            f"dataset {dataset!r}: its files in data directory {directory} could not be read "
            f"(malformed or truncated?): {', '.join(self.files)}; loader said: {said}; "
            "check them against the published files (`sha256sum -c SHA256SUMS` in the data directory)"
        )

    def __reduce__(self):  # picklable across process boundaries (executors)
        return (type(self), (self.dataset, self.files, self.directory, self.cause))
