"""Reading pickled data from files the suite did not write, without running their code.

A pickle can call any importable function while it loads, so a replaced dataset or
model file could run a payload.  The formats the suite reads that hold pickles are:

* the Planetoid ``ind.<name>.*`` files (Python-2 pickles of numpy arrays, scipy CSR
  matrices and a ``defaultdict`` of lists);
* ``.npz`` files with an object array (``ms_academic_*.npz`` holds ``class_names``,
  strings pickled through ``_codecs.encode``);
* DGL's ``info.pkl`` next to its processed graphs (a dict of plain numbers);
* integer-model files written by :meth:`bench_suite.engine.intmodel.IntModel.save`
  (``torch.save`` of a dict of numpy arrays and numbers).

:class:`RestrictedUnpickler` resolves only the globals in :data:`DATA_GLOBALS`, the
ones these files need (found by recording ``find_class`` over the real files), plus
plain containers; anything else raises :class:`UnsafePickleError` naming the file and
the global, before the global is even imported.
"""
from __future__ import annotations

import io
import os
import pickle
import types
import zipfile
from typing import IO, Any, Dict, FrozenSet, Optional

import numpy as np

#: module -> names a data pickle may refer to.  ``__builtin__`` and ``copy_reg`` are the
#: Python-2 spellings (mapped to ``builtins`` / ``copyreg`` by the unpickler).
DATA_GLOBALS: Dict[str, FrozenSet[str]] = {
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),  # as numpy >= 2 writes it
    "scipy.sparse": frozenset({"csr_matrix"}),
    "scipy.sparse.csr": frozenset({"csr_matrix"}),
    "scipy.sparse._csr": frozenset({"csr_matrix"}),
    "collections": frozenset({"defaultdict", "OrderedDict"}),
    "builtins": frozenset({"list", "dict", "set", "frozenset"}),
    "__builtin__": frozenset({"list", "dict", "set", "frozenset"}),
    "_codecs": frozenset({"encode"}),  # bytes in a protocol-2 pickle written by Python 3
}
ALLOWED_DESCRIPTION = "numpy arrays and scalars, scipy CSR matrices and list/dict/set containers"


class UnsafePickleError(ValueError):
    """A pickled file refers to a global outside the allow-list; nothing of it was run."""

    def __init__(self, path: str, global_name: str, allowed: str = ALLOWED_DESCRIPTION, context: str = "") -> None:
        self.path = path
        self.global_name = global_name
        self.allowed = allowed
        self.context = context
        super().__init__(f"{context + ': ' if context else ''}refused to load {path}: its pickled data needs "
                         f"{global_name}, which such a file never needs (allowed: {allowed})")

    def __reduce__(self):  # picklable across process boundaries (executors)
        return (type(self), (self.path, self.global_name, self.allowed, self.context))


def file_label(file: Any, default: str = "<pickled data>") -> str:
    """The real path behind ``file`` (a path or an open file; symlinks resolved) for messages."""
    name = file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", None)
    if isinstance(name, (str, os.PathLike)):
        return os.path.realpath(name)
    return default


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only the globals in ``allowed``.

    ``label`` names the file in the error (default: the real path of ``file``).
    """

    def __init__(self, file: IO[bytes], *, allowed: Dict[str, FrozenSet[str]] = DATA_GLOBALS,
                 label: Optional[str] = None, allowed_description: str = ALLOWED_DESCRIPTION, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed
        self._label = label or file_label(file)
        self._description = allowed_description

    def find_class(self, module: str, name: str) -> Any:
        if name not in self._allowed.get(module, ()):
            raise UnsafePickleError(self._label, f"{module}.{name}", self._description)
        return super().find_class(module, name)


def restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load(file, **kwargs)`` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(file, **kwargs).load()


def restricted_pickle_module(path: str | os.PathLike, allowed: Dict[str, FrozenSet[str]] = DATA_GLOBALS,
                             allowed_description: str = ALLOWED_DESCRIPTION) -> types.ModuleType:
    """A stand-in for the ``pickle`` module whose loading is restricted, for
    ``torch.load(path, pickle_module=restricted_pickle_module(path))`` (errors name ``path``)."""
    label = file_label(path)

    class Unpickler(RestrictedUnpickler):
        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            super().__init__(file, allowed=allowed, label=label, allowed_description=allowed_description, **kwargs)

    module = types.ModuleType("restricted_pickle")
    module.Unpickler = Unpickler
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    module.__version__ = pickle.format_version
    return module


# -- .npz / .npy -------------------------------------------------------------------

_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(fh: IO[bytes], label: str) -> np.ndarray:
    """One ``.npy`` array from the seekable ``fh``; an object array is unpickled restricted."""
    version = np.lib.format.read_magic(fh)
    header = _NPY_HEADERS.get(version)
    if header is not None:
        shape, _, dtype = header(fh)
        if dtype.hasobject:
            # numpy writes an object array as one pickle of the array after the header and reads
            # it back with encoding="ASCII" (np.load's default)
            arr = restricted_load(fh, label=label, encoding="ASCII")
            if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
                raise ValueError(f"{label}: the pickled object array is not an array of shape {tuple(shape)}")
            return arr
    fh.seek(0)
    return np.lib.format.read_array(fh, allow_pickle=False)


def load_npz(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path`` by name, as ``dict(np.load(path, allow_pickle=True))``
    gives them, but object arrays go through :class:`RestrictedUnpickler`."""
    label = file_label(path)
    out: Dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            out[key] = read_npy(io.BytesIO(zf.read(member)), f"{label} (array {key!r})")
    return out


class NpzContents(dict):
    """:func:`load_npz`'s dict, usable as ``with np.load(...) as d`` is."""

    def __enter__(self) -> "NpzContents":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def restricted_np_load(file: str | os.PathLike, *args: Any, **kwargs: Any) -> NpzContents:
    """A replacement for ``np.load`` on ``.npz`` files that ignores ``allow_pickle`` and unpickles restricted."""
    return NpzContents(load_npz(file))


class ModuleOverride(types.ModuleType):
    """``module`` with some attributes replaced: patch a library's ``np``/``torch`` global, not numpy's."""

    def __init__(self, module: types.ModuleType, **overrides: Any) -> None:
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

