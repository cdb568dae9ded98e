// MLGRU token mixer of the MatMul-free LM: the element-wise recurrence and its
// output gate. No matrix touches the state.
//
//   f   = sigma(f_pre);  f = lb + (1 - lb) f     (layer-wise lower bound, l > 0)
//   s_t = f s_{t-1} + silu(i_pre) (1 - f)
//   o   = rms(g_pre; w, eps) * silu(s_t)          (gated RMSNorm, one head)
//
// sigma / silu come from the sigmoid table of nnet_mmfree_common.h; 1/rms from
// its normalise + Newton scalar. reuse_factor R: one pipeline stage at II = R.
#ifndef NNET_MLGRU_H_
#define NNET_MLGRU_H_

#include "nnet_mmfree_common.h"

namespace nnet {

struct mlgru_config {
    static const unsigned n_state = 64;
    static const unsigned reuse_factor = 1;
    static const bool use_lower_bound = true;

    typedef ap_ufixed<26, 1, AP_RND, AP_SAT> gate_t; // f and 1 - f, in [0, 1]
    typedef ap_fixed<32, 12> act_t;                  // silu(i_pre)
    typedef ap_ufixed<26, 1> lower_bound_t;          // lb, in [0, 1)

    static const unsigned sigmoid_table_bits = 11;
    static const int sigmoid_range_bits = 4;
    static const unsigned sigmoid_frac_bits = 16;
    static const bool sigmoid_interpolate = true;
    typedef ap_ufixed<24, 0, AP_RND, AP_SAT> sigmoid_table_t;
};

template <class i_T, class f_T, class s_T, class res_T, typename CONFIG_T>
void mlgru_cell(const i_T i_pre[CONFIG_T::n_state], const f_T f_pre[CONFIG_T::n_state],
                const s_T s_prev[CONFIG_T::n_state], res_T s_new[CONFIG_T::n_state],
                const typename CONFIG_T::lower_bound_t lower_bound[CONFIG_T::n_state]) {
    #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable=lower_bound complete
    typedef typename CONFIG_T::gate_t gate_t;
    MMFREE_LOOP(STATE)
    for (unsigned j = 0; j < CONFIG_T::n_state; j++) {
        #pragma HLS UNROLL
        gate_t f = mmfree::sigmoid_lut<gate_t, f_T, CONFIG_T>(f_pre[j]);
        if (CONFIG_T::use_lower_bound) {
            const typename CONFIG_T::lower_bound_t lb = lower_bound[j];
            f = lb + (gate_t(1) - lb) * f;
        }
        const gate_t one_minus_f = gate_t(1) - f;
        const typename CONFIG_T::act_t a = mmfree::silu_lut<typename CONFIG_T::act_t, i_T, CONFIG_T>(i_pre[j]);
        s_new[j] = f * s_prev[j] + a * one_minus_f;
    }
}

struct gated_rmsnorm_config {
    static const unsigned n_in = 64;
    static const unsigned reuse_factor = 1;

    typedef ap_fixed<24, 4> weight_t;
    typedef ap_ufixed<64, 20> sumsq_t;
    typedef ap_fixed<32, 8> normed_t; // rms(g; w, eps) before the gate
    typedef ap_fixed<32, 12> act_t;   // silu(s)

    static const unsigned mant_bits = 28;
    static const unsigned newton_iterations = 3;
    static constexpr double eps_sum = 64 * 1e-6;
    static constexpr double sqrt_n_mant = 1.0;
    static const int sqrt_n_exp = 3;

    static const unsigned sigmoid_table_bits = 11;
    static const int sigmoid_range_bits = 4;
    static const unsigned sigmoid_frac_bits = 16;
    static const bool sigmoid_interpolate = true;
    typedef ap_ufixed<24, 0, AP_RND, AP_SAT> sigmoid_table_t;
};

template <class g_T, class s_T, class res_T, typename CONFIG_T>
void gated_rmsnorm(const g_T g[CONFIG_T::n_in], const s_T s[CONFIG_T::n_in], res_T y[CONFIG_T::n_in],
                   const typename CONFIG_T::weight_t weight[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable=weight complete
    const mmfree::pfloat<CONFIG_T::mant_bits> r = mmfree::inv_rms<g_T, CONFIG_T, CONFIG_T::n_in>(g);
    MMFREE_LOOP(GATE)
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS UNROLL
        typedef typename CONFIG_T::normed_t normed_t;
        const normed_t gn = mmfree::mul_pow2<normed_t>(g[j] * weight[j] * r.mant, r.exp);
        const typename CONFIG_T::act_t a = mmfree::silu_lut<typename CONFIG_T::act_t, s_T, CONFIG_T>(s[j]);
        y[j] = gn * a;
    }
}

} // namespace nnet

#endif
