"""The command line: ``python -m gradcheck_sym verify | list | replay``.

Exit codes (``EXIT_CODES``): 0 every source agrees, 1 a source is wrong, 2 the command or a
model could not be used (the other models are still checked and reported).
"""

from __future__ import annotations

import argparse
import contextlib
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
    EXIT_OK: "every checked source agrees with the exact gradient",
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
    parser.add_argument(opt.flag, dest=opt.dest, metavar=opt.metavar, type=_argtype(opt), default=opt.default, help=opt.help)


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
        "module); with no TARGET, the lecture's built-in models and its training loop.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("targets", nargs="*", metavar="TARGET", help="a .py file or dotted module defining models")
    for opt in SHARED:
        _add(v, opt)
    v.add_argument("--expr", metavar="TEXT", default=None,
                   help="also check a loss typed here, e.g. '(w*x - y)**2' (parsed, never evaluated; default: none)")
    v.add_argument("--params", metavar="NAMES", default=None,
                   help="with --expr: the weights, comma-separated; the other symbols are inputs (default: none)")
    v.add_argument("--domain", metavar="NAME=LOW:HIGH", action="append", default=None,
                   help="with --expr: the range of a symbol's random points, repeatable; '*=LOW:HIGH' for all "
                   "others (default: *=-1:1)")
    v.add_argument("--name", metavar="NAME", default="expr", help="with --expr: the model's name (default: expr)")
    v.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH (default: none)")
    v.add_argument("--no-report", action="store_true", help="do not write the Markdown report (default: write it)")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr (default: show them)")
    v.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the cache of compiled models and results (default: use it)")
    v.set_defaults(func=_verify)
    ls = sub.add_parser("list", help="list the models a target holds",
                        description="List the models each TARGET defines (default: the built-in models).")
    ls.add_argument("targets", nargs="*", metavar="TARGET", help="a .py file or dotted module defining models")
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
    ca.add_argument("action", choices=("info", "clear"), help="info: location and size; clear: delete it")
    ca.set_defaults(func=_cache)
    _add_audit_parser(sub)
    rp = sub.add_parser("replay", help="replay the lecture's training loop, float32 beside exact",
                        description="Run the lecture's training loop in float32 autograd, printing what "
                        "its program prints, with the exact values beside each line.")
    rp.add_argument("--only", choices=("float32", "exact"), default=None,
                    help="print only the float32 program's output, or only the exact values (default: both)")
    rp.set_defaults(func=_replay)
    return parser


def _domain_option(items: Sequence[str] | None) -> dict[str, list[float]] | None:
    if not items:
        return None
    out: dict[str, list[float]] = {}
    for item in items:
        name, _, rng = item.partition("=")
        lo, _, hi = rng.partition(":")
        try:
            out[name.strip()] = [float(lo), float(hi)]
        except ValueError:
            raise GradcheckError(f"--domain {item!r}: expected NAME=LOW:HIGH, e.g. w=-2:2") from None
    return out


def _expr_model(args: argparse.Namespace) -> Model:
    from .text import model_from_text

    if not args.params:
        raise GradcheckError("--expr needs --params: the weights to differentiate, e.g. --params w")
    return model_from_text(name=args.name, loss=args.expr, params=args.params, domain=_domain_option(args.domain),
                           where="--expr: ")


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


def _verify(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .terminal import summary
    from .verifier import verify

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if args.no_cache:
        from . import cache

        cache.disable()
    if args.expr is None and (args.params or args.domain):
        print("error: --params and --domain go with --expr TEXT (a loss typed on the command line)", file=sys.stderr)
        return EXIT_UNUSABLE
    models, errors = _load(args.targets) if (args.targets or args.expr is None) else ([], [])
    if args.expr is not None:
        try:
            models.append(("--expr", _expr_model(args)))
        except GradcheckError as exc:
            errors.append(str(exc))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    results: list[ModelResult] = []
    replay = None
    try:
        for k, (target, m) in enumerate(models, start=1):
            t0 = time.perf_counter()
            progress(f"[{k}/{len(models)}] {m.name}: {m.description or f'{m.n_params} parameters'}")
            r = verify(m, samples=args.samples, seed=args.seed, dtypes=args.dtypes, target=target,
                       timeout=args.timeout, progress=lambda msg: progress(f"    {msg}"),
                       order=args.order, modes=args.modes)
            progress(f"    {m.name}: {r.status} in {time.perf_counter() - t0:.1f} s")
            results.append(r)
        if (not args.targets and args.expr is None) or args.targets == ["builtin"]:
            from .training import replay as run_replay

            progress("replaying the lecture's training loop (float32 and exact)")
            replay = run_replay()
    except KeyboardInterrupt:
        partial = _run_result(args, argv, results, errors, None)
        print(summary(partial))
        print(f"\ninterrupted after {len(results)} of {len(models)} models; the report was not written "
              "(the previous one is intact)", file=sys.stderr)
        return EXIT_INTERRUPTED
    run = _run_result(args, argv, results, errors, replay)
    print(summary(run))
    return _finish(args, run)


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
        print(f"\nreport: {out / 'index.md'}")
    if args.json:
        try:
            write_atomic(Path(args.json), to_json(run))
        except OSError as exc:
            print(f"error: cannot write `{args.json}`: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_UNUSABLE
    return exit_code(run)


def _write_report(run: RunResult, out: Path, *, with_json: bool) -> bool:
    from .writer import save_report, save_rendering

    try:
        (save_report if with_json else save_rendering)(run, out)
    except OSError as exc:
        print(f"error: cannot write the report to `{out}`: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def _cache(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from . import cache

    print(cache.info() if args.action == "info" else cache.clear())
    return EXIT_OK


def _report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .results import from_json

    path = Path(args.results)
    try:
        run = from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        print(f"error: cannot read `{path}`: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: `{path}` is not a gradcheck_sym results file ({exc}); write one with "
              "`python -m gradcheck_sym verify`", file=sys.stderr)
        return EXIT_UNUSABLE
    out = Path(args.out) if args.out else path.parent
    if not _write_report(run, out, with_json=False):
        return EXIT_UNUSABLE
    print(f"report: {out / 'index.md'}")
    return EXIT_OK


def _list(args: argparse.Namespace, argv: Sequence[str]) -> int:
    models, errors = _load(args.targets)
    for target, m in models:
        shapes = ", ".join(f"{v.name}{'[' + 'x'.join(map(str, v.shape)) + ']' if v.shape else ''}" for v in m.params)
        print(f"{m.name}  ({target}; {m.n_params} parameters: {shapes})")
        if m.description:
            print(f"    {m.description}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
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
    print("\n".join(lines))
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
    if args.command is None:
        parser.print_help()
        return EXIT_UNUSABLE
    with _sigterm_as_interrupt():
        try:
            return int(args.func(args, argv))
        except KeyboardInterrupt:  # outside the model loop (loading targets, writing): nothing half-done
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


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
