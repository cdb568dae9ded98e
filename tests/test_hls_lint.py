"""The engine's HLS C++ keeps the rules of docs/ARCHITECTURE.md ("HLS rules"), read as text
(no Vitis, no compiler): design/hls's engine headers and the firmware of four
builds (pynq-z2 on-chip, and pynq-z2, kv260, zcu104 streamed). Every rule also
has a bad snippet that it must report, so a lint that never fires fails here.

Real violations in sources this test does not own are listed in KNOWN with the
finding written up in the review notes; each has an xfail(strict=True) check
that starts failing once it is fixed (then delete its KNOWN entry).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmfree_hls import MMFreeLM, ModelConfig
from mmfree_hls.engine.build import ENGINE_HEADERS, write_engine_sources
from mmfree_hls.engine.lint import RULES, Finding, PortExpect, lint_build, lint_sources
from mmfree_hls.engine.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
HLS_DIR = REPO / "design" / "hls"           # the engine's fixed sources, as committed
DEMO = ModelConfig(vocab_size=256, hidden_size=128, num_hidden_layers=2, intermediate_size=256)
MID = ModelConfig(vocab_size=512, hidden_size=512, num_hidden_layers=2, intermediate_size=1024)
BUILDS = {                                   # key: (board, tier, model, packing)
    "pynq-z2/on-chip": ("pynq-z2", "on-chip", DEMO, "2bit"),
    "pynq-z2/streamed": ("pynq-z2", "streamed", MID, "2bit"),
    "kv260/streamed": ("kv260", "streamed", MID, "2bit"),
    "zcu104/streamed": ("zcu104", "streamed", MID, "2bit"),
    "kv260/streamed/1.6bit": ("kv260", "streamed", MID, "1.6bit"),      # the 5-trit decode branch
}


@dataclass(frozen=True)
class Known:
    """A real violation in a file this test does not own (see the review notes)."""
    rule: str
    file: str
    line_text: str          # regex on the offending source line
    builds: tuple           # build keys it shows in ("*" = all)
    reason: str
    message: str = ""       # regex on the finding's message

    def matches(self, f: Finding, key: str, text_of) -> bool:
        return (f.rule == self.rule and Path(f.path).name == self.file
                and ("*" in self.builds or key in self.builds)
                and re.search(self.message, f.message) is not None
                and re.search(self.line_text, text_of(f)) is not None)


KNOWN: tuple = ()          # none at present: the sigma and 5-trit ROMs are replicated per lane pair


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("lint_builds")
    out = {}
    models = {}
    for key, (board, tier, cfg, packing) in BUILDS.items():
        model = models.setdefault(id(cfg), MMFreeLM.random(cfg, seed=1))
        preset = get_preset(board, tier)
        d = root / key.replace("/", "_")
        write_engine_sources(d, model, preset, packing)
        out[key] = (d, preset)
    return out


@pytest.fixture(scope="module")
def reports(builds):
    """Lint reports: per build its firmware, and design/hls read with that build's config."""
    out = {}
    for key, (d, preset) in builds.items():
        fw = d / "firmware"
        out[key] = lint_build(fw, preset, root=d)
        out["hls+" + key] = lint_sources([HLS_DIR / h for h in ENGINE_HEADERS],
                                         context=[fw / "engine_config.h", fw / "engine_tables.h"],
                                         csim_only=["mmfree_csim_fast.h"], root=REPO)
    return out


def _text_of(builds, key):
    """The source line a finding of report ``key`` points at."""
    base = builds[key][0] if key in builds else REPO

    def text_of(f: Finding) -> str:
        return (base / f.path).read_text().splitlines()[f.line - 1]
    return text_of


REPORT_KEYS = [k for b in BUILDS for k in (b, "hls+" + b)]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("key", REPORT_KEYS)
def test_engine_sources_keep_the_rule(reports, builds, key, rule):
    text_of = _text_of(builds, key)
    build = key.split("+")[-1]
    new = [f for f in reports[key].by_rule(rule)
           if not any(k.matches(f, build, text_of) for k in KNOWN)]
    assert not new, "\n".join(map(str, new))


