"""Loading models from a Python file or a dotted module: every `Model` at module level."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

from .errors import GradcheckError, TargetError
from .model import Model


def _user_frame(exc: BaseException, path: str | None) -> str:
    """'file:line' of the innermost frame in the user's file, for the message."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if path is None or Path(f.filename).resolve() == Path(path).resolve()]
    f = (mine or frames or [None])[-1]
    return f" ({Path(f.filename).name}:{f.lineno})" if f is not None else ""


def _import_file(path: Path) -> object:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"gradcheck_sym_target_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"`{path}` cannot be imported as Python; give a .py file or a module name")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


BUILTIN = "builtin"  # the target naming the lecture's built-in models


def load_model(target: str, name: str) -> Model:
    """One model by name from a target (a file, a module, or ``"builtin"``).

    >>> load_model("builtin", "linear").n_params
    1
    """
    models = load_target(target)
    for m in models:
        if m.name == name:
            return m
    raise TargetError(f"`{target}` has no model named `{name}`; it has {', '.join(f'`{m.name}`' for m in models)}")


def load_target(target: str) -> list[Model]:
    """The models a file (``models.py``, ``dir/models.py``) or module (``pkg.models``) defines
    at module level, in definition order (``"builtin"``: the lecture's models).  Raises
    `TargetError` naming the target."""
    if target == BUILTIN:
        from .zoo import builtin_models

        return builtin_models()
    path = Path(target)
    if target.endswith(".toml"):
        return load_toml(path)
    looks_like_file = target.endswith(".py") or "/" in target or path.exists()
    try:
        if looks_like_file:
            if not path.is_file():
                raise TargetError(f"`{target}`: no such file; give a path to a .py file or a dotted module name")
            module = _import_file(path)
        else:
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as exc:
                if exc.name and target.startswith(exc.name):
                    raise TargetError(
                        f"`{target}`: no such file or module; give a path to a .py file or an importable "
                        "module name (is it installed, or on PYTHONPATH?)"
                    ) from None
                raise
    except GradcheckError as exc:
        if isinstance(exc, TargetError):
            raise
        raise TargetError(f"`{target}`: {exc}") from None
    except SyntaxError as exc:
        raise TargetError(f"`{target}`: syntax error at line {exc.lineno}: {exc.msg}") from None
    except SystemExit as exc:
        raise TargetError(f"`{target}`: importing it called exit({exc.code!r}); a model file should only define models") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
        where = _user_frame(exc, str(path) if looks_like_file else None)
        raise TargetError(f"`{target}`: importing it raised {type(exc).__name__}: {exc}{where}") from None
    models = [v for v in vars(module).values() if isinstance(v, Model)]
    if not models:
        raise TargetError(
            f"`{target}` defines no gradcheck_sym.Model at module level; assign each model to a "
            "module-level name (e.g. `linear = Model(...)`)"
        )
    return models


TOML_KEYS = {"name", "loss", "params", "inputs", "domain", "points", "description"}


def load_toml(path: Path) -> list[Model]:
    """Models from a TOML file of ``[[model]]`` tables (text, parsed without ``eval``)::

        [[model]]
        name = "linear"
        loss = "(w*x - y)**2"
        params = ["w"]
        domain = { w = [-2, 2], "*" = [-4, 4] }
    """
    import tomllib

    from .text import TextError, model_from_text

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"`{path}`: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"`{path}`: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"`{path}`: not valid TOML ({exc})") from None
    except RecursionError:
        raise TargetError(f"`{path}`: nested too deeply to be a model file (arrays or tables inside each "
                          "other thousands of times)") from None
    tables = data.get("model")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise TargetError(f"`{path}`: expected one or more [[model]] tables with name, loss and params")
    models = []
    for i, t in enumerate(tables):
        unknown = sorted(set(t) - TOML_KEYS)
        if unknown:
            raise TargetError(f"`{path}`: model {i + 1} has unknown keys {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(TOML_KEYS))}")
        for key in ("name", "loss", "params"):
            if key not in t:
                raise TargetError(f"`{path}`: model {i + 1} has no `{key}`")
        try:
            models.append(model_from_text(**t, where=f"`{path}`: "))
        except TextError as exc:
            raise TargetError(str(exc)) from None
        except GradcheckError as exc:
            raise TargetError(f"`{path}`: {exc}") from None
    return models
