"""Reading detectron2/Detectron ``.pkl`` weight files without running code from the file.

detectron2's ImageNet backbones (``ImageNetPretrained/MSRA/R-50.pkl``) are Python pickles of a dict
of numpy arrays (optionally under ``"blobs"`` or ``"model"``). A pickle can name any importable
callable and make the loader call it, so `pickle.load` on an untrusted file is arbitrary code
execution. `load_numpy_pickle` unpickles with a `pickle.Unpickler` whose `find_class` resolves only
the few globals that rebuild numpy arrays and dtypes; any other global (``os.system``,
``builtins.eval``, ``subprocess.Popen`` ...) is refused *before* it is called, with
`UnsafeCheckpointError` naming it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import CheckpointNotFoundError, NotATorchFileError, UnsafeCheckpointError

__all__ = ["ALLOWED_GLOBALS", "NumpyOnlyUnpickler", "load_numpy_pickle", "numpy_pickle_tensors"]

#: The only globals a numpy-array pickle needs: array and dtype reconstruction (numpy 1 and 2 module
#: paths), numpy scalars, and `_codecs.encode`, which Python 3 pickles of protocol 2 use for bytes.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS`; every other global raises."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"refused: the pickle asks for {module}.{name}, which is not needed to rebuild numpy arrays; "
            "this program unpickles .pkl weights with numpy array reconstruction only and never runs code "
            "from a file")

    def persistent_load(self, pid):  # torch's zip pickles use persistent ids: not a numpy pickle
        raise UnsafeCheckpointError(f"refused: persistent id {pid!r} in a .pkl weights file")


def load_numpy_pickle(path: str | Path) -> dict:
    """The dict of a numpy-array pickle (detectron2 ``.pkl``); refuses anything else (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"weights file not found: {path}")
    data = path.read_bytes()
    if not data.startswith(b"\x80") and not data[:1] in (b"(", b"}"):
        raise NotATorchFileError(f"{path}: not a pickle file")
    try:
        # latin1: Detectron's files were written by Python 2 (array bytes pickled as str).
        obj = NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise NotATorchFileError(f"{path}: not a readable numpy pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise NotATorchFileError(f"{path}: expected a dict of numpy arrays, found {type(obj).__name__}")
    return obj


def numpy_pickle_tensors(path: str | Path) -> dict[str, Tensor]:
    """The arrays of a detectron2/Detectron ``.pkl`` as tensors: the top-level dict, or its ``"blobs"``
    / ``"model"`` entry; solver state (``*_momentum``) and non-array entries are dropped, as detectron2's
    own loader does."""
    obj = load_numpy_pickle(path)
    for key in ("blobs", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {}
    for k, v in obj.items():
        if isinstance(k, str) and isinstance(v, np.ndarray) and not k.endswith("_momentum"):
            tensors[k] = torch.from_numpy(np.ascontiguousarray(v))
    if not tensors:
        raise NotATorchFileError(f"{path}: a pickle without numpy arrays")
    return tensors
