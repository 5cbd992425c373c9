// The vector loops of sampled_conv.h. The float versions are compiled for AVX-512, AVX2 and the
// baseline x86-64 (GCC's target_clones; the loader picks one for the CPU it runs on), since the
// extension is otherwise built for the baseline only. No fused multiply-adds (-ffp-contract=off):
// each sample is torchvision's sequence of products and sums.
#include "sampled_conv.h"

#include <cstring>

namespace vfnet {
namespace cpu {
namespace sampled {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VFNET_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VFNET_VECTOR_CLONES
#endif

namespace {

template <typename T>
inline void blend4_impl(T* __restrict dst, const T* __restrict v1, const T* __restrict v2,
                        const T* __restrict v3, const T* __restrict v4, T w1, T w2, T w3, T w4,
                        T m, int64_t n) {
  if (m == T(1)) {
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = w1 * v1[i] + w2 * v2[i] + w3 * v3[i] + w4 * v4[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = m * (w1 * v1[i] + w2 * v2[i] + w3 * v3[i] + w4 * v4[i]);
    }
  }
}

// float -> bfloat16 bits, rounded to nearest even (c10::BFloat16's rounding, NaN kept a quiet
// NaN), in integer operations the compiler vectorises.
inline uint16_t bfloat16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return f != f ? uint16_t(0x7FC0) : uint16_t(rounded);
}

// g[i] as the accumulation type: float / double as they are, bfloat16 bits widened to float.
inline float load(const float* g, int64_t i) {
  return g[i];
}

inline double load(const double* g, int64_t i) {
  return g[i];
}

inline float load(const uint16_t* g, int64_t i) {
  const uint32_t u = uint32_t(g[i]) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline void blend4_bfloat16_impl(uint16_t* __restrict dst, const float* __restrict v1,
                                 const float* __restrict v2, const float* __restrict v3,
                                 const float* __restrict v4, float w1, float w2, float w3, float w4,
                                 float m, int64_t n) {
  // The float sample of blend4_impl, rounded once.
  if (m == 1.0f) {
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = bfloat16_bits(w1 * v1[i] + w2 * v2[i] + w3 * v3[i] + w4 * v4[i]);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = bfloat16_bits(m * (w1 * v1[i] + w2 * v2[i] + w3 * v3[i] + w4 * v4[i]));
    }
  }
}

template <typename T, typename G>
inline void scatter4_impl(T* __restrict a1, T* __restrict a2, T* __restrict a3, T* __restrict a4,
                          const G* __restrict g, T w1, T w2, T w3, T w4, int64_t n) {
  // a1..a4 are distinct neighbours (distinct pixels), each a run of n channels.
  for (int64_t i = 0; i < n; ++i) {
    const T gi = load(g, i);
    a1[i] += w1 * gi;
    a2[i] += w2 * gi;
    a3[i] += w3 * gi;
    a4[i] += w4 * gi;
  }
}

// d[i] = the sum of the kLanes partial sums of neighbour i, lane by lane in order.
template <typename T, int kLanes>
inline void sum_lanes(const T* s1, const T* s2, const T* s3, const T* s4, T* d) {
  T t1 = 0, t2 = 0, t3 = 0, t4 = 0;
  for (int l = 0; l < kLanes; ++l) {
    t1 += s1[l];
    t2 += s2[l];
    t3 += s3[l];
    t4 += s4[l];
  }
  d[0] = t1;
  d[1] = t2;
  d[2] = t3;
  d[3] = t4;
}

template <typename T, typename G>
inline void dot4_impl(const G* __restrict g, const T* __restrict v1, const T* __restrict v2,
                      const T* __restrict v3, const T* __restrict v4, T* d, int64_t n) {
  // Eight partial sums per neighbour (a fixed order, so the result does not depend on the ISA).
  constexpr int kLanes = 8;
  T s1[kLanes] = {}, s2[kLanes] = {}, s3[kLanes] = {}, s4[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T gi = load(g, i + l);
      s1[l] += gi * v1[i + l];
      s2[l] += gi * v2[i + l];
      s3[l] += gi * v3[i + l];
      s4[l] += gi * v4[i + l];
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    const T gi = load(g, i);
    s1[l] += gi * v1[i];
    s2[l] += gi * v2[i];
    s3[l] += gi * v3[i];
    s4[l] += gi * v4[i];
  }
  sum_lanes<T, kLanes>(s1, s2, s3, s4, d);
}

template <typename T, typename G>
inline void scatter_dot4_impl(T* __restrict a1, T* __restrict a2, T* __restrict a3, T* __restrict a4,
                              const G* __restrict g, T w1, T w2, T w3, T w4, const T* __restrict v1,
                              const T* __restrict v2, const T* __restrict v3, const T* __restrict v4,
                              T* d, int64_t n) {
  // scatter4_impl and dot4_impl in one pass over g (the same lanes and order as dot4_impl).
  constexpr int kLanes = 8;
  T s1[kLanes] = {}, s2[kLanes] = {}, s3[kLanes] = {}, s4[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T gi = load(g, i + l);
      a1[i + l] += w1 * gi;
      a2[i + l] += w2 * gi;
      a3[i + l] += w3 * gi;
      a4[i + l] += w4 * gi;
      s1[l] += gi * v1[i + l];
      s2[l] += gi * v2[i + l];
      s3[l] += gi * v3[i + l];
      s4[l] += gi * v4[i + l];
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    const T gi = load(g, i);
    a1[i] += w1 * gi;
    a2[i] += w2 * gi;
    a3[i] += w3 * gi;
    a4[i] += w4 * gi;
    s1[l] += gi * v1[i];
    s2[l] += gi * v2[i];
    s3[l] += gi * v3[i];
    s4[l] += gi * v4[i];
  }
  sum_lanes<T, kLanes>(s1, s2, s3, s4, d);
}

} // namespace

VFNET_VECTOR_CLONES void blend4(float* dst, const float* v1, const float* v2, const float* v3,
                                const float* v4, float w1, float w2, float w3, float w4, float m,
                                int64_t n) {
  blend4_impl(dst, v1, v2, v3, v4, w1, w2, w3, w4, m, n);
}

void blend4(double* dst, const double* v1, const double* v2, const double* v3, const double* v4,
            double w1, double w2, double w3, double w4, double m, int64_t n) {
  blend4_impl(dst, v1, v2, v3, v4, w1, w2, w3, w4, m, n);
}

VFNET_VECTOR_CLONES void blend4(at::BFloat16* dst, const float* v1, const float* v2, const float* v3,
                                const float* v4, float w1, float w2, float w3, float w4, float m,
                                int64_t n) {
  // at::BFloat16 is a struct of its 16 bits.
  blend4_bfloat16_impl(reinterpret_cast<uint16_t*>(dst), v1, v2, v3, v4, w1, w2, w3, w4, m, n);
}

VFNET_VECTOR_CLONES void scatter4(float* a1, float* a2, float* a3, float* a4, const float* g,
                                  float w1, float w2, float w3, float w4, int64_t n) {
  scatter4_impl(a1, a2, a3, a4, g, w1, w2, w3, w4, n);
}

void scatter4(double* a1, double* a2, double* a3, double* a4, const double* g, double w1,
              double w2, double w3, double w4, int64_t n) {
  scatter4_impl(a1, a2, a3, a4, g, w1, w2, w3, w4, n);
}

VFNET_VECTOR_CLONES void dot4(const float* g, const float* v1, const float* v2, const float* v3,
                              const float* v4, float* d, int64_t n) {
  dot4_impl(g, v1, v2, v3, v4, d, n);
}

void dot4(const double* g, const double* v1, const double* v2, const double* v3, const double* v4,
          double* d, int64_t n) {
  dot4_impl(g, v1, v2, v3, v4, d, n);
}

VFNET_VECTOR_CLONES void scatter_dot4(float* a1, float* a2, float* a3, float* a4, const float* g,
                                      float w1, float w2, float w3, float w4, const float* v1,
                                      const float* v2, const float* v3, const float* v4, float* d,
                                      int64_t n) {
  scatter_dot4_impl(a1, a2, a3, a4, g, w1, w2, w3, w4, v1, v2, v3, v4, d, n);
}

void scatter_dot4(double* a1, double* a2, double* a3, double* a4, const double* g, double w1,
                  double w2, double w3, double w4, const double* v1, const double* v2,
                  const double* v3, const double* v4, double* d, int64_t n) {
  scatter_dot4_impl(a1, a2, a3, a4, g, w1, w2, w3, w4, v1, v2, v3, v4, d, n);
}

// The same with the samples' gradient g in bfloat16 (at::BFloat16 is a struct of its 16 bits).
VFNET_VECTOR_CLONES void scatter4(float* a1, float* a2, float* a3, float* a4, const at::BFloat16* g,
                                  float w1, float w2, float w3, float w4, int64_t n) {
  scatter4_impl(a1, a2, a3, a4, reinterpret_cast<const uint16_t*>(g), w1, w2, w3, w4, n);
}

VFNET_VECTOR_CLONES void dot4(const at::BFloat16* g, const float* v1, const float* v2, const float* v3,
                              const float* v4, float* d, int64_t n) {
  dot4_impl(reinterpret_cast<const uint16_t*>(g), v1, v2, v3, v4, d, n);
}

VFNET_VECTOR_CLONES void scatter_dot4(float* a1, float* a2, float* a3, float* a4, const at::BFloat16* g,
                                      float w1, float w2, float w3, float w4, const float* v1,
                                      const float* v2, const float* v3, const float* v4, float* d,
                                      int64_t n) {
  scatter_dot4_impl(a1, a2, a3, a4, reinterpret_cast<const uint16_t*>(g), w1, w2, w3, w4, v1, v2, v3,
                    v4, d, n);
}

} // namespace sampled
} // namespace cpu
} // namespace vfnet
