// Streamed-weight tier of the MatMul-free LM: one decoded token per call.
//
// Models of the 370M class do not fit on chip. Every parameter lives in one
// contiguous DDR buffer (layout: python/mmfree_hls/streamed.py, the one place
// that defines it; offsets arrive here through the generated
// mmfree_streamed_config.h). Per token the top reads that buffer front to back
// with burst m_axi reads; the residual stream, the per-layer recurrent state
// and every intermediate vector stay on chip.
//
//   x_0 = embedding row (written by the host)
//   for l < L:  h = rms(x; attn_norm)
//               i, f, g = BitLinear_{i,f,g}(h)           weights streamed
//               s_l = MLGRU(i, f, s_l; lb_l)             state on chip
//               x += BitLinear_o(rms(g; g_norm) * silu(s_l))
//               x += BitLinear_down(GLU(BitLinear_gate(rms(x; mlp_norm))))
//   logits = BitLinear_head(rms(x; norm))
//
// The arithmetic is that of the on-chip tier: rmsnorm, bitlinear_quantize
// (fused norm + absmax int8), mlgru_cell, gated_rmsnorm and glu come from the
// nnet_*.h headers unchanged. What is new here is where the weights come from:
// a BitLinear reads its norm weight, its scale 1/gamma (float32) and its packed
// ternary rows from the buffer and accumulates row by row as the bytes arrive.
// Two packings (chosen at compile time, MMFREE_PER_BYTE):
//   4: 2-bit codes, 00 = 0, 01 = +1, 11 = -1, weight k of a byte in bits [2k, 2k+2)
//   5: 5 trits per byte, byte = sum_k (w_k + 1) 3^k      (1.6 bits per weight)
// Each output row starts on a byte boundary in both.
//
// The header of the buffer (magic, version, packing, sizes) is checked on
// every call: a buffer written for another model or packing returns an error
// code instead of decoding garbage.
#include <stdint.h>
#include <string.h>

#include "mmfree_streamed_config.h"
#include "nnet_bitlinear.h"
#include "nnet_glu.h"
#include "nnet_mlgru.h"
#include "nnet_rmsnorm.h"

// C-simulation libraries of several models (or precisions) may live in one process.
// They are built with -fvisibility=hidden -fno-gnu-unique so each keeps its own
// template statics (sigma tables, scratch arrays); only this API is exported.
#ifdef __SYNTHESIS__
#define MMFREE_API extern "C"
#else
#define MMFREE_API extern "C" __attribute__((visibility("default")))
#endif

