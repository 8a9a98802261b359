"""The command line: ``python -m gradcheck_sym verify | list | replay``.

Exit codes (``EXIT_CODES``): 0 every source agrees, 1 a source is wrong, 2 the command or a
model could not be used (the other models are still checked and reported).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import GradcheckError
from .options import SHARED, Option
from .results import ModelResult, RunResult, environment_versions, to_json

if TYPE_CHECKING:
    from .model import Model

EXIT_OK = 0
EXIT_WRONG = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "every checked source agrees with the exact gradient (imprecise or inconclusive checks, "
             "shown with ⚠, do not fail unless --strict)",
    EXIT_WRONG: "some source (autograd, impl or grad_impl) disagrees with the exact gradient",
    EXIT_UNUSABLE: "the command, a target or a model could not be used (the others were checked)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM): what was finished is printed, the report is left as it was",
}


COSMETIC = ("--quiet", "--no-cache")  # flags that change how a run looks or how long, not its results


def exit_code(run: RunResult) -> int:
    """The exit code `verify` returns for ``run`` (see ``EXIT_CODES``)."""
    if run.errors or any(m.status == "error" for m in run.models):
        return EXIT_UNUSABLE
    if any(m.status == "fail" for m in run.models):
        return EXIT_WRONG
    return EXIT_OK


def _argtype(opt: Option) -> Any:
    def parse(text: str) -> Any:
        try:
            return opt.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = opt.metavar
    return parse


def _add(parser: argparse.ArgumentParser, opt: Option) -> None:
    if opt.switch:
        parser.add_argument(opt.flag, dest=opt.dest, action="store_true", default=opt.default, help=opt.help)
        return
    parser.add_argument(opt.flag, dest=opt.dest, metavar=opt.metavar, type=_argtype(opt), default=opt.default, help=opt.help)


TARGET_HELP = ("a .py file or dotted module defining models, a .toml model file, or `builtin` "
               "(default: the built-in models)")
DEFAULT_DOMAIN = "*=-1:1"


def build_parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="python -m gradcheck_sym",
        description="Check gradients against the exact symbolic gradient of a SymPy model.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gradcheck_sym {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser(
        "verify", help="check every model of the targets (default: the built-in models)",
        description="Check every Model defined at module level in each TARGET (a .py file or a dotted "
        "module) and every [[model]] table of a .toml model file; with no TARGET, the lecture's built-in "
        "models and its training loop.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("targets", nargs="*", metavar="TARGET", help=TARGET_HELP)
    for opt in SHARED:
        _add(v, opt)
    v.add_argument("--expr", metavar="TEXT", default=None,
                   help="also check a loss typed here, e.g. '(w*x - y)**2' (parsed, never evaluated; default: none)")
    v.add_argument("--params", metavar="NAMES", default=None,
                   help="with --expr: the weights, comma-separated; the other symbols are inputs (default: none)")
    v.add_argument("--domain", metavar="NAME=LOW:HIGH", action="append", default=None,
                   help="with --expr: the range of a symbol's random points, repeatable, added to the "
                   f"default; '*=LOW:HIGH' for all others (default: {DEFAULT_DOMAIN})")
    v.add_argument("--name", metavar="NAME", default="expr", help="with --expr: the model's name (default: expr)")
    v.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH (default: none)")
    v.add_argument("--no-report", action="store_true",
                   help="do not write the Markdown report and results.json (default: write them)")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr (default: show them)")
    v.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the cache of compiled models and results (default: use it)")
    v.set_defaults(func=_verify)
    ls = sub.add_parser("list", help="list the models a target holds",
                        description="List the models each TARGET defines (default: the built-in models).")
    ls.add_argument("targets", nargs="*", metavar="TARGET", help=TARGET_HELP)
    ls.set_defaults(func=_list)
    rep = sub.add_parser("report", help="render the Markdown report from a saved results.json",
                         description="Render the report (Markdown and plots) from RESULTS.json without "
                         "recomputing anything.")
    rep.add_argument("results", metavar="RESULTS.json", help="a results file written by verify")
    rep.add_argument("--out", metavar="DIR", default=None,
                     help="where to write the report (default: the folder of RESULTS.json)")
    rep.set_defaults(func=_report)
    ca = sub.add_parser("cache", help="where the cache is, or clear it",
                        description="The cache of compiled programs and results of unchanged models "
                        "(location: $GRADCHECK_SYM_CACHE, else $XDG_CACHE_HOME/gradcheck_sym, else "
                        "~/.cache/gradcheck_sym).")
    ca.add_argument("action", choices=("info", "clear"),
                    help="info: location and size; clear: delete the entries the cache wrote")
    ca.set_defaults(func=_cache)
    _add_audit_parser(sub)
    rp = sub.add_parser("replay", help="replay the lecture's training loop, float32 beside exact",
                        description="Run the lecture's training loop in float32 autograd, printing what "
                        "its program prints, with the exact values beside each line.")
    rp.add_argument("--only", choices=("float32", "exact"), default=None,
                    help="print only the float32 program's output, or only the exact values (default: both)")
    rp.set_defaults(func=_replay)
    return parser


def _domain_option(items: Sequence[str] | None) -> dict[str, list[float]]:
    """``--domain`` items on top of the default ``*=-1:1``."""
    out: dict[str, list[float]] = {}
    for item in [DEFAULT_DOMAIN, *(items or ())]:
        name, eq, rng = item.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            if not (eq and colon and name.strip()):
                raise ValueError
            bounds = [float(lo), float(hi)]
        except ValueError:
            raise GradcheckError(f"--domain {item}: expected NAME=LOW:HIGH, e.g. --domain w=-2:2") from None
        if not all(math.isfinite(b) and abs(b) <= MAX_DOMAIN for b in bounds):
            raise GradcheckError(f"--domain {item}: the bounds must be finite numbers of size at most "
                                 f"{MAX_DOMAIN:g}, e.g. --domain w=-2:2")
        out[name.strip()] = bounds
    return out


MAX_DOMAIN = 1e15  # beyond this, points and their exact values stop being meaningful in float32/float64
# hints of the model's own messages (Python syntax), as the command line spells them
_FLAG_HINTS = (
    ("give (low, high) with low < high", "give --domain NAME=LOW:HIGH with LOW < HIGH"),
    ("`domain` names", "--domain names"),
    ("must be a pair (low, high)", "must be --domain NAME=LOW:HIGH"),
)


def _in_flag_syntax(message: str) -> str:
    for python, flag in _FLAG_HINTS:
        message = message.replace(python, flag)
    return message


def _expr_model(args: argparse.Namespace) -> Model:
    from .text import model_from_text

    if not args.params:
        raise GradcheckError("--expr needs --params: the weights to differentiate, e.g. --params w")
    try:
        return model_from_text(name=args.name, loss=args.expr, params=args.params,
                               domain=_domain_option(args.domain), where="--expr: ")
    except GradcheckError as exc:
        raise GradcheckError(_in_flag_syntax(str(exc))) from None


def _load(targets: Sequence[str]) -> tuple[list[tuple[str, Model]], list[str]]:
    from .loader import BUILTIN, load_target

    if not targets:
        targets = [BUILTIN]
    found: list[tuple[str, Model]] = []
    errors: list[str] = []
    for t in targets:
        try:
            found += [(t, m) for m in load_target(t)]
        except GradcheckError as exc:
            errors.append(str(exc))
    return found, errors


def _out(text: str = "") -> None:
    """Print to stdout; a reader that went away (``| head``) ends the output quietly, not the run."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # later writes (and the flush at exit) go nowhere
        os.close(devnull)


