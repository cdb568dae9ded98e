// C-simulation fast path of the engine (never synthesised: included only
// outside __SYNTHESIS__ and without MMFREE_NO_FAST_CSIM).
//
// It runs compute_token() itself, unchanged, on a word source that reads the
// weight image directly (no FIFOs) and that hands each BitLinear its weights
// unpacked once to int8 rows. Activations are quantised by the same function,
// accumulated as exact integers (order does not matter) and written back in
// the same row order, so every logit and state value is bit-identical to the
// stream schedule; tests/test_engine_csim.py builds both and compares them.
// The unpacked weights are int16 (not int8) so that g++ turns the dot product
// into pmaddwd on any x86-64 (SSE2) and sdot-free NEON on the boards' Arm cores.
#ifndef MMFREE_CSIM_FAST_H_
#define MMFREE_CSIM_FAST_H_

#include <stdint.h>
#include <string.h>
#include <vector>

#include "mmfree_engine.h"

namespace mmfree {

// A stream word as plain bytes: the parameter records are read every token,
// and field access on a wide ap_uint is the slow part of a C-simulation.
struct fast_word {
    uint8_t b[R];
};

inline int word_field(const fast_word &w, int i) {
    return int(int16_t(uint16_t(w.b[2 * i] | (w.b[2 * i + 1] << 8))));
}

inline int32_t word_value(const fast_word &w, int i) {
    return int32_t(uint32_t(w.b[4 * i]) | (uint32_t(w.b[4 * i + 1]) << 8) | (uint32_t(w.b[4 * i + 2]) << 16) |
                   (uint32_t(w.b[4 * i + 3]) << 24));
}

// Reads words of the image: on chip, R consecutive bytes; streamed, the K
// port regions' slices of the same word.
struct fast_src {
    const uint8_t *image;      // on-chip: the ROM; streamed: the weights buffer
    size_t word;               // words read so far this token
    int matrix_index;
    std::vector<std::vector<int16_t> > *unpacked;

    fast_word read() {
        fast_word w;
        fetch(word, w.b);
        word++;
        return w;
    }

    void fetch(size_t n, uint8_t *bytes) const {
#if MMFREE_K
        for (int k = 0; k < MMFREE_K; k++)
            memcpy(bytes + k * MMFREE_PORT_BYTES,
                   image + MMFREE_HEADER_BYTES + (size_t)k * MMFREE_REGION_STRIDE + n * MMFREE_PORT_BYTES,
                   MMFREE_PORT_BYTES);
#else
        memcpy(bytes, image + n * R, R);
#endif
    }

    // The next matrix's tiles as (rows, cols) int8, unpacked on first use.
    const int16_t *matrix(int rows, int cols, size_t words) {
        std::vector<std::vector<int16_t> > &cache = *unpacked;
        if ((int)cache.size() <= matrix_index) {
            std::vector<int16_t> m((size_t)rows * cols);
            const int n_cg = cols / PER;
            uint8_t bytes[R];
            for (size_t t = 0; t < words; t++) {
                fetch(word + t, bytes);
                const int rb = int(t / n_cg), cg = int(t % n_cg);
                for (int r = 0; r < R; r++) {
                    const unsigned codes = byte_codes(bytes[r], r);
                    for (int k = 0; k < PER; k++)
                        m[(size_t)(rb * R + r) * cols + cg * PER + k] = int16_t(trit_code(codes, k));
                }
            }
            cache.push_back(m);
        }
        word += words;
        return cache[matrix_index++].data();
    }
};

// The dot product of a weight row and the activations: integers, so every
// vector width gives the same sum; on x86-64 the loader picks an AVX2 build
// when the CPU has one (gcc target_clones), else the SSE2 one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static int32_t dot16(const int16_t *w, const int16_t *x, int n) {
    int32_t acc = 0;
    for (int j = 0; j < n; j++)
        acc += int32_t(w[j]) * int32_t(x[j]);
    return acc;
}