namespace mmfree_streamed {

static const unsigned D = MMFREE_D;
static const unsigned L = MMFREE_L;
static const unsigned E = MMFREE_E;
static const unsigned M = MMFREE_M;
static const unsigned V = MMFREE_V;
static const unsigned PER_BYTE = MMFREE_PER_BYTE;
static const unsigned ROW_CHUNK = MMFREE_ROW_CHUNK_BYTES;

// ------------------------------------------------------------ precision (knobs)
// Chosen in python/mmfree_hls/streamed.py (PRECISION) and written into the config header.
#if !defined(MMFREE_ACT_T) || !defined(MMFREE_NORM_T) || !defined(MMFREE_SIGMOID_TABLE_BITS) || !defined(MMFREE_ROW_CHUNK_BYTES)
#error "mmfree_streamed_config.h must define MMFREE_ACT_T, MMFREE_NORM_T, MMFREE_SIGMOID_TABLE_BITS, MMFREE_ROW_CHUNK_BYTES"
#endif
typedef MMFREE_ACT_T act_t;     // residual stream, projections, GLU, state
typedef MMFREE_NORM_T norm_t;   // every norm weight read from the buffer
typedef ap_ufixed<26, 1> lb_t;  // lower bound, in [0, 1)
typedef ap_ufixed<80, 32> sumsq_t;

// ------------------------------------------------------------ compile-time sqrt(n) as mant * 2^exp
constexpr double csqrt_iter(double a, double y, int n) { return n == 0 ? y : csqrt_iter(a, 0.5 * (y + a / y), n - 1); }
constexpr double csqrt(double a) { return csqrt_iter(a, a > 1 ? a : 1.0, 80); }
constexpr int cfloor_log2(double v) { return v >= 2 ? 1 + cfloor_log2(v / 2) : (v < 1 ? -1 + cfloor_log2(v * 2) : 0); }
constexpr double cpow2(int e) { return e == 0 ? 1.0 : (e > 0 ? 2.0 * cpow2(e - 1) : 0.5 * cpow2(e + 1)); }

template <unsigned N> struct sqrt_of {
    static constexpr double value = csqrt(double(N));
    static const int exp = cfloor_log2(csqrt(double(N)));
    static constexpr double mant = csqrt(double(N)) / cpow2(cfloor_log2(csqrt(double(N))));
};

// ------------------------------------------------------------ layer configurations
template <unsigned NIN, unsigned NOUT> struct bl_cfg : nnet::bitlinear_config {
    static const unsigned n_in = NIN;
    static const unsigned n_out = NOUT;
    static const unsigned row_bytes = (NIN + PER_BYTE - 1) / PER_BYTE;
    typedef mmfree_streamed::norm_t norm_t;
    typedef mmfree_streamed::sumsq_t sumsq_t;
    static constexpr double eps_sum = NIN * 1e-8;  // BitLinear's own RMSNorm: eps 1e-8
    static constexpr double sqrt_n_mant = sqrt_of<NIN>::mant;
    static const int sqrt_n_exp = sqrt_of<NIN>::exp;
    // 1/127 = (128/127) 2^-7: bitlinear_quantize then returns max|x_hat| / 127;
    // the per-tensor 1/gamma read from the buffer multiplies it at run time.
    static constexpr double out_scale_mant = 128.0 / 127.0;
    static const int out_scale_exp = -7;
};

template <unsigned N> struct rms_cfg : nnet::rmsnorm_config {
    static const unsigned n_in = N;
    typedef mmfree_streamed::norm_t weight_t;
    typedef mmfree_streamed::sumsq_t sumsq_t;
    static constexpr double eps_sum = N * MMFREE_RMS_EPS;
    static constexpr double sqrt_n_mant = sqrt_of<N>::mant;
    static const int sqrt_n_exp = sqrt_of<N>::exp;
};

struct gnorm_cfg : nnet::gated_rmsnorm_config {
    typedef mmfree_streamed::act_t normed_t;
    typedef mmfree_streamed::act_t act_t;
    static const unsigned sigmoid_table_bits = MMFREE_SIGMOID_TABLE_BITS;
    static const unsigned n_in = E;
    typedef mmfree_streamed::norm_t weight_t;
    typedef mmfree_streamed::sumsq_t sumsq_t;
    static constexpr double eps_sum = E * MMFREE_RMS_EPS;
    static constexpr double sqrt_n_mant = sqrt_of<E>::mant;
    static const int sqrt_n_exp = sqrt_of<E>::exp;
};

struct mlgru_cfg : nnet::mlgru_config {
    typedef mmfree_streamed::act_t act_t;
    static const unsigned sigmoid_table_bits = MMFREE_SIGMOID_TABLE_BITS;
    static const unsigned n_state = E;
    static const bool use_lower_bound = MMFREE_USE_LOWER_BOUND;
    typedef lb_t lower_bound_t;
};

struct glu_cfg : nnet::glu_config {
    typedef mmfree_streamed::act_t act_t;
    static const unsigned sigmoid_table_bits = MMFREE_SIGMOID_TABLE_BITS;
    static const unsigned n_out = M;
};

typedef bl_cfg<D, E> cfg_ifg;
typedef bl_cfg<E, D> cfg_o;
typedef bl_cfg<D, 2 * M> cfg_gate;
typedef bl_cfg<M, D> cfg_down;
typedef bl_cfg<D, V> cfg_head;

// ------------------------------------------------------------ reading the buffer
typedef unsigned long long addr_t;

static ap_uint<32> read_u32(const uint8_t *w, addr_t a) {
    #pragma HLS INLINE
    ap_uint<32> v;
    v.range(7, 0) = w[a];
    v.range(15, 8) = w[a + 1];
    v.range(23, 16) = w[a + 2];
    v.range(31, 24) = w[a + 3];
    return v;
}

// IEEE-754 binary32 bits -> fixed point, by the bits (sign, 1.mantissa, 2^(e-127)):
// no float unit, exact up to the target's rounding and range.
template <class T> T f32_to_fixed(ap_uint<32> bits) {
    #pragma HLS INLINE
    const int e = bits.range(30, 23).to_int();
    if (e == 0)
        return T(0); // zero or subnormal (< 1.2e-38): zero in any fixed type we use
    ap_ufixed<25, 2> mant;
    mant.range(22, 0) = bits.range(22, 0);
    mant[23] = 1; // the hidden 1 (bit 23 is weight 2^0)
    mant[24] = 0;
    const T mag = nnet::mmfree::mul_pow2<T>(mant, e - 127);
    return bits[31] ? T(-mag) : mag;
}

// A positive binary32 as the headers' block-floating-point scalar, exactly.
template <unsigned MB> nnet::mmfree::pfloat<MB> f32_to_pfloat(ap_uint<32> bits) {
    #pragma HLS INLINE
    ap_ufixed<25, 2> mant;
    mant.range(22, 0) = bits.range(22, 0);
    mant[23] = 1;
    mant[24] = 0;
    nnet::mmfree::pfloat<MB> p;
    p.mant = mant;
    p.exp = bits.range(30, 23).to_int() - 127;
    return p;
}

template <class T, unsigned N> void read_vector(const uint8_t *w, addr_t a, T out[N]) {
READ_VECTOR:
    for (unsigned i = 0; i < N; i++) {
        #pragma HLS PIPELINE II=4
        out[i] = f32_to_fixed<T>(read_u32(w, a + 4 * i));
    }
}

// 4 weights of a 2-bit byte: code k in bits [2k, 2k+2), 00 = 0, 01 = +1, 11 = -1
// (the decoding of nnet::ternary_code, on a plain integer so C-simulation stays fast).
inline void unpack4(unsigned byte, int w[4]) {
    #pragma HLS INLINE
UNPACK4:
    for (unsigned k = 0; k < 4; k++) {
        #pragma HLS UNROLL
        const unsigned code = (byte >> (2 * k)) & 3u;
        w[k] = code == 1 ? 1 : (code == 3 ? -1 : 0);
    }
}

// 5 trits of a 1.6-bit byte: w_k = digit_k(byte, base 3) - 1. Bytes > 242 never
// occur in a buffer written by streamed.write_buffer.
inline void unpack5(unsigned byte, int w[5]) {
    #pragma HLS INLINE
    unsigned v = byte & 0xFFu;
UNPACK5:
    for (unsigned k = 0; k < 5; k++) {
        #pragma HLS UNROLL
        w[k] = int(v % 3) - 1;
        v /= 3;
    }
}

// One output row: acc = sum_j w[row, j] x_q[j] by add / subtract / skip, the row's
// packed bytes read in order from the buffer.
template <class CFG>
typename nnet::bitlinear_types<CFG>::accum_t
streamed_row(const uint8_t *w, addr_t row_addr, const typename nnet::bitlinear_types<CFG>::quant_t xq[CFG::n_in]) {
    #pragma HLS INLINE
    // plain int in C-simulation (exact: |acc| <= 127 n_in); accum_t's width in synthesis
#ifdef __SYNTHESIS__
    typename nnet::bitlinear_types<CFG>::accum_t acc = 0;
#else
    int acc = 0;
#endif
    // ROW_CHUNK bytes (ROW_CHUNK * PER_BYTE ternary MACs) per cycle: the design's lanes knob,
    // matched to the m_axi width (16 bytes = one 128-bit beat of a Zynq UltraScale+ HP port).
    const unsigned CHUNKS = (CFG::row_bytes + ROW_CHUNK - 1) / ROW_CHUNK;
ROW_CHUNKS:
    for (unsigned c = 0; c < CHUNKS; c++) {
        #pragma HLS PIPELINE II=1
    CHUNK_BYTES:
        for (unsigned i = 0; i < ROW_CHUNK; i++) {
            #pragma HLS UNROLL
            const unsigned b = c * ROW_CHUNK + i;
            if (b < CFG::row_bytes) {
                const unsigned byte = w[row_addr + b];
                int wk[5];
                if (PER_BYTE == 5)
                    unpack5(byte, wk);
                else
                    unpack4(byte, wk);
            BYTE_CODES:
                for (unsigned k = 0; k < PER_BYTE; k++) {
                    #pragma HLS UNROLL
                    const unsigned j = PER_BYTE * b + k;
                    if (j < CFG::n_in) {
                        const int xj = xq[j].to_int();
                        if (wk[k] > 0)
                            acc += xj;
                        else if (wk[k] < 0)
                            acc -= xj;
                    }
                }
            }
        }
    }
    return acc;
}

// BitLinear with its parameters streamed from the buffer: record = norm (n_in
// float32) | scale 1/gamma (float32) | packed rows, at the offsets of the layout.
template <class CFG, class data_T, class res_T>
void streamed_bitlinear(const uint8_t *w, addr_t off_norm, addr_t off_scale, addr_t off_rows,
                        const data_T x[CFG::n_in], res_T y[CFG::n_out]) {
    typedef typename nnet::bitlinear_types<CFG>::accum_t accum_t;
    typedef ap_fixed<accum_t::width, accum_t::width> accum_fixed_t;
    const unsigned MB = CFG::mant_bits;

    static typename CFG::norm_t norm[CFG::n_in];
    read_vector<typename CFG::norm_t, CFG::n_in>(w, off_norm, norm);
    const nnet::mmfree::pfloat<MB> w_scale = f32_to_pfloat<MB>(read_u32(w, off_scale));

    static typename nnet::bitlinear_types<CFG>::quant_t xq[CFG::n_in];
    typename nnet::bitlinear_types<CFG>::scale_t act_scale; // max|x_hat| / 127
    nnet::bitlinear_quantize<data_T, CFG>(x, xq, act_scale, norm);
    const nnet::mmfree::pfloat<MB> scale = nnet::mmfree::pf_mul(act_scale, w_scale);

ROWS:
    for (unsigned o = 0; o < CFG::n_out; o++) {
        const accum_fixed_t acc = streamed_row<CFG>(w, off_rows + addr_t(o) * CFG::row_bytes, xq);
        y[o] = nnet::mmfree::mul_pow2<res_T>(acc * scale.mant, scale.exp);
    }
}

// ------------------------------------------------------------ on-chip state
static act_t g_state[L][E];

// ------------------------------------------------------------ one block
static void block(const uint8_t *w, addr_t base, act_t x[D], act_t s[E]) {
    static norm_t nw_d[D], nw_e[E];
    static act_t h[D], i_pre[E], f_pre[E], g_pre[E], s_new[E], o[E], y[D], u[2 * M], glu_out[M];
    static lb_t lb[E];

    // token mixer: MLGRU
    read_vector<norm_t, D>(w, base + MMFREE_REL_ATTN_NORM, nw_d);
    nnet::rmsnorm<act_t, act_t, rms_cfg<D> >(x, h, nw_d);
    streamed_bitlinear<cfg_ifg>(w, base + MMFREE_REL_I_NORM, base + MMFREE_REL_I_SCALE, base + MMFREE_REL_I_ROWS, h, i_pre);
    streamed_bitlinear<cfg_ifg>(w, base + MMFREE_REL_F_NORM, base + MMFREE_REL_F_SCALE, base + MMFREE_REL_F_ROWS, h, f_pre);
    streamed_bitlinear<cfg_ifg>(w, base + MMFREE_REL_G_NORM, base + MMFREE_REL_G_SCALE, base + MMFREE_REL_G_ROWS, h, g_pre);
#if MMFREE_USE_LOWER_BOUND
    read_vector<lb_t, E>(w, base + MMFREE_REL_LOWER_BOUND, lb);
#endif
    nnet::mlgru_cell<act_t, act_t, act_t, act_t, mlgru_cfg>(i_pre, f_pre, s, s_new, lb);
COPY_STATE:
    for (unsigned j = 0; j < E; j++)
        s[j] = s_new[j];
    read_vector<norm_t, E>(w, base + MMFREE_REL_G_NORM_W, nw_e);
    nnet::gated_rmsnorm<act_t, act_t, act_t, gnorm_cfg>(g_pre, s, o, nw_e);
    streamed_bitlinear<cfg_o>(w, base + MMFREE_REL_O_NORM, base + MMFREE_REL_O_SCALE, base + MMFREE_REL_O_ROWS, o, y);
RESIDUAL_ATTN:
    for (unsigned j = 0; j < D; j++)
        x[j] += y[j];

    // channel mixer: GLU
    read_vector<norm_t, D>(w, base + MMFREE_REL_MLP_NORM, nw_d);
    nnet::rmsnorm<act_t, act_t, rms_cfg<D> >(x, h, nw_d);
    streamed_bitlinear<cfg_gate>(w, base + MMFREE_REL_GATE_NORM, base + MMFREE_REL_GATE_SCALE, base + MMFREE_REL_GATE_ROWS, h, u);
    nnet::glu<act_t, act_t, glu_cfg>(u, glu_out);
    streamed_bitlinear<cfg_down>(w, base + MMFREE_REL_DOWN_NORM, base + MMFREE_REL_DOWN_SCALE, base + MMFREE_REL_DOWN_ROWS, glu_out, y);
RESIDUAL_MLP:
    for (unsigned j = 0; j < D; j++)
        x[j] += y[j];
}

// Header fields (little-endian int32 after the 4-byte magic; see streamed.py).
static bool header_matches(const uint8_t *w) {
    const uint8_t magic[4] = {'M', 'M', 'F', 'S'};
    for (unsigned k = 0; k < 4; k++)
        if (w[k] != magic[k])
            return false;
    const long long want[9] = {MMFREE_LAYOUT_VERSION, PER_BYTE, D, L, E, M, V, MMFREE_USE_LOWER_BOUND, MMFREE_ALIGN};
    for (unsigned k = 0; k < 9; k++)
        if ((long long)(int)read_u32(w, 4 + 4 * k).to_uint() != want[k])
            return false;
    const unsigned long long total =
        (unsigned long long)read_u32(w, 40).to_uint() | ((unsigned long long)read_u32(w, 44).to_uint() << 32);
    return total == MMFREE_TOTAL_BYTES;
}

} // namespace mmfree_streamed