if KNOWN:      # a known violation gets an xfail(strict=True) check that fails once it is fixed
    @pytest.mark.parametrize("known", [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=k.reason),
                                                    id=f"{k.rule}-{k.file}-{i}") for i, k in enumerate(KNOWN)])
    def test_known_violation_is_fixed(reports, builds, known):
        hits = [str(f) for key, r in reports.items() for f in r.findings
                if known.matches(f, key.split("+")[-1], _text_of(builds, key))]
        assert not hits, "\n".join(hits)


def test_the_lint_reads_each_build_as_vitis_would(reports, builds):
    """The rules are only as good as what the lint resolved: lanes, loops, tables, regions."""
    for key, (d, preset) in builds.items():
        r = reports[key]
        packing = BUILDS[key][3]
        per = {"2bit": 4, "1.6bit": 5}[packing]
        assert r.lanes == max(preset.token_lanes * preset.lanes(packing), preset.vector_lanes), key
        trips = {t for _, t, _ in r.unrolled_loops}
        # the MAC's R accumulators, the PER activations, the V vector lanes, the 64-bit encoder
        assert {preset.R, per, preset.vector_lanes, 64} <= trips, (key, r.unrolled_loops)
        assert None not in trips, key
        assert any("PIPELINE" in why for _, _, why in r.unrolled_loops), key
        assert r.csim_only == {"mmfree_csim_fast.h"}, key          # found from its guarded include
        want = {"SIG_ROM", "RECIP_SEED", "RSQRT_SEED", "TRIT5_ROM"}
        want |= {"MMFREE_IMAGE"} if preset.K == 0 else set()
        assert want <= set(r.tables), key
        assert r.dataflow_regions == ["engine_dataflow"], key
        h = reports["hls+" + key]                                   # design/hls with this build's config
        assert h.lanes == r.lanes and h.csim_only == {"mmfree_csim_fast.h"}, key
        assert {t for p, t, _ in h.unrolled_loops if p.startswith("design/hls/mmfree_engine.h")} >= \
            {preset.R, per, preset.vector_lanes}, key


# ----------------------------------------------------------------------------- bad snippets
CONFIG = """\
#define MMFREE_D 1024
#define MMFREE_E 1024
#define MMFREE_R 16
#define MMFREE_PER 4
#define MMFREE_V 4
static const int D = MMFREE_D;
static const int R = MMFREE_R;
static const int PER = MMFREE_PER;
static const int V = MMFREE_V;
"""


def lint(code: str, expect=None, name="bad.cpp"):
    return lint_sources([(name, CONFIG + textwrap.dedent(code))], expect=expect)


def only(report, rule):
    found = report.by_rule(rule)
    others = [f for f in report.findings if f.rule != rule]
    assert not others, "\n".join(map(str, others))
    return found


def line_of(code: str, needle: str) -> int:
    return CONFIG.count("\n") + textwrap.dedent(code).splitlines().index(
        next(l for l in textwrap.dedent(code).splitlines() if needle in l)) + 1


def test_unroll_over_a_model_dimension_is_reported():
    code = """\
    void f(int x[D], int acc[R]) {
        for (int j = 0; j < D; j++) {
            #pragma HLS UNROLL
            x[j] = 0;
        }
        for (int r = 0; r < R; r++) {
            #pragma HLS UNROLL
            acc[r] = 0;
        }
        for (int j = 0; j < D; j++) {
            #pragma HLS UNROLL factor=4
            x[j] += 1;
        }
    }
    """
    found = only(lint(code), "unroll-model-dim")
    assert len(found) == 1 and found[0].line == line_of(code, "for (int j = 0; j < D; j++) {")
    assert "MMFREE_D" in found[0].message and str(found[0]).startswith(f"bad.cpp:{found[0].line}: [unroll-model-dim]")


