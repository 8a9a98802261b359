"""The typed program (`program`), the op registry (`ops`), compiling SymPy (`compile`) and
emitting derivatives as programs (`derive`)."""

from .ops import REGISTRY as REGISTRY
from .ops import OpSpec as OpSpec
from .program import Derivative as Derivative
from .program import Direction as Direction
from .program import Instr as Instr
from .program import Program as Program
