// The decode engine of the MatMul-free LM: one time-multiplexed engine that
// runs every BitLinear and every element-wise stage of a decode step, one
// after another, on shared units (docs/ARCHITECTURE.md, "The engine").
//
// A call is a pass: the weight stream read once for n <= N token lanes
// (compute_pass). Batch: lane t is the next token of the sequence whose
// recurrent state sits in slot t (B slots, kept on chip between passes).
// Prefill: the lanes are n consecutive prompt tokens of one sequence; the
// projections see all of them at once and the MLGRU scans them in order
// through that sequence's slot. Each lane is computed exactly as a lone
// token would be, so both are bit-identical to one token per pass.
//
//   x_0 = embedding (host)                      stats on write: max|x c|, max|x a|, max|x|
//   for l < L:
//     i, f, g = BitLinear_{i,f,g}(x)            MAC unit; a = attn_norm folded: c = a n
//     s_l, o' = MLGRU + gated norm (i, f, g)    vector unit, one fused pass over E
//     x += BitLinear_o(o')                      MAC unit, residual add in the write-back
//     u = BitLinear_gate(x)                     a = mlp_norm folded
//     z = silu(u_gate) u_up                     vector unit, one pass over M
//     x += BitLinear_down(z)
//   logits = BitLinear_head(x)                  a = norm folded
//
// Units.
//   * MAC unit: a word of the weight stream holds R rows x PER inputs
//     (PER = 4 two-bit codes or 5 trits a byte). Each cycle it reads PER int8
//     activations of every lane and adds, subtracts or skips them into
//     N x R accumulators: N x P ternary lanes (P = R x PER), no DSP. One pass
//     over the input quantises every lane first (n_cg cycles, no weight word
//     read, so the MAC array exists once); the write-back of a row block
//     (rescale, residual add, statistics) runs one row of every lane a cycle
//     while the next block accumulates.
//   * Vector unit: V lanes for the MLGRU/gated-norm pass and the GLU pass.
//   * Scalar unit: 1/x and 1/sqrt(x) (mmfree_fixed.h) between matrices.
// The norm weights fold offline (c = a n, mmfree_hls.engine.layout): the
// 1/rms scalars cancel in the absmax quantiser and survive only in the one
// output rescale, whose sums of squares accumulate in the quantiser's pass.
//
// Numbers. Vectors are 32-bit integers with FRAC fraction bits (saturating,
// with a sticky status bit). A product never takes a vector whole: it takes a
// 25-bit view (the vector shifted by a block exponent from its known maximum).
// Each product uses one DSP48 (25 x 18) and, where precision needs more than
// 18 bits on the other side, a 25 x 7 or 7 x 18 partial product in LUTs
// (mul_wide, mul_exact): sigma and the gates carry 23 fraction bits, scales 24-bit
// mantissas. Norm weights are 24-bit mantissas with one exponent per vector.
//
// The weight stream carries, in exactly the order compute uses them, the
// parameter records (folded norm vectors, 1/gamma) and the weight tiles
// (layout: mmfree_hls.engine.layout). It arrives from K m_axi ports
// (streamed tier) or from the on-chip image (on-chip tier) through the
// loader in the top (generated mmfree_engine_top.cpp).
//
// Cycle counting: outside synthesis every loop adds its trip count x II plus
// its pipeline depth to `cycles`; mmfree_hls.engine.schedule computes the same
// sum from the same constants, and a test holds them equal.
#ifndef MMFREE_ENGINE_H_
#define MMFREE_ENGINE_H_

#include <stdint.h>
#include <string.h>

#include "engine_config.h" // generated: dimensions and the board preset's knobs
#include "hls_stream.h"
#include "mmfree_fixed.h"