def test_unroll_by_value_and_unresolvable_bounds():
    code = """\
    static const int BIG = 4 * PER * R;      // 256 > 64 lanes, no model macro in it
    void f(int *x, int n) {
        for (int j = 0; j < BIG; j++) {
            #pragma HLS UNROLL
            x[j] = 0;
        }
        for (int j = 0; j < n; j++) {
            #pragma HLS UNROLL
            x[j] = 1;
        }
        for (int b = 0; b < 64; b++) {
            #pragma HLS UNROLL
            x[b] = 2;
        }
    }
    """
    found = only(lint(code), "unroll-model-dim")
    assert [f.line for f in found] == [line_of(code, "j < BIG"), line_of(code, "j < n")]
    assert "256 iterations > 64 lanes" in found[0].message and "does not resolve" in found[1].message


def test_pipeline_unrolls_the_loops_under_it_and_in_what_it_calls():
    code = """\
    static void clear(int *v) {
        for (int j = 0; j < D; j++)
            v[j] = 0;
    }
    void f(int x[D], int y[D]) {
        for (int i = 0; i < D; i += V) {
            #pragma HLS PIPELINE II=1
            for (int v = 0; v < V; v++)
                x[i + v] = 1;
            for (int j = 0; j < D; j++)
                y[j] += x[j];
            clear(y);
        }
    }
    """
    found = only(lint(code), "unroll-model-dim")
    assert sorted(f.line for f in found) == [line_of(code, "v[j] = 0") - 1, line_of(code, "y[j] += x[j]") - 1]
    assert any("through clear()" in f.message for f in found)
    assert all("PIPELINE" in f.message for f in found)
    whole = """\
    void k(int x[D]) {
        #pragma HLS PIPELINE II=1
        for (int j = 0; j < D; j++)
            x[j] = 0;
    }
    """
    found = only(lint(whole), "unroll-model-dim")                # a pipelined function unrolls its loops
    assert [f.line for f in found] == [line_of(whole, "for (int j")]


def test_complete_partition_larger_than_the_lanes_is_reported():
    code = """\
    void f() {
        int buf[D];
        #pragma HLS ARRAY_PARTITION variable=buf complete
        long acc[R], prev[R];
        #pragma HLS ARRAY_PARTITION variable=prev complete
        int tile[R][D];
        #pragma HLS ARRAY_PARTITION variable=tile type=complete dim=1
        int grid[R][R];
        #pragma HLS ARRAY_RESHAPE variable=grid complete dim=0
        int xq[D];
        #pragma HLS ARRAY_PARTITION variable=xq cyclic factor=MMFREE_PER
    }
    """
    found = only(lint(code), "partition-complete")
    assert [f.line for f in found] == [line_of(code, "variable=buf"), line_of(code, "variable=grid")]
    assert "'buf' (1024 elements)" in found[0].message and "'grid' (256 elements)" in found[1].message


def test_pragma_values_are_constants_not_expressions():
    code = """\
    template <class CONFIG_T> void f(int *w, int *x) {
        #pragma HLS ARRAY_RESHAPE variable=w cyclic factor=CONFIG_T::row_bytes / CONFIG_T::reuse_factor
        #pragma HLS ARRAY_PARTITION variable=x cyclic factor=CONFIG_T::n_lanes
        #pragma HLS PIPELINE II=(R/4)
    }
    template <int N, class T> void h(T *x) {
        #pragma HLS ARRAY_PARTITION variable=x cyclic factor=N
    }
    void g(int *p) {
        #pragma HLS INTERFACE m_axi port=p depth=4096ULL
        #pragma HLS INTERFACE m_axi port=p depth=NOT_DEFINED_ANYWHERE
        #pragma HLS INTERFACE m_axi port=p depth=MMFREE_D
    }
    """
    found = only(lint(code), "pragma-constant")
    assert [f.line for f in found] == [line_of(code, "reuse_factor"), line_of(code, "II=(R/4)"),
                                       line_of(code, "4096ULL"), line_of(code, "NOT_DEFINED")]
    assert "CONFIG_T::row_bytes / CONFIG_T::reuse_factor" in found[0].message


