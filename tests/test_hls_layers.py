"""The C++ kernels of design/hls/ against the numpy reference, through a g++ harness.

One harness (compiled once for the module) instantiates every kernel with
config structs produced by the same functions the hls4ml templates use
(``hls_layers.*_config_cpp``) and the default precision config. Agreement:

* ternary accumulator: exact (random int8 inputs; the extremes 127 · n_in with
  all +1 weights, and the width ceil(log2(128 n_in)) + 1);
* int8 quantisation: identical to numpy except where numpy's pre-rounding value
  is within 1e-4 of a tie;
* output scale (block floating point, 28-bit mantissas): relative error < 1e-7;
* sigma LUT: within the stated bound (8.8e-7 by default), silu-based layers within that
  bound times their operands, RMSNorm within a few output LSBs.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.util
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mmfree_hls.config import BITLINEAR_NORM_EPS
from mmfree_hls.design import hls_layers
from mmfree_hls.design.precision import load_precision, parse_type, sigmoid_table_error_bound
from mmfree_hls.packing import pack_ternary
from mmfree_hls.quant import quantize_activations, quantize_weights, rms_norm, sigmoid, silu, ternary_accumulate

AP_TYPES = Path(importlib.util.find_spec("hls4ml").submodule_search_locations[0]) / "templates/vivado/ap_types"

N_IN, N_OUT = 96, 40          # BitLinear under test (row_bytes 24)
N_EXT = 4096                  # accumulator extremes: acc width 20 bits
N_VEC = 48                    # element-wise layers
EPS = 1e-6
PREC = load_precision()


def fx(x, type_text: str) -> np.ndarray:
    """numpy model of a float → ap_fixed conversion (AP_RND: half up, AP_TRN: floor; AP_SAT / wrap)."""
    t = parse_type(type_text)
    scale = 2.0 ** t.fractional
    v = np.asarray(x, dtype=np.float64) * scale
    v = np.floor(v + 0.5) if t.rounding == "AP_RND" else np.floor(v)
    lo = -(2 ** (t.width - 1)) if t.signed else 0
    hi = 2 ** (t.width - 1) - 1 if t.signed else 2 ** t.width - 1
    if t.saturation == "AP_SAT":
        v = np.clip(v, lo, hi)
    return v / scale


def lsb(type_text: str) -> float:
    return 2.0 ** -parse_type(type_text).fractional


# ------------------------------------------------------------------ harness
T_DATA = PREC.tensor_type("residual")
BL = PREC.for_layer("bitlinear", "l0_i_proj")
RMS = PREC.for_layer("rmsnorm", "l0_attn_norm")
GRMS = PREC.for_layer("gated_rmsnorm", "l0_g_norm")
MLG = PREC.for_layer("mlgru", "l1_mlgru")
GLU = PREC.for_layer("glu", "l0_glu")
T_STATE = PREC.tensor_type("state")
T_BL_EXT = "ap_fixed<40,16>"


def _exact_sumsq(n):
    t = parse_type(T_DATA)
    return hls_layers.exact_sumsq_type(t.width, t.integer, n)


def _harness_source(gamma: float) -> str:
    sig = {"sigmoid": GRMS["sigmoid"], "sigmoid_table_t": GRMS["sigmoid"]["table"]}
    bl = dict(n_in=N_IN, n_out=N_OUT, reuse_factor=1, norm_t=BL["norm"], sumsq_t=_exact_sumsq(N_IN),
              mant_bits=BL["mant_bits"], newton_iterations=BL["newton_iterations"], quant_bits=BL["quant_bits"],
              gamma=gamma)
    structs = [
        hls_layers.bitlinear_config_cpp("bl_cfg", bl),
        hls_layers.bitlinear_config_cpp("bl4_cfg", {**bl, "reuse_factor": 4}),
        hls_layers.bitlinear_config_cpp("ext_cfg", {**bl, "n_in": N_EXT, "n_out": 4, "gamma": 1.0,
                                                    "sumsq_t": _exact_sumsq(N_EXT)}),
        hls_layers.bitlinear_config_cpp("sat_cfg", {**bl, "n_in": N_EXT, "n_out": 4, "gamma": 1.0,
                                                    "sumsq_t": _exact_sumsq(N_EXT), "accum_bits": 12}),
        hls_layers.bitlinear_config_cpp("a4_cfg", {**bl, "act_bits": 4}),
        hls_layers.rmsnorm_config_cpp("rms_cfg", dict(n_in=N_VEC, reuse_factor=1, weight_t=RMS["weight"],
                                                      sumsq_t=_exact_sumsq(N_VEC), eps=EPS, mant_bits=RMS["mant_bits"],
                                                      newton_iterations=RMS["newton_iterations"])),
        hls_layers.gated_rmsnorm_config_cpp("grms_cfg", dict(
            n_in=N_VEC, reuse_factor=1, weight_t=GRMS["weight"], sumsq_t=_exact_sumsq(N_VEC), eps=EPS,
            normed_t=GRMS["normed"], act_t=GRMS["act"], mant_bits=GRMS["mant_bits"],
            newton_iterations=GRMS["newton_iterations"], **sig)),
        hls_layers.mlgru_config_cpp("mlgru_lb_cfg", dict(n_state=N_VEC, reuse_factor=1, use_lower_bound=True,
                                                         gate_t=MLG["gate"], act_t=MLG["act"],
                                                         lower_bound_t=MLG["lower_bound"], **sig)),
        hls_layers.mlgru_config_cpp("mlgru_cfg", dict(n_state=N_VEC, reuse_factor=1, use_lower_bound=False,
                                                      gate_t=MLG["gate"], act_t=MLG["act"],
                                                      lower_bound_t=MLG["lower_bound"], **sig)),
        hls_layers.glu_config_cpp("glu_cfg", dict(n_out=N_VEC, reuse_factor=1, act_t=GLU["act"], **sig)),
    ]
    return "\n".join([
        '#include "nnet_bitlinear.h"', '#include "nnet_rmsnorm.h"', '#include "nnet_mlgru.h"',
        '#include "nnet_glu.h"', "",
        f"typedef {T_DATA} data_t;", f"typedef {BL['result']} bl_out_t;", f"typedef {T_BL_EXT} ext_out_t;",
        f"typedef {RMS['result']} rms_out_t;", f"typedef {GRMS['result']} grms_out_t;",
        f"typedef {T_STATE} state_t;", f"typedef {GLU['result']} glu_out_t;",
        *structs,
        "template <class T> void load(const double *src, T *dst, int n) { for (int i = 0; i < n; i++) dst[i] = src[i]; }",
        "template <class T> void store(const T *src, double *dst, int n) { for (int i = 0; i < n; i++) dst[i] = src[i].to_double(); }",
        "template <unsigned M> double pf_value(const nnet::mmfree::pfloat<M> &p) { return p.mant.to_double() * std::ldexp(1.0, p.exp); }",
        "",
        "template <class CFG, class out_T>",
        "void bl_run(const double *x, const double *norm, const unsigned char *w, double *y) {",
        "    data_t xs[CFG::n_in]; typename CFG::norm_t ns[CFG::n_in]; out_T ys[CFG::n_out];",
        "    load(x, xs, CFG::n_in); load(norm, ns, CFG::n_in);",
        "    nnet::bitlinear<data_t, out_T, CFG>(xs, ys, ns, w);",
        "    store(ys, y, CFG::n_out);",
        "}",
        "template <class CFG> void acc_run(const signed char *xq, const unsigned char *w, long *acc) {",
        "    typename nnet::bitlinear_types<CFG>::quant_t q[CFG::n_in];",
        "    typename nnet::bitlinear_types<CFG>::accum_t a[CFG::n_out];",
        "    for (unsigned i = 0; i < CFG::n_in; i++) q[i] = xq[i];",
        "    nnet::bitlinear_accumulate<CFG>(q, a, w);",
        "    for (unsigned o = 0; o < CFG::n_out; o++) acc[o] = a[o].to_long();",
        "}",
        "template <class CFG> int quantize_run(const double *x, const double *norm, signed char *xq, double *scale) {",
        "    data_t xs[CFG::n_in]; typename CFG::norm_t ns[CFG::n_in]; typename nnet::bitlinear_types<CFG>::quant_t q[CFG::n_in];",
        "    typename nnet::bitlinear_types<CFG>::scale_t sc;",
        "    load(x, xs, CFG::n_in); load(norm, ns, CFG::n_in);",
        "    bool nonzero = nnet::bitlinear_quantize<data_t, CFG>(xs, q, sc, ns);",
        "    for (unsigned i = 0; i < CFG::n_in; i++) xq[i] = q[i].to_int();",
        "    *scale = pf_value(sc);",
        "    return nonzero;",
        "}",
        "template <class CFG> void mlgru_run(const double *i, const double *f, const double *s, const double *lb, double *out) {",
        "    data_t is[CFG::n_state], fs[CFG::n_state]; state_t ss[CFG::n_state], os[CFG::n_state];",
        "    typename CFG::lower_bound_t lbs[CFG::n_state];",
        "    load(i, is, CFG::n_state); load(f, fs, CFG::n_state); load(s, ss, CFG::n_state); load(lb, lbs, CFG::n_state);",
        "    nnet::mlgru_cell<data_t, data_t, state_t, state_t, CFG>(is, fs, ss, os, lbs);",
        "    store(os, out, CFG::n_state);",
        "}",
        "",
        'extern "C" {',
        "int bl_accum_bits() { return nnet::bitlinear_types<bl_cfg>::accum_t::width; }",
        "int ext_accum_bits() { return nnet::bitlinear_types<ext_cfg>::accum_t::width; }",
        "void bl_forward(const double *x, const double *n, const unsigned char *w, double *y) { bl_run<bl_cfg, bl_out_t>(x, n, w, y); }",
        "void bl4_forward(const double *x, const double *n, const unsigned char *w, double *y) { bl_run<bl4_cfg, bl_out_t>(x, n, w, y); }",
        "void ext_forward(const double *x, const double *n, const unsigned char *w, double *y) { bl_run<ext_cfg, ext_out_t>(x, n, w, y); }",
        "void bl_accumulate(const signed char *xq, const unsigned char *w, long *acc) { acc_run<bl_cfg>(xq, w, acc); }",
        "void ext_accumulate(const signed char *xq, const unsigned char *w, long *acc) { acc_run<ext_cfg>(xq, w, acc); }",
        "int a4_accum_bits() { return nnet::bitlinear_types<a4_cfg>::accum_t::width; }",
        "void sat_accumulate(const signed char *xq, const unsigned char *w, long *acc) {",
        "    nnet::bitlinear_types<sat_cfg>::quant_t q[N_EXT_]; nnet::bitlinear_types<sat_cfg>::accum_t a[4];",
        "    for (int i = 0; i < N_EXT_; i++) q[i] = xq[i];",
        "    nnet::bitlinear_accumulate<sat_cfg>(q, a, w);",
        "    for (int o = 0; o < 4; o++) acc[o] = a[o].to_int();",
        "}",
        "int bl_quantize(const double *x, const double *norm, signed char *xq, double *scale) { return quantize_run<bl_cfg>(x, norm, xq, scale); }",
        "int a4_quantize(const double *x, const double *norm, signed char *xq, double *scale) { return quantize_run<a4_cfg>(x, norm, xq, scale); }",
        "void rms_forward(const double *x, const double *w, double *y) {",
        "    data_t xs[N_VEC_]; rms_cfg::weight_t ws[N_VEC_]; rms_out_t ys[N_VEC_];",
        "    load(x, xs, N_VEC_); load(w, ws, N_VEC_);",
        "    nnet::rmsnorm<data_t, rms_out_t, rms_cfg>(xs, ys, ws); store(ys, y, N_VEC_);",
        "}",
        "void grms_forward(const double *g, const double *s, const double *w, double *y) {",
        "    data_t gs[N_VEC_]; state_t ss[N_VEC_]; grms_cfg::weight_t ws[N_VEC_]; grms_out_t ys[N_VEC_];",
        "    load(g, gs, N_VEC_); load(s, ss, N_VEC_); load(w, ws, N_VEC_);",
        "    nnet::gated_rmsnorm<data_t, state_t, grms_out_t, grms_cfg>(gs, ss, ys, ws); store(ys, y, N_VEC_);",
        "}",
        "void mlgru_lb_forward(const double *i, const double *f, const double *s, const double *lb, double *o) { mlgru_run<mlgru_lb_cfg>(i, f, s, lb, o); }",
        "void mlgru_forward(const double *i, const double *f, const double *s, const double *lb, double *o) { mlgru_run<mlgru_cfg>(i, f, s, lb, o); }",
        "void glu_forward(const double *u, double *y) {",
        "    data_t us[2 * N_VEC_]; glu_out_t ys[N_VEC_];",
        "    load(u, us, 2 * N_VEC_); nnet::glu<data_t, glu_out_t, glu_cfg>(us, ys); store(ys, y, N_VEC_);",
        "}",
        "double sigmoid_probe(double x) { data_t v = x; return nnet::mmfree::sigmoid_lut<grms_cfg::sigmoid_table_t, data_t, grms_cfg>(v).to_double(); }",
        "double rsqrt_probe(double v) { ap_ufixed<64, 24> a = v; return pf_value(nnet::mmfree::rsqrt<28, 3>(nnet::mmfree::normalise<28>(a))); }",
        "double recip_probe(double v) { ap_ufixed<64, 24> a = v; return pf_value(nnet::mmfree::reciprocal<28, 3>(nnet::mmfree::normalise<28>(a))); }",
        "double pow2_probe(double v, int k) { ap_fixed<32, 12> a = v; return nnet::mmfree::mul_pow2<ap_fixed<16, 6, AP_TRN, AP_SAT> >(a, k).to_double(); }",
        "}",
        "",
    ]).replace("N_IN_", str(N_IN)).replace("N_VEC_", str(N_VEC)).replace("N_EXT_", str(N_EXT))


@pytest.fixture(scope="module")
def kernel_weights():
    rng = np.random.default_rng(7)
    tw = quantize_weights(rng.standard_normal((N_OUT, N_IN)) * N_IN ** -0.5)
    return tw


@pytest.fixture(scope="module")
def harness(tmp_path_factory, kernel_weights):
    # compiled once per session: pytest-xdist workers share the directory and take turns on a lock
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "mmfree_hls_harness"
    d.mkdir(exist_ok=True)
    source = _harness_source(kernel_weights.gamma)
    key = hashlib.sha256((source + "".join((hls_layers.HEADER_DIR / h).read_text()
                                           for h in hls_layers.HEADERS)).encode()).hexdigest()[:16]
    lib_path, log = d / f"harness_{key}.so", d / f"harness_{key}.log"
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not lib_path.is_file():
            src = d / f"harness_{key}.cpp"
            src.write_text(source)
            cmd = ["g++", "-O1", "-std=c++14", "-fPIC", "-shared", "-Wall", "-Wextra", "-Wno-unknown-pragmas",
                   "-isystem", str(AP_TYPES), "-I", str(hls_layers.HEADER_DIR), str(src), "-o", str(lib_path)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-4000:]
            log.write_text(proc.stderr)
    lib = ctypes.CDLL(str(lib_path))
    lib.compile_stderr = log.read_text()
    dbl = ctypes.c_double
    for f in ("sigmoid_probe", "rsqrt_probe", "recip_probe"):
        getattr(lib, f).restype, getattr(lib, f).argtypes = dbl, [dbl]
    lib.pow2_probe.restype, lib.pow2_probe.argtypes = dbl, [dbl, ctypes.c_int]
    return lib


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def call(lib, name, *arrays):
    getattr(lib, name)(*[ptr(a) for a in arrays])


# ------------------------------------------------------------------ warnings
def test_headers_compile_without_warnings(harness):
    ours = set(hls_layers.HEADERS)
    located = [ln for ln in harness.compile_stderr.splitlines()
               if ": warning:" in ln and Path(ln.split(":", 1)[0]).name in ours]
    assert located == []


# ------------------------------------------------------------------ accumulator
def test_accumulator_width_follows_fan_in(harness):
    assert harness.bl_accum_bits() == math.ceil(math.log2(N_IN * 128)) + 1
    assert harness.ext_accum_bits() == math.ceil(math.log2(N_EXT * 128)) + 1 == 20


def test_accumulator_is_exact_on_random_int8(harness, kernel_weights):
    rng = np.random.default_rng(1)
    packed = pack_ternary(kernel_weights.w_q)
    for _ in range(20):
        xq = rng.integers(-127, 128, N_IN).astype(np.int8)
        acc = np.zeros(N_OUT, np.int64)
        call(harness, "bl_accumulate", xq, packed, acc)
        np.testing.assert_array_equal(acc, ternary_accumulate(xq, kernel_weights.w_q))


def test_accumulator_extremes(harness):
    w = np.zeros((4, N_EXT), np.int8)
    w[0], w[1], w[2] = 1, -1, 1
    w[3, ::2], w[3, 1::2] = 1, -1
    packed = pack_ternary(w)
    acc = np.zeros(4, np.int64)
    call(harness, "ext_accumulate", np.full(N_EXT, 127, np.int8), packed, acc)
    assert acc.tolist() == [127 * N_EXT, -127 * N_EXT, 127 * N_EXT, 0]
    call(harness, "ext_accumulate", np.full(N_EXT, -128, np.int8), packed, acc)
    assert acc[0] == -128 * N_EXT == -(2 ** 19)          # the most negative value of 20 bits
    # the whole BitLinear: x constant → x_q all 127 → acc = 127 n_in → y = n_in · max|x̂| / γ (γ = 1)
    y = np.zeros(4)
    call(harness, "ext_forward", np.full(N_EXT, 0.75), np.ones(N_EXT), packed, y)
    np.testing.assert_allclose(y, [N_EXT, -N_EXT, N_EXT, 0], rtol=1e-7)


# ------------------------------------------------------------------ BitLinear
def _bl_inputs(rng):
    x = fx(rng.standard_normal(N_IN) * rng.choice([0.01, 1.0, 30.0]), T_DATA)
    n = fx(1.0 + 0.3 * rng.standard_normal(N_IN), BL["norm"])
    return x, n


def test_quantize_matches_numpy_except_at_ties(harness, kernel_weights):
    rng = np.random.default_rng(2)
    mismatches = near_ties = 0
    for _ in range(60):
        x, n = _bl_inputs(rng)
        xq = np.zeros(N_IN, np.int8)
        scale = np.zeros(1)
        assert harness.bl_quantize(ptr(x), ptr(n), ptr(xq), ptr(scale)) == 1
        x_hat = rms_norm(x, n, BITLINEAR_NORM_EPS)
        xq_ref, s = quantize_activations(x_hat)
        pre = x_hat * s
        tie = np.abs(np.abs(pre - np.floor(pre)) - 0.5) < 1e-4
        bad = xq != xq_ref
        assert np.all(np.abs(xq.astype(int) - xq_ref) <= 1)
        assert not np.any(bad & ~tie), f"x_q differs away from a tie: {pre[bad & ~tie]}"
        mismatches += int(bad.sum())
        near_ties += int(tie.sum())
        # the output scale max|x̂| / (127 γ), block floating point with 28-bit mantissas
        want = np.max(np.abs(x_hat)) / (127.0 * kernel_weights.gamma)
        assert abs(scale[0] / want - 1) < 1e-7
    assert mismatches <= near_ties


def test_narrower_activations_and_saturating_accumulator(harness, kernel_weights):
    """Design-space knobs: act_bits = 4 (Q = 7) and a 12-bit saturating accumulator."""
    assert harness.a4_accum_bits() == math.ceil(math.log2(N_IN * 8)) + 1
    rng = np.random.default_rng(9)
    for _ in range(20):
        x, n = _bl_inputs(rng)
        xq, scale = np.zeros(N_IN, np.int8), np.zeros(1)
        harness.a4_quantize(ptr(x), ptr(n), ptr(xq), ptr(scale))
        x_hat = rms_norm(x, n, BITLINEAR_NORM_EPS)
        pre = x_hat * 7 / np.max(np.abs(x_hat))
        tie = np.abs(np.abs(pre - np.floor(pre)) - 0.5) < 1e-4
        ref = np.clip(np.round(pre), -7, 7)
        assert np.all((xq == ref) | tie) and np.abs(xq).max() <= 7
        assert abs(scale[0] / (np.max(np.abs(x_hat)) / (7 * kernel_weights.gamma)) - 1) < 1e-7
    w = np.zeros((4, N_EXT), np.int8)
    w[0], w[1], w[2, :8] = 1, -1, 1
    acc = np.zeros(4, np.int64)
    call(harness, "sat_accumulate", np.full(N_EXT, 127, np.int8), pack_ternary(w), acc)
    assert acc.tolist() == [2047, -2048, 8 * 127, 0]


def test_quantize_all_zero_input(harness):
    xq = np.ones(N_IN, np.int8)
    scale = np.zeros(1)
    assert harness.bl_quantize(ptr(np.zeros(N_IN)), ptr(np.ones(N_IN)), ptr(xq), ptr(scale)) == 0
    assert not xq.any()


def test_bitlinear_forward_is_one_rescale_of_the_exact_accumulator(harness, kernel_weights):
    rng = np.random.default_rng(3)
    packed = pack_ternary(kernel_weights.w_q)
    for _ in range(20):
        x, n = _bl_inputs(rng)
        y, y4 = np.zeros(N_OUT), np.zeros(N_OUT)
        call(harness, "bl_forward", x, n, packed, y)
        call(harness, "bl4_forward", x, n, packed, y4)
        np.testing.assert_array_equal(y, y4)              # reuse factor changes the schedule only
        xq, scale = np.zeros(N_IN, np.int8), np.zeros(1)
        harness.bl_quantize(ptr(x), ptr(n), ptr(xq), ptr(scale))
        acc = ternary_accumulate(xq, kernel_weights.w_q)
        exact = acc * scale[0]
        assert np.all(np.abs(y - exact) <= lsb(BL["result"]))           # one rounding to the output
        # against the whole numpy BitLinear (float64 norm, numpy int8 rounding)
        x_hat = rms_norm(x, n, BITLINEAR_NORM_EPS)
        xq_ref, s = quantize_activations(x_hat)
        ref = ternary_accumulate(xq_ref, kernel_weights.w_q) / (s[0] * kernel_weights.gamma)
        flips = int(np.sum(xq != xq_ref))
        assert np.max(np.abs(y - ref)) <= (flips + 1e-3) * scale[0] + lsb(BL["result"])


# ------------------------------------------------------------------ norms, gates
def test_rmsnorm(harness):
    rng = np.random.default_rng(4)
    for mag in (1e-2, 1.0, 50.0):
        x = fx(rng.standard_normal(N_VEC) * mag, T_DATA)
        w = fx(1.0 + 0.2 * rng.standard_normal(N_VEC), RMS["weight"])
        y = np.zeros(N_VEC)
        call(harness, "rms_forward", x, w, y)
        ref = rms_norm(x, w, EPS)
        assert np.max(np.abs(y - ref)) <= 2 * lsb(RMS["result"]) + 1e-7 * np.max(np.abs(ref))


def test_gated_rmsnorm(harness):
    rng = np.random.default_rng(5)
    bound = sigmoid_table_error_bound(GRMS["sigmoid"]["table_size"], GRMS["sigmoid"]["range"],
                                      parse_type(GRMS["sigmoid"]["table"]).fractional)
    g = fx(rng.standard_normal(N_VEC) * 3, T_DATA)
    s = fx(rng.standard_normal(N_VEC) * 4, T_STATE)
    w = fx(1.0 + 0.2 * rng.standard_normal(N_VEC), GRMS["weight"])
    y = np.zeros(N_VEC)
    call(harness, "grms_forward", g, s, w, y)
    normed = rms_norm(g, w, EPS)
    ref = normed * silu(s)
    tol = np.abs(normed) * (np.abs(s) * bound + 2 * lsb(GRMS["act"])) + 2 * lsb(GRMS["result"]) \
        + np.abs(silu(s)) * 2 * lsb(GRMS["normed"])
    assert np.all(np.abs(y - ref) <= tol)


@pytest.mark.parametrize("use_lb", [True, False])
def test_mlgru_cell(harness, use_lb):
    rng = np.random.default_rng(6)
    bound = sigmoid_table_error_bound(MLG["sigmoid"]["table_size"], MLG["sigmoid"]["range"],
                                      parse_type(MLG["sigmoid"]["table"]).fractional)
    i = fx(rng.standard_normal(N_VEC) * 5, T_DATA)
    f = fx(np.concatenate([rng.standard_normal(N_VEC - 2) * 4, [30.0, -30.0]]), T_DATA)   # saturated ends too
    s = fx(rng.standard_normal(N_VEC) * 3, T_STATE)
    lb = fx(rng.uniform(0, 0.9, N_VEC), MLG["lower_bound"])
    out = np.zeros(N_VEC)
    call(harness, "mlgru_lb_forward" if use_lb else "mlgru_forward", i, f, s, lb, out)
    gate = sigmoid(f)
    if use_lb:
        gate = lb + (1 - lb) * gate
    ref = gate * s + silu(i) * (1 - gate)
    tol = bound * (np.abs(s) + 2 * np.abs(i) + 1) + 8 * lsb(T_STATE) + 4 * lsb(MLG["gate"]) * np.abs(i)
    assert np.all(np.abs(out - ref) <= tol)


def test_glu(harness):
    rng = np.random.default_rng(8)
    bound = sigmoid_table_error_bound(GLU["sigmoid"]["table_size"], GLU["sigmoid"]["range"],
                                      parse_type(GLU["sigmoid"]["table"]).fractional)
    u = fx(rng.standard_normal(2 * N_VEC) * 4, T_DATA)
    y = np.zeros(N_VEC)
    call(harness, "glu_forward", u, y)
    gate, up = u[:N_VEC], u[N_VEC:]
    ref = silu(gate) * up
    assert np.all(np.abs(y - ref) <= (np.abs(gate) * bound + 2 * lsb(GLU["act"])) * np.abs(up) + lsb(GLU["result"]))


# ------------------------------------------------------------------ primitives
def test_sigmoid_table_within_stated_bound(harness):
    sig = GRMS["sigmoid"]
    bound = sigmoid_table_error_bound(sig["table_size"], sig["range"], parse_type(sig["table"]).fractional)
    assert bound < 9e-7
    xs = np.linspace(-40, 40, 4001)
    got = np.array([harness.sigmoid_probe(x) for x in xs])
    err = np.abs(got - sigmoid(fx(xs, T_DATA)))
    assert err.max() <= bound
    assert err.max() > bound / 20            # the bound is not vacuous


def test_reciprocal_and_rsqrt_relative_error(harness):
    vs = np.exp(np.linspace(np.log(1e-6), np.log(1e6), 301))
    vq = fx(vs, "ap_ufixed<64,24>")
    r = np.array([harness.rsqrt_probe(v) for v in vs])
    q = np.array([harness.recip_probe(v) for v in vs])
    assert np.max(np.abs(r * np.sqrt(vq) - 1)) < 2.0 ** -26
    assert np.max(np.abs(q * vq - 1)) < 2.0 ** -26


def test_mul_pow2_rounds_and_saturates(harness):
    assert harness.pow2_probe(1.5, 2) == 6.0
    assert harness.pow2_probe(-3.25, 1) == -6.5
    assert harness.pow2_probe(100.0, -10) == 100.0 / 1024          # exact at 10 fractional bits
    assert harness.pow2_probe(1.0 + 2 ** -11, 0) == 1.0 + 2 ** -10  # half an LSB rounds up
    assert harness.pow2_probe(3.0, 5) == 32 - 2 ** -10               # saturates to the maximum
    assert harness.pow2_probe(-3.0, 5) == -32.0
    assert harness.pow2_probe(3.5, 3) == 28.0                        # the largest in-range left shift ...
    assert harness.pow2_probe(4.0, 3) == 32 - 2 ** -10               # ... and the first that saturates
    assert harness.pow2_probe(-4.0, 3) == -32.0                      # the minimum itself is representable
    assert harness.pow2_probe(2.0 ** -11, 0) == 2.0 ** -10           # exactly half an LSB: rounds up
    assert harness.pow2_probe(-(2.0 ** -11), 0) == 0.0               # half up, towards +inf
