// bw_probe.cpp: usable DDR read bandwidth of the PS slave ports the streamed engine reads its
// weights through. No compute: BW_PORTS m_axi ports of BW_BITS bits (64 on Zynq-7000, 128 on
// ZynqMP), each on its own bundle gmem_w<k> (the engine's weight-port names, so the same block
// design flow wires them), read in 16-beat bursts with 8/16 outstanding reads (config_interface
// in the generated Vitis HLS Tcl). A call reads `words` words from each of the first `nports`
// ports at once and returns
//   checksum: XOR of every 64-bit lane of every word read (the host checks it against its buffer),
//   cycles:   PL clock cycles from the start of the readers until the last one finished.
// `mmfree calibrate` runs it for nports = 1..BW_PORTS and turns cycles into bytes per second.
//
// Compile-time knobs (cflags of the probe project): BW_PORTS (1..8), BW_BITS (64 or 128).

#include <ap_int.h>
#include <hls_stream.h>

#ifndef BW_PORTS
#define BW_PORTS 2
#endif
#ifndef BW_BITS
#define BW_BITS 64
#endif
#if BW_PORTS < 1 || BW_PORTS > 8
#error "BW_PORTS must be 1..8"
#endif
#if BW_BITS != 64 && BW_BITS != 128
#error "BW_BITS must be 64 (Zynq-7000 HP) or 128 (ZynqMP HP/HPC)"
#endif

typedef ap_uint<BW_BITS> bw_word_t;
typedef unsigned long long bw_u64;

static bw_u64 fold(bw_word_t w) {
#pragma HLS INLINE
    bw_u64 x = 0;
FOLD:
    for (int i = 0; i < BW_BITS / 64; i++) {
#pragma HLS UNROLL
        x ^= (bw_u64)w.range(64 * i + 63, 64 * i);
    }
    return x;
}

// One reader per port: a sequential loop at II=1, which Vitis HLS turns into bursts.
static void read_port(const bw_word_t *w, int k, int nports, int words, hls::stream<bw_u64> &sum) {
    int n = (k < nports && words > 0) ? words : 0;
    bw_u64 acc = 0;
READ:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=4096 max=4194304
        acc ^= fold(w[i]);
    }
    sum.write(acc);
}

// Counts cycles (one loop iteration per cycle at II=1) until every reader has reported.
static void count_cycles(hls::stream<bw_u64> sums[BW_PORTS], bw_u64 *cycles, bw_u64 *checksum) {
    bw_u64 c = 0, x = 0;
    ap_uint<BW_PORTS> done = 0;
COUNT:
    while (true) {
#pragma HLS PIPELINE II=1
        c++;
        for (int k = 0; k < BW_PORTS; k++) {
#pragma HLS UNROLL
            bw_u64 v;
            if (!done[k] && sums[k].read_nb(v)) {
                x ^= v;
                done[k] = 1;
            }
        }
        if (done == ap_uint<BW_PORTS>(-1)) break;
    }
    *cycles = c;
    *checksum = x;
}

void bw_probe(const bw_word_t *w0,
#if BW_PORTS > 1
              const bw_word_t *w1,
#endif
#if BW_PORTS > 2
              const bw_word_t *w2,
#endif
#if BW_PORTS > 3
              const bw_word_t *w3,
#endif
#if BW_PORTS > 4
              const bw_word_t *w4,
#endif
#if BW_PORTS > 5
              const bw_word_t *w5,
#endif
#if BW_PORTS > 6
              const bw_word_t *w6,
#endif
#if BW_PORTS > 7
              const bw_word_t *w7,
#endif
              int nports, int words, bw_u64 *cycles, bw_u64 *checksum) {
#pragma HLS INTERFACE m_axi port=w0 bundle=gmem_w0 offset=slave depth=4096
#if BW_PORTS > 1
#pragma HLS INTERFACE m_axi port=w1 bundle=gmem_w1 offset=slave depth=4096
#endif
#if BW_PORTS > 2
#pragma HLS INTERFACE m_axi port=w2 bundle=gmem_w2 offset=slave depth=4096
#endif
#if BW_PORTS > 3
#pragma HLS INTERFACE m_axi port=w3 bundle=gmem_w3 offset=slave depth=4096
#endif
#if BW_PORTS > 4
#pragma HLS INTERFACE m_axi port=w4 bundle=gmem_w4 offset=slave depth=4096
#endif
#if BW_PORTS > 5
#pragma HLS INTERFACE m_axi port=w5 bundle=gmem_w5 offset=slave depth=4096
#endif
#if BW_PORTS > 6
#pragma HLS INTERFACE m_axi port=w6 bundle=gmem_w6 offset=slave depth=4096
#endif
#if BW_PORTS > 7
#pragma HLS INTERFACE m_axi port=w7 bundle=gmem_w7 offset=slave depth=4096
#endif
#pragma HLS INTERFACE s_axilite port=nports bundle=control
#pragma HLS INTERFACE s_axilite port=words bundle=control
#pragma HLS INTERFACE s_axilite port=cycles bundle=control
#pragma HLS INTERFACE s_axilite port=checksum bundle=control
#pragma HLS INTERFACE s_axilite port=return bundle=control
#pragma HLS DATAFLOW
    hls::stream<bw_u64> sums[BW_PORTS];
#pragma HLS STREAM variable=sums depth=2
    read_port(w0, 0, nports, words, sums[0]);
#if BW_PORTS > 1
    read_port(w1, 1, nports, words, sums[1]);
#endif
#if BW_PORTS > 2
    read_port(w2, 2, nports, words, sums[2]);
#endif
#if BW_PORTS > 3
    read_port(w3, 3, nports, words, sums[3]);
#endif
#if BW_PORTS > 4
    read_port(w4, 4, nports, words, sums[4]);
#endif
#if BW_PORTS > 5
    read_port(w5, 5, nports, words, sums[5]);
#endif
#if BW_PORTS > 6
    read_port(w6, 6, nports, words, sums[6]);
#endif
#if BW_PORTS > 7
    read_port(w7, 7, nports, words, sums[7]);
#endif
    count_cycles(sums, cycles, checksum);
}
