"""Second order and forward mode (`verify(order=, modes=)`), through the public API, the command
line and the pytest plugin: custom ``torch.autograd.Function``s that are right at first order but
wrong in their double backward or their ``jvp`` fail only there; ``once_differentiable`` and a
missing ``jvp`` are reported as not supported, never as failures."""

from __future__ import annotations

import json

import pytest
import sympy as sp
import torch
from torch.autograd.function import once_differentiable

from gradcheck_sym import Model, verify

w, x, b = sp.symbols("w x b", real=True)

# f(w, x) = sin(w) * x**2: its own Function with a hand-written backward (and jvp)


class Right(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, x):
        ctx.save_for_backward(w, x)
        ctx.save_for_forward(w, x)
        return torch.sin(w) * x * x

    @staticmethod
    def backward(ctx, g):
        w, x = ctx.saved_tensors
        return g * torch.cos(w) * x * x, g * 2 * torch.sin(w) * x

    @staticmethod
    def jvp(ctx, dw, dx):
        w, x = ctx.saved_tensors
        return torch.cos(w) * x * x * dw + 2 * torch.sin(w) * x * dx


class DetachedBackward(Right):
    """Right values, but `.detach()` cuts the backward's dependence on w: torch's double
    backward then says ∂²f/∂w² = 0."""

    @staticmethod
    def backward(ctx, g):
        w, x = ctx.saved_tensors
        return g * torch.cos(w.detach()) * x * x, g * 2 * torch.sin(w) * x


class WrongJvp(Right):
    @staticmethod
    def jvp(ctx, dw, dx):
        w, x = ctx.saved_tensors
        return torch.cos(w) * x * x * dw + torch.sin(w) * x * dx  # the factor 2 is missing


class OnceDifferentiable(Right):
    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        w, x = ctx.saved_tensors
        return g * torch.cos(w) * x * x, g * 2 * torch.sin(w) * x


class NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, x):
        ctx.save_for_backward(w, x)
        return torch.sin(w) * x * x

    @staticmethod
    def backward(ctx, g):
        w, x = ctx.saved_tensors
        return g * torch.cos(w) * x * x, g * 2 * torch.sin(w) * x


def model(function: type[torch.autograd.Function]) -> Model:
    return Model(name=f"sinx2-{function.__name__}", loss=sp.sin(w) * x**2 + b * w, params=[w, x, b],
                 domain={"*": (-2, 2)},
                 impl=lambda w, x, b: function.apply(w, x) + b * w)


def quantities(result, verdict="mismatch", source="impl"):
    return {c.quantity for c in result.checks if c.verdict == verdict and c.source == source}


def test_correct_function_passes_at_order_2_in_both_modes():
    r = verify(model(Right), order=2, modes=("rev", "fwd"), samples=3)
    assert r.status == "pass", [c for c in r.failed][:3]
    assert r.order == 2 and r.modes == ("rev", "fwd") and not r.unsupported
    counted = {(s.source, s.quantity) for s in r.summaries}
    for q in ("loss", "grad", "jvp", "second"):
        assert ("impl", q) in counted and ("autograd", q) in counted
    second = [c for c in r.checks if c.quantity == "second" and c.source == "impl"]
    assert {(c.param, c.param2) for c in second} == {(p, q) for p in "wxb" for q in "wxb"}
    assert all(c.verdict == "agree" for c in second)


def test_detached_double_backward_fails_only_in_second_checks():
    r = verify(model(DetachedBackward), order=2, modes=("rev", "fwd"), samples=3)
    assert r.status == "fail"
    assert quantities(r) == {"second"}
    assert quantities(r, source="autograd") == set()
    wrong = {(c.param, c.param2) for c in r.failed}
    assert ("w", "w") in wrong and ("b", "b") not in wrong  # ∂²/∂w² lost its -sin(w)·x² term
    # differences of impl's own (right) gradient agree with the exact value: the double backward is wrong
    assert {c.attribution for c in r.failed} == {"wrong"} and "double backward is wrong" in r.failed[0].note
    # at first order the same Function passes
    assert verify(model(DetachedBackward), samples=3).status == "pass"


def test_wrong_jvp_fails_only_in_jvp_checks():
    r = verify(model(WrongJvp), order=2, modes=("rev", "fwd"), samples=3)
    assert r.status == "fail"
    assert quantities(r) == {"jvp"}
    assert {c.param for c in r.failed} == {"x"}  # the direction whose factor 2 is missing
    assert verify(model(WrongJvp), order=2, modes=("rev",), samples=3).status == "pass"