def _err(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except BrokenPipeError:
        pass


def _verify(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .terminal import summary

    def progress(msg: str) -> None:
        if not args.quiet:
            _err(msg)

    from . import cache  # here, once: the model workers forked below inherit it

    if args.no_cache:
        cache.disable()
    if args.expr is None and (args.params or args.domain):
        _err("error: --params and --domain go with --expr TEXT (a loss typed on the command line)")
        return EXIT_UNUSABLE
    models, errors = _load(args.targets) if (args.targets or args.expr is None) else ([], [])
    if args.expr is not None:
        try:
            models.append(("--expr", _expr_model(args)))
        except GradcheckError as exc:
            errors.append(str(exc))
    for e in errors:
        _err(f"error: {e}")
    results: list[ModelResult] = []
    replay = None
    replay_follows = (not args.targets and args.expr is None) or args.targets == ["builtin"]
    try:
        for k, (target, m) in enumerate(models, start=1):
            t0 = time.perf_counter()
            progress(f"[{k}/{len(models)}] {m.name}: {m.description or _count(m.n_params, 'parameter')}")
            r = _check(m, target, args, progress, more=k < len(models) or replay_follows)
            progress(f"    {m.name}: {r.status} in {time.perf_counter() - t0:.1f} s")
            if r.status == "error":
                _err(f"error: {r.error}")
            results.append(r)
        if replay_follows:
            from .training import replay as run_replay

            progress("replaying the lecture's training loop (float32 and exact)")
            replay = run_replay()
    except KeyboardInterrupt:
        partial = _run_result(args, argv, results, errors, None)
        _out(summary(partial))
        _err(f"\ninterrupted after {len(results)} of {len(models)} models; the report was not written "
             "(the previous one is intact)")
        return EXIT_INTERRUPTED
    run = _run_result(args, argv, results, errors, replay)
    if not run.models:
        _err("nothing was checked, so no report was written")
        return EXIT_UNUSABLE
    _out(summary(run))
    return _finish(args, run)


def _check(m: Model, target: str, args: argparse.Namespace, progress: Any, *, more: bool) -> ModelResult:
    """One model, in a worker process of its own (see `worker`)."""
    from .verifier import _error_result, verify
    from .worker import run_isolated

    def run() -> ModelResult:
        return verify(m, samples=args.samples, seed=args.seed, dtypes=args.dtypes, target=target,
                      timeout=args.timeout, progress=lambda msg: progress(f"    {msg}"),
                      order=args.order, modes=args.modes, strict=args.strict)

    return run_isolated(run, name=m.name, timeout=args.timeout, error=lambda msg: _error_result(m, target, msg),
                        more=more)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _run_result(args: argparse.Namespace, argv: Sequence[str], results: list[ModelResult], errors: list[str],
                replay: Any) -> RunResult:
    return RunResult(
        tool_version=__version__, versions=environment_versions(),
        command="python -m gradcheck_sym " + shlex.join(a for a in argv if a not in COSMETIC), seed=args.seed,
        samples=args.samples,
        dtypes=tuple(args.dtypes), models=tuple(results), errors=tuple(errors), replay=replay,
    )


def _finish(args: argparse.Namespace, run: RunResult) -> int:
    """Write the report and JSON; the exit code."""
    from .writer import write_atomic

    if not args.no_report:
        out = Path(args.report_dir)
        if not _write_report(run, out, with_json=True):
            return EXIT_UNUSABLE
        _out(f"\nreport: {out / 'index.md'}")
    if args.json:
        try:
            write_atomic(Path(args.json), to_json(run))
        except OSError as exc:
            _err(f"error: cannot write `{args.json}`: {exc.strerror or exc}")
            return EXIT_UNUSABLE
    return exit_code(run)


def _write_report(run: RunResult, out: Path, *, with_json: bool) -> bool:
    from .report import save

    try:
        save(run, out, with_json=with_json)
    except OSError as exc:
        _err(f"error: cannot write the report to `{out}`: {exc.strerror or exc}")
        return False
    return True


def _cache(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from . import cache

    _out(cache.info() if args.action == "info" else cache.clear())
    return EXIT_OK


def _report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .results import from_json

    path = Path(args.results)
    try:
        run = _validated(from_json(path.read_text(encoding="utf-8")))
    except OSError as exc:
        _err(f"error: cannot read `{path}`: {exc.strerror or exc}")
        return EXIT_UNUSABLE
    except Exception as exc:  # noqa: BLE001 - any malformed file gets the same one line
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        _err(f"error: `{path}` is not a gradcheck_sym results file ({reason}); write one with "
             "`python -m gradcheck_sym verify`")
        return EXIT_UNUSABLE
    out = Path(args.out) if args.out else path.parent
    if not _write_report(run, out, with_json=False):
        return EXIT_UNUSABLE
    _out(f"report: {out / 'index.md'}")
    return EXIT_OK


def _validated(run: RunResult) -> RunResult:
    """``run`` if every status and verdict is one gradcheck_sym writes (a results file is input:
    it may have been edited)."""
    from .compare import VERDICTS

    for m in run.models:
        if not isinstance(m.name, str) or m.status not in ("pass", "fail", "error"):
            raise ValueError(f"model {m.name!r} has status {m.status!r}; expected pass, fail or error")
        bad = next((c.verdict for c in m.checks if c.verdict not in VERDICTS), None)
        if bad is not None:
            raise ValueError(f"model `{m.name}` has a check with verdict {bad!r}")
    return run


def _list(args: argparse.Namespace, argv: Sequence[str]) -> int:
    models, errors = _load(args.targets)
    for e in errors:
        _err(f"error: {e}")
    for target, m in models:
        shapes = ", ".join(f"{v.name}{'[' + 'x'.join(map(str, v.shape)) + ']' if v.shape else ''}" for v in m.params)
        _out(f"{m.name}  ({target}; {_count(m.n_params, 'parameter')}: {shapes})")
        if m.description:
            _out(f"    {m.description}")
    return EXIT_UNUSABLE if errors else EXIT_OK


def _replay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .training import replay, side_by_side

    r = replay()
    if args.only == "float32":
        lines = list(r.lines_float32)
    elif args.only == "exact":
        lines = [line.split("| ", 1)[1] for line in side_by_side(r)]
    else:
        lines = side_by_side(r)
    _out("\n".join(lines))
    return EXIT_OK


def _add_audit_parser(sub: Any) -> None:
    au = sub.add_parser("audit", help="certify torch's own derivatives against exact ones, per dtype",
                        description="Check torch's built-in derivatives (first and second order, reverse and "
                        "forward mode) against exact values at points chosen to hurt, in every dtype; writes "
                        "torch-audit.md (torch-audit-cuda.md with --device cuda) and its JSON.")
    au.add_argument("--functions", metavar="NAMES", default=None,
                    help="comma-separated, as called (torch.sigmoid) or short (sigmoid, gelu) (default: all)")
    au.add_argument("--dtypes", metavar="LIST", default="float64,float32,bfloat16,float16",
                    help="comma-separated (default: float64,float32,bfloat16,float16)")
    au.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where torch runs (default: cpu)")
    au.add_argument("--points", metavar="N", type=int, default=48,
                    help="random points per function and dtype, besides the hard ones (default: 48)")
    au.add_argument("--seed", metavar="N", type=int, default=0, help="seed of the random points (default: 0)")
    au.add_argument("--report-dir", metavar="DIR", default="reports", help="where the report goes (default: reports)")
    au.add_argument("--json", metavar="PATH", default=None,
                    help="also write the results to PATH (default: torch-audit[-cuda].json in the report dir)")
    au.add_argument("--jobs", metavar="N", type=int, default=2, help="worker processes (default: 2)")
    au.add_argument("--quiet", action="store_true", help="no progress lines on stderr (default: show them)")
    au.set_defaults(func=_audit)


def _audit(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .audit.main import run_audit

    return run_audit(args, "python -m gradcheck_sym " + shlex.join(a for a in argv if a not in COSMETIC))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``EXIT_CODES``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    except BrokenPipeError:  # --help into a closed pipe
        _out()
        return EXIT_OK
    if args.command is None:
        _err(parser.format_help())
        return EXIT_UNUSABLE
    with _sigterm_as_interrupt():
        try:
            return int(args.func(args, argv))
        except KeyboardInterrupt:  # outside the model loop (loading targets, writing): nothing half-done
            _err("\ninterrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # a closed stdout outside `_out`
            _out()
            return EXIT_OK


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM is handled like Ctrl-C: the run stops cleanly and says what it finished."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