TOP = """\
typedef ap_uint<{bits}> port_t;
int top(const float *x_in, {wtype} *w0, const port_t *w1) {{
    #pragma HLS INTERFACE m_axi port=x_in bundle=gmem_io offset=slave depth=MMFREE_D
    #pragma HLS INTERFACE m_axi port=w0 bundle=gmem_w0 offset=slave depth=64 max_read_burst_length={burst} num_read_outstanding=8
    #pragma HLS INTERFACE m_axi port=w1 bundle={b1} offset=slave depth=64 max_read_burst_length=16 num_read_outstanding={out}
    #pragma HLS INTERFACE s_axilite port=return bundle=control
    return 0;
}}
"""


def top(bits=64, wtype="const port_t", burst=16, out=8, b1="gmem_w1"):
    return TOP.format(bits=bits, wtype=wtype, burst=burst, out=out, b1=b1)


def test_weight_ports_have_the_boards_width_and_bursts():
    good = PortExpect(K=2, port_bits=64, burst_beats=16, outstanding=8)
    assert lint(top(), expect=good).findings == []
    found = only(lint(top(bits=128), expect=good), "maxi-width")
    assert len(found) == 2 and "128 bits" in found[0].message and "ap_uint<64>" in found[0].message
    found = only(lint(top(wtype="const uint8_t"), expect=good), "maxi-width")
    assert len(found) == 1 and "8 bits" in found[0].message and "w0" in found[0].message
    found = only(lint(top(), expect=PortExpect(K=4, port_bits=64)), "maxi-width")
    assert "K=4" in found[0].message
    found = only(lint(top(b1="gmem_w0"), expect=good), "maxi-width")
    assert "share" in found[0].message
    assert only(lint(top(), expect=PortExpect(K=0, port_bits=64)), "maxi-width")


def test_weight_ports_burst_and_outstanding():
    good = PortExpect(K=2, port_bits=64, burst_beats=16, outstanding=8)
    found = only(lint(top(burst=256), expect=good), "maxi-burst")
    assert len(found) == 1 and "max_read_burst_length=256" in found[0].message
    found = only(lint(top(out="MMFREE_OUTSTANDING") + "#define MMFREE_OUTSTANDING 16\n", expect=good),
                 "maxi-outstanding")
    assert len(found) == 1 and "resolves to 16" in found[0].message and "asks 8" in found[0].message


DATAFLOW = """\
static int g_shared[4];
static void load(const int *w, hls::stream<int> &s) {{ for (int n = 0; n < 8; n++) s.write(w[n]); }}
static void work(hls::stream<int> &s, int *buf, int &status) {{ status = s.read() + g_shared[0] + buf[0]; }}
static void post(int *buf, hls::stream<int> &s, float *out) {{ out[0] = buf[0] + g_shared[1]; }}
static void region(const int *w, float *out, int &status) {{
    #pragma HLS DATAFLOW
    hls::stream<int> s;
    int buf[16];
{body}
}}
int top(const int *w, float *out) {{
    #pragma HLS INTERFACE m_axi port=w bundle={bw}
    #pragma HLS INTERFACE m_axi port=out bundle={bo}
    int status = 0;
    region(w, out, status);
    return status;
}}
"""


def test_dataflow_regions_share_streams_only():
    canonical = """\
    load(w, s);
    work(s, buf, status);"""
    good = lint(DATAFLOW.format(body=canonical, bw="gmem_w0", bo="gmem_out"))
    assert good.findings == [] and good.dataflow_regions == ["region"]
    shared = """\
    load(w, s);
    work(s, buf, status);
    post(buf, s, out);"""
    found = only(lint(DATAFLOW.format(body=shared, bw="gmem_w0", bo="gmem_out")), "dataflow")
    msgs = " | ".join(f.message for f in found)
    assert "buf is shared by the DATAFLOW processes post, work" in msgs
    assert "g_shared is shared" in msgs                     # a global both processes touch
    assert "stream s is used by 3 process call(s)" in msgs
    bundle = """\
    load(w, s);
    work(s, buf, status);
    load(out, s);"""
    found = only(lint(DATAFLOW.format(body=bundle, bw="gmem", bo="gmem")), "dataflow")
    assert any("m_axi bundle gmem is used by 2 DATAFLOW processes (load, load)" in f.message for f in found)
    loop = """\
    load(w, s);
    for (int i = 0; i < 4; i++) { buf[i] = 0; }
    work(s, buf, status);"""
    found = only(lint(DATAFLOW.format(body=loop, bw="gmem_w0", bo="gmem_out")), "dataflow")
    assert any("process calls only" in f.message for f in found)