def test_once_differentiable_is_not_supported_at_order_2_and_not_a_failure():
    r = verify(model(OnceDifferentiable), order=2, modes=("rev", "fwd"), samples=2)
    assert r.status == "pass"
    (u,) = r.unsupported
    assert (u.source, u.quantity) == ("impl", "second") and "once_differentiable" in u.reason
    assert quantities(r, verdict="agree") >= {"loss", "grad", "jvp"}
    assert ("autograd", "second") in {(s.source, s.quantity) for s in r.summaries}


def test_function_without_jvp_and_grad_impl_are_not_supported_in_forward_mode():
    m = model(NoJvp).with_implementations(grad_impl=lambda w, x, b: {"w": torch.cos(w) * x * x + b,
                                                                      "x": 2 * torch.sin(w) * x, "b": w})
    r = verify(m, order=2, modes=("rev", "fwd"), samples=2)
    assert r.status == "pass", r.failed[:3]
    found = {(u.source, u.quantity): u.reason for u in r.unsupported}
    assert set(found) == {("impl", "jvp"), ("grad_impl", "jvp"), ("grad_impl", "second")}
    assert "forward-mode" in found[("impl", "jvp")] and "jvp" in found[("impl", "jvp")]
    assert "second" in quantities(r, verdict="agree")  # its double backward is fine


def test_large_models_use_exact_hessian_vector_products():
    from gradcheck_sym.orders import HESSIAN_MAX_ENTRIES, HVP_VECTORS
    from gradcheck_sym.zoo import mlp

    m = mlp((3, 4, 3, 2), name="small-mlp")  # 16 + 9 + 8 = 33 weights and biases... more than 30
    assert len(m.entries) > HESSIAN_MAX_ENTRIES
    r = verify(m, order=2, samples=2, dtypes=["float64"])
    assert r.status == "pass"
    assert "Hessian-vector products" in r.second_method
    second = [c for c in r.checks if c.quantity == "second"]
    assert {c.vector for c in second} == set(range(HVP_VECTORS)) and all(c.param2 is None for c in second)
    assert len(second) == 2 * HVP_VECTORS * len(m.entries)


def test_second_derivatives_at_kinks_are_one_sided_or_undefined():
    m = Model(name="kinks", loss=w * sp.Abs(w) + sp.Abs(x) * b, params=[w, x, b],
              points=[{w: 0, x: 0, b: 1}], impl=lambda w, x, b: w * torch.abs(w) + torch.abs(x) * b)
    r = verify(m, order=2, modes=("rev", "fwd"), samples=0, dtypes=["float64"])
    assert r.status == "pass"
    by = {(c.param, c.param2): c for c in r.checks if c.quantity == "second" and c.source == "autograd"}
    assert by["w", "w"].verdict == "nondifferentiable" and (by["w", "w"].left, by["w", "w"].right) == (-2.0, 2.0)
    assert by["x", "x"].verdict == "undefined"  # ∂|x|/∂x jumps at 0
    assert by["b", "b"].verdict == "agree" and by["b", "b"].exact == 0


def test_order_and_modes_are_validated():
    m = model(Right)
    assert verify(m, order=3).status == "error" and "`order` must be 1 or 2" in verify(m, order=3).error
    assert "`modes`" in verify(m, modes=("sideways",)).error


def test_json_round_trip_keeps_the_new_fields(tmp_path):
    from gradcheck_sym.results import RunResult, from_json, to_json

    r = verify(model(OnceDifferentiable), order=2, modes=("fwd",), samples=1, dtypes=["float64"])
    run = RunResult(tool_version="x", versions={}, command="c", seed=0, samples=1, dtypes=("float64",), models=(r,))
    text = to_json(run)
    assert from_json(text) == run
    data = json.loads(text)["models"][0]
    assert data["order"] == 2 and data["modes"] == ["fwd"]
    assert data["unsupported"] == [{"source": "impl", "quantity": "second", "reason": data["unsupported"][0]["reason"]}]
    quantities = {c["quantity"] for c in data["checks"] if c["source"] != "fd"}
    assert quantities == {"loss", "jvp", "second"}  # no reverse-mode gradients with modes=("fwd",)
    assert all("param2" in c for c in data["checks"] if c["quantity"] == "second")
    assert not any("param2" in c for c in data["checks"] if c["quantity"] != "second")