namespace mmfree {

// ------------------------------------------------------------------ dimensions
static const int D = MMFREE_D;           // hidden size
static const int E = MMFREE_E;           // recurrence width
static const int M = MMFREE_M;           // GLU width
static const int L = MMFREE_L;           // layers
static const int VOCAB = MMFREE_VOCAB;
static const int PER = MMFREE_PER;       // inputs per weight byte: 4 (2-bit) or 5 (1.6-bit)
static const int R = MMFREE_R;           // rows per tile = bytes per stream word
static const int V = MMFREE_V;           // vector lanes
static const int FRAC = MMFREE_FRAC;     // fraction bits of every vector
static const int QMAX = MMFREE_QMAX;     // largest quantised activation: 127 (int8) or 2^(act_bits-1) - 1
static const int VEC_BITS = 32;
static const int VIEW_BITS = 25;        // the vector side of a product
static const int SQ_BITS = 22;          // the view of a vector that is squared (sums stay in 64 bits)
static const int NORM_FIELDS = R / 4;    // 32-bit vector values per stream word
static const int N = MMFREE_LANES;       // token lanes: activation vectors every weight word meets
static const int B = MMFREE_SLOTS;       // recurrent-state slots kept on chip between passes
static const int TOPK = MMFREE_TOPK;     // entries of the device-side top-k, per lane

typedef ap_uint<8 * R> word_t;
typedef int32_t vec_t;                   // holds a VEC_BITS-bit value
typedef int32_t norm_t;                  // folded norm weight: 24-bit mantissa
typedef int8_t act_t;                    // quantised activation

static const int MAX_N = (D > E ? (D > M ? D : M) : (E > M ? E : M));

// Pipeline depths used by the cycle count (estimates of the scheduled depth).
static const int DEPTH_MAC = MMFREE_DEPTH_MAC;
static const int DEPTH_VEC = MMFREE_DEPTH_VEC;
static const int DEPTH_IO = MMFREE_DEPTH_IO;
static const int SCALAR_RECIP = MMFREE_SCALAR_RECIP;
static const int SCALAR_RSQRT = MMFREE_SCALAR_RSQRT;

// Status bits returned by the top.
static const int STATUS_NONFINITE = 1;   // x_in or state held NaN/Inf
static const int STATUS_SATURATED = 2;   // a vector value clipped at VEC_BITS
static const int STATUS_BAD_ARGS = 4;    // the pass's scalars were outside the build (clamped, result void)

// Mode bits of a pass (one read of the weight stream).
static const int MODE_PREFILL = 1;       // lanes = consecutive tokens of the sequence in `slot`
static const int MODE_HEAD = 2;          // run the LM head (else its words are never fetched)
static const int MODE_FULL_LOGITS = 4;   // write every logit (else only the top-k)

struct counters {
    u64 cycles;
    bool clipped;
};

#ifdef __SYNTHESIS__
#define MMFREE_COUNT(ctr, n)
#else
#define MMFREE_COUNT(ctr, n) ((ctr).cycles += (u64)(n))
#endif

// ------------------------------------------------------------------ float <-> fixed
// Integer-only conversions (no float multiplier): the exponent field is the shift.
inline i64 float_to_fixed(float f, bool &bad, bool &clipped) {
    #pragma HLS INLINE
    uint32_t bits;
    memcpy(&bits, &f, 4);
    const int ex = int((bits >> 23) & 0xFF);
    const bool neg = (bits >> 31) != 0;
    if (ex == 0xFF) { bad = true; return 0; }
    if (ex == 0) return 0;                               // zero or subnormal: below the grid
    const i64 mant = i64((bits & 0x7FFFFF) | 0x800000);  // value = mant 2^(ex - 150)
    const int sh = 150 - ex - FRAC;                      // raw = mant 2^(ex - 150 + FRAC)
    i64 raw;
    if (sh >= 40) raw = 0;
    else if (sh <= -(VEC_BITS - 8)) raw = i64(1) << (VEC_BITS + 2); // certainly clips
    else raw = rshift_round(mant, sh);
    return sat<VEC_BITS>(neg ? -raw : raw, clipped);
}

inline float fixed_to_float(i64 raw) {
    #pragma HLS INLINE
    if (raw == 0) return 0.0f;
    const bool neg = raw < 0;
    u64 a = absval(raw);
    int bl = bitlen(a);
    if (bl > 24) {                                        // round to the float's 24 bits
        a = (a + (u64(1) << (bl - 25))) >> (bl - 24);
        if (a >> 24) { a >>= 1; bl++; }
        a <<= (bl - 24);
    }
    const uint32_t mant = uint32_t((bl <= 24 ? a << (24 - bl) : a >> (bl - 24)) & 0x7FFFFF);
    const uint32_t ex = uint32_t(bl - 1 - FRAC + 127);
    const uint32_t bits = (neg ? 0x80000000u : 0u) | (ex << 23) | mant;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// ------------------------------------------------------------------ sigma
// sigma(x) on [-2^SIG_RANGE_LOG2, 2^SIG_RANGE_LOG2) from a 2^SIG_BITS-entry
// table with linear interpolation; result in 2^-23 units (0..2^23: 25 bits).
static const int SIG_FRAC = 23;
static const int SIG_ONE = 1 << SIG_FRAC;
static const int SIG_STEP_SHIFT = FRAC - (MMFREE_SIG_BITS - 1 - MMFREE_SIG_RANGE_LOG2);

// The table has SIG_COPIES copies (dim 1 of SIG_ROM, completely partitioned):
// lane v of the MLGRU pass reads copies (3v + k) / 2 for its three lookups, so
// no copy is read more than twice a cycle (a ROM has two ports).
inline i64 sigmoid(i64 x, int copy) {
    #pragma HLS INLINE
    const i64 lo = -(i64(1) << (MMFREE_SIG_RANGE_LOG2 + FRAC));
    if (x < lo) return 0;
    if (x >= -lo) return SIG_ONE;
    const i64 pos = x - lo;                               // [0, 2^(range+1+FRAC))
    const int idx = int(pos >> SIG_STEP_SHIFT);
    const i64 frac = pos & ((i64(1) << SIG_STEP_SHIFT) - 1);
    const int64_t e = SIG_ROM[copy][idx];                    // sigma << 17 | slope to the next entry
    return (e >> 17) + (((e & 0x1FFFF) * frac) >> SIG_STEP_SHIFT);
}

// x sigma(x) in vector units, x seen through its 25-bit view (x >> sh).
inline i64 silu(i64 x, int sh, int copy) {
    #pragma HLS INLINE
    return rshift_round(mul_wide(x >> sh, sigmoid(x, copy)), SIG_FRAC - sh);
}

// v (a VEC_BITS vector value) x w (a 25-bit norm mantissa), exact: (v >> 7) x (w >> 7) on one
// DSP48 (25 x 18), the two 7-bit partial products (25 x 7, 7 x 25) in LUTs.
inline i64 mul_exact(i64 v, i64 w) {
    #pragma HLS INLINE
    const i64 vh = v >> 7, vl = v & 127, wh = w >> 7, wl = w & 127;
    return (mul_25x18(vh, wh) << 14) + ((vh * wl) << 7) + vl * w;
}

// Shift that brings |v| <= bound into the VIEW_BITS-bit view.
inline int view_shift(u64 bound) {
    #pragma HLS INLINE
    return narrow_shift(bound, VIEW_BITS);
}

// ------------------------------------------------------------------ ternary dot
// Sum of PER activations times the ternary weights of one byte.
inline i64 trit_code(unsigned codes, int k) {
    #pragma HLS INLINE
    const unsigned c = (codes >> (2 * k)) & 3u;           // 00 = 0, 01 = +1, 11 = -1
    return c == 1 ? 1 : (c == 3 ? -1 : 0);
}

// 1.6-bit: row r of a word decodes through copy r / 2 of the 243-entry table
// (TRIT5_ROM, dim 1 completely partitioned: R/2 LUT ROMs of 256 x 10 bits).
inline unsigned byte_codes(unsigned byte, int r) {
    #pragma HLS INLINE
#if MMFREE_PER == 5
    return TRIT5_ROM[r / 2][byte];                        // 5 x 2-bit codes
#else
    return byte;
#endif
}

// Bits of a signed value of magnitude up to v (compile time).
constexpr int signed_bits(long long v) { return v ? 1 + signed_bits(v >> 1) : 1; }

// A row's partial sum of PER activations, and a row's accumulator: sized from
// the widest input, so the adders are as wide as the sums get (no 64-bit adders).
static const int DOT_BITS = signed_bits((long long)PER * (QMAX + 1));
typedef typename sint<DOT_BITS>::t dot_t;

inline i64 ternary_dot(unsigned codes, const act_t xq[PER]) {
    #pragma HLS INLINE
    dot_t s = 0;
    DOT:
    for (int k = 0; k < PER; k++) {
        #pragma HLS UNROLL
        const i64 w = trit_code(codes, k);
        s += w > 0 ? i64(xq[k]) : (w < 0 ? -i64(xq[k]) : i64(0));
    }
    return s;
}

// ------------------------------------------------------------------ stream words
inline int word_field(const word_t &w, int i) {
    #pragma HLS INLINE
    return int(int16_t(uint16_t(w.range(16 * i + 15, 16 * i))));
}

inline int32_t word_value(const word_t &w, int i) {
    #pragma HLS INLINE
    return int32_t(uint32_t(w.range(32 * i + 31, 32 * i)));
}

inline unsigned word_byte(const word_t &w, int r) {
    #pragma HLS INLINE
    return unsigned(w.range(8 * r + 7, 8 * r));
}

// A vector of n 32-bit values (24-bit mantissas): ceil(n / NORM_FIELDS) words,
// written PARAM_LANES values a cycle. The parameter arrays are then banked by
// PARAM_LANES, not by a whole word's fields (R / 4 of them: 20 banks of
// 32-bit LUTRAM per array on a 5-port KV260), for a few % more cycles.
static const int PARAM_LANES = MMFREE_PARAM_LANES;
static const int PARAM_STEPS = NORM_FIELDS / PARAM_LANES;   // cycles per word

template <class Src>
void read_vector(Src &src, norm_t *dst, int n, counters &ctr) {
    const int words = (n + NORM_FIELDS - 1) / NORM_FIELDS;
    decltype(src.read()) word;                                 // held across the word's steps
    READ_VECTOR:
    for (int it = 0; it < words * PARAM_STEPS; it++) {
        #pragma HLS PIPELINE II=1
        #pragma HLS LOOP_TRIPCOUNT min=1 max=MMFREE_MAX_PARAM_STEPS
        const int w = it / PARAM_STEPS, step = it % PARAM_STEPS;
        if (step == 0)
            word = src.read();
        for (int f = 0; f < PARAM_LANES; f++) {
            #pragma HLS UNROLL
            const int j = w * NORM_FIELDS + step * PARAM_LANES + f;
            if (j < n)
                dst[j] = norm_t(word_value(word, step * PARAM_LANES + f));
        }
    }
    MMFREE_COUNT(ctr, words * PARAM_STEPS + DEPTH_IO);
}

// ------------------------------------------------------------------ parameter records
// A norm group: the (folded) weights that follow one vector into its consumers.
// a: the preceding RMSNorm weight (only its sum of squares matters: 1/rms);
// c[k]: a n_k, the fold into consumer k's BitLinear norm.
struct group_params {
    norm_t a[MAX_N];
    norm_t c0[MAX_N], c1[MAX_N], c2[MAX_N];   // three memories: a write-back reads all three a cycle
    int ea, ec[3];
    int n_c;
    bool has_a;
};

inline norm_t group_c(const group_params &g, int k, int j) {
    #pragma HLS INLINE
    return k == 0 ? g.c0[j] : (k == 1 ? g.c1[j] : g.c2[j]);
}

template <class Src>
void read_group(Src &src, group_params &g, int n, counters &ctr) {
    const auto h = src.read();
    MMFREE_COUNT(ctr, 1);
    g.ea = word_field(h, 0);
    g.ec[0] = word_field(h, 1);
    g.ec[1] = word_field(h, 2);
    g.ec[2] = word_field(h, 3);
    g.n_c = word_field(h, 4);
    g.has_a = word_field(h, 5) != 0;
    if (g.has_a)
        read_vector(src, g.a, n, ctr);
    if (g.n_c > 0)
        read_vector(src, g.c0, n, ctr);
    if (g.n_c > 1)
        read_vector(src, g.c1, n, ctr);
    if (g.n_c > 2)
        read_vector(src, g.c2, n, ctr);
}

// Statistics of a vector, accumulated as it is written (compares and one
// product per consumer; the sums of squares wait for the quantiser's pass).
struct vec_stats {
    u64 mc[3]; // max |x c_k|   (units 2^-(FRAC + ec_k))
    u64 ma;    // max |x a|     (units 2^-(FRAC + ea)); max |x| when the group has no a
    u64 mx;    // max |x|
};

inline void stats_clear(vec_stats &s) {
    #pragma HLS INLINE
    s.mc[0] = s.mc[1] = s.mc[2] = 0;
    s.ma = 0;
    s.mx = 0;
}


// Float32 round trip of a state value: rounded to 24 significant bits, as the
// host's float buffer holds it. A state that stays on chip between passes is
// kept on this grid, so a sequence decoded in slots (or prefilled in chunks)
// is bit-identical to one whose state goes through the host every token.
inline i64 float_grid(i64 v, bool &clipped) {
    #pragma HLS INLINE
    const u64 a = absval(v);
    const int bl = bitlen(a);
    if (bl <= 24)
        return v;
    const int sh = bl - 24;
    const i64 r = i64(((a + (u64(1) << (sh - 1))) >> sh) << sh);
    return sat<VEC_BITS>(v < 0 ? -r : r, clipped);
}

// Vectors of a pass (on chip). Every per-token vector exists once per lane
// (dim 1, completely partitioned: the MAC unit reads and writes all lanes a
// cycle); the recurrent states once per slot, kept between passes.
struct engine_state {
    vec_t x[N][D];
    vec_t i[N][E], f[N][E], g[N][E], o[N][E];
    vec_t u[N][2 * M], z[N][M];
    vec_t s[B][L][E];
    u64 s_max[B][L];             // max |s| of each slot's layer state (block shift of the next pass)
    norm_t lb[E], gn[E];         // lower bound (2^-23 units), g_norm weight
    group_params attn, mlp;      // attn also holds the head's group at the end
    group_params o_grp, z_grp;   // c = n_o, n_down (no preceding norm)
};

// The BitLinear unit reads and writes engine_state through selectors, not
// pointers: one unit, whose inputs and outputs are muxes over a few arrays.
static const int IN_X = 0, IN_O = 1, IN_Z = 2;                  // input vector
static const int GRP_ATTN = 0, GRP_MLP = 1, GRP_O = 2, GRP_Z = 3; // norm group
static const int OUT_I = 0, OUT_F = 1, OUT_G = 2, OUT_U = 3;    // plain write-back target

inline i64 input_value(const engine_state &st, int sel, int t, int j) {
    #pragma HLS INLINE
    return sel == IN_X ? i64(st.x[t][j]) : (sel == IN_O ? i64(st.o[t][j]) : i64(st.z[t][j]));
}

inline norm_t group_a(const engine_state &st, int sel, int j) {
    #pragma HLS INLINE
    return sel == GRP_ATTN ? st.attn.a[j] : st.mlp.a[j];      // o and z groups have no a
}

inline norm_t group_c_sel(const engine_state &st, int sel, int k, int j) {
    #pragma HLS INLINE
    return sel == GRP_ATTN ? group_c(st.attn, k, j)
         : sel == GRP_MLP ? group_c(st.mlp, k, j)
         : sel == GRP_O ? st.o_grp.c0[j] : st.z_grp.c0[j];
}

// ------------------------------------------------------------------ BitLinear
// What the input of one BitLinear brings: which vector and norm group, the
// group's scalars, and per lane the vector's statistics and eps term.
struct bl_input {
    int in_sel, grp_sel;
    int k;            // which consumer of the group (c_k)
    bool has_a;
    int ea, ec;       // exponents of a and c_k
    vec_stats st[N];
    pf eps[N];        // the eps term under the output 1/sqrt (scaled to the vector's units)
    pf inv_n;
};

// Statistics on write: max|x|, max|x a| and max|x c_k| for the vector's norm group.
inline void stats_update(vec_stats &s, const engine_state &st, int grp_sel, bool has_a, int n_c, int j, i64 x) {
    #pragma HLS INLINE
    const u64 ax = absval(x);
    if (ax > s.mx) s.mx = ax;
    const u64 aa = has_a ? absval(mul_exact(x, group_a(st, grp_sel, j))) : ax;
    if (aa > s.ma) s.ma = aa;
    for (int c = 0; c < 3; c++) {
        #pragma HLS UNROLL
        if (c < n_c) {
            const u64 v = absval(mul_exact(x, group_c_sel(st, grp_sel, c, j)));
            if (v > s.mc[c]) s.mc[c] = v;
        }
    }
}

inline void make_input(bl_input &in, int in_sel, int grp_sel, const group_params &g, int k,
                       const vec_stats stats[N], const pf eps[N], pf inv_n) {
    #pragma HLS INLINE
    in.in_sel = in_sel;
    in.grp_sel = grp_sel;
    in.k = k;
    in.has_a = g.has_a;
    in.ea = g.ea;
    in.ec = g.ec[k];
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        in.st[t] = stats[t];
        in.eps[t] = eps[t];
    }
    in.inv_n = inv_n;
}

// Quantiser and output-scale scalars of one BitLinear, one lane.
struct bl_scalars {
    bool zero;        // x c is all zeros: y = 0
    int sh_q;         // v >> sh_q fits 25 bits
    mant24 q;         // QMAX / max|v|
    int sh_a, sh_x;   // narrowing shifts of the squares
};

inline bl_scalars bl_prepare(const vec_stats &st, int k) {
    #pragma HLS INLINE
    bl_scalars s;
    const u64 mc = st.mc[k];
    s.zero = mc == 0;
    s.sh_q = narrow_shift(mc, 25);
    const u64 m25 = mc >> s.sh_q;
    s.q = pf_to_mant24(pf_mul(pf_recip(pf_make(m25 == 0 ? 1 : m25, 0)), pf_make(QMAX, 0)));
    s.sh_a = narrow_shift(st.ma, SQ_BITS);
    s.sh_x = narrow_shift(st.mx, SQ_BITS);
    return s;
}

// Quantise one activation: round(QMAX x c / max|x c|) in [-QMAX, QMAX] (QMAX = 127 for int8).
inline act_t bl_quantise_value(const bl_scalars &s, i64 x, i64 c) {
    #pragma HLS INLINE
    const i64 v = mul_exact(x, c) >> s.sh_q;
    i64 qv = rshift_round(mul_wide(v, s.q.m), s.q.s);
    if (qv > QMAX) qv = QMAX;
    if (qv < -QMAX) qv = -QMAX;
    return act_t(qv);
}

// Sums of squares for the output scale, in the quantiser's pass.
inline void bl_square_sums_value(const bl_scalars &s, i64 x, i64 xa, u64 &sa, u64 &sx) {
    #pragma HLS INLINE
    const i64 na = xa >> s.sh_a;
    const i64 nx = x >> s.sh_x;
    sa += u64(mul_wide(na, na));
    sx += u64(mul_wide(nx, nx));
}

// y_raw = acc * scale: max|x c| * (1/gamma) / QMAX / sqrt(mean (x a)^2 + eps) * 2^FRAC.
inline mant24 bl_out_scale(const bl_input &in, int t, const bl_scalars &s, u64 sa, u64 sx, pf inv_gamma) {
    #pragma HLS INLINE
    const int ea = in.has_a ? in.ea : 0;
    const pf mc = pf_make(in.st[t].mc[in.k], -(FRAC + in.ec));
    const pf mean_a = pf_mul(pf_make(sa, 2 * s.sh_a - 2 * (FRAC + ea)), in.inv_n);
    pf eps = in.eps[t];
    if (in.has_a) { // the preceding RMSNorm's own eps: 1e-8 (mean x^2 + eps)
        const pf mean_x = pf_mul(pf_make(sx, 2 * s.sh_x - 2 * FRAC), in.inv_n);
        eps = pf_mul(pf_add(mean_x, pf_make(MMFREE_EPS_M, MMFREE_EPS_E)), in.eps[t]);
    }
    pf scale = pf_mul(pf_mul(mc, inv_gamma), pf_rsqrt(pf_add(mean_a, eps)));
    scale = pf_mul(scale, pf_make(MMFREE_INVQ_M, MMFREE_INVQ_E));
    scale.e += FRAC;
    return pf_to_mant24(scale);
}

inline i64 bl_rescale(i64 acc, const mant24 &sc) {
    #pragma HLS INLINE
    return rshift_round(mul_wide(acc, sc.m), sc.s);
}

// Write-back target of the one BitLinear unit, one row of every lane a
// cycle: a plain vector (tracks max|y|), the residual stream (x += y,
// statistics for the next consumers) or the logits (a row of N float32
// through a stream). One unit serves every projection, so the kind is data,
// not a type: a 3-way mux.
static const int SINK_PLAIN = 0;
static const int SINK_RESIDUAL = 1;
static const int SINK_LOGITS = 2;

struct bl_sink {
    int kind;
    int out_sel;                // plain: OUT_I, OUT_F, OUT_G or OUT_U
    int grp_sel;                // residual: the next consumers' norm group (GRP_ATTN or GRP_MLP)
    bool has_a;
    int n_c;
    vec_stats st[N];            // residual: statistics on write, per lane
    u64 amax[N];                // plain: max |y|, per lane
};

inline void make_sink(bl_sink &s, int kind, int out_sel, int grp_sel, const group_params &g) {
    #pragma HLS INLINE
    s.kind = kind;
    s.out_sel = out_sel;
    s.grp_sel = grp_sel;
    s.has_a = g.has_a;
    s.n_c = g.n_c;
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        stats_clear(s.st[t]);
        s.amax[t] = 0;
    }
}

