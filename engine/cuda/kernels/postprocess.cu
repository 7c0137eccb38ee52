// Decode + confidence filter + top-K + NMS on a raw YOLO detect head, on the device, so that only
// fixed-size detections come back to the host: num_dets (B, 1) int32, boxes (B, K, 4) float32 x1y1x2y2,
// scores (B, K) float32, classes (B, K) int32 (padding rows: 0, 0, -1), K = max_det.
//
// Same semantics as the host path (engine.nms.postprocess_raw): one label per anchor (its best class,
// the first of equal maxima), keep score > conf, visit by descending score with ties by lower anchor
// index, suppress when IoU > iou (strictly) within a class (or across classes when agnostic), stop at
// max_det. IoU arithmetic uses the host's operation order with explicit round-to-nearest intrinsics,
// so no fused multiply-add changes a comparison at the threshold.
//
// Four launches on one stream, each a plain grid of independent threads (no shared memory, no
// barriers):
//   pp_filter  one thread per anchor: best class, score test, append (score, anchor, class) to the
//              image's candidate list with an atomic counter (order not yet defined)
//   pp_rank    one thread per candidate: its rank = number of candidates ahead of it (score desc,
//              anchor asc), a total order, so the sort is deterministic; the first `cap` ranks are
//              decoded to xyxy and written in order
//   pp_mask    one thread per (row, 64-column word): bit j set when row i suppresses j > i (the
//              bitmask NMS of torchvision's CUDA kernel)
//   pp_select  one thread per image: the greedy pass over the ranked rows, ORing the mask row of each
//              kept box, writing the fixed-size outputs
// Candidates past `cap` (the lowest scores) are dropped, as Ultralytics' max_nms does; the counter
// tells the host how many there were.

struct PPArgs {
    int batch, num_classes, num_anchors;
    int cap;        // most candidates ranked per image (a multiple of 64)
    int max_det;    // K
    int agnostic;   // 1: one NMS over all classes
    float conf;     // keep score > conf (the head's dtype, float32)
    float iou;      // suppress IoU > iou (float32, rounded down so the test equals the double one)
};

struct PPBuffers {
    const float* pred;                 // (B, 4 + nc, A) raw head
    const unsigned int* class_mask;    // nc bits, or null for every class
    int* count;                        // (B,) candidates above conf; zeroed by the host before pp_filter
    float* cand_score;                 // (B, A)
    int* cand_anchor;                  // (B, A)
    int* cand_class;                   // (B, A)
    float* rank_box;                   // (B, cap, 4)
    float* rank_score;                 // (B, cap)
    int* rank_class;                   // (B, cap)
    unsigned long long* mask;          // (B, cap, cap / 64)
    unsigned long long* removed;       // (B, cap / 64)
    int* num_dets;                     // (B, 1)
    float* boxes;                      // (B, K, 4)
    float* scores;                     // (B, K)
    int* classes;                      // (B, K)
};

extern "C" __global__ void pp_filter(const PPArgs a, const PPBuffers m) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    const int A = a.num_anchors;
    if (i >= A || b >= a.batch) return;
    const float* p = m.pred + (size_t)b * (4 + a.num_classes) * A + i;
    float best = p[4 * (size_t)A];
    int cls = 0;
    for (int c = 1; c < a.num_classes; ++c) {
        const float s = p[(size_t)(4 + c) * A];
        if (s > best) { best = s; cls = c; }
    }
    if (!(best > a.conf)) return;
    if (m.class_mask && !((m.class_mask[cls >> 5] >> (cls & 31)) & 1u)) return;
    const int slot = atomicAdd(m.count + b, 1);
    const size_t o = (size_t)b * A + slot;
    m.cand_score[o] = best;
    m.cand_anchor[o] = i;
    m.cand_class[o] = cls;
}

