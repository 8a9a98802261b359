"""gradcheck_sym: exact symbolic gradients that say which gradient source is wrong, and by how much.

>>> import sympy as sp
>>> from gradcheck_sym import Model, verify
>>> x, y, w = sp.symbols("x y w", real=True)
>>> m = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y], domain={"*": (-2, 2)})
>>> verify(m).status
'pass'

The names below are re-exported lazily, so that ``import gradcheck_sym`` (and the pytest plugin,
and ``--help``) does not pay for importing torch and SymPy until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "GradcheckError": "errors",
    "ImplError": "errors",
    "ModelError": "errors",
    "TargetError": "errors",
    "UnsupportedFunctionError": "errors",
    "Model": "model",
    "load_model": "loader",
    "matrix": "model",
    "Check": "results",
    "ModelResult": "results",
    "RunResult": "results",
    "verify": "verifier",
    "verify_all": "verifier",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .errors import GradcheckError as GradcheckError
    from .errors import ImplError as ImplError
    from .errors import ModelError as ModelError
    from .errors import TargetError as TargetError
    from .errors import UnsupportedFunctionError as UnsupportedFunctionError
    from .loader import load_model as load_model
    from .model import Model as Model
    from .model import matrix as matrix
    from .results import Check as Check
    from .results import ModelResult as ModelResult
    from .results import RunResult as RunResult
    from .verifier import verify as verify
    from .verifier import verify_all as verify_all


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        # not cached in globals(): always the class of the module now in sys.modules
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'gradcheck_sym' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
