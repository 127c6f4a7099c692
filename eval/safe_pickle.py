"""A restricted unpickler for data pickles (e.g. revisitop ground truth).

Only plain containers and numbers are admitted (dict, list, tuple, set, str, bytes, int, float,
bool, None; numpy arrays and scalars when ``allow_numpy``). Any other global, including
``os.system`` or ``builtins.eval``, raises instead of executing: a malicious pickle runs nothing.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

from .errors import BadInput

_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
                  "bool", "complex", "slice", "range"}
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, allow_numpy: bool = True) -> None:
        super().__init__(file)
        self.allow_numpy = allow_numpy

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if self.allow_numpy and (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def load_pickle(path: str | os.PathLike[str], allow_numpy: bool = True) -> Any:
    """Load a data pickle with the restricted unpickler; failures are a BadInput naming the file."""
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, allow_numpy=allow_numpy).load()
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except pickle.UnpicklingError as exc:
        raise BadInput(path, f"refusing to unpickle: {exc}") from None
    except (EOFError, ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError, OSError) as exc:
        raise BadInput(path, f"not a readable pickle ({type(exc).__name__}: {exc})") from None