def test_tables_are_static_const_and_never_in_uram():
    code = """\
    static const int SIG_TABLE[4] = {1, 2, 3, 4};
    const int LOCAL_TABLE[2] = {5, 6};
    static int RAM_TABLE[2] = {7, 8};
    int f(int i) {
        #pragma HLS BIND_STORAGE variable=SIG_TABLE type=rom_2p impl=uram
        return SIG_TABLE[i] + LOCAL_TABLE[i] + RAM_TABLE[i];
    }
    """
    r = lint(code)
    found = only(r, "table-storage")
    assert [f.line for f in found] == [line_of(code, "LOCAL_TABLE[2] ="), line_of(code, "RAM_TABLE[2] ="),
                                       line_of(code, "impl=uram")]
    assert set(r.tables) == {"SIG_TABLE", "LOCAL_TABLE", "RAM_TABLE"}


def test_a_pipelined_iteration_reads_a_table_at_most_twice():
    code = """\
    static const int SIG[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    static const int SIG2[2][16] = {{0}, {0}};
    inline int sig(int x) { return SIG[x & 15]; }
    inline int silu(int x) { return x * sig(x); }
    void f(int *x, int *y, int *z) {
        for (int i = 0; i < 64; i += V) {
            #pragma HLS PIPELINE II=1
            for (int v = 0; v < V; v++)
                y[i + v] = sig(x[i + v]) + silu(y[i + v]);
        }
        for (int i = 0; i < 64; i++) {
            #pragma HLS PIPELINE II=1
            z[i] = sig(x[i]) + SIG[z[i] & 15];
        }
        #pragma HLS ARRAY_PARTITION variable=SIG2 dim=1 complete
        for (int i = 0; i < 64; i += V) {
            #pragma HLS PIPELINE II=1
            for (int v = 0; v < V; v++)
                z[i + v] = SIG2[v & 1][x[i + v] & 15];
        }
    }
    """
    found = only(lint(code), "table-ports")
    assert len(found) == 1 and found[0].line == line_of(code, "PIPELINE")
    assert "reads SIG 8 times" in found[0].message and "II >= 4" in found[0].message


def test_csim_only_code_sits_under_not_synthesis():
    code = """\
    #include <vector>
    #include "mmfree_csim_fast.h"
    #ifndef __SYNTHESIS__
    #include "mmfree_csim_fast.h"
    static std::vector<int> fine;
    #endif
    #if !defined(__SYNTHESIS__) && !defined(NO_FAST)
    #define FAST 1
    #endif
    int f(unsigned long long v) {
    #ifdef FAST
        return __builtin_clzll(v);
    #else
        std::vector<int> bad;
    #endif
    #ifdef MY_DEBUG
        printf("debug\\n");
    #endif
        return __builtin_popcountll(v);
    }
    """
    found = only(lint(code), "csim-only")
    assert [f.line for f in found] == [line_of(code, '#include "mmfree_csim_fast.h"'),
                                       line_of(code, "std::vector<int> bad"), line_of(code, "printf"),
                                       line_of(code, "popcountll")]
    assert "guard does not exclude synthesis" in found[2].message


