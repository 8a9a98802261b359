"""``python -m gradcheck_sym audit``: options checked, the audit run, the report written.

Exit codes as for `verify`: 0 every derivative agrees or is imprecise, 1 some torch derivative
is a mismatch, 2 the options could not be used (an unknown function or dtype, no GPU for
``--device cuda``) or a function could not be audited (the others are, and reported), 130
interrupted (nothing written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .formats import DTYPES


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def run_audit(args: argparse.Namespace, command: str) -> int:
    """Run the audit the parsed ``args`` ask for; the exit code."""
    from .functions import select

    names = [n.strip() for n in args.functions.split(",") if n.strip()] if args.functions else None
    try:
        fns = select(names)
    except KeyError as exc:
        from .functions import FUNCTIONS

        return _fail(f"--functions: no audited function is called `{exc.args[0]}`; choose from "
                     + ", ".join(f.name for f in FUNCTIONS))
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        return _fail(f"--dtypes: unknown dtype `{bad[0] if bad else ''}`; choose from {', '.join(DTYPES)}")
    if args.points < 0:
        return _fail(f"--points: expected a number >= 0, got {args.points}")
    if args.jobs < 1:
        return _fail(f"--jobs: expected a number >= 1, got {args.jobs}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return _fail("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                         "run on a machine with one, or use --device cpu")
    from ..results import to_json
    from ..writer import write_all_atomic, write_atomic
    from .report import render, report_name
    from .run import audit

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        result = audit([f.name for f in fns], dtypes, device=args.device, n_random=args.points, seed=args.seed,
                       jobs=args.jobs, command=command, progress=progress)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written (the previous report is intact)", file=sys.stderr)
        return 130
    out = Path(args.report_dir)
    stem = report_name(args.device)
    files = render(result)
    json_text = to_json(result.run)
    try:
        write_all_atomic(out, {**files, f"{stem}.json": json_text})
        if args.json:
            write_atomic(Path(args.json), json_text)
    except OSError as exc:
        return _fail(f"cannot write the report to `{out}`: {exc.strerror or exc}")
    failed = [m.name for m in result.run.models if m.status == "fail"]
    errors = [m.error for m in result.run.models if m.status == "error"]
    print(f"{len(result.run.models)} functions audited in {', '.join(dtypes)} on {args.device}; "
          f"{len(failed)} with mismatches" + (f": {', '.join(failed)}" if failed else ""))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"report: {out / (stem + '.md')}")
    return 2 if errors else (1 if failed else 0)