extern "C" __global__ void pp_rank(const PPArgs a, const PPBuffers m) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    const int A = a.num_anchors;
    if (b >= a.batch) return;
    const int n = m.count[b];
    if (i >= n) return;
    const float* s = m.cand_score + (size_t)b * A;
    const int* an = m.cand_anchor + (size_t)b * A;
    const float si = s[i];
    const int ai = an[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
        const float sj = s[j];
        rank += (sj > si) | ((sj == si) & (an[j] < ai));
    }
    if (rank >= a.cap) return;
    // decode as the host: center -/+ wh / 2 (exact halving), in float32
    const float* p = m.pred + (size_t)b * (4 + a.num_classes) * A + ai;
    const float cx = p[0], cy = p[(size_t)A], hw = p[2 * (size_t)A] * 0.5f, hh = p[3 * (size_t)A] * 0.5f;
    const size_t r = (size_t)b * a.cap + rank;
    m.rank_box[4 * r + 0] = __fsub_rn(cx, hw);
    m.rank_box[4 * r + 1] = __fsub_rn(cy, hh);
    m.rank_box[4 * r + 2] = __fadd_rn(cx, hw);
    m.rank_box[4 * r + 3] = __fadd_rn(cy, hh);
    m.rank_score[r] = si;
    m.rank_class[r] = m.cand_class[(size_t)b * A + i];
}

__device__ __forceinline__ float pp_iou(const float* r, const float* c) {
    // host order (engine.nms._iou_matrix): w = min(x2) - max(x1); h likewise; inter = max(w,0)*max(h,0);
    // union = (area_r + area_c) - inter; iou = inter / union
    const float ar = __fmul_rn(__fsub_rn(r[2], r[0]), __fsub_rn(r[3], r[1]));
    const float ac = __fmul_rn(__fsub_rn(c[2], c[0]), __fsub_rn(c[3], c[1]));
    const float w = __fsub_rn(fminf(r[2], c[2]), fmaxf(r[0], c[0]));
    const float h = __fsub_rn(fminf(r[3], c[3]), fmaxf(r[1], c[1]));
    const float inter = __fmul_rn(fmaxf(w, 0.f), fmaxf(h, 0.f));
    return __fdiv_rn(inter, __fsub_rn(__fadd_rn(ar, ac), inter));
}

extern "C" __global__ void pp_mask(const PPArgs a, const PPBuffers m) {
    const int words = a.cap / 64;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;  // row * words + word
    const int b = blockIdx.y;
    if (b >= a.batch || t >= a.cap * words) return;
    const int i = t / words, w = t % words;
    const int n = min(m.count[b], a.cap);
    if (i >= n || w * 64 >= n || w < i / 64) return;  // words left of the diagonal are never read
    const size_t base = (size_t)b * a.cap;
    const float* bi = m.rank_box + 4 * (base + i);
    const int ci = m.rank_class[base + i];
    unsigned long long bits = 0;
    const int end = min(64, n - w * 64);
    for (int k = 0; k < end; ++k) {
        const int j = w * 64 + k;
        if (j <= i || (!a.agnostic && m.rank_class[base + j] != ci)) continue;
        if (pp_iou(bi, m.rank_box + 4 * (base + j)) > a.iou) bits |= 1ull << k;
    }
    m.mask[(base + i) * words + w] = bits;
}

extern "C" __global__ void pp_select(const PPArgs a, const PPBuffers m) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= a.batch) return;
    const int words = a.cap / 64;
    const int n = min(m.count[b], a.cap);
    const size_t base = (size_t)b * a.cap;
    unsigned long long* removed = m.removed + (size_t)b * words;
    for (int w = 0; w < words; ++w) removed[w] = 0ull;
    const size_t out = (size_t)b * a.max_det;
    int k = 0;
    for (int i = 0; i < n && k < a.max_det; ++i) {
        if ((removed[i >> 6] >> (i & 63)) & 1ull) continue;
        for (int c = 0; c < 4; ++c) m.boxes[4 * (out + k) + c] = m.rank_box[4 * (base + i) + c];
        m.scores[out + k] = m.rank_score[base + i];
        m.classes[out + k] = m.rank_class[base + i];
        ++k;
        const unsigned long long* row = m.mask + (base + i) * words;
        for (int w = i >> 6; w * 64 < n; ++w) removed[w] |= row[w];
    }
    m.num_dets[b] = k;
    for (int r = k; r < a.max_det; ++r) {
        for (int c = 0; c < 4; ++c) m.boxes[4 * (out + r) + c] = 0.f;
        m.scores[out + r] = 0.f;
        m.classes[out + r] = -1;
    }
}