def test_a_csim_only_header_is_found_from_its_guarded_include():
    top_cpp = '#include "eng.h"\n#ifndef __SYNTHESIS__\n#include "fast.h"\n#endif\nint top() { return 0; }\n'
    fast = '#include <vector>\nstatic std::vector<int> v;\nint g() { printf("x"); return 0; }\n'
    r = lint_sources([("top.cpp", top_cpp), ("eng.h", "int e;\n"), ("fast.h", fast)])
    assert r.csim_only == {"fast.h"} and r.findings == []
    r = lint_sources([("top.cpp", top_cpp.replace("#ifndef __SYNTHESIS__\n", "#if 1\n")),
                      ("eng.h", "int e;\n"), ("fast.h", fast)])
    assert r.csim_only == set() and [(f.path, f.line) for f in r.by_rule("csim-only")] == [("fast.h", 2), ("fast.h", 3)]


# ----------------------------------------------------------------------------- the real engine, broken on purpose
MUTATIONS = {
    # rule: (file, old text, new text, what the finding must name)
    "unroll-model-dim": ("mmfree_engine.h", "LOAD_STATE:\n            for (int it = 0; it < L * E; it++) {\n"
                         "                #pragma HLS PIPELINE II=1",
                         "LOAD_STATE:\n            for (int it = 0; it < L * E; it++) {\n"
                         "                #pragma HLS UNROLL", "MMFREE_E, MMFREE_L"),
    "partition-complete": ("mmfree_engine.h", "variable=xq dim=2 cyclic factor=MMFREE_PER",
                           "variable=xq dim=2 complete", "'xq'"),
    "pragma-constant": ("mmfree_engine.h", "variable=xq dim=2 cyclic factor=MMFREE_PER",
                        "variable=xq dim=2 cyclic factor=MMFREE_PER * 2", "MMFREE_PER * 2"),
    "maxi-width": ("mmfree_engine_top.cpp", "typedef ap_uint<128> port_t;", "typedef ap_uint<512> port_t;",
                   "512 bits"),
    "maxi-burst": ("mmfree_engine_top.cpp", "max_read_burst_length=16", "max_read_burst_length=256", "256"),
    "maxi-outstanding": ("engine_config.h", "#define MMFREE_OUTSTANDING 16", "#define MMFREE_OUTSTANDING 4",
                         "resolves to 4"),
    "dataflow": ("mmfree_engine_top.cpp",
                 "    compute(words_s, cfg_compute, x_in, state, logit_s, status);\n",
                 "    compute(words_s, cfg_compute, x_in, state, logit_s, status);\n"
                 "    compute(words_s, cfg_compute, x_in, state, logit_s, status);\n",
                 "gmem_io"),
    "table-ports": ("mmfree_engine.h", "st.x[lt][lj] = vec_t(v);",
                    "st.x[lt][lj] = vec_t(v + RSQRT_SEED[lj & 63] + RSQRT_SEED[(lj + 1) & 63] + RSQRT_SEED[(lj + 2) & 63]);",
                    "reads RSQRT_SEED 3 times"),
    "table-storage": ("engine_tables.h", "static const int64_t SIG_ROM[", "int64_t SIG_ROM[", "SIG_ROM"),
    "csim-only": ("mmfree_engine_top.cpp", '#ifndef __SYNTHESIS__\n#define MMFREE_API',
                  '#include "mmfree_csim_fast.h"\n#ifndef __SYNTHESIS__\n#define MMFREE_API', "mmfree_csim_fast.h"),
}


@pytest.mark.parametrize("rule", sorted(MUTATIONS))
def test_a_broken_engine_build_is_reported(builds, tmp_path, rule):
    d, preset = builds["zcu104/streamed"]
    fw = tmp_path / "firmware"
    fw.mkdir()
    name, old, new, needle = MUTATIONS[rule]
    for f in (d / "firmware").iterdir():
        text = f.read_text()
        if f.name == name:
            assert text.count(old) >= 1, f"mutation target gone from {name}: {old!r}"
            text = text.replace(old, new, 1)
        (fw / f.name).write_text(text)
    before = {(f.path, f.line, f.message) for f in lint_build(d / "firmware", preset, root=d).by_rule(rule)}
    found = [f for f in lint_build(fw, preset, root=tmp_path).by_rule(rule)
             if (f.path, f.line, f.message) not in before]
    assert found and any(needle in f.message for f in found), "\n".join(map(str, found))
