"""The options shared by the command line and the pytest plugin, defined once.

The CLI spells an option ``--samples``; the plugin spells the same option
``--gradcheck-samples`` (and ``gradcheck_samples`` in an ini file).  Parsing and validation live
here so both front ends reject the same bad values with the same message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import GradcheckError


PREFIX = "gradcheck"
DTYPES = ("float64", "float32")  # the float types checked by default, in order
SUPPORTED_DTYPES = ("float64", "float32", "bfloat16", "float16")  # every one `--dtypes` may name (`dtypes.DTYPES`)


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise ValueError(f"expected a number >= 0, got {n}")
    return n


def seconds(text: str) -> float | None:
    if text.strip().lower() in ("", "none", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds (or none), got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"expected a positive number of seconds (or none), got {text!r}")
    return value


def dtype_list(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))  # each once
    bad = [t for t in items if t not in SUPPORTED_DTYPES]
    if bad or not items:
        raise ValueError(f"expected a comma-separated list of {', '.join(SUPPORTED_DTYPES)}, got {text!r}")
    return items


ORDERS = (1, 2)
MODES = ("rev", "fwd")


def derivative_order(text: str) -> int:
    if text.strip() not in ("1", "2"):
        raise ValueError(f"expected 1 or 2, got {text!r}")
    return int(text)


def mode_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in MODES]
    if bad or not items:
        raise ValueError(f"expected a comma-separated list of {', '.join(MODES)}, got {text!r}")
    return tuple(m for m in MODES if m in items)


def check_settings(order: Any, modes: Any) -> tuple[int, tuple[str, ...]]:
    """``order`` and ``modes`` validated, as `verify` takes them."""
    if isinstance(order, bool) or order not in ORDERS:
        raise GradcheckError(f"`order` must be 1 or 2, got {order!r}")
    if isinstance(modes, str):
        modes = tuple(m.strip() for m in modes.split(",") if m.strip())
    modes = tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise GradcheckError(f"`modes` must be a non-empty list of {', '.join(MODES)}, got {modes!r}")
    return int(order), tuple(m for m in MODES if m in modes)


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(f"expected true or false, got {text!r}")
    return value in ("true", "yes", "1")


@dataclass(frozen=True, kw_only=True)
class Option:
    name: str  # the CLI's long name without dashes
    metavar: str
    parse: Callable[[str], Any]
    default: Any
    help: str  # ends with the default, as `--help` shows it
    switch: bool = False  # a flag without a value (``--strict``); its ini key takes true/false

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def plugin_flag(self) -> str:
        return f"--{PREFIX}-{self.name}"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


SAMPLES = Option(
    name="samples", metavar="N", parse=positive_int, default=5,
    help="random points per model, drawn from its domain, after its explicit points (default: 5)",
)
SEED = Option(
    name="seed", metavar="N", parse=positive_int, default=0,
    help="seed of the random points; the same seed gives the same points (default: 0)",
)
DTYPES_OPTION = Option(
    name="dtypes", metavar="LIST", parse=dtype_list, default=DTYPES,
    help="float types to check, comma-separated, of float64, float32, bfloat16, float16 (bfloat16 and float16 "
    "without finite differences) (default: float64,float32)",
)
REPORT_DIR = Option(
    name="report-dir", metavar="DIR", parse=str, default="reports",
    help="where the Markdown report and results.json are written (default: reports)",
)

TIMEOUT = Option(
    name="timeout", metavar="SECONDS", parse=seconds, default=600.0,
    help="time budget per model ('none': no budget); a model that takes longer is reported as timed "
    "out and the others go on (default: 600)",
)

ORDER = Option(
    name="order", metavar="N", parse=derivative_order, default=1,
    help="highest derivative order checked: 1, or 2 for second derivatives (torch's double backward "
    "against exact Hessians or Hessian-vector products) (default: 1)",
)
MODES_OPTION = Option(
    name="modes", metavar="LIST", parse=mode_list, default=("rev",),
    help="differentiation modes checked, comma-separated: rev (backward, VJPs), fwd (forward-mode AD, "
    "JVPs) (default: rev)",
)

STRICT = Option(
    name="strict", metavar="", parse=boolean, default=False, switch=True,
    help="fail on imprecise and inconclusive checks too, not only on mismatches (default: off)",
)

SHARED = (SAMPLES, SEED, DTYPES_OPTION, ORDER, MODES_OPTION, STRICT, TIMEOUT, REPORT_DIR)