# -- operators: outputs=, checked through VJPs (unit and random cotangents) and JVPs ------------

a, c = sp.symbols("a c", real=True)


def _operator_function(wrong_cross_term: bool) -> type[torch.autograd.Function]:
    class Op(torch.autograd.Function):
        """y = [a·c, a + sin(c)], with a hand-written backward and jvp."""

        @staticmethod
        def forward(ctx, a, c):
            ctx.save_for_backward(a, c)
            ctx.save_for_forward(a, c)
            return torch.stack([a * c, a + torch.sin(c)])

        @staticmethod
        def backward(ctx, g):
            a, c = ctx.saved_tensors
            ga = g[0] * c + g[1]
            gc = g[0] * (2 * a if wrong_cross_term else a) + g[1] * torch.cos(c)  # ∂y0/∂c, once wrong
            return ga, gc

        @staticmethod
        def jvp(ctx, da, dc):
            a, c = ctx.saved_tensors
            return torch.stack([c * da + a * dc, da + torch.cos(c) * dc])

    return Op


def operator(wrong_cross_term: bool = False) -> Model:
    op = _operator_function(wrong_cross_term)
    return Model(name="op", outputs=sp.Matrix([a * c, a + sp.sin(c)]), params=[a, c], domain={"*": (-2, 2)},
                 impl=lambda a, c: op.apply(a, c))


def test_correct_operator_passes_in_both_modes_at_order_2():
    r = verify(operator(), order=2, modes=("rev", "fwd"), samples=3)
    assert r.status == "pass", r.failed[:3]
    assert r.outputs == (2, 1)
    impl = [c for c in r.checks if c.source == "impl"]
    assert {c.quantity for c in impl} == {"value", "grad", "jvp", "second"}
    assert {(c.output, c.vector) for c in impl if c.quantity == "grad"} == {(0, None), (1, None), (None, 0), (None, 1)}
    assert {c.output for c in impl if c.quantity == "second"} == {0, 1}
    # ∂²(a·c)/∂a∂c = 1 and ∂²(a + sin c)/∂c² = -sin c
    cross = next(c for c in impl if c.quantity == "second" and c.output == 0 and (c.param, c.param2) == ("a", "c"))
    assert cross.exact == 1.0


def test_operator_with_a_wrong_cross_term_fails_only_on_that_parameters_grad():
    r = verify(operator(wrong_cross_term=True), modes=("rev", "fwd"), samples=3)
    assert r.status == "fail"
    failed = [c for c in r.failed]
    assert {(c.source, c.quantity, c.param) for c in failed} == {("impl", "grad", "c")}
    assert {c.output for c in failed if c.vector is None} == {0}  # row 0 of the Jacobian only
    assert {c.vector for c in failed if c.output is None} == {0, 1}  # and every random cotangent
    assert all(c.attribution == "wrong" for c in failed)  # fd of the same forward agree with exact


def test_operator_declaration_errors_name_the_model():
    from gradcheck_sym import ModelError

    with pytest.raises(ModelError, match=r"model `op`: give exactly one of `loss=`.*both"):
        Model(name="op", loss=a * c, outputs=sp.Matrix([a]), params=[a, c], domain={"*": (-1, 1)})
    with pytest.raises(ModelError, match=r"model `op`: give exactly one of `loss=`.*neither"):
        Model(name="op", params=[a], domain={"*": (-1, 1)})
    with pytest.raises(ModelError, match=r"model `op`: param `c` does not occur in any output"):
        Model(name="op", outputs=sp.Matrix([a, a**2]), params=[a, c], domain={"*": (-1, 1)})
    with pytest.raises(ModelError, match=r"model `op`: `grad_impl` is for a scalar `loss=`"):
        Model(name="op", outputs=sp.Matrix([a * c]), params=[a, c], domain={"*": (-1, 1)}, grad_impl=lambda a, c: 0)


def test_operator_impl_of_the_wrong_shape_is_a_clear_error():
    m = Model(name="op", outputs=sp.Matrix([a * c, a + c]), params=[a, c], domain={"*": (-1, 1)},
              impl=lambda a, c: torch.stack([a * c, a + c, a]))
    r = verify(m, samples=1)
    assert r.status == "error"
    assert "model `op`: `impl` (at point 0) returned a tensor of shape (3,)" in r.error
    assert "(2,) or (2, 1)" in r.error


# -- front ends ---------------------------------------------------------------------------------

