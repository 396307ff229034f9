"""lmbook.power_counting against Tensor Programs V's table 3 and hand-derived exponents."""

import pytest
import sympy as sp

from lmbook import power_counting as pc

H = sp.Rational(1, 2)
Q = ["h1", "h2", "h3", "f"]


def updates(name, opt, **kw):
    e = pc.exponents(pc.preset(name, opt), opt, **kw)
    return [e[q] for q in Q]


def test_mup_table_of_tensor_programs_v():
    sgd, adam = pc.derive_mup("sgd"), pc.derive_mup("adam")
    # init variance: 1/fan_in (input: fan_in d fixed -> n^0), 1/fan_in, 1/fan_in^2
    assert sgd["init_variance"] == adam["init_variance"] == (0, -1, -2)
    assert sgd["lr"] == (1, 0, -1)  # eta fan_out, eta, eta / fan_in
    assert adam["lr"] == (0, -1, -1)  # eta, eta / fan_in, eta / fan_in
    for opt in pc.OPTIMISERS:
        p = pc.preset("mup", opt)
        assert p.b == pc.derive_mup(opt)["b"] and p.c == pc.derive_mup(opt)["c"]


def test_hand_derived_cases():
    assert updates("mup", "sgd") == [0, 0, 0, 0]
    assert updates("mup", "adam") == [0, 0, 0, 0]
    assert updates("sp", "sgd") == [-H, H, H, 1]  # Delta f ~ n, Delta h ~ n^1/2
    assert updates("sp", "adam") == [0, 1, 1, 3 * H]  # n^3/2: W_0 aligned with Delta x^L
    assert updates("ntk", "sgd") == [-H, -H, -H, 0]  # features freeze
    assert updates("ntk", "adam") == [0, H, H, 1]
    one = pc.exponents(pc.preset("mup", "sgd"), "sgd", depth=1)
    assert (one["h1"], one["f"]) == (0, 0) and "h2" not in one
    e = pc.exponents(pc.preset("mup", "sgd"), "sgd")
    assert e["init_f"] == -H and e["init_h2"] == 0 and e["grad_W1"] == -1


def test_max_stable_lr_and_regimes():
    g = {(n, o): pc.max_stable_lr_exponent(pc.preset(n, o), o)
         for n in ("sp", "ntk", "mup") for o in pc.OPTIMISERS}
    assert g == {("sp", "sgd"): 1, ("sp", "adam"): 3 * H, ("ntk", "sgd"): 0,
                 ("ntk", "adam"): 1, ("mup", "sgd"): 0, ("mup", "adam"): 0}
    assert pc.regime(pc.preset("mup", "sgd"), "sgd") == "feature learning"
    assert pc.regime(pc.preset("sp", "sgd"), "sgd") == "unstable"
    assert pc.regime(pc.preset("ntk", "sgd"), "sgd") == "kernel"
    stable = pc.at_lr_exponent(pc.preset("sp"), "sgd", 1)
    assert pc.regime(stable, "sgd") == "kernel"
    assert [pc.exponents(stable, "sgd")[q] for q in Q] == [-3 * H, -H, -H, 0]
    tiny = pc.at_lr_exponent(pc.preset("mup"), "sgd", 1)
    assert pc.regime(tiny, "sgd") == "trivial"


def test_symmetry_leaves_every_exponent_unchanged():
    syms = [sp.symbols(f"{v}_in {v}_hid {v}_out", real=True) for v in "abc"]
    p = pc.Parameterisation("abc", *syms)
    t = sp.Symbol("t", real=True)
    for opt in pc.OPTIMISERS:
        for kind in (None,) + pc.KINDS:
            before, after = pc.terms(p, opt), pc.terms(pc.shift(p, t, opt, kind), opt)
            for q in Q:
                assert all(sp.expand(after[q][k] - before[q][k]) == 0 for k in before[q])


def test_tensor_programs_iv_r_for_uniform_c():
    """Yang & Hu's r = min(a+b, 2a+c)_out + c - 1 + min_l(2 a_l + [l = 1]) is minus the exponent of
    the last hidden layer's update (first step, a+b <= 2a+c at the output here)."""
    for a in [(0, 0, 0), (0, H, H), (-H, 0, H)]:
        for b in [(-a[0], H - a[1], H), (-a[0], H - a[1], 1)]:
            for c in [0, H, 1]:
                p = pc.Parameterisation("x", a, b, (c, c, c))
                out = min(a[2] + b[2], 2 * a[2] + c)
                r = out + c - 1 + min(2 * a[0] + 1, 2 * a[1])
                if a[2] + b[2] <= 2 * a[2] + c:
                    assert pc.exponents(p, "sgd")["h3"] == -r


def test_correction_exponent():
    assert pc.correction_exponent(pc.preset("sp", "adam"), "adam", "f") == -H
    assert pc.correction_exponent(pc.preset("sp", "sgd"), "sgd", "h2") == -1
    assert pc.correction_exponent(pc.preset("mup", "sgd"), "sgd", "f") == -1


def test_bad_input():
    with pytest.raises(ValueError):
        pc.preset("mf")
    with pytest.raises(ValueError):
        pc.exponents(pc.preset("sp"), "rmsprop")
    with pytest.raises(ValueError):
        pc.Parameterisation("x", (0, 0), (0, 0, 0), (0, 0, 0))


def test_count_without_alignment():
    """Everett et al.'s no-alignment setting: every sum over the width in an update is random."""
    def free(name, opt):
        e = pc.exponents(pc.preset(name, opt), opt, aligned=False)
        return [e[q] for q in Q]

    assert free("sp", "sgd") == [-H, 0, 0, H]
    assert free("sp", "adam") == [0, H, H, H]
    assert free("mup", "sgd") == [0, 0, 0, -H]
    assert free("mup", "adam") == [0, 0, 0, -H]
    assert free("ntk", "sgd") == [-H, -H, -H, -H]
    assert pc.max_stable_lr_exponent(pc.preset("sp", "adam"), "adam", aligned=False) == H
    # init sizes and gradients do not depend on the alignment; the default is aligned
    p = pc.preset("sp", "sgd")
    a, f = pc.exponents(p, "sgd"), pc.exponents(p, "sgd", aligned=False)
    assert all(a[q] == f[q] for q in a if q.startswith(("init", "grad")))
    assert pc.exponents(p, "sgd", aligned=True) == a
