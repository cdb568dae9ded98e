// BitLinear of the MatMul-free LM (Zhu et al. 2024), fused, multiplier-free on the weights.
//
//   x_hat = rms(x; n, 1e-8)                     BitLinear's own RMSNorm
//   s     = Q / max|x_hat|,  x_q = round(x_hat s)     per-token absmax, Q = 127 (int8)
//   acc   = x_q . W_q^T                         ternary: add, subtract or skip
//   y     = acc max|x_hat| / (Q gamma)          one rescale
//
// The norm cancels out of the quantisation: x_hat s = Q (x n) / max|x n|, so
// the kernel reads x once, forming v = x n, max|v| and sum x^2 together; 1/rms
// only enters the single scalar of the rescale,
//   y = acc * max|v| * sqrt(n_in) / sqrt(sum x^2 + n_in eps) * (1 / (Q gamma)).
// The reference is int8 (act_bits = 8, Q = 127); narrower activations
// (act_bits b, Q = 2^(b-1) - 1) are a design-space knob. accum_bits = 0 sizes the
// accumulator from the fan-in (exact); a narrower one saturates at every add.
// max|v| and 1/rms are block-floating-point scalars (nnet_mmfree_common.h), so
// their precision does not depend on the magnitude of x.
//
// Weights: 2-bit codes (00 = 0, 01 = +1, 11 = -1), four per byte, weight j of a
// byte in bits [2j, 2j+2), each output row starting on a byte (layout "2bit" of
// mmfree_hls.packing). Decoding is a 2-bit compare driving an add/subtract mux.
//
// Schedule (reuse_factor R, which must divide row_bytes): output rows are
// processed one after another in a loop pipelined at II = R; a row's
// row_bytes / R bytes (4 row_bytes / R add/sub lanes) are consumed per cycle, so
// a layer takes about n_out * R cycles and the weight ROM is reshaped to
// row_bytes / R bytes per word.
#ifndef NNET_BITLINEAR_H_
#define NNET_BITLINEAR_H_

#include "nnet_mmfree_common.h"

namespace nnet {

struct bitlinear_config {
    static const unsigned n_in = 64;
    static const unsigned n_out = 64;
    static const unsigned row_bytes = 16; // ceil(n_in / 4)
    static const unsigned reuse_factor = 1;

    typedef ap_fixed<24, 4> norm_t;  // BitLinear's own RMSNorm weight n
    typedef unsigned char packed_t;  // four 2-bit weight codes
    typedef ap_ufixed<64, 20> sumsq_t; // sum of x^2 (exact by default)

    static const unsigned mant_bits = 28;         // block-floating-point mantissa
    static const unsigned newton_iterations = 3;  // reciprocal and 1/sqrt
    static const unsigned quant_bits = 26;        // normalised activation before rounding to int8
    static const unsigned act_bits = 8;           // x_q in [-(2^(b-1)-1), 2^(b-1)-1]
    static const unsigned accum_bits = 0;         // 0: exact from the fan-in; else saturating

    static constexpr double eps_sum = 64 * 1e-8; // n_in * eps
    static constexpr double sqrt_n_mant = 1.0;   // sqrt(n_in) = mant 2^exp
    static const int sqrt_n_exp = 3;
    static constexpr double out_scale_mant = 1.0; // 1 / (Q gamma) = mant 2^exp
    static const int out_scale_exp = -7;
};

template <bool EXACT, int EXACT_BITS, int BITS> struct bitlinear_accum {
    typedef ap_int<EXACT_BITS> type;
};
template <int EXACT_BITS, int BITS> struct bitlinear_accum<false, EXACT_BITS, BITS> {
    typedef ap_fixed<BITS, BITS, AP_TRN, AP_SAT> type; // saturating accumulator (design-space knob)
};

template <typename CONFIG_T> struct bitlinear_types {
    static const int qmax = (1 << (CONFIG_T::act_bits - 1)) - 1;
    typedef typename bitlinear_accum<CONFIG_T::accum_bits == 0, mmfree::accum_bits(CONFIG_T::n_in, CONFIG_T::act_bits),
                                     CONFIG_T::accum_bits>::type accum_t;
    typedef ap_int<CONFIG_T::act_bits> quant_t;
    typedef mmfree::pfloat<CONFIG_T::mant_bits> scale_t;
};

// Decoded weight: +1, -1 or 0 from a 2-bit code (packed_T: unsigned char or ap_uint<8>).
// Plain shifts and masks: the same 2-bit mux in hardware, and fast in C-simulation.
template <class packed_T> inline int ternary_code(const packed_T &byte, unsigned k) {
    #pragma HLS INLINE
    const unsigned code = (static_cast<unsigned>(byte) >> (2 * k)) & 3u;
    return code == 1 ? 1 : (code == 3 ? -1 : 0);
}

// acc = sum_j w[row, j] x_q[j] by add / subtract / skip.
template <typename CONFIG_T>
typename bitlinear_types<CONFIG_T>::accum_t
ternary_row(const typename bitlinear_types<CONFIG_T>::quant_t xq[CONFIG_T::n_in],
            const typename CONFIG_T::packed_t weights[CONFIG_T::n_out * CONFIG_T::row_bytes], unsigned row) {
    #pragma HLS INLINE
    typename bitlinear_types<CONFIG_T>::accum_t acc = 0;
    MMFREE_LOOP(BYTES)
    for (unsigned b = 0; b < CONFIG_T::row_bytes; b++) {
        const typename CONFIG_T::packed_t byte = weights[row * CONFIG_T::row_bytes + b];
        MMFREE_LOOP(CODES)
        for (unsigned k = 0; k < 4; k++) {
            const unsigned j = 4 * b + k;
            if (j < CONFIG_T::n_in) {
                const int w = ternary_code(byte, k);
                if (w > 0)
                    acc += xq[j];
                else if (w < 0)
                    acc -= xq[j];
            }
        }
    }
    return acc;
}

// The integer core on its own (x_q given): exact, used to check the accumulator.
template <typename CONFIG_T>
void bitlinear_accumulate(const typename bitlinear_types<CONFIG_T>::quant_t xq[CONFIG_T::n_in],
                          typename bitlinear_types<CONFIG_T>::accum_t acc[CONFIG_T::n_out],
                          const typename CONFIG_T::packed_t weights[CONFIG_T::n_out * CONFIG_T::row_bytes]) {
    MMFREE_LOOP(ROWS)
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
        acc[o] = ternary_row<CONFIG_T>(xq, weights, o);
    }
}