template <class LogitStream>
void bitlinear(fast_src &src, engine_state &st, const bl_input &in, int n_in, int n_out, bl_sink &sink,
               LogitStream &logits, counters &ctr) {
    const int n_cg = (n_in + PER - 1) / PER;
    const int n_rb = (n_out + R - 1) / R;
    const int n_in_pad = n_cg * PER;
    const pf inv_gamma = read_inv_gamma(src, ctr);
    const bl_scalars s = bl_prepare(in);
    static int16_t xq[MAX_CG * PER];    // int16: the dot product vectorises to pmaddwd (SSE2)
    // i, f and g read the same vector with the same group: their sums of squares are the same
    // integers, so the second and third reuse the first's (nothing writes the input in between:
    // only a plain write-back came since, and it never targets an input vector).
    static bool sums_valid = false;
    static int sums_in = -1, sums_grp = -1, sums_sha = -1, sums_shx = -1;
    static u64 sums_a = 0, sums_x = 0;
    const bool reuse = sums_valid && sums_in == in.in_sel && sums_grp == in.grp_sel && sums_sha == s.sh_a &&
                       sums_shx == s.sh_x;
    // the selectors resolved once per call (C-sim only): the same arithmetic on the same values
    const vec_t *xv = in.in_sel == IN_X ? st.x : (in.in_sel == IN_O ? st.o : st.z);
    const group_params &g = in.grp_sel == GRP_ATTN ? st.attn : in.grp_sel == GRP_MLP ? st.mlp
                          : in.grp_sel == GRP_O ? st.o_grp : st.z_grp;
    const norm_t *cv = in.k == 0 ? g.c0 : (in.k == 1 ? g.c1 : g.c2);
    u64 sa = 0, sx = 0;
    for (int j = 0; j < n_in; j++) {
        const i64 x = xv[j];
        xq[j] = s.zero ? act_t(0) : bl_quantise_value(s, x, cv[j]);
        if (!reuse)
            bl_square_sums_value(s, x, in.has_a ? mul_exact(x, g.a[j]) : x, sa, sx);
    }
    for (int j = n_in; j < n_in_pad; j++)
        xq[j] = 0;
    if (reuse) {
        sa = sums_a;
        sx = sums_x;
    }
    sums_valid = sink.kind == SINK_PLAIN;
    sums_in = in.in_sel;
    sums_grp = in.grp_sel;
    sums_sha = s.sh_a;
    sums_shx = s.sh_x;
    sums_a = sa;
    sums_x = sx;
    const int16_t *wrows = src.matrix(n_rb * R, n_in_pad, (size_t)n_rb * n_cg);
    const mant24 sc = bl_out_scale(in, s, sa, sx, inv_gamma);
    for (int row = 0; row < n_out; row++) {
        const int32_t acc = dot16(wrows + (size_t)row * n_in_pad, xq, n_in_pad);
        sink_put(st, sink, logits, row, s.zero ? i64(0) : bl_rescale(acc, sc), ctr);
    }
    // the same cycles the stream schedule counts
    MMFREE_COUNT(ctr, SCALAR_RECIP + n_cg + DEPTH_MAC + SCALAR_RSQRT + (n_rb - 1) * n_cg + R + DEPTH_MAC);
}

struct float_writer {           // logits straight into the host's buffer
    float *out;
    int n;
    void write(float v) { out[n++] = v; }
};

inline int fast_step(const float *x_in, float *state, float *logits, const unsigned char *weights,
                     engine_state &st, counters &ctr_out) {
#if MMFREE_K
    const uint8_t *image = weights;
#else
    (void)weights;
    const uint8_t *image = MMFREE_IMAGE;
#endif
    // int8 copies of the weights, keyed by the image they came from
    static std::vector<std::vector<int16_t> > unpacked;
    static const uint8_t *unpacked_from = NULL;
    static uint8_t first_word[R];
    uint8_t probe[R];
    fast_src src = {image, 0, 0, &unpacked};
    src.fetch(MMFREE_WORDS - 1, probe);
    if (image != unpacked_from || memcmp(probe, first_word, R) != 0) {
        unpacked.clear();
        unpacked_from = image;
        memcpy(first_word, probe, R);
    }
    counters ctr = {0, false};
    float_writer sink = {logits, 0};
    const int status = compute_token(src, st, x_in, state, sink, ctr);
    ctr_out = ctr;
    return status;
}

} // namespace mmfree

#endif
