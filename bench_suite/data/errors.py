"""The error raised when a dataset's files are not where the suite looks for them."""
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
        files = "\n".join(f"  {f}" for f in self.missing)
        if directory is None:
            where = (
                f"no data directory was given (neither --data-dir nor ${DATA_ENV} is set); "
                f"it must contain"
            )
        else:
            where = f"missing {len(self.missing)} file(s) in data directory {directory}:"
        super().__init__(f"dataset {dataset!r}: {where}\n{files}\n{HOW_TO_FIX}")

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0])

    def __reduce__(self):  # picklable across process boundaries (executors)
        return (type(self), (self.dataset, self.missing, self.directory))