MODELS = '''
import sympy as sp, torch
from gradcheck_sym import Model
from torch.autograd.function import once_differentiable

w, x = sp.symbols("w x", real=True)

class Sq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return w * w
    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return 2 * g * w

class Detached(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return w * w
    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return 2 * g * w.detach()

once = Model(name="once", loss=w**2 * x, params=[w], inputs=[x], domain={"*": (-2, 2)},
             impl=lambda w, x: Sq.apply(w) * x)
detached = Model(name="detached", loss=w**2 * x, params=[w], inputs=[x], domain={"*": (-2, 2)},
                 impl=lambda w, x: Detached.apply(w) * x)
'''


def test_cli_order_and_modes(tmp_path, run_cli):
    (tmp_path / "models.py").write_text(MODELS.split("detached = ")[0])
    r = run_cli("verify", "models.py", "--order", "2", "--modes", "rev,fwd", "--samples", "2", "--quiet",
                "--json", "out.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not supported: once: impl second order (--order 2)" in r.stdout and "once_differentiable" in r.stdout
    assert "not supported: once: impl forward mode (--modes fwd)" in r.stdout
    data = json.loads((tmp_path / "out.json").read_text())["models"][0]
    assert data["order"] == 2 and data["modes"] == ["rev", "fwd"]
    assert {(u["source"], u["quantity"]) for u in data["unsupported"]} == {("impl", "second"), ("impl", "jvp")}
    page = (tmp_path / "reports" / "once.md").read_text()
    assert "## Orders and modes" in page and "once_differentiable" in page
    assert "| impl | ✅ 4 agree | not supported: it has no forward-mode derivative" in page
    assert "](once-hessian.png)" in page and (tmp_path / "reports" / "once-hessian.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "models.py").write_text(MODELS)
    r = run_cli("verify", "models.py", "--order", "2", "--samples", "2", "--quiet", "--no-report", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL detached" in r.stdout and "∂²loss/∂w∂w" in r.stdout
    r = run_cli("verify", "models.py", "--order", "3", cwd=tmp_path)
    assert r.returncode == 2 and "argument --order: expected 1 or 2, got '3'" in r.stderr
    r = run_cli("verify", "models.py", "--modes", "rev,sideways", cwd=tmp_path)
    assert r.returncode == 2 and "argument --modes: expected a comma-separated list of rev, fwd" in r.stderr


def test_plugin_order_and_modes(pytester):
    pytester.makepyfile(models=MODELS)
    pytester.makepyfile(test_it='''
        import pytest
        from models import once, detached

        def test_fixture_order_2(gradcheck):
            r = gradcheck(once, order=2, modes="rev,fwd")
            assert [(u.source, u.quantity) for u in r.unsupported] == [("impl", "jvp"), ("impl", "second")]

        @pytest.mark.gradcheck(order=2)
        def test_marker_order_2_fails(gradcheck):
            gradcheck(detached)

        def test_default_is_first_order(gradcheck):
            r = gradcheck(detached)
            assert (r.order, r.modes) == (1, ("rev",))

        @pytest.mark.gradcheck(order=5)
        def test_bad_marker(gradcheck):
            gradcheck(once)
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*impl float64 ∂²loss/∂w∂w at point 0: exact *, got 0 *"])
    result.stdout.fnmatch_lines(["*gradcheck(order=...): expected 1 or 2, got '5'*"])
    result = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-order", "2", "-k", "default")
    result.assert_outcomes(failed=1)  # the option raises the default order
    pytester.makeini("[pytest]\ngradcheck_modes = fwd\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "default")
    result.assert_outcomes(failed=1)  # the ini key sets the default modes
    result.stdout.fnmatch_lines(["*assert (1, ('fwd',)) == (1, ('rev',))*"])


# -- the lecture --------------------------------------------------------------------------------


def test_builtin_models_pass_at_order_2_in_both_modes_from_the_command_line(tmp_path, run_cli):
    r = run_cli("verify", "--order", "2", "--modes", "rev,fwd", "--samples", "1", "--quiet",
                "--json", "out.json", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    models = json.loads((tmp_path / "out.json").read_text())["models"]
    assert [m["name"] for m in models] == ["linear", "affine", "quadratic", "two-linear-layers", "mlp-193", "logistic"]
    for m in models:
        assert m["status"] == "pass" and m["order"] == 2 and not m.get("unsupported")
        assert {s["quantity"] for s in m["summaries"]} == {"loss", "grad", "jvp", "second"}
    mlp = next(m for m in models if m["name"] == "mlp-193")
    assert "Hessian-vector products" in mlp["second_method"]


def test_the_lectures_backward_also_gives_the_input_gradients():
    from gradcheck_sym.zoo import builtin_models, mlp

    models = [m for m in builtin_models(input_grads=True) if m.name != "mlp-193"]
    models.append(mlp((3, 3, 2), name="mlp-small", input_grads=True))
    for m in models:
        r = verify(m, order=2, modes=("rev", "fwd"), samples=1)
        assert r.status == "pass", (m.name, r.error, r.failed[:2])
        grads = {c.param for c in r.checks if c.quantity == "grad" and c.source == "autograd"}
        assert {v.name for v in m.inputs} <= grads  # ∂loss/∂x (and ∂loss/∂y) are checked
        second = {(c.param, c.param2) for c in r.checks if c.quantity == "second" and c.param2}
        if second:
            assert any(p in {v.name for v in m.inputs} for p, _ in second)


def test_operator_without_jvp_is_not_supported_in_forward_mode_and_autograd_still_runs():
    class NoJvpOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, c):
            ctx.save_for_backward(a, c)
            return torch.stack([a * c, a + torch.sin(c)])

        @staticmethod
        def backward(ctx, g):
            a, c = ctx.saved_tensors
            return g[0] * c + g[1], g[0] * a + g[1] * torch.cos(c)

    m = Model(name="op", outputs=sp.Matrix([a * c, a + sp.sin(c)]), params=[a, c], domain={"*": (-2, 2)},
              impl=lambda a, c: NoJvpOp.apply(a, c))
    r = verify(m, modes=("fwd",), samples=2)
    assert r.status == "pass" and [(u.source, u.quantity) for u in r.unsupported] == [("impl", "jvp")]
    assert {(c.source, c.quantity) for c in r.checks if c.source != "fd"} == {
        ("autograd", "value"), ("impl", "value"), ("autograd", "jvp")}


def test_old_results_files_read_as_first_order(tmp_path):
    from pathlib import Path

    from gradcheck_sym.results import from_json, to_json

    committed = Path(__file__).parent.parent / "reports" / "results.json"
    text = committed.read_text()
    assert '"order"' not in text and '"param2"' not in text  # written before these fields existed
    run = from_json(text)
    assert all(m.order == 1 and m.modes == ("rev",) and not m.unsupported for m in run.models)
    assert all(c.output is None and c.param2 is None for m in run.models for c in m.checks)
    assert to_json(run) == text  # and a first-order run writes the same bytes as before


def test_torch_functions_without_double_backward_or_forward_mode_are_not_supported():
    X = sp.Matrix([[w, x], [b, w]])
    dist = sum(sp.sqrt(sum((X[i, k] - X[j, k]) ** 2 for k in range(2))) for i in range(2) for j in range(2) if i != j)
    m = Model(name="cdist", loss=dist, params=[w, x, b], domain={"*": (-2, 2)},
              impl=lambda w, x, b: torch.cdist(torch.stack([torch.stack([w, x]), torch.stack([b, w])]),
                                               torch.stack([torch.stack([w, x]), torch.stack([b, w])])).sum())
    r = verify(m, order=2, modes=("rev", "fwd"), samples=2)
    assert r.status == "pass", (r.error, r.failed[:2])
    found = {(u.source, u.quantity): u.reason for u in r.unsupported}
    assert set(found) == {("impl", "second"), ("impl", "jvp")}
    assert "_cdist_backward" in found["impl", "second"] and "_cdist_forward" in found["impl", "jvp"]


def test_without_matplotlib_the_heatmap_is_skipped_and_the_page_says_so(monkeypatch):
    from gradcheck_sym import plots
    from gradcheck_sym.report import render_files as render
    from gradcheck_sym.results import RunResult

    r = verify(model(DetachedBackward), order=2, samples=1, dtypes=["float64"])
    run = RunResult(tool_version="x", versions={}, command="c", seed=0, samples=1, dtypes=("float64",), models=(r,))
    with_plots = render(run)
    assert with_plots[f"{r.name}-hessian.png"][:4] == b"\x89PNG"
    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    from gradcheck_sym import cache

    monkeypatch.setattr(cache, "_DISABLED", True)  # no cached PNG either
    files = render(run)
    assert not any(name.endswith(".png") for name in files)
    assert plots.MISSING in files[f"{r.name}.md"] and "## Orders and modes" in files[f"{r.name}.md"]
