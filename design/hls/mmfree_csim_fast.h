// C-simulation fast path of the engine (never synthesised: included only
// outside __SYNTHESIS__ and without MMFREE_NO_FAST_CSIM).
//
// It runs compute_pass() itself, unchanged, on a word source that reads the
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
// vector width gives the same sum; on x86-64 the loader picks the widest build
// the CPU has (gcc target_clones), else the SSE2 one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMFREE_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#else
#define MMFREE_CLONES
#endif

MMFREE_CLONES
static int32_t dot16(const int16_t *w, const int16_t *x, int n) {
    int32_t acc = 0;
    for (int j = 0; j < n; j++)
        acc += int32_t(w[j]) * int32_t(x[j]);
    return acc;
}

// Four lanes against one weight row: each weight is loaded once for four
// products (a pass over several lanes is compute-bound, not load-bound).
MMFREE_CLONES
static void dot16x4(const int16_t *w, const int16_t *x0, const int16_t *x1, const int16_t *x2,
                    const int16_t *x3, int n, int32_t out[4]) {
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int j = 0; j < n; j++) {
        const int32_t wj = w[j];
        a0 += wj * int32_t(x0[j]);
        a1 += wj * int32_t(x1[j]);
        a2 += wj * int32_t(x2[j]);
        a3 += wj * int32_t(x3[j]);
    }
    out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
}

template <class LogitStream>
void bitlinear(fast_src &src, engine_state &st, const bl_input &in, int n, int n_in, int n_out, bl_sink &sink,
               LogitStream &logits, counters &ctr) {
    const int n_cg = (n_in + PER - 1) / PER;
    const int n_rb = (n_out + R - 1) / R;
    const int n_in_pad = n_cg * PER;
    const pf inv_gamma = read_inv_gamma(src, ctr);
    bl_scalars s[N];
    bl_prepare_lanes(in, n, s, ctr);
    static int16_t xq[N][MAX_CG * PER];  // int16: the dot product vectorises to pmaddwd (SSE2)
    // i, f and g read the same vectors with the same group: their sums of squares are the same
    // integers, so the second and third reuse the first's (nothing writes the input in between:
    // only a plain write-back came since, and it never targets an input vector).
    static bool sums_valid = false;
    static int sums_in = -1, sums_grp = -1, sums_n = -1;
    static int sums_sha[N], sums_shx[N];
    static u64 sums_a[N], sums_x[N];
    bool reuse = sums_valid && sums_in == in.in_sel && sums_grp == in.grp_sel && sums_n == n;
    for (int t = 0; t < n && reuse; t++)
        reuse = sums_sha[t] == s[t].sh_a && sums_shx[t] == s[t].sh_x;
    // the selectors resolved once per call (C-sim only): the same arithmetic on the same values
    const group_params &g = in.grp_sel == GRP_ATTN ? st.attn : in.grp_sel == GRP_MLP ? st.mlp
                          : in.grp_sel == GRP_O ? st.o_grp : st.z_grp;
    const norm_t *cv = in.k == 0 ? g.c0 : (in.k == 1 ? g.c1 : g.c2);
    u64 sa[N] = {}, sx[N] = {};           // lanes past n stay 0 (never read)
    for (int t = 0; t < n; t++) {
        const vec_t *xv = in.in_sel == IN_X ? st.x[t] : (in.in_sel == IN_O ? st.o[t] : st.z[t]);
        sa[t] = sx[t] = 0;
        for (int j = 0; j < n_in; j++) {
            const i64 x = xv[j];
            xq[t][j] = s[t].zero ? act_t(0) : bl_quantise_value(s[t], x, cv[j]);
            if (!reuse)
                bl_square_sums_value(s[t], x, in.has_a ? mul_exact(x, g.a[j]) : x, sa[t], sx[t]);
        }
        for (int j = n_in; j < n_in_pad; j++)
            xq[t][j] = 0;
        if (reuse) {
            sa[t] = sums_a[t];
            sx[t] = sums_x[t];
        }
        sums_sha[t] = s[t].sh_a;
        sums_shx[t] = s[t].sh_x;
        sums_a[t] = sa[t];
        sums_x[t] = sx[t];
    }
    sums_valid = sink.kind == SINK_PLAIN;
    sums_in = in.in_sel;
    sums_grp = in.grp_sel;
    sums_n = n;
    const int16_t *wrows = src.matrix(n_rb * R, n_in_pad, (size_t)n_rb * n_cg);
    mant24 sc[N];
    bl_out_scale_lanes(in, n, s, sa, sx, inv_gamma, sc, ctr);
    // Blocked like a GEMM: a block of weight rows stays in L2 while each group of four lanes
    // (in L1) runs over it; the write-back then takes the block's rows in order, every lane at once.
    static const int ROW_BLOCK = 32;
    static int32_t acc[ROW_BLOCK][N + 3];
    i64 y[N];
    for (int r0 = 0; r0 < n_out; r0 += ROW_BLOCK) {
        const int rows = n_out - r0 < ROW_BLOCK ? n_out - r0 : ROW_BLOCK;
        int t = 0;
        for (; t + 4 <= n; t += 4)
            for (int r = 0; r < rows; r++)
                dot16x4(wrows + (size_t)(r0 + r) * n_in_pad, xq[t], xq[t + 1], xq[t + 2], xq[t + 3], n_in_pad,
                        acc[r] + t);
        for (; t < n; t++)
            for (int r = 0; r < rows; r++)
                acc[r][t] = dot16(wrows + (size_t)(r0 + r) * n_in_pad, xq[t], n_in_pad);
        for (int r = 0; r < rows; r++) {
            for (t = 0; t < n; t++)
                y[t] = s[t].zero ? i64(0) : bl_rescale(acc[r][t], sc[t]);
            sink_put(st, sink, logits, n, r0 + r, y, ctr);
        }
    }
    // the same cycles the stream schedule counts (the scalar unit's were counted per lane above)
    MMFREE_COUNT(ctr, n_cg + DEPTH_MAC + n_rb * n_cg + R + DEPTH_MAC);
}

// The logits writer of the C-simulation: the same top-k as the top's, and the
// rows straight into the host's buffer (row-major, N lanes a row) when asked.
struct fast_logits {
    float *out;                 // VOCAB x N, or NULL: top-k only
    topk_list top[N];
    int n;
    int row;
    void write(const logit_row &r) {
        if (out)
            memcpy(out + (size_t)row * N, r.v, sizeof(r.v));
        topk_row(top, r, row, n);
        row++;
    }
};

inline int fast_pass(int n, int mode, int slot, unsigned load_mask, unsigned store_mask, const float *x_in,
                     float *state, float *logits, int32_t *top, const unsigned char *weights,
                     engine_state &st, counters &ctr_out) {
#if MMFREE_K
    const uint8_t *image = weights;
#else
    (void)weights;
    const uint8_t *image = MMFREE_IMAGE;
#endif
    // int16 copies of the weights, keyed by the image they came from
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
    fast_logits sink;
    sink.out = (mode & MODE_FULL_LOGITS) ? logits : NULL;
    sink.n = n;
    sink.row = 0;
    for (int t = 0; t < N; t++)
        topk_clear(sink.top[t]);
    // the arguments are within the build: mmfree_step refuses what clamp_pass would change
    const int status = compute_pass(src, st, n, mode, slot, load_mask, store_mask, x_in, state, sink, ctr);
    if (mode & MODE_HEAD)
        for (int e = 0; e < 2 * TOPK; e++)
            topk_row_values(sink.top, e, top + (size_t)e * N);
    ctr_out = ctr;
    return status;
}

} // namespace mmfree

#endif