// ------------------------------------------------------------ the synthesis top
// weights: the streamed buffer (read only, bursts); x_in: the token embedding (D
// float32); logits: V float32 out. reset = 1 zeroes the recurrent state first
// (a new sequence). Returns 0, or 1 when the buffer's header does not match the
// model this top was compiled for.
MMFREE_API int mmfree_streamed_top(const uint8_t *weights, const float *x_in, float *logits, int reset) {
    #pragma HLS INTERFACE m_axi port=weights offset=slave bundle=gmem_w depth=MMFREE_TOTAL_BYTES max_read_burst_length=256 max_widen_bitwidth=512 num_read_outstanding=16
    #pragma HLS INTERFACE m_axi port=x_in offset=slave bundle=gmem_io depth=MMFREE_D
    #pragma HLS INTERFACE m_axi port=logits offset=slave bundle=gmem_io depth=MMFREE_V
    #pragma HLS INTERFACE s_axilite port=reset
    #pragma HLS INTERFACE s_axilite port=return
    using namespace mmfree_streamed;
    static act_t x[D];
    static act_t out[V];

    if (!header_matches(weights))
        return 1;
    if (reset) {
    RESET_STATE:
        for (unsigned l = 0; l < L; l++)
            for (unsigned j = 0; j < E; j++)
                g_state[l][j] = 0;
    }
LOAD_X:
    for (unsigned j = 0; j < D; j++)
        x[j] = act_t(x_in[j]);

LAYERS:
    for (unsigned l = 0; l < L; l++)
        block(weights, MMFREE_OFF_LAYER0 + addr_t(l) * MMFREE_LAYER_STRIDE, x, g_state[l]);

    static norm_t nw[D];
    static act_t h[D];
    read_vector<norm_t, D>(weights, MMFREE_OFF_FINAL_NORM, nw);
    nnet::rmsnorm<act_t, act_t, rms_cfg<D> >(x, h, nw);
    streamed_bitlinear<cfg_head>(weights, MMFREE_OFF_HEAD_NORM, MMFREE_OFF_HEAD_SCALE, MMFREE_OFF_HEAD_ROWS, h, out);
STORE_LOGITS:
    for (unsigned j = 0; j < V; j++)
        logits[j] = out[j].to_float();
    return 0;
}