// One row of logits, every lane: the word the logits writer takes a cycle.
struct logit_row {
    float v[N];
};

// Row `row` of every active lane (t < n); inactive lanes are left alone.
template <class LogitStream>
inline void sink_put(engine_state &st, bl_sink &s, LogitStream &logits, int n, int row, const i64 y[N],
                     counters &ctr) {
    #pragma HLS INLINE
    if (s.kind == SINK_LOGITS) {
        logit_row lr;
        for (int t = 0; t < N; t++) {
            #pragma HLS UNROLL
            lr.v[t] = t < n ? fixed_to_float(sat<VEC_BITS>(y[t], ctr.clipped)) : 0.0f;
        }
        logits.write(lr);
        return;
    }
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        if (t < n) {
            if (s.kind == SINK_RESIDUAL) {
                const i64 v = sat<VEC_BITS>(i64(st.x[t][row]) + y[t], ctr.clipped);
                st.x[t][row] = vec_t(v);
                stats_update(s.st[t], st, s.grp_sel, s.has_a, s.n_c, row, v);
            } else {
                const i64 v = sat<VEC_BITS>(y[t], ctr.clipped);
                if (s.out_sel == OUT_I) st.i[t][row] = vec_t(v);
                else if (s.out_sel == OUT_F) st.f[t][row] = vec_t(v);
                else if (s.out_sel == OUT_G) st.g[t][row] = vec_t(v);
                else st.u[t][row] = vec_t(v);
                const u64 a = absval(v);
                if (a > s.amax[t]) s.amax[t] = a;
            }
        }
    }
}

