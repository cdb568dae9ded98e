// Shared arithmetic of the MatMul-free LM kernels (hls4ml nnet_utils style).
//
// Everything here is synthesisable fixed-point: no float, no division.
//
//   * mul_pow2      v * 2^k into any ap_fixed type (a barrel shift with
//                   round-half-up and saturation): how a block exponent is
//                   applied or removed.
//   * pfloat        a positive scalar as mantissa * 2^exp, mantissa in [1, 2):
//                   the block-floating-point scalar that carries 1/absmax,
//                   1/sqrt(mean x^2) and the per-tensor weight scale between
//                   steps, so their precision does not depend on magnitude.
//   * reciprocal / rsqrt
//                   normalise to [1, 2) (resp. [1, 4)), seed from a 16-entry
//                   (resp. 24-entry) table (relative error <= 3.1 %), then
//                   Newton iterations: y <- y (2 - a y)  resp.
//                   y <- y (3/2 - a y^2 / 2). Each iteration squares the
//                   relative error (x1.5 for rsqrt): 3 iterations reach
//                   < 2^-29, so the result is exact to the mantissa width
//                   (mant_bits) up to ~2 ulp.
//   * sigmoid_lut / silu
//                   sigma on [0, R] from a table of N + 1 points with linear
//                   interpolation, sigma(-x) = 1 - sigma(x); beyond R it
//                   saturates to the last point. Error <= (R/N)^2 / 8 *
//                   max|sigma''| (0.0962) + table rounding + the tail
//                   1 - sigma(R); with the defaults (R = 16, N = 2048,
//                   24-bit table) below 9e-7. silu(x) = x * sigma(x).
#ifndef NNET_MMFREE_COMMON_H_
#define NNET_MMFREE_COMMON_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include <cmath>

// Loop labels name the loops in Vitis HLS reports; g++ builds (the C-simulation)
// drop them so that -Wall has no unused labels to report.
#ifdef __SYNTHESIS__
#define MMFREE_LOOP(name) name:
#else
#define MMFREE_LOOP(name)
#endif

