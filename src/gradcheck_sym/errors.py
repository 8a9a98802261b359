"""The errors gradcheck_sym raises for a user's mistake.

Each message names the model, symbol, file or argument (in backticks), says what is wrong and
how to fix it.  Anything else escaping from the package is a bug in gradcheck_sym.
"""

from __future__ import annotations


class GradcheckError(Exception):
    """Base class: a problem the user can fix; its message says how."""


class ModelError(GradcheckError):
    """A `Model` declaration (or a point given for it) cannot be used."""


class UnsupportedFunctionError(ModelError):
    """The loss uses a function gradcheck_sym cannot evaluate exactly or translate to torch."""


class ImplError(GradcheckError):
    """A user implementation (`impl=` or `grad_impl=`) raised or returned something unusable."""


class TargetError(GradcheckError):
    """A `verify` target (file or module) cannot be loaded."""