// The matrix header word: 1/gamma as a 24-bit mantissa (two fields) and an exponent.
template <class Src>
pf read_inv_gamma(Src &src, counters &ctr) {
    const auto h = src.read();
    MMFREE_COUNT(ctr, 1);
    return pf_make(u64(uint16_t(word_field(h, 0))) | (u64(word_field(h, 1)) << 16), -word_field(h, 2));
}

// The lanes' quantiser scalars: the one scalar unit, one lane after another.
inline void bl_prepare_lanes(const bl_input &in, int n, bl_scalars s[N], counters &ctr) {
    #pragma HLS INLINE
    PREPARE:
    for (int t = 0; t < N; t++) {
        if (t < n) {
            s[t] = bl_prepare(in.st[t], in.k);
            MMFREE_COUNT(ctr, SCALAR_RECIP);
        } else {
            s[t].zero = true;           // an idle lane writes back nothing
            s[t].sh_q = s[t].sh_a = s[t].sh_x = 0;
            s[t].q.m = 0;
            s[t].q.s = 0;
        }
    }
}

inline void bl_out_scale_lanes(const bl_input &in, int n, const bl_scalars s[N], const u64 sa[N],
                               const u64 sx[N], pf inv_gamma, mant24 sc[N], counters &ctr) {
    #pragma HLS INLINE
    OUT_SCALE:
    for (int t = 0; t < N; t++) {
        if (t < n) {
            sc[t] = bl_out_scale(in, t, s[t], sa[t], sx[t], inv_gamma);
            MMFREE_COUNT(ctr, SCALAR_RSQRT);
        } else {
            sc[t].m = 0;
            sc[t].s = 0;
        }
    }
}

