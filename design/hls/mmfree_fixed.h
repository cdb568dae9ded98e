// Integer arithmetic of the decode engine: saturation, rounding shifts, bit
// lengths and the scalar unit's pseudo-float (1/x, 1/sqrt(x)).
//
// Every value in the engine is an integer with a known binary point; this
// header is the one place that narrows, rounds or normalises one. Each
// product is written on operands that fit one DSP48 (25 x 18 signed on
// Zynq-7000, 27 x 18 on UltraScale+): the callers narrow first, here.
//
// Types. Vitis HLS synthesises the ap_int types; the C-simulation (outside
// __SYNTHESIS__, unless MMFREE_NO_FAST_CSIM) computes the same integers in
// native int64, which is bit-identical because every narrowing below
// saturates or shifts before it assigns (no value ever wraps).
// tests/test_engine_csim.py builds both and checks them equal.
#ifndef MMFREE_FIXED_H_
#define MMFREE_FIXED_H_

#include <stdint.h>

#include "ap_int.h"
#include "engine_tables.h"   // generated: Newton seeds, sigma table, 5-trit decode table

#if !defined(__SYNTHESIS__) && !defined(MMFREE_NO_FAST_CSIM)
#define MMFREE_FAST_CSIM 1
#endif

namespace mmfree {

#ifdef MMFREE_FAST_CSIM
template <int W> struct sint { typedef int64_t t; };
template <int W> struct uint { typedef uint64_t t; };
#else
template <int W> struct sint { typedef ap_int<W> t; };
template <int W> struct uint { typedef ap_uint<W> t; };
#endif

typedef int64_t i64;
typedef uint64_t u64;

// Clamp to the W-bit two's complement range; sets the sticky flag when it clips.
template <int W> inline i64 sat(i64 v, bool &clipped) {
    #pragma HLS INLINE
    const i64 hi = (i64(1) << (W - 1)) - 1;
    const i64 lo = -(i64(1) << (W - 1));
    if (v > hi) { clipped = true; return hi; }
    if (v < lo) { clipped = true; return lo; }
    return v;
}

// Round-half-away-from-zero right shift (sh >= 0); a left shift when sh < 0.
inline i64 rshift_round(i64 v, int sh) {
    #pragma HLS INLINE
    if (sh <= 0)
        return v << (-sh);
    // |v| rounded, then the sign put back: written without a branch on the sign
    // (random signs made it the most mispredicted branch of the C-simulation)
    const i64 neg = v >> 63;                          // 0 or -1
    const i64 mag = (v ^ neg) - neg;
    const i64 r = (mag + (i64(1) << (sh - 1))) >> sh;
    return (r ^ neg) - neg;
}

// Number of significant bits of v (0 for v == 0): a priority encoder.
inline int bitlen(u64 v) {
    #pragma HLS INLINE
#ifdef MMFREE_FAST_CSIM
    return v == 0 ? 0 : 64 - __builtin_clzll(v);
#else
    int n = 0;
    BITLEN:
    for (int b = 0; b < 64; b++) {
        #pragma HLS UNROLL
        if ((v >> b) & 1)
            n = b + 1;
    }
    return n;
#endif
}

inline u64 absval(i64 v) {
    #pragma HLS INLINE
    return v < 0 ? u64(-v) : u64(v);
}

// Shift that narrows a value whose magnitude is at most `bound` to `bits` bits (sign included).
inline int narrow_shift(u64 bound, int bits) {
    #pragma HLS INLINE
    const int s = bitlen(bound) - (bits - 1);
    return s > 0 ? s : 0;
}

// ------------------------------------------------------------------ products
// a (<= 25 bits signed) x b (<= 18 bits signed): one DSP48.
inline i64 mul_25x18(i64 a, i64 b) {
    #pragma HLS INLINE
    const typename sint<25>::t a_ = a;
    const typename sint<18>::t b_ = b;
    return i64(a_ * b_);
}

// a (<= 25 bits) x b (<= 25 bits), exact: a x (b >> 7) on one DSP48 plus
// a x (b & 127), a 25 x 7 multiplier in LUTs. The precise products of the
// vector unit (sigma, gates, rescale) use it.
inline i64 mul_wide(i64 a, i64 b) {
    #pragma HLS INLINE
    return (mul_25x18(a, b >> 7) << 7) + a * (b & 127);
}

// ------------------------------------------------------------------ scalar unit
// Pseudo-float m * 2^e with m in [2^23, 2^24) (or 0). The scalar unit works
// on these between matrices, a few operations per BitLinear: pf_norm, pf_mul
// and pf_add are not inlined and each is allocated once (ALLOCATION in the
// BitLinear), so the 64-bit normalising shifters exist once, used in turn.
struct pf {
    u64 m;
    int e;
};

static const int PF_BITS = 24;

inline pf pf_norm(u64 v, int e) {
    #pragma HLS INLINE off
    pf r;
    if (v == 0) { r.m = 0; r.e = 0; return r; }
    const int bl = bitlen(v);
    if (bl > PF_BITS) { r.m = v >> (bl - PF_BITS); r.e = e + bl - PF_BITS; }
    else { r.m = v << (PF_BITS - bl); r.e = e - (PF_BITS - bl); }
    return r;
}

inline pf pf_make(u64 m, int e) { return pf_norm(m, e); }

// 24 x 24 bits as two DSP-sized products (24 x 17 and 24 x 7).
inline pf pf_mul(pf a, pf b) {
    #pragma HLS INLINE off
    const typename uint<24>::t am = a.m;
    const typename uint<17>::t bh = b.m >> 7;
    const typename uint<7>::t bl = b.m & 0x7F;
    const u64 p = (u64(am * bh) << 7) + u64(am * bl);
    return pf_norm(p, a.e + b.e);
}

inline pf pf_add(pf a, pf b) {
    #pragma HLS INLINE off
    if (a.m == 0) return b;
    if (b.m == 0) return a;
    // align to the smaller exponent (at most 40 bits apart, else the smaller vanishes)
    const int d = a.e - b.e;
    if (d > 40) return a;
    if (d < -40) return b;
    const int e = d >= 0 ? b.e : a.e;
    const u64 s = (a.m << (a.e - e)) + (b.m << (b.e - e));
    return pf_norm(s, e);
}

// k - t for t near 1 (Newton steps): fixed point with 40 fraction bits.
inline pf pf_const_minus(u64 k, pf t) {
    #pragma HLS INLINE
    const int sh = t.e + 40;
    const u64 tf = sh >= 0 ? t.m << sh : t.m >> (-sh);
    const u64 kf = k << 40;
    return pf_norm(kf > tf ? kf - tf : 0, -40);
}

// 1/x: seed from the top 6 mantissa bits, then y <- y (2 - x y), three times.
inline pf pf_recip(pf x) {
    #pragma HLS INLINE off
    pf y;
    y.m = RECIP_SEED[(x.m >> (PF_BITS - 7)) & 63];
    y.e = -x.e - 2 * PF_BITS + 1;
    RECIP_NEWTON:
    for (int it = 0; it < 3; it++)
        y = pf_mul(y, pf_const_minus(2, pf_mul(x, y)));
    return y;
}

// 1/sqrt(x): even exponent, seed on [1, 4), then y <- y (3 - x y^2) / 2, three times.
inline pf pf_rsqrt(pf x) {
    #pragma HLS INLINE off
    // x = m 2^e with m in [2^23, 2^24): make e + 23 even so sqrt splits cleanly
    int e = x.e + (PF_BITS - 1);          // x = (m / 2^23) 2^e, m / 2^23 in [1, 2)
    unsigned idx = (x.m >> (PF_BITS - 6)) & 31; // top 5 fraction bits
    if (e & 1) { idx += 32; e -= 1; }     // mantissa in [2, 4)
    pf y;
    y.m = RSQRT_SEED[idx];                // 2^24 / sqrt(value in [1, 4)) in [2^22, 2^24]
    y.e = -PF_BITS - e / 2;
    y = pf_norm(y.m, y.e);
    RSQRT_NEWTON:
    for (int it = 0; it < 3; it++) {
        pf t = pf_mul(x, pf_mul(y, y));
        pf u = pf_const_minus(3, t);
        u.e -= 1;                         // / 2
        y = pf_mul(y, u);
    }
    return y;
}

// A pseudo-float as a 24-bit mantissa and a right shift: v * p ~ (v * m) >> s.
struct mant24 {
    i64 m;
    int s;
};

inline mant24 pf_to_mant24(pf p) {
    #pragma HLS INLINE
    mant24 r;
    r.m = i64(p.m);               // [2^23, 2^24): fits 25 bits signed
    r.s = -p.e;
    return r;
}

} // namespace mmfree

#endif