// ------------------------------------------------------------ C-simulation ABI
// The same top, called from Python through ctypes (mmfree_hls.streamed_csim).
#ifndef __SYNTHESIS__

// Checked call: the buffer length must be the layout's.
MMFREE_API int mmfree_streamed_call(const uint8_t *weights, unsigned long long nbytes, const float *x_in, float *logits,
                         int reset) {
    if (nbytes != MMFREE_TOTAL_BYTES)
        return 2;
    return mmfree_streamed_top(weights, x_in, logits, reset);
}

MMFREE_API int mmfree_streamed_get_state(float *state);
MMFREE_API int mmfree_streamed_set_state(const float *state);

// The host's step shape (contract 2 with the weight buffer in front): the state
// travels in and out through a buffer, so the host drives both tiers alike.
// On the board the state stays on chip and 'reset' starts a sequence instead.
MMFREE_API int mmfree_streamed_step(const uint8_t *weights, const float *x_in, float *state, float *logits) {
    mmfree_streamed_set_state(state);
    const int rc = mmfree_streamed_top(weights, x_in, logits, 0);
    mmfree_streamed_get_state(state);
    return rc;
}

// Same dimension check as the on-chip tier's library.
MMFREE_API int mmfree_info(int *d, int *L, int *e, int *V) {
    *d = MMFREE_D;
    *L = MMFREE_L;
    *e = MMFREE_E;
    *V = MMFREE_V;
    return 0;
}