// The BitLinear unit: n_out x n_in ternary weights in R x PER tiles, on the
// stream, applied to the n active lanes at once (N x R accumulators).
// One function with run-time dimensions, so Vitis HLS builds one MAC unit,
// one quantiser and one write-back lane per token lane that every projection
// shares (compute_pass allocates it once). The schedule: one pass quantises
// the input; then each row block accumulates while the previous one is
// written back, and R cycles drain the last. Python (engine.project.check_shape)
// guarantees n_cg >= R.
static const int MAX_IN = (D > E ? (D > M ? D : M) : (E > M ? E : M));
static const int MAX_CG = (MAX_IN + PER - 1) / PER;
static const int MAX_OUT = (VOCAB > 2 * M ? VOCAB : 2 * M) > D ? (VOCAB > 2 * M ? VOCAB : 2 * M) : D;
static const int MAX_RB = (MAX_OUT + R - 1) / R;
static const int ACC_BITS = signed_bits((long long)(QMAX + 1) * MAX_CG * PER);
typedef typename sint<ACC_BITS>::t acc_t;

template <class Src, class LogitStream>
void bitlinear(Src &src, engine_state &st, const bl_input &in, int n, int n_in, int n_out, bl_sink &sink,
               LogitStream &logits, counters &ctr) {
    #pragma HLS ALLOCATION function instances=pf_mul limit=1
    #pragma HLS ALLOCATION function instances=pf_norm limit=1
    #pragma HLS ALLOCATION function instances=pf_add limit=1
    const int n_cg = (n_in + PER - 1) / PER;
    const int n_rb = (n_out + R - 1) / R;
    const pf inv_gamma = read_inv_gamma(src, ctr);
    bl_scalars s[N];
    #pragma HLS ARRAY_PARTITION variable=s complete
    bl_prepare_lanes(in, n, s, ctr);

    static act_t xq[N][MAX_CG * PER];
    #pragma HLS ARRAY_PARTITION variable=xq dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=xq dim=2 cyclic factor=MMFREE_PER
#if MMFREE_PER == 5
    #pragma HLS ARRAY_PARTITION variable=TRIT5_ROM dim=1 complete
#endif
    acc_t acc[N][R], prev[N][R];
    #pragma HLS ARRAY_PARTITION variable=acc complete dim=0
    #pragma HLS ARRAY_PARTITION variable=prev complete dim=0
    u64 sa[N], sx[N];
    #pragma HLS ARRAY_PARTITION variable=sa complete
    #pragma HLS ARRAY_PARTITION variable=sx complete
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        sa[t] = 0;
        sx[t] = 0;
        for (int r = 0; r < R; r++) {
            #pragma HLS UNROLL
            acc[t][r] = 0;
        }
    }
    // One pass over the input quantises every lane (PER values a lane a cycle) and
    // sums the squares for the output scale; it reads no weight word, so the MAC
    // array and its write-back below exist once (a quantiser fused into a first
    // row block would need a MAC array of its own).
    QUANTISE:
    for (int cg = 0; cg < n_cg; cg++) {
        #pragma HLS PIPELINE II=1
        #pragma HLS LOOP_TRIPCOUNT min=MMFREE_R max=MMFREE_MAX_CG
        for (int t = 0; t < N; t++) {
            #pragma HLS UNROLL
            for (int k = 0; k < PER; k++) {
                #pragma HLS UNROLL
                const int j = cg * PER + k;
                const bool live = j < n_in && t < n;
                const i64 x = live ? input_value(st, in.in_sel, t, j) : i64(0);
                const i64 c = live ? i64(group_c_sel(st, in.grp_sel, in.k, j)) : i64(0);
                xq[t][j] = (live && !s[t].zero) ? bl_quantise_value(s[t], x, c) : act_t(0);
                if (live)
                    bl_square_sums_value(s[t], x, in.has_a ? mul_exact(x, group_a(st, in.grp_sel, j)) : x,
                                         sa[t], sx[t]);
            }
        }
    }
    MMFREE_COUNT(ctr, n_cg + DEPTH_MAC);
    mant24 sc[N];
    #pragma HLS ARRAY_PARTITION variable=sc complete
    bl_out_scale_lanes(in, n, s, sa, sx, inv_gamma, sc, ctr);

    // Row block rb accumulates while block rb-1 is written back, one row of every
    // lane a cycle; R more cycles (rb = n_rb, no word) drain the last block.
    int rb = 0, cg = 0;                       // (row block, column group): counters, not / and %
    MAC:
    for (int it = 0; it < n_rb * n_cg + R; it++) {
        #pragma HLS PIPELINE II=1
        #pragma HLS LOOP_TRIPCOUNT min=MMFREE_R max=MMFREE_MAX_TILES
        if (cg == 0) {
            for (int t = 0; t < N; t++) {
                #pragma HLS UNROLL
                for (int r = 0; r < R; r++) {
                    #pragma HLS UNROLL
                    prev[t][r] = acc[t][r];
                    acc[t][r] = 0;
                }
            }
        }
        if (rb < n_rb) {
            const word_t w = src.read();
            for (int r = 0; r < R; r++) {
                #pragma HLS UNROLL
                const unsigned codes = byte_codes(word_byte(w, r), r);   // decoded once, shared by the lanes
                for (int t = 0; t < N; t++) {
                    #pragma HLS UNROLL
                    act_t a[PER];
                    for (int k = 0; k < PER; k++) {
                        #pragma HLS UNROLL
                        a[k] = xq[t][cg * PER + k];
                    }
                    acc[t][r] += ternary_dot(codes, a);
                }
            }
        }
        const int row = (rb - 1) * R + cg;
        if (rb > 0 && cg < R && row < n_out) {
            i64 y[N];
            for (int t = 0; t < N; t++) {
                #pragma HLS UNROLL
                y[t] = s[t].zero ? i64(0) : bl_rescale(prev[t][cg], sc[t]);
            }
            sink_put(st, sink, logits, n, row, y, ctr);
        }
        if (++cg == n_cg) {
            cg = 0;
            rb++;
        }
    }
    MMFREE_COUNT(ctr, n_rb * n_cg + R + DEPTH_MAC);
}

