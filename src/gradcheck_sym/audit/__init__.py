"""`python -m gradcheck_sym audit`: torch's own derivatives against exact ones, per dtype.

functions.py (the table) -> hardpoints.py (points) -> exact.py (arb balls) and run.py (torch)
-> bands.py (verdicts) -> report.py (Markdown, PNG); main.py is the command.
"""

from .run import Audit as Audit
from .run import FunctionAudit as FunctionAudit
from .run import audit as audit
from .run import audit_function as audit_function