namespace nnet {
namespace mmfree {

// ------------------------------------------------------------ sizes
constexpr int ceil_log2(unsigned long long n) { return n <= 1 ? 0 : 1 + ceil_log2((n + 1) / 2); }

// Bits of the signed ternary accumulator for n_in activations of act_bits bits
// (|x_q| <= qmax = 2^(act_bits-1) - 1): |sum| <= qmax n_in < 2^ceil(log2(2^(act_bits-1) n_in)),
// plus the sign. For int8: ceil(log2(128 n_in)) + 1.
constexpr int accum_bits(unsigned long long n_in, unsigned act_bits = 8) {
    return ceil_log2(n_in << (act_bits - 1)) + 1;
}

constexpr int imax(int a, int b) { return a > b ? a : b; }

// Exact type of sum_{i<n} x_i^2 for x of type ap_fixed<W, I>: no rounding, no overflow.
template <class x_T, unsigned N> struct exact_sumsq {
    typedef ap_ufixed<2 * x_T::width + ceil_log2(N), 2 * x_T::iwidth + ceil_log2(N)> type;
};

// Signedness of an ap_fixed / ap_ufixed type, at compile time.
template <class T> struct fixed_sign;
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct fixed_sign<ap_fixed<W, I, Q, O, N> > {
    static const bool value = true;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct fixed_sign<ap_ufixed<W, I, Q, O, N> > {
    static const bool value = false;
};
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N> struct fixed_sign<ap_fixed_base<W, I, S, Q, O, N> > {
    static const bool value = S;
};

// ------------------------------------------------------------ powers of two
// floor(log2(v)) for v > 0, from a leading-zero count of the raw bits.
template <class T> int floor_log2(T v) { return T::iwidth - 1 - v.countLeadingZeros(); }

// Round(v * 2^k) into out_T: raw-bit shift, round half up, saturate to out_T's range.
// A left shift that would leave out_T's range saturates before it is made, so the
// intermediate needs only max(W_in, W_out) + 2 bits (one barrel shifter of that width).
template <class out_T, class in_T> out_T mul_pow2(in_T v, int k) {
    #pragma HLS INLINE
    const int WI = in_T::width;
    const int WO = out_T::width;
    const int WT = imax(WI, WO) + 2;
    typedef ap_int<WT> wide_t;

    wide_t raw;
    if (fixed_sign<in_T>::value) {
        ap_int<WI> r;
        r.range(WI - 1, 0) = v.range(WI - 1, 0);
        raw = r;
    } else {
        ap_uint<WI> r;
        r.range(WI - 1, 0) = v.range(WI - 1, 0);
        raw = r;
    }
    // value = raw * 2^(iwidth - width); output raw = value * 2^k / 2^(out.iwidth - out.width)
    const int d = (in_T::iwidth - WI) + k - (out_T::iwidth - WO);

    const wide_t out_max = fixed_sign<out_T>::value ? ((wide_t(1) << (WO - 1)) - 1) : ((wide_t(1) << WO) - 1);
    const wide_t out_min = fixed_sign<out_T>::value ? wide_t(-(wide_t(1) << (WO - 1))) : wide_t(0);

    wide_t res;
    if (raw == 0) {
        res = 0;
    } else if (d >= 0) {
        if (d >= WO) {
            res = raw > 0 ? out_max : out_min; // |raw| >= 1: out of any WO-bit range
        } else if (raw > (out_max >> d)) {
            res = out_max;
        } else if (raw < (out_min >> d)) {
            res = out_min;
        } else {
            res = raw << d;
        }
    } else {
        const int s = -d;
        if (s >= WT - 1) {
            res = 0; // |value| < 1/2
        } else {
            res = (raw + (wide_t(1) << (s - 1))) >> s; // arithmetic shift: round half up
        }
        if (res > out_max)
            res = out_max;
        if (res < out_min)
            res = out_min;
    }

    out_T out;
    out.range(WO - 1, 0) = res.range(WO - 1, 0);
    return out;
}

// ------------------------------------------------------------ block floating point
template <unsigned MANT_BITS> struct pfloat {
    // mantissa in [1, 2) with MANT_BITS fractional bits; two integer bits leave
    // room for the carry of a rounding before renormalise() folds it back.
    typedef ap_ufixed<MANT_BITS + 2, 2, AP_RND, AP_SAT> mant_t;
    mant_t mant;
    int exp;

    void renormalise() {
        #pragma HLS INLINE
        if (mant >= 2) {
            mant = mant >> 1;
            exp += 1;
        }
    }
};

// v (> 0) as mant * 2^exp.
template <unsigned MANT_BITS, class in_T> pfloat<MANT_BITS> normalise(in_T v) {
    #pragma HLS INLINE
    pfloat<MANT_BITS> p;
    p.exp = floor_log2(v);
    p.mant = mul_pow2<typename pfloat<MANT_BITS>::mant_t>(v, -p.exp);
    p.renormalise();
    return p;
}

template <unsigned MANT_BITS> pfloat<MANT_BITS> pf_mul(pfloat<MANT_BITS> a, pfloat<MANT_BITS> b) {
    #pragma HLS INLINE
    pfloat<MANT_BITS> p;
    ap_ufixed<MANT_BITS + 3, 3, AP_RND, AP_SAT> m = a.mant * b.mant; // [1, 4)
    p.exp = a.exp + b.exp;
    if (m >= 2) {
        m = m >> 1;
        p.exp += 1;
    }
    p.mant = m;
    p.renormalise();
    return p;
}

// A compile-time constant given as a mantissa in [1, 2) (a double literal, exact
// to 52 bits) and a power of two: value = mant * 2^exp.
template <unsigned MANT_BITS> pfloat<MANT_BITS> pf_const(double mant, int exp) {
    #pragma HLS INLINE
    pfloat<MANT_BITS> p;
    p.mant = mant;
    p.exp = exp;
    p.renormalise();
    return p;
}

// 1 / a. Seed: 1 / (centre of a's 1/16 bin), |error| <= 3.1 %.
template <unsigned MANT_BITS, unsigned ITER> pfloat<MANT_BITS> reciprocal(pfloat<MANT_BITS> a) {
    #pragma HLS INLINE
    typedef typename pfloat<MANT_BITS>::mant_t m_t;
    static const double seed[16] = {0.9696969697, 0.9142857143, 0.8648648649, 0.8205128205,
                                    0.7804878049, 0.7441860465, 0.7111111111, 0.6808510638,
                                    0.6530612245, 0.6274509804, 0.6037735849, 0.5818181818,
                                    0.5614035088, 0.5423728814, 0.5245901639, 0.5079365079};
    const unsigned idx = a.mant.range(MANT_BITS - 1, MANT_BITS - 4).to_uint();
    m_t y = seed[idx];
    for (unsigned it = 0; it < ITER; it++) {
        #pragma HLS UNROLL
        m_t ay = a.mant * y;  // ~1
        m_t t = m_t(2) - ay;  // ~1
        y = y * t;
    }
    // 1/(m 2^e) = y 2^-e with y in (0.5, 1]: bring y back to [1, 2)
    pfloat<MANT_BITS> r;
    r.mant = y << 1;
    r.exp = -a.exp - 1;
    r.renormalise();
    return r;
}

// 1 / sqrt(a). The exponent is made even first so the mantissa lands in [1, 4);
// seed: 1/sqrt(centre of a's 1/8 bin), |error| <= 3.1 %.
template <unsigned MANT_BITS, unsigned ITER> pfloat<MANT_BITS> rsqrt(pfloat<MANT_BITS> a) {
    #pragma HLS INLINE
    typedef typename pfloat<MANT_BITS>::mant_t m_t;
    typedef ap_ufixed<MANT_BITS + 3, 3, AP_RND, AP_SAT> a_t; // [1, 4)
    static const double seed[24] = {0.9701425001, 0.9176629355, 0.8728715609, 0.8340576562, 0.8000000000,
                                    0.7698003589, 0.7427813527, 0.7184212081, 0.6963106238, 0.6761234038,
                                    0.6575959492, 0.6405126152, 0.6246950476, 0.6099942813, 0.5962847940,
                                    0.5834599660, 0.5714285714, 0.5601120336, 0.5494422558, 0.5393598900,
                                    0.5298129428, 0.5207556439, 0.5121475197, 0.5039526307};
    a_t m = a.mant;
    int e = a.exp;
    if (e & 1) { // odd exponent (two's complement works for negatives too)
        m = m << 1;
        e -= 1;
    }
    const unsigned idx = m.range(MANT_BITS + 1, MANT_BITS - 3).to_uint(); // 8 * m, in 8..31
    m_t y = seed[idx - 8];
    for (unsigned it = 0; it < ITER; it++) {
        #pragma HLS UNROLL
        m_t y2 = y * y;
        a_t ay2 = m * y2;                          // ~1
        m_t t = m_t(1.5) - (ay2 >> 1);             // ~1
        y = y * t;
    }
    // 1/sqrt(m 4^(e/2)) = y 2^(-e/2), y in (0.5, 1]
    pfloat<MANT_BITS> r;
    r.mant = y << 1;
    r.exp = -(e / 2) - 1;
    r.renormalise();
    return r;
}

// ------------------------------------------------------------ sigmoid / silu
// sigma on [0, R] from a table of N + 1 points (N = 2^TB, R = 2^RB), linear
// interpolation with FB bits of the position; sigma(-x) = 1 - sigma(x) covers
// x < 0 and sigma saturates to the last point beyond R. The table depends on
// (table type, N, R) only, so layers with the same settings share it.
template <class table_T, int TB, int RB> void init_sigmoid_table(table_T table[(1 << TB) + 1]) {
    const int N = 1 << TB;
    const double R = double(1 << RB);
    for (int k = 0; k <= N; k++) {
        const double x = R * double(k) / double(N);
        table[k] = 1.0 / (1.0 + std::exp(-x));
    }
}

// sigma(x) with one integer bit, so that 1 - sigma and sigma = 1 are exact.
template <class table_T, int TB, int RB, int FB, bool INTERP, class in_T>
ap_ufixed<table_T::width + 1, 1> sigmoid_core(in_T x) {
    #pragma HLS INLINE
    const int N = 1 << TB;
    const int SHIFT_FRAC = FB + TB - RB;
    static_assert(SHIFT_FRAC >= 0, "sigmoid table: frac_bits + log2(table_size) must be >= log2(range)");
    typedef ap_ufixed<table_T::width + 1, 1> sig_t;

#ifdef __HLS_SYN__
    bool initialized = false;
    table_T table[N + 1];
#else
    static bool initialized = false;
    static table_T table[N + 1];
#endif
    if (!initialized) {
        init_sigmoid_table<table_T, TB, RB>(table);
        initialized = true;
    }

    typedef ap_ufixed<in_T::width, in_T::iwidth> abs_t; // |x| fits: the sign bit becomes a magnitude bit
    const bool negative = x < 0;
    const abs_t ax = negative ? abs_t(-x) : abs_t(x);
    sig_t s;
    if (ax >= (1 << RB)) {
        s = table[N];
    } else {
        // u = |x| N / R in [0, N): the raw bits of |x| read with the binary point moved
        // by TB - RB places (an exact multiplication by a power of two).
        ap_ufixed<RB + SHIFT_FRAC, RB> xr = ax; // truncates: floor
        ap_ufixed<TB + FB, TB> u;
        u.range(TB + FB - 1, 0) = xr.range(TB + FB - 1, 0);
        const unsigned k = u.range(TB + FB - 1, FB).to_uint();
        ap_ufixed<FB, 0> frac;
        frac.range(FB - 1, 0) = u.range(FB - 1, 0);
        if (INTERP) {
            const table_T lo = table[k];
            const table_T hi = table[k + 1];
            s = lo + frac * (hi - lo); // sigma is increasing: hi >= lo
        } else {
            s = frac[FB - 1] ? table[k + 1] : table[k]; // nearest grid point
        }
    }
    return negative ? sig_t(sig_t(1) - s) : s;
}

// CONFIG_T provides: sigmoid_table_bits (N = 2^bits), sigmoid_range_bits (R = 2^bits),
// sigmoid_frac_bits, sigmoid_interpolate, sigmoid_table_t.
template <class out_T, class in_T, class CONFIG_T> out_T sigmoid_lut(in_T x) {
    #pragma HLS INLINE
    return out_T(sigmoid_core<typename CONFIG_T::sigmoid_table_t, CONFIG_T::sigmoid_table_bits,
                              CONFIG_T::sigmoid_range_bits, CONFIG_T::sigmoid_frac_bits,
                              CONFIG_T::sigmoid_interpolate, in_T>(x));
}

template <class out_T, class in_T, class CONFIG_T> out_T silu_lut(in_T x) {
    #pragma HLS INLINE
    typedef typename CONFIG_T::sigmoid_table_t table_t;
    const ap_ufixed<table_t::width + 1, 1> s = sigmoid_lut<ap_ufixed<table_t::width + 1, 1>, in_T, CONFIG_T>(x);
    return out_T(x * s);
}

// ------------------------------------------------------------ 1 / rms
// 1 / sqrt(mean(x^2) + eps) as a pfloat, from the exact sum of squares S:
//   1/sqrt(S/n + eps) = sqrt(n) / sqrt(S + n eps).
// CONFIG_T provides sumsq_t, eps_sum (= n eps), sqrt_n_mant / sqrt_n_exp
// (sqrt(n) = mant 2^exp), mant_bits, newton_iterations.
template <class CONFIG_T> pfloat<CONFIG_T::mant_bits> inv_rms_from_sumsq(typename CONFIG_T::sumsq_t sumsq) {
    #pragma HLS INLINE
    const typename CONFIG_T::sumsq_t eps = CONFIG_T::eps_sum;
    sumsq += eps;
    if (sumsq == 0) {
        // eps rounds to 0 in sumsq_t and x is all zeros: the output is 0 whatever the scale
        return pf_const<CONFIG_T::mant_bits>(1.0, 0);
    }
    pfloat<CONFIG_T::mant_bits> r =
        rsqrt<CONFIG_T::mant_bits, CONFIG_T::newton_iterations>(normalise<CONFIG_T::mant_bits>(sumsq));
    return pf_mul(r, pf_const<CONFIG_T::mant_bits>(CONFIG_T::sqrt_n_mant, CONFIG_T::sqrt_n_exp));
}

template <class x_T, class CONFIG_T, unsigned N> pfloat<CONFIG_T::mant_bits> inv_rms(const x_T x[N]) {
    #pragma HLS INLINE
    typename CONFIG_T::sumsq_t sumsq = 0;
    for (unsigned i = 0; i < N; i++) {
        #pragma HLS UNROLL
        sumsq += x[i] * x[i];
    }
    return inv_rms_from_sumsq<CONFIG_T>(sumsq);
}

} // namespace mmfree
} // namespace nnet

#endif
