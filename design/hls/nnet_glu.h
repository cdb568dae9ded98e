// Gated linear unit of the MatMul-free LM's channel mixer:
//   gate, up = split(u, 2);  y = silu(gate) * up
// silu through the sigmoid table of nnet_mmfree_common.h.
#ifndef NNET_GLU_H_
#define NNET_GLU_H_

#include "nnet_mmfree_common.h"

namespace nnet {

struct glu_config {
    static const unsigned n_out = 64; // m; the input has 2 m values
    static const unsigned reuse_factor = 1;

    typedef ap_fixed<32, 12> act_t; // silu(gate)

    static const unsigned sigmoid_table_bits = 11;
    static const int sigmoid_range_bits = 4;
    static const unsigned sigmoid_frac_bits = 16;
    static const bool sigmoid_interpolate = true;
    typedef ap_ufixed<24, 0, AP_RND, AP_SAT> sigmoid_table_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void glu(const data_T u[2 * CONFIG_T::n_out], res_T y[CONFIG_T::n_out]) {
    #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
    MMFREE_LOOP(GATE)
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        #pragma HLS UNROLL
        const typename CONFIG_T::act_t g = mmfree::silu_lut<typename CONFIG_T::act_t, data_T, CONFIG_T>(u[j]);
        y[j] = g * u[CONFIG_T::n_out + j];
    }
}

} // namespace nnet

#endif