// ------------------------------------------------------------------ device-side top-k
// The TOPK largest logits of one lane, value descending, the lower id first
// among equals (rows arrive in id order: a new value goes after its equals).
// Keys compare as integers: the float's bits with the magnitude flipped for
// negatives order like the floats (the logits are finite).
struct topk_list {
    int32_t key[TOPK];
    int32_t id[TOPK];
    bool valid[TOPK];
};

inline int32_t float_key(float v) {
    #pragma HLS INLINE
    int32_t b;
    memcpy(&b, &v, 4);
    return b < 0 ? int32_t(b ^ 0x7FFFFFFF) : b;
}

inline float key_float(int32_t k) {
    #pragma HLS INLINE
    const int32_t b = k < 0 ? int32_t(k ^ 0x7FFFFFFF) : k;
    float v;
    memcpy(&v, &b, 4);
    return v;
}

inline void topk_clear(topk_list &l) {
    #pragma HLS INLINE
    for (int k = 0; k < TOPK; k++) {
        #pragma HLS UNROLL
        l.key[k] = 0;
        l.id[k] = 0;
        l.valid[k] = false;
    }
}

// One insertion a cycle, no chain: each entry compares itself with the new
// value (beaten: empty, or strictly smaller, so equals keep the lower id), then
// keeps its place, takes the new value (the first beaten entry) or its upper
// neighbour's (the ones below it).
inline void topk_insert(topk_list &l, float v, int id) {
    #pragma HLS INLINE
    const int32_t key = float_key(v);
    bool beaten[TOPK];
    for (int k = 0; k < TOPK; k++) {
        #pragma HLS UNROLL
        beaten[k] = !l.valid[k] || key > l.key[k];
    }
    const topk_list was = l;
    for (int k = 0; k < TOPK; k++) {
        #pragma HLS UNROLL
        if (beaten[k]) {
            const bool first = k == 0 || !beaten[k - 1];
            l.key[k] = first ? key : was.key[k - 1];
            l.id[k] = first ? int32_t(id) : was.id[k - 1];
            l.valid[k] = first ? true : was.valid[k - 1];
        }
    }
}

// The logits writer's work on one row: the top-k of every active lane.
inline void topk_row(topk_list top[N], const logit_row &r, int row, int n) {
    #pragma HLS INLINE
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        if (t < n)
            topk_insert(top[t], r.v[t], row);
    }
}

// The top-k out: 2 TOPK rows of N lanes, the same 32N-bit words as the logits
// (one width on the bundle: bursts stay on). Row k holds entry k's id of every
// lane (-1 past the entries), row TOPK + k its value's float bits.
inline void topk_row_values(const topk_list top[N], int e, int32_t v[N]) {
    #pragma HLS INLINE
    const int k = e < TOPK ? e : e - TOPK;
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        const bool have = top[t].valid[k];
        const float f = have ? key_float(top[t].key[k]) : 0.0f;
        int32_t bits;
        memcpy(&bits, &f, 4);
        v[t] = e < TOPK ? (have ? top[t].id[k] : -1) : bits;
    }
}

template <class RowWord>
void topk_store(const topk_list top[N], RowWord *out) {
    TOPK_OUT:
    for (int e = 0; e < 2 * TOPK; e++) {
        #pragma HLS PIPELINE II=1
        int32_t v[N];
        topk_row_values(top, e, v);
        RowWord w;
        for (int t = 0; t < N; t++) {
            #pragma HLS UNROLL
            w.range(32 * t + 31, 32 * t) = uint32_t(v[t]);
        }
        out[e] = w;
    }
}

