// Letterbox one BGR uint8 frame into a model's NCHW input, in one pass:
// resize (bilinear, as OpenCV's INTER_LINEAR) + pad 114 + BGR->RGB + scale 1/255 + HWC->CHW,
// written as float32 (letterbox_f32) or float16 (letterbox_f16).
//
// One thread per output pixel writes its three channel planes. The placement (new_h, new_w, top, left)
// comes from the host (engine.preprocess.LetterboxGeometry), so both paths put content in the same place.
//
// Sampling follows OpenCV's fixed-point bilinear for uint8 images (cv2.resize, INTER_LINEAR): source
// coordinate (dx + 0.5) * src/dst - 0.5 clamped at the borders, 11-bit weights, a horizontal then a
// vertical pass with the rounding of OpenCV's vectorized vertical pass, a uint8 result, then * 1/255.
// On the CPU reference that is bit-identical except in OpenCV's scalar row tails (off by one uint8
// step, 1/255, there).
//
// Compiled at run time by NVRTC (engine/cuda/nvrtc.py); no CUDA headers are included.

#define LB_COEF_BITS 11
#define LB_COEF_SCALE (1 << LB_COEF_BITS)

struct LetterboxArgs {
    int src_h, src_w, src_pitch;   // source frame; pitch in bytes between rows
    int dst_h, dst_w;              // model input
    int new_h, new_w, top, left;   // resized content and its offset
    double scale_x, scale_y;       // src_w / new_w, src_h / new_h, in double as OpenCV computes them
};

// OpenCV: fx = (float)((dx + 0.5) * scale - 0.5); sx = floor(fx); fx -= sx; clamp at both ends;
// weights saturate_cast<short>((1 - fx) * 2048) and saturate_cast<short>(fx * 2048) (round to nearest even).
__device__ __forceinline__ void lb_coord(int d, double scale, int src_len, int* s0, int* s1, int* w0, int* w1) {
    float f = (float)(((double)d + 0.5) * scale - 0.5);
    int s = (int)floorf(f);
    f -= (float)s;
    if (s < 0) { s = 0; f = 0.f; }
    if (s >= src_len - 1) { s = src_len - 1; f = 0.f; }
    *s0 = s;
    *s1 = s + 1 < src_len ? s + 1 : s;
    *w0 = (int)rintf((1.f - f) * LB_COEF_SCALE);
    *w1 = (int)rintf(f * LB_COEF_SCALE);
}

__device__ __forceinline__ unsigned short lb_f32_to_f16(float v) {
#ifdef __CUDA_ARCH__
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
#else  // host emulation in tests: values are in [0, 1], so no overflow, inf or nan handling is needed
    unsigned int x = __float_as_uint(v);
    if ((x & 0x7fffffffu) == 0) return (unsigned short)(x >> 16);
    int e = (int)((x >> 23) & 0xff) - 127 + 15;
    unsigned int m = x & 0x7fffffu;
    if (e <= 0) {  // subnormal half
        m |= 0x800000u;
        int shift = 14 - e;
        unsigned int hm = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (hm & 1))) hm++;
        return (unsigned short)hm;
    }
    unsigned int hm = m >> 13, rem = m & 0x1fffu;
    unsigned int h = ((unsigned int)e << 10) | hm;
    if (rem > 0x1000u || (rem == 0x1000u && (hm & 1))) h++;
    return (unsigned short)h;
#endif
}

template <typename T> __device__ __forceinline__ T lb_store(float v);
template <> __device__ __forceinline__ float lb_store<float>(float v) { return v; }
template <> __device__ __forceinline__ unsigned short lb_store<unsigned short>(float v) { return lb_f32_to_f16(v); }

template <typename T>
__device__ __forceinline__ void letterbox_pixel(const unsigned char* __restrict__ src, T* __restrict__ dst,
                                                const LetterboxArgs a) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= a.dst_w || y >= a.dst_h) return;
    const float inv255 = 1.0f / 255.0f;
    const size_t plane = (size_t)a.dst_h * a.dst_w;
    T* out = dst + (size_t)y * a.dst_w + x;
    const int cx = x - a.left, cy = y - a.top;
    if (cx < 0 || cy < 0 || cx >= a.new_w || cy >= a.new_h) {
        const T pad = lb_store<T>((float)(114.0 / 255.0));  // as the CPU path: rounded from double
        out[0] = pad; out[plane] = pad; out[2 * plane] = pad;
        return;
    }
    int v[3];
    if (a.new_w == a.src_w && a.new_h == a.src_h) {  // no resize: a copy, as the CPU path does
        const unsigned char* p = src + (size_t)cy * a.src_pitch + 3 * cx;
        v[0] = p[0]; v[1] = p[1]; v[2] = p[2];
    } else {
        int x0, x1, wx0, wx1, y0, y1, wy0, wy1;
        lb_coord(cx, a.scale_x, a.src_w, &x0, &x1, &wx0, &wx1);
        lb_coord(cy, a.scale_y, a.src_h, &y0, &y1, &wy0, &wy1);
        const unsigned char* r0 = src + (size_t)y0 * a.src_pitch;
        const unsigned char* r1 = src + (size_t)y1 * a.src_pitch;
        for (int c = 0; c < 3; ++c) {
            const int h0 = r0[3 * x0 + c] * wx0 + r0[3 * x1 + c] * wx1;  // horizontal pass first, as OpenCV
            const int h1 = r1[3 * x0 + c] * wx0 + r1[3 * x1 + c] * wx1;
            // OpenCV's VResizeLinearVec_32s8u: 16-bit high products of the weights and the rows >> 4
            const int t = (((wy0 * (h0 >> 4)) >> 16) + ((wy1 * (h1 >> 4)) >> 16) + 2) >> 2;
            v[c] = t < 0 ? 0 : (t > 255 ? 255 : t);
        }
    }
    // BGR -> RGB: output plane c takes source channel 2 - c; v * (1/255) in float32, as the CPU path
    out[0] = lb_store<T>((float)v[2] * inv255);
    out[plane] = lb_store<T>((float)v[1] * inv255);
    out[2 * plane] = lb_store<T>((float)v[0] * inv255);
}

// dst points at the first element of this frame's (3, dst_h, dst_w) slot of the batch.
extern "C" __global__ void letterbox_f32(const unsigned char* __restrict__ src, float* __restrict__ dst,
                                         const LetterboxArgs args) {
    letterbox_pixel<float>(src, dst, args);
}

extern "C" __global__ void letterbox_f16(const unsigned char* __restrict__ src, unsigned short* __restrict__ dst,
                                         const LetterboxArgs args) {
    letterbox_pixel<unsigned short>(src, dst, args);
}