// One read of x: v = x n, max|v|, sum x^2 -> x_q and the per-token output scale
// max|v| / rms(x) / (Q gamma). Returns false when x n is all zeros (then y = 0).
template <class data_T, typename CONFIG_T>
bool bitlinear_quantize(const data_T x[CONFIG_T::n_in],
                        typename bitlinear_types<CONFIG_T>::quant_t xq[CONFIG_T::n_in],
                        typename bitlinear_types<CONFIG_T>::scale_t &scale,
                        const typename CONFIG_T::norm_t norm[CONFIG_T::n_in]) {
    #pragma HLS INLINE
    const unsigned MB = CONFIG_T::mant_bits;
    typedef ap_fixed<data_T::width + CONFIG_T::norm_t::width, data_T::iwidth + CONFIG_T::norm_t::iwidth> prod_t;
    typedef ap_ufixed<prod_t::width, prod_t::iwidth> absval_t; // |v| of a product never needs the sign bit
    typedef ap_fixed<CONFIG_T::quant_bits, 2> vn_t;            // v / max|v| * mant: in (-2, 2)
    const int AB = CONFIG_T::act_bits;
    typedef ap_fixed<AB + 1, AB + 1, AP_RND_CONV, AP_SAT> round_t; // round half to even, like numpy
    const int Q = bitlinear_types<CONFIG_T>::qmax;

    prod_t v[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=v complete
    absval_t vmax = 0;
    typename CONFIG_T::sumsq_t sumsq = 0;
    MMFREE_LOOP(READ)
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        v[i] = x[i] * norm[i];
        const absval_t a = v[i] < 0 ? absval_t(-v[i]) : absval_t(v[i]);
        if (a > vmax)
            vmax = a;
        sumsq += x[i] * x[i];
    }
    if (vmax == 0) {
        for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
            #pragma HLS UNROLL
            xq[i] = 0;
        }
        scale = mmfree::pf_const<MB>(1.0, 0);
        return false;
    }

    // Q / max|v| = (Q r.mant) 2^r.exp
    const mmfree::pfloat<MB> vmax_pf = mmfree::normalise<MB>(vmax);
    const mmfree::pfloat<MB> r = mmfree::reciprocal<MB, CONFIG_T::newton_iterations>(vmax_pf);
    const ap_ufixed<MB + AB + 1, AB + 1> qscale = r.mant * ap_uint<AB>(Q);
    MMFREE_LOOP(QUANT)
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        const vn_t vn = mmfree::mul_pow2<vn_t>(v[i], r.exp);
        round_t z = vn * qscale;
        if (z > Q) // |v| <= max|v|: only a rounding of the scale can push past Q
            z = Q;
        if (z < -Q)
            z = -Q;
        xq[i] = z.to_int();
    }

    // max|x_hat| / (Q gamma) = max|v| * inv_rms(x) * out_scale
    const mmfree::pfloat<MB> ir = mmfree::inv_rms_from_sumsq<CONFIG_T>(sumsq);
    scale = mmfree::pf_mul(mmfree::pf_mul(vmax_pf, ir),
                           mmfree::pf_const<MB>(CONFIG_T::out_scale_mant, CONFIG_T::out_scale_exp));
    return true;
}

template <class data_T, class res_T, typename CONFIG_T>
void bitlinear(const data_T x[CONFIG_T::n_in], res_T y[CONFIG_T::n_out],
               const typename CONFIG_T::norm_t norm[CONFIG_T::n_in],
               const typename CONFIG_T::packed_t weights[CONFIG_T::n_out * CONFIG_T::row_bytes]) {
    static_assert(CONFIG_T::row_bytes % CONFIG_T::reuse_factor == 0, "reuse_factor must divide row_bytes");
    #pragma HLS ARRAY_RESHAPE variable=weights cyclic factor=CONFIG_T::row_bytes / CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable=norm complete
    typedef typename bitlinear_types<CONFIG_T>::accum_t accum_t;
    typedef ap_fixed<accum_t::width, accum_t::width> accum_fixed_t;

    typename bitlinear_types<CONFIG_T>::quant_t xq[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=xq complete
    typename bitlinear_types<CONFIG_T>::scale_t scale;
    bitlinear_quantize<data_T, CONFIG_T>(x, xq, scale, norm);
    MMFREE_LOOP(ROWS)
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
        const accum_fixed_t acc = ternary_row<CONFIG_T>(xq, weights, o);
        // the one rescale: a multiply by the scale mantissa and a shift by its exponent
        y[o] = mmfree::mul_pow2<res_T>(acc * scale.mant, scale.exp);
    }
}

} // namespace nnet

#endif
