"""gradcheck_sym: exact symbolic gradients that say which gradient source is wrong, and by how much.

>>> import sympy as sp
>>> from gradcheck_sym import Model, verify
>>> x, y, w = sp.symbols("x y w", real=True)
>>> m = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y], domain={"*": (-2, 2)})
>>> verify(m).status
'pass'
"""

__version__ = "0.1.0"

from .errors import GradcheckError as GradcheckError
from .errors import ImplError as ImplError
from .errors import ModelError as ModelError
from .errors import TargetError as TargetError
from .errors import UnsupportedFunctionError as UnsupportedFunctionError
from .model import Model as Model
from .model import matrix as matrix
from .results import Check as Check
from .results import ModelResult as ModelResult
from .results import RunResult as RunResult
from .verifier import verify as verify
from .verifier import verify_all as verify_all

__all__ = [
    "Check", "GradcheckError", "ImplError", "Model", "ModelError", "ModelResult", "RunResult",
    "TargetError", "UnsupportedFunctionError", "matrix", "verify", "verify_all", "__version__",
]