MMFREE_API int mmfree_streamed_info(int *d, int *L, int *e, int *m, int *V, int *per_byte, unsigned long long *total) {
    *d = MMFREE_D;
    *L = MMFREE_L;
    *e = MMFREE_E;
    *m = MMFREE_M;
    *V = MMFREE_V;
    *per_byte = MMFREE_PER_BYTE;
    *total = MMFREE_TOTAL_BYTES;
    return 0;
}

// The on-chip state is not visible on the board; in C-simulation it can be read
// and written so a test can check it against the reference, value by value.
MMFREE_API int mmfree_streamed_get_state(float *state) {
    for (unsigned l = 0; l < MMFREE_L; l++)
        for (unsigned j = 0; j < MMFREE_E; j++)
            state[l * MMFREE_E + j] = mmfree_streamed::g_state[l][j].to_float();
    return 0;
}

MMFREE_API int mmfree_streamed_set_state(const float *state) {
    for (unsigned l = 0; l < MMFREE_L; l++)
        for (unsigned j = 0; j < MMFREE_E; j++)
            mmfree_streamed::g_state[l][j] = mmfree_streamed::act_t(state[l * MMFREE_E + j]);
    return 0;
}

// The 1.6-bit unpacker on its own, for the exhaustive test over every byte value.
MMFREE_API int mmfree_unpack5(unsigned byte, int *out5) {
    int w[5];
    mmfree_streamed::unpack5(byte, w);
    for (unsigned k = 0; k < 5; k++)
        out5[k] = w[k];
    return byte <= 242 ? 0 : 1;
}

// The 2-bit decoder of the same top, for the same exhaustive check.
MMFREE_API int mmfree_unpack4(unsigned byte, int *out4) {
    int w[4];
    mmfree_streamed::unpack4(byte, w);
    for (unsigned k = 0; k < 4; k++)
        out4[k] = w[k];
    for (unsigned k = 0; k < 4; k++)
        if (((byte >> (2 * k)) & 3) == 2)
            return 1; // code 10 is never written
    return 0;
}

#endif
