// RMSNorm of the MatMul-free LM: y = x / sqrt(mean(x^2) + eps) * w.
//
// The sum of squares is exact (sumsq_t wide enough by default), 1/sqrt is the
// normalise + Newton block-floating-point scalar of nnet_mmfree_common.h, and
// each output is x_i w_i times its mantissa, shifted by its exponent.
// reuse_factor R: the whole vector is one pipeline stage at II = R (hls4ml's
// io_parallel style), so multipliers are shared R ways.
#ifndef NNET_RMSNORM_H_
#define NNET_RMSNORM_H_

#include "nnet_mmfree_common.h"

namespace nnet {

struct rmsnorm_config {
    static const unsigned n_in = 64;
    static const unsigned reuse_factor = 1;

    typedef ap_fixed<24, 4> weight_t;
    typedef ap_ufixed<64, 20> sumsq_t;

    static const unsigned mant_bits = 28;
    static const unsigned newton_iterations = 3;

    static constexpr double eps_sum = 64 * 1e-6; // n_in * eps
    static constexpr double sqrt_n_mant = 1.0;   // sqrt(n_in) = mant 2^exp
    static const int sqrt_n_exp = 3;
};

template <class data_T, class res_T, typename CONFIG_T>
void rmsnorm(const data_T x[CONFIG_T::n_in], res_T y[CONFIG_T::n_in],
             const typename CONFIG_T::weight_t weight[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable=weight complete
    const mmfree::pfloat<CONFIG_T::mant_bits> r = mmfree::inv_rms<data_T, CONFIG_T, CONFIG_T::n_in>(x);
    MMFREE_LOOP(SCALE)
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        y[i] = mmfree::mul_pow2<res_T>(x[i] * weight[i] * r.mant, r.exp);
    }
}

} // namespace nnet

#endif