// ------------------------------------------------------------------ the pass
// One read of the weight stream for n lanes (mode bits above): batch (lane t
// = the next token of the sequence in slot t) or prefill (lanes = n
// consecutive prompt tokens of the sequence in `slot`). Slots whose bit is
// set in load_mask take their state from `state` (slot b at b L E) first;
// those in store_mask write it back at the end.
template <class Src, class LogitSink>
int compute_pass(Src &src, engine_state &st, int n, int mode, int slot, unsigned load_mask, unsigned store_mask,
                 const float *x_in, float *state, LogitSink &logits, counters &ctr) {
    #pragma HLS ARRAY_PARTITION variable=SIG_ROM dim=1 complete
    // Banking: dim 1 (lanes) completely for every per-token vector; dim 2 by
    // the lanes that touch each vector in one cycle: V in the vector passes,
    // PER in the quantiser's pass, PARAM_LANES in read_vector.
    #pragma HLS ARRAY_PARTITION variable=st.x dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.x dim=2 cyclic factor=MMFREE_PER
    #pragma HLS ARRAY_PARTITION variable=st.i dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.i dim=2 cyclic factor=MMFREE_V
    #pragma HLS ARRAY_PARTITION variable=st.f dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.f dim=2 cyclic factor=MMFREE_V
    #pragma HLS ARRAY_PARTITION variable=st.g dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.g dim=2 cyclic factor=MMFREE_V
    #pragma HLS ARRAY_PARTITION variable=st.u dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.u dim=2 cyclic factor=MMFREE_V
    #pragma HLS ARRAY_PARTITION variable=st.o dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.o dim=2 cyclic factor=MMFREE_VP
    #pragma HLS ARRAY_PARTITION variable=st.z dim=1 complete
    #pragma HLS ARRAY_PARTITION variable=st.z dim=2 cyclic factor=MMFREE_VP
    #pragma HLS ARRAY_PARTITION variable=st.s cyclic factor=MMFREE_V dim=3
    #pragma HLS ARRAY_PARTITION variable=st.lb cyclic factor=MMFREE_VQ
    #pragma HLS ARRAY_PARTITION variable=st.gn cyclic factor=MMFREE_VQ
    #pragma HLS ARRAY_PARTITION variable=st.attn.a cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.attn.c0 cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.attn.c1 cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.attn.c2 cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.mlp.a cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.mlp.c0 cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.o_grp.c0 cyclic factor=MMFREE_GQ
    #pragma HLS ARRAY_PARTITION variable=st.z_grp.c0 cyclic factor=MMFREE_GQ
    // Seven call sites, one BitLinear unit: its dimensions and sink are data (the cost model
    // charges one instance).
    #pragma HLS ALLOCATION function instances=bitlinear limit=1
    bool bad = false;
    ctr.clipped = false;
    const bool prefill = (mode & MODE_PREFILL) != 0;
    const pf inv_d = pf_make(MMFREE_INV_D_M, MMFREE_INV_D_E);
    const pf inv_e = pf_make(MMFREE_INV_E_M, MMFREE_INV_E_E);
    const pf inv_m = pf_make(MMFREE_INV_M_M, MMFREE_INV_M_E);
    const pf bl_eps = pf_make(MMFREE_BLEPS_M, MMFREE_BLEPS_E);
    pf eps_bl[N];
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        eps_bl[t] = bl_eps;
    }

    // pass start: layer 0's norm group, then x of every lane with its statistics, then the states
    read_group(src, st.attn, D, ctr);
    vec_stats xs[N];
    for (int t = 0; t < N; t++) {
        #pragma HLS UNROLL
        stats_clear(xs[t]);
    }
    int lt = 0, lj = 0;                       // (lane, element): counters, not / and %
    LOAD_X:
    for (int it = 0; it < n * D; it++) {
        #pragma HLS PIPELINE II=1
        #pragma HLS LOOP_TRIPCOUNT min=MMFREE_D max=MMFREE_MAX_LOAD_X
        const i64 v = float_to_fixed(x_in[it], bad, ctr.clipped);
        st.x[lt][lj] = vec_t(v);
        stats_update(xs[lt], st, GRP_ATTN, st.attn.has_a, st.attn.n_c, lj, v);
        if (++lj == D) {
            lj = 0;
            lt++;
        }
    }
    MMFREE_COUNT(ctr, n * D + DEPTH_IO);
    LOAD_SLOTS:
    for (int b = 0; b < B; b++) {
        if ((load_mask >> b) & 1u) {
            int l = 0, j = 0;
            u64 m = 0;                            // the layer's running max, in a register
            LOAD_STATE:
            for (int it = 0; it < L * E; it++) {
                #pragma HLS PIPELINE II=1
                const i64 v = float_to_fixed(state[b * L * E + it], bad, ctr.clipped);
                st.s[b][l][j] = vec_t(v);
                const u64 a = absval(v);
                m = (j == 0 || a > m) ? a : m;
                if (++j == E) {
                    st.s_max[b][l] = m;           // written once a layer
                    j = 0;
                    l++;
                }
            }
            MMFREE_COUNT(ctr, L * E + DEPTH_IO);
        }
    }
    // A NaN/Inf input reads as 0 and the pass runs to its end: every stream
    // word is consumed and every logit written, so the DATAFLOW region drains
    // (an early return would leave the loaders and the writer waiting); the
    // status tells the host the result is void.

    bl_input in;
    bl_sink si, sf, sg, xo, su, xd;
    // Their per-lane arrays are read and written for every lane a cycle: registers, not memories.
    #pragma HLS ARRAY_PARTITION variable=in.st complete
    #pragma HLS ARRAY_PARTITION variable=in.eps complete
    #pragma HLS ARRAY_PARTITION variable=si.amax complete
    #pragma HLS ARRAY_PARTITION variable=sf.amax complete
    #pragma HLS ARRAY_PARTITION variable=sg.amax complete
    #pragma HLS ARRAY_PARTITION variable=su.amax complete
    #pragma HLS ARRAY_PARTITION variable=xo.st complete
    #pragma HLS ARRAY_PARTITION variable=xd.st complete
    LAYERS:
    for (int l = 0; l < L; l++) {
        // ---- token mixing: i, f, g projections
        make_sink(si, SINK_PLAIN, OUT_I, 0, st.attn);
        make_sink(sf, SINK_PLAIN, OUT_F, 0, st.attn);
        make_sink(sg, SINK_PLAIN, OUT_G, 0, st.attn);
        make_input(in, IN_X, GRP_ATTN, st.attn, 0, xs, eps_bl, inv_d);
        bitlinear(src, st, in, n, D, E, si, logits, ctr);
        make_input(in, IN_X, GRP_ATTN, st.attn, 1, xs, eps_bl, inv_d);
        bitlinear(src, st, in, n, D, E, sf, logits, ctr);
        make_input(in, IN_X, GRP_ATTN, st.attn, 2, xs, eps_bl, inv_d);
        bitlinear(src, st, in, n, D, E, sg, logits, ctr);

        // ---- MLGRU + gated RMSNorm, one pass over E per lane
        const auto h = src.read();
        MMFREE_COUNT(ctr, 1);
        const int egn = word_field(h, 0);
        st.o_grp.ec[0] = word_field(h, 1);
        const bool has_lb = word_field(h, 2) != 0;
        if (has_lb)
            read_vector(src, st.lb, E, ctr);
        read_vector(src, st.gn, E, ctr);
        read_vector(src, st.o_grp.c0, E, ctr);
        st.o_grp.n_c = 1; st.o_grp.has_a = false; st.o_grp.ea = 0;

        vec_stats os[N];
        pf o_eps[N];
        for (int t = 0; t < N; t++) {
            #pragma HLS UNROLL
            stats_clear(os[t]);                   // idle lanes too: every entry defined
            o_eps[t] = bl_eps;
        }
        // The lanes one after another: in a prefill, lane t's state is lane t+1's s_t-1.
        MLGRU_LANES:
        for (int t = 0; t < N; t++) {
            if (t >= n)
                break;
            const int q = prefill ? slot : t;                          // the lane's state slot
            // Block shifts from maxima known before the pass: every vector operand
            // goes through its 25-bit view.
            const int sh_i = view_shift(si.amax[t]);                   // i and silu(i) (|silu(i)| <= |i|)
            const int sh_sp = view_shift(st.s_max[q][l]);              // s_t-1
            const u64 s_bound = st.s_max[q][l] + si.amax[t] + 1;       // |s_t| <= |s_t-1| + |i'|
            const int sh_sn = view_shift(s_bound);                     // s_t and silu(s_t)
            const int sh_gg = view_shift(sg.amax[t] << 23);            // |g gn| < amax(g) 2^23 -> 25 bits
            const int gg_frac = FRAC + egn - sh_gg;                    // fraction bits of (g gn) >> sh_gg
            // o = silu(s) (g gn) stored at 2^-sh_o so that it fills 30 bits
            const int sh_o = bitlen((s_bound >> sh_sn) << 24) + sh_sn - gg_frac - 30;
            const int sh_gsq = narrow_shift(sg.amax[t], SQ_BITS);
            vec_stats ot;                         // this lane's statistics, in registers
            stats_clear(ot);
            u64 sum_g2 = 0;
            u64 s_new_max = 0;
            MLGRU:
            for (int j0 = 0; j0 < E; j0 += V) {
                #pragma HLS PIPELINE II=1
                for (int v = 0; v < V; v++) {
                    #pragma HLS UNROLL
                    const int j = j0 + v;
                    if (j < E) {
                        i64 fs = sigmoid(st.f[t][j], (3 * v) / 2);                  // sigma(f), 2^-23
                        if (has_lb && l > 0) {                                      // lb + (1 - lb) sigma(f)
                            const i64 lb = st.lb[j];                                // stored at 2^-23
                            fs = lb + rshift_round(mul_wide(SIG_ONE - lb, fs), SIG_FRAC);
                        }
                        const i64 si_ = silu(st.i[t][j], sh_i, (3 * v + 1) / 2);    // silu(i)
                        const i64 ip = rshift_round(mul_wide(si_ >> sh_i, SIG_ONE - fs), SIG_FRAC - sh_i); // silu(i)(1-f)
                        const i64 sf_ = rshift_round(mul_wide(i64(st.s[q][l][j]) >> sh_sp, fs), SIG_FRAC - sh_sp);
                        const i64 snew = sat<VEC_BITS>(sf_ + ip, ctr.clipped);     // s_t = f s_t-1 + i'
                        const i64 skept = float_grid(snew, ctr.clipped);           // as the host's float holds it
                        st.s[q][l][j] = vec_t(skept);
                        const u64 as = absval(skept);
                        if (as > s_new_max) s_new_max = as;
                        const i64 gg = mul_exact(st.g[t][j], st.gn[j]) >> sh_gg;   // g gn, 25 bits
                        const i64 ss = silu(snew, sh_sn, (3 * v + 2) / 2);         // silu(s_t)
                        const i64 o = sat<VEC_BITS>(rshift_round(mul_wide(ss >> sh_sn, gg), gg_frac + sh_o - sh_sn),
                                                    ctr.clipped);
                        st.o[t][j] = vec_t(o);
                        stats_update(ot, st, GRP_O, false, 1, j, o);
                        const i64 ng = i64(st.g[t][j]) >> sh_gsq;
                        sum_g2 += u64(mul_wide(ng, ng));
                    }
                }
            }
            MMFREE_COUNT(ctr, (E + V - 1) / V + DEPTH_VEC);
            st.s_max[q][l] = s_new_max;
            os[t] = ot;

            // o = rms(g; gn) silu(s) = o_stored 2^sh_o / rms(g): o_proj's own RMSNorm
            // (eps 1e-8) sees 1e-8 (mean g^2 + eps) 2^(-2 sh_o) in o_stored's units.
            const pf mean_g = pf_mul(pf_make(sum_g2, 2 * sh_gsq - 2 * FRAC), inv_e);
            o_eps[t] = pf_mul(pf_add(mean_g, pf_make(MMFREE_EPS_M, MMFREE_EPS_E)), bl_eps);
            o_eps[t].e -= 2 * sh_o;
        }

        // ---- o projection, residual add; statistics for the MLP's norm group
        read_group(src, st.mlp, D, ctr);
        make_sink(xo, SINK_RESIDUAL, 0, GRP_MLP, st.mlp);
        make_input(in, IN_O, GRP_O, st.o_grp, 0, os, o_eps, inv_e);
        bitlinear(src, st, in, n, E, D, xo, logits, ctr);

        // ---- channel mixing: gate/up projection, GLU, down projection
        make_sink(su, SINK_PLAIN, OUT_U, 0, st.mlp);
        make_input(in, IN_X, GRP_MLP, st.mlp, 0, xo.st, eps_bl, inv_d);
        bitlinear(src, st, in, n, D, 2 * M, su, logits, ctr);

        const auto hg = src.read();
        MMFREE_COUNT(ctr, 1);
        st.z_grp.ec[0] = word_field(hg, 0);
        st.z_grp.n_c = 1; st.z_grp.has_a = false; st.z_grp.ea = 0;
        read_vector(src, st.z_grp.c0, M, ctr);
        vec_stats zs[N];
        pf z_eps[N];
        for (int t = 0; t < N; t++) {
            #pragma HLS UNROLL
            stats_clear(zs[t]);
            z_eps[t] = bl_eps;
        }
        GLU_LANES:
        for (int t = 0; t < N; t++) {
            if (t >= n)
                break;
            const int sh_u = view_shift(su.amax[t]);                  // gate and silu(gate): 25-bit view
            const int sh_up = view_shift(su.amax[t]);                 // up: 25-bit view
            // z = silu(gate) up, stored at 2^-sh_z so that it fills 30 bits
            const int sh_z = bitlen(((su.amax[t] >> sh_u) + 1) * ((su.amax[t] >> sh_up) + 1)) + sh_u + sh_up - FRAC - 30;
            vec_stats zt;
            stats_clear(zt);
            GLU:
            for (int j0 = 0; j0 < M; j0 += V) {
                #pragma HLS PIPELINE II=1
                for (int v = 0; v < V; v++) {
                    #pragma HLS UNROLL
                    const int j = j0 + v;
                    if (j < M) {
                        const i64 sg_ = silu(st.u[t][j], sh_u, v / 2);
                        const i64 up = i64(st.u[t][M + j]) >> sh_up;
                        const i64 z = sat<VEC_BITS>(rshift_round(mul_wide(sg_ >> sh_u, up), FRAC - sh_u - sh_up + sh_z),
                                                    ctr.clipped);
                        st.z[t][j] = vec_t(z);
                        stats_update(zt, st, GRP_Z, false, 1, j, z);
                    }
                }
            }
            MMFREE_COUNT(ctr, (M + V - 1) / V + DEPTH_VEC);
            zs[t] = zt;
            z_eps[t] = bl_eps;                 // rms(z; n_down, 1e-8), z stored at 2^-sh_z
            z_eps[t].e -= 2 * sh_z;
        }

        // the next norm group: layer l+1's attention, or the head's
        read_group(src, st.attn, D, ctr);
        make_sink(xd, SINK_RESIDUAL, 0, GRP_ATTN, st.attn);
        make_input(in, IN_Z, GRP_Z, st.z_grp, 0, zs, z_eps, inv_m);
        bitlinear(src, st, in, n, M, D, xd, logits, ctr);
        for (int t = 0; t < N; t++) {
            #pragma HLS UNROLL
            xs[t] = xd.st[t];
        }
    }

    // ---- head: only when asked (a prefill chunk before the last needs no logits)
    if (mode & MODE_HEAD) {
        bl_sink head;
        #pragma HLS ARRAY_PARTITION variable=head.amax complete
        make_sink(head, SINK_LOGITS, 0, 0, st.attn);
        make_input(in, IN_X, GRP_ATTN, st.attn, 0, xs, eps_bl, inv_d);
        bitlinear(src, st, in, n, D, VOCAB, head, logits, ctr);
    }

    STORE_SLOTS:
    for (int b = 0; b < B; b++) {
        if ((store_mask >> b) & 1u) {
            int l = 0, j = 0;
            STORE_STATE:
            for (int it = 0; it < L * E; it++) {
                #pragma HLS PIPELINE II=1
                state[b * L * E + it] = fixed_to_float(st.s[b][l][j]);
                if (++j == E) {
                    j = 0;
                    l++;
                }
            }
            MMFREE_COUNT(ctr, L * E + DEPTH_IO);
        }
    }
    return (bad ? STATUS_NONFINITE : 0) | (ctr.clipped ? STATUS_SATURATED : 0);
}

// The pass's scalars as the hardware may take them: n in 1..N (a batch at most
// one lane per slot), slot below B, masks within the slots. The top clamps once
// and tells every process the same (split_args); STATUS_BAD_ARGS says it had to.
struct pass_args {
    int n, mode, slot;
    unsigned load_mask, store_mask;
    bool clamped;
};

inline pass_args clamp_pass(int n, int mode, int slot, unsigned load_mask, unsigned store_mask) {
    #pragma HLS INLINE
    const unsigned all = B >= 32 ? 0xFFFFFFFFu : ((1u << B) - 1u);
    const int most = (mode & MODE_PREFILL) ? N : (B < N ? B : N);
    pass_args a;
    a.n = n < 1 ? 1 : (n > most ? most : n);
    a.mode = mode & (MODE_PREFILL | MODE_HEAD | MODE_FULL_LOGITS);
    a.slot = (slot < 0 || slot >= B) ? 0 : slot;
    a.load_mask = load_mask & all;
    a.store_mask = store_mask & all;
    a.clamped = a.n != n || a.mode != mode || a.slot != slot || a.load_mask != load_mask
                || a.store_mask != store_mask;
    return a;
}

} // namespace mmfree

#endif
