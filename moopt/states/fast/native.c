/* Native CPU kernels of moopt's built-in policies (loaded by moopt/states/fast/native.py).
 *
 * One call updates one float32 parameter in place: its gradient(s), and the policy's state
 * buffers, each stored as float32, bfloat16 or 8-bit block-wise codes. An alternating step
 * (one gradient) runs the policy's loop in place; a joint step (several objectives' gradients)
 * runs every objective's term on each piece in turn and combines them (run_joint), so every
 * state byte is still read and written once. The tensor is cut into chunks (whole
 * quantization blocks); threads take chunks. Within a chunk, low-bit buffers are decoded
 * piece by piece into float32 scratch that stays in the L1 cache, the update runs on plain
 * float arrays (vectorised by the compiler) and keeps each block's absmax, and the scratch is
 * encoded back.
 *
 * The math is the policies' declarations (moopt/states/{adam,bridged}.py, combined by
 * moopt/states/rule.py), operation by operation in float32, built with -ffp-contract=off (no
 * fused multiply-adds); scalars and buffers are found by the names the build's -D flags place
 * (moopt/states/fast/native_tables.py). The 8-bit codec repeats
 * moopt/states/quantization.py (same lookup tables, same multiply by the rounded reciprocal
 * of the block absmax), and bfloat16 writes round to nearest even like torch. Tests hold the
 * states equal to the eager fused path's bit for bit.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

enum { KIND_F32 = 0, KIND_BF16 = 1, KIND_INT8 = 2 };

typedef struct {
    int32_t kind;
    int32_t block;            /* int8: values per block */
    void *data;               /* float*, uint16_t* (bfloat16 bits) or uint8_t* codes */
    float *absmax;            /* int8: one scale per block */
    const float *values;      /* int8: the map's entries */
    const int32_t *table;     /* int8: 65536 entries, one per 16-bit key (see store()) */
    const uint8_t *planes;    /* int8: the entries' bytes as 4 planes of 256 (see decode) */
    int32_t minifloat;        /* int8: 1 / 2 if the map is a signed / unsigned minifloat map
                               * (see minifloat16), else 0 */
    int32_t shift;            /* minifloat: 23 - mantissa bits */
} Buf;

#define MAX_BUFS 4
/* The codec helpers are inlined into every loop that uses them (measured: out-of-line
 * calls per block cost a quarter of an 8-bit step). */
#define HOT static inline __attribute__((always_inline))

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return (uint16_t)0x7FC0;
    return (uint16_t)((u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16);
}

#if defined(__AVX512F__) && defined(__AVX512VBMI__)
/* Byte shuffles of the AVX-512 VBMI codec loops (constant, so no loop builds them per block).
 * DECODE_ORDER: position 16L + 4k + m holds code 16k + 4L + m (see decode_simd). PACK_LOW /
 * PACK_HIGH: the low byte of every 32-bit lane of two vectors, into bytes 0-31 / 32-63. */
static const uint8_t DECODE_ORDER[64] = {
    0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
    4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
    8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
    12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};
static const uint8_t PACK_LOW[64] = {
    0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60,
    64, 68, 72, 76, 80, 84, 88, 92, 96, 100, 104, 108, 112, 116, 120, 124};
static const uint8_t PACK_HIGH[64] = {
    [32] = 0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60,
    64, 68, 72, 76, 80, 84, 88, 92, 96, 100, 104, 108, 112, 116, 120, 124};
#endif

/* Vectorised 8-bit codec loops; they return how many values they did (the caller finishes).
 * Written with intrinsics because compilers decline to emit gathers for these loops. */
HOT int64_t decode_simd(const uint8_t *codes, const float *values, const uint8_t *planes,
                           float scale, float *out, int64_t len) {
    int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
    /* 64 codes at a time without gathers: byte b of every entry is looked up in its own
     * 256-byte plane (four 64-entry byte permutes, merged by the code's top two bits), and
     * the four byte planes are interleaved back into floats. The codes are first reordered
     * so that the lane-wise interleave comes out in order: position 16L + 4k + m of the
     * reordered codes holds code 16k + 4L + m, which lands in float m of lane L of output
     * vector k. */
    if (len >= 64) {
        __m512i plane[4][4];
        for (int b = 0; b < 4; b++)
            for (int q = 0; q < 4; q++)
                plane[b][q] = _mm512_loadu_si512((const void *)(planes + 256 * b + 64 * q));
        const __m512i reorder = _mm512_loadu_si512((const void *)DECODE_ORDER);
        const __m512 s = _mm512_set1_ps(scale);
        for (; i + 64 <= len; i += 64) {
            __m512i c = _mm512_permutexvar_epi8(reorder,
                                                _mm512_loadu_si512((const void *)(codes + i)));
            /* Which quarter of the plane each code's top two bits pick (shared by the four
             * planes); masked single-source permutes beat two-source ones plus a blend. */
            __mmask64 high = _mm512_movepi8_mask(c);
            __mmask64 six = _mm512_test_epi8_mask(c, _mm512_set1_epi8(0x40));
            __mmask64 q1 = _kandn_mask64(high, six), q2 = _kandn_mask64(six, high),
                      q3 = _kand_mask64(high, six);
            __m512i byte[4];
            for (int b = 0; b < 4; b++) {
                __m512i r = _mm512_permutexvar_epi8(c, plane[b][0]);
                r = _mm512_mask_permutexvar_epi8(r, q1, c, plane[b][1]);
                r = _mm512_mask_permutexvar_epi8(r, q2, c, plane[b][2]);
                byte[b] = _mm512_mask_permutexvar_epi8(r, q3, c, plane[b][3]);
            }
            __m512i w01l = _mm512_unpacklo_epi8(byte[0], byte[1]);
            __m512i w01h = _mm512_unpackhi_epi8(byte[0], byte[1]);
            __m512i w23l = _mm512_unpacklo_epi8(byte[2], byte[3]);
            __m512i w23h = _mm512_unpackhi_epi8(byte[2], byte[3]);
            __m512i d[4] = {_mm512_unpacklo_epi16(w01l, w23l), _mm512_unpackhi_epi16(w01l, w23l),
                            _mm512_unpacklo_epi16(w01h, w23h), _mm512_unpackhi_epi16(w01h, w23h)};
            for (int k = 0; k < 4; k++)
                _mm512_storeu_ps(out + i + 16 * k, _mm512_mul_ps(_mm512_castsi512_ps(d[k]), s));
        }
    }
#else
    (void)planes;
#endif
#if defined(__AVX512F__)
    __m512 s16 = _mm512_set1_ps(scale);
    for (; i + 16 <= len; i += 16) {
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_i32gather_ps(idx, values, 4), s16));
    }
#elif defined(__AVX2__)
    __m256 s8 = _mm256_set1_ps(scale);
    for (; i + 8 <= len; i += 8) {
        __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(values, idx, 4), s8));
    }
#else
    (void)codes; (void)values; (void)scale; (void)out; (void)len;
#endif
    return i;
}

/* The block-wise quotient, as moopt/states/quantization.py defines it: x times the
 * reciprocal of the block scale, each product rounded once, r = 1 / s correctly rounded.
 * That is within 2 float32 ulps of x / s, so a code can differ from the one of the exact
 * quotient only for values within about 2^-22 (relative) of a map midpoint, and encoding
 * needs no divider and no correction step. For scales in [2^-77, 2^100) s is the scale
 * itself and f = 1; other finite scales are first brought near 1 by a power of two `f`,
 * applied to x too (subnormal scales come up, huge ones go down), so that neither r nor
 * the products leave the normal range where it matters: quotients below 2^-24 encode to
 * the zero code whatever their last bits (the map's smallest midpoint is about 1.6e-7).
 * tests/states/test_native.py holds the codes equal to the torch codec's at scales from
 * subnormal to infinite. */
typedef struct { float f, r; } Divisor;

static inline float quotient(float x, Divisor d) { return (x * d.f) * d.r; }

/* Code of the scaled value with float32 pattern `bits` (see store() for the table). */
static inline uint8_t code_of(int32_t bits, const int32_t *table) {
    uint32_t entry = (uint32_t)table[(uint32_t)bits >> 16];
    uint32_t past = ((uint32_t)bits << 16) > entry;
    return (uint8_t)((entry & 0xFF) + (past ? entry >> 8 : 0));
}

#if defined(__AVX512F__)
/* The float32 patterns of 16 quotients (see quotient(); `scaled`: f != 1). */
HOT __m512i quotient_bits16(__m512 x, __m512 f, __m512 r, const int scaled) {
    return _mm512_castps_si512(_mm512_mul_ps(scaled ? _mm512_mul_ps(x, f) : x, r));
}

/* 16 codes (see code_of()), each in the low byte of a 32-bit lane above garbage. */
HOT __m512i codes16(__m512i bits, const int32_t *table) {
    __m512i entry = _mm512_i32gather_epi32(_mm512_srli_epi32(bits, 16), (const void *)table, 4);
    __mmask16 past = _mm512_cmpgt_epu32_mask(_mm512_slli_epi32(bits, 16), entry);
    return _mm512_mask_add_epi32(entry, past, entry, _mm512_srli_epi32(entry, 8));
}
#endif

#if defined(__AVX512F__)
/* Stores the codes CODE16(at) (16 per vector, each in the low byte of a 32-bit lane) of
 * positions [i, len) into `codes`, advancing `i` to where it stopped (fewer than 16 left):
 * with VBMI 64 at a time, the low bytes of four vectors packed by two byte permutes, then 16
 * at a time. Shared by the table and the minifloat encoders. */
#if defined(__AVX512VBMI__)
#define STORE_CODES64(CODE16)                                                                 \
    if (len >= 64) {                                                                          \
        const __m512i pick_lo = _mm512_loadu_si512((const void *)PACK_LOW);                   \
        const __m512i pick_hi = _mm512_loadu_si512((const void *)PACK_HIGH);                  \
        for (; i + 64 <= len; i += 64) {                                                      \
            __m512i low = _mm512_permutex2var_epi8(CODE16(i), pick_lo, CODE16(i + 16));       \
            __m512i high = _mm512_permutex2var_epi8(CODE16(i + 32), pick_hi, CODE16(i + 48)); \
            _mm512_storeu_si512((void *)(codes + i),                                          \
                                _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, low, high));    \
        }                                                                                     \
    }
#else
#define STORE_CODES64(CODE16)
#endif
#define STORE_CODES(CODE16)                                                                   \
    do {                                                                                      \
        STORE_CODES64(CODE16)                                                                 \
        for (; i + 16 <= len; i += 16)                                                        \
            _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(CODE16(i)));        \
    } while (0)
#endif

/* Codes of x[0, len) / scale; returns how many it did (the caller finishes). Intrinsics:
 * compilers decline to emit gathers for this loop. Instantiated with and without the
 * pre-scaling multiply (`scaled`, a constant at each call). */
HOT int64_t encode_loop(const float *x, Divisor d, const int32_t *table, uint8_t *codes,
                        int64_t len, const int scaled) {
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512 f = _mm512_set1_ps(d.f), r = _mm512_set1_ps(d.r);
#define CODES16(at) codes16(quotient_bits16(_mm512_loadu_ps(x + (at)), f, r, scaled), table)
    STORE_CODES(CODES16);
#undef CODES16
#elif defined(__AVX2__)
    const __m256 f = _mm256_set1_ps(d.f), r = _mm256_set1_ps(d.r);
    const __m256i flip = _mm256_set1_epi32((int32_t)0x80000000);
    const __m256i byte = _mm256_set1_epi32(0xFF);
    for (; i + 8 <= len; i += 8) {
        __m256i bits = _mm256_castps_si256(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), f), r));
        __m256i entry = _mm256_i32gather_epi32(table, _mm256_srli_epi32(bits, 16), 4);
        /* unsigned (bits << 16) > entry, as a signed comparison with both top bits flipped */
        __m256i past = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_slli_epi32(bits, 16), flip),
                                          _mm256_xor_si256(entry, flip));  /* -1 or 0 */
        __m256i step = _mm256_and_si256(_mm256_srli_epi32(entry, 8), past);
        __m256i code = _mm256_and_si256(_mm256_add_epi32(entry, step), byte);
        __m256i packed = _mm256_packus_epi32(code, code);        /* 16-bit, per lane */
        packed = _mm256_packus_epi16(packed, packed);            /* 8-bit, per lane */
        uint32_t lo32 = (uint32_t)_mm256_extract_epi32(packed, 0);
        uint32_t hi32 = (uint32_t)_mm256_extract_epi32(packed, 4);
        memcpy(codes + i, &lo32, 4);
        memcpy(codes + i + 4, &hi32, 4);
    }
#else
    (void)x; (void)d; (void)table; (void)codes; (void)len;
#endif
    (void)scaled;
    return i;
}

HOT int64_t encode_simd(const float *x, Divisor d, const int32_t *table, uint8_t *codes,
                           int64_t len) {
    return d.f == 1.0f ? encode_loop(x, d, table, codes, len, 0)
                       : encode_loop(x, d, table, codes, len, 1);
}

/* The pattern index of a minifloat map's smallest entry, minus one (o below):
 * its `count` entries (127 signed, 255 unsigned) end at the pattern of 1.0. */
static inline int32_t minifloat_offset(const Buf *b) {
    return (0x3F800000 >> b->shift) - (b->minifloat == 1 ? 127 : 255);
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define MINIFLOAT_SIMD 1
/* 16 codes of a minifloat map (moopt/states/quantization.py minifloat_map: zero and the
 * `count` consecutive patterns with `23 - shift` mantissa bits ending at 1.0, both signs if
 * signed), each in the low byte of a 32-bit lane: the same codes as the table (the entry
 * nearest to the quotient, ties to the lower entry), by integer arithmetic on the float32
 * pattern of finite quotients q (the caller sends blocks with an infinite scale to the
 * table). Between two entries the value is nearer the one its pattern rounds to, so the
 * magnitude index is round(|pattern| >> shift) - offset, with |q| clamped to 1.0 first (one
 * range instruction: the smaller magnitude, sign cleared): adding half a step minus one
 * rounds a tie down in magnitude (toward the lower entry for positive values); for a
 * negative value one more is added (a tie goes up in magnitude, again toward the lower
 * entry). Below the smallest entry v1 the index is 1 above v1 / 2 (at v1 / 2 for negative
 * values), else 0: with t = |pattern| + bias (+ 1), that is t > half + bias. Codes:
 * 127 +- index (signed maps, zero at 127), the index for positive values of unsigned maps
 * and 0 for negative ones (zero is their nearest entry). */
typedef struct {
    __m512 one;
    __m512i bias, above, unit, top, minus_one;
    int shift;
    int32_t above_scalar;
} Minifloat;

HOT Minifloat minifloat_constants(const Buf *b) {
    const int shift = b->shift;
    const int32_t offset = minifloat_offset(b);
    const int32_t bias = ((1 << (shift - 1)) - 1) - (offset << shift);
    const int32_t half = ((1 + offset) << shift) - (1 << 23);  /* pattern of v1 / 2 */
    Minifloat m;
    m.one = _mm512_set1_ps(1.0f);
    m.bias = _mm512_set1_epi32(bias);
    m.above = _mm512_set1_epi32(half + bias);
    m.unit = _mm512_set1_epi32(1);
    m.top = _mm512_set1_epi32(127);
    m.minus_one = _mm512_set1_epi32(-1);
    m.shift = shift;
    m.above_scalar = half + bias;
    return m;
}

/* The rule's first half: t of 16 quotients, and the mask of their signs: for signed maps
 * the negative ones, for unsigned maps the others (the values that may get a non-zero code). */
HOT __m512i minifloat_t16(__m512 q, const Minifloat *m, const int is_signed, __mmask16 *sign) {
    /* imm 0b1010: the operand of smaller magnitude, sign bit cleared: min(|q|, 1) */
    const __m512i a = _mm512_castps_si512(_mm512_range_ps(q, m->one, 0x0A));
    const __m512i t = _mm512_add_epi32(a, m->bias);
    if (!is_signed) {
        *sign = _mm512_cmpgt_epi32_mask(_mm512_castps_si512(q), m->minus_one);
        return t;
    }
    *sign = _mm512_movepi32_mask(_mm512_castps_si512(q));
    return _mm512_mask_add_epi32(t, *sign, t, m->unit);
}

HOT __m512i minifloat16(__m512 q, const Minifloat *m, const int is_signed) {
    __mmask16 sign;
    const __m512i t = minifloat_t16(q, m, is_signed, &sign);
    if (is_signed) {
        const __mmask16 above = _mm512_cmpgt_epi32_mask(t, m->above);
        const __m512i index = _mm512_maskz_max_epi32(above, _mm512_srai_epi32(t, m->shift),
                                                     m->unit);
        return _mm512_mask_sub_epi32(_mm512_add_epi32(m->top, index), sign, m->top, index);
    }
    const __mmask16 above = _mm512_mask_cmpgt_epi32_mask(sign, t, m->above);
    return _mm512_maskz_max_epi32(above, _mm512_srai_epi32(t, m->shift), m->unit);
}

#if defined(__AVX512BW__) && defined(__AVX512VBMI__)
/* Word and byte picks of minifloat_words: the high half of every 32-bit lane of two vectors
 * (permutex2var_epi16), the low byte of every 16-bit lane of two (permutex2var_epi8). */
static const uint16_t HIGH_WORDS[32] = {
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
    33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
static const uint8_t LOW_BYTES[64] = {
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
    32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62,
    64, 66, 68, 70, 72, 74, 76, 78, 80, 82, 84, 86, 88, 90, 92, 94,
    96, 98, 100, 102, 104, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126};

/* The rule's second half in 16-bit lanes, 64 values at a time, for shift >= 17: there the
 * threshold half + bias ends in 16 one bits, so t > half + bias exactly when its high half
 * exceeds the threshold's, and the index t >> shift is the high half shifted by shift - 16:
 * both come from the high halves of t alone, 32 per instruction (measured: bridged fp8 step
 * 5% faster than 16 at a time). Returns how many values it did. */
HOT int64_t minifloat_words(const float *x, Divisor d, const Minifloat *m, uint8_t *codes,
                            int64_t len, const int scaled, const int is_signed) {
    const __m512 f = _mm512_set1_ps(d.f), r = _mm512_set1_ps(d.r);
    const __m512i high = _mm512_loadu_si512((const void *)HIGH_WORDS);
    const __m512i low = _mm512_loadu_si512((const void *)LOW_BYTES);
    const __m512i above = _mm512_set1_epi16((short)(m->above_scalar >> 16));
    const __m512i unit = _mm512_set1_epi16(1), top = _mm512_set1_epi16(127);
    const __m128i count = _mm_cvtsi32_si128(m->shift - 16);
    int64_t i = 0;
    for (; i + 64 <= len; i += 64) {
        __m512i code[2];
        for (int h = 0; h < 2; h++) {
            __mmask16 sign0, sign1;
            const float *at = x + i + 32 * h;
            const __m512i t0 = minifloat_t16(_mm512_castsi512_ps(quotient_bits16(
                _mm512_loadu_ps(at), f, r, scaled)), m, is_signed, &sign0);
            const __m512i t1 = minifloat_t16(_mm512_castsi512_ps(quotient_bits16(
                _mm512_loadu_ps(at + 16), f, r, scaled)), m, is_signed, &sign1);
            const __mmask32 sign = _mm512_kunpackw(sign1, sign0);
            const __m512i th = _mm512_permutex2var_epi16(t0, high, t1);
            const __mmask32 up = is_signed ? _mm512_cmpgt_epi16_mask(th, above)
                                           : _mm512_mask_cmpgt_epi16_mask(sign, th, above);
            const __m512i index = _mm512_maskz_max_epi16(up, _mm512_sra_epi16(th, count), unit);
            code[h] = is_signed ? _mm512_mask_sub_epi16(_mm512_add_epi16(top, index), sign, top,
                                                        index)
                                : index;
        }
        _mm512_storeu_si512((void *)(codes + i), _mm512_permutex2var_epi8(code[0], low, code[1]));
    }
    return i;
}
#endif

/* Minifloat codes of x[0, len) / scale, 64 at a time (minifloat_words, or the 32-bit rule
 * with VBMI packing) or 16; returns how many it did (the caller finishes with the table).
 * `scaled` and `is_signed` are constants at each call. */
HOT int64_t minifloat_loop(const float *x, Divisor d, const Buf *b, uint8_t *codes,
                           int64_t len, const int scaled, const int is_signed) {
    const Minifloat m = minifloat_constants(b);
    const __m512 f = _mm512_set1_ps(d.f), r = _mm512_set1_ps(d.r);
    int64_t i = 0;
#if defined(__AVX512BW__) && defined(__AVX512VBMI__)
    if (m.shift >= 17) i = minifloat_words(x, d, &m, codes, len, scaled, is_signed);
#endif
#define MINI16(at)                                                                            \
    minifloat16(_mm512_castsi512_ps(quotient_bits16(_mm512_loadu_ps(x + (at)), f, r, scaled)), \
                &m, is_signed)
    STORE_CODES(MINI16);
#undef MINI16
    return i;
}
#endif

/* Codes of one block: the minifloat arithmetic where the map allows it (AVX-512), else the
 * table; returns how many it did (the caller finishes). */
HOT int64_t encode_block(const float *x, Divisor d, const Buf *b, uint8_t *codes,
                         int64_t len) {
#if defined(MINIFLOAT_SIMD)
    if (b->minifloat && d.r != 0.0f) {  /* r = 0: an infinite scale, NaN quotients */
        const int is_signed = b->minifloat == 1;
        if (d.f == 1.0f)
            return is_signed ? minifloat_loop(x, d, b, codes, len, 0, 1)
                             : minifloat_loop(x, d, b, codes, len, 0, 0);
        return is_signed ? minifloat_loop(x, d, b, codes, len, 1, 1)
                         : minifloat_loop(x, d, b, codes, len, 1, 0);
    }
#endif
    return encode_simd(x, d, b->table, codes, len);
}

#if defined(__AVX512BW__)
/* Word order of minifloat_decode_halves: position 8L + i holds code 4L + i and position
 * 8L + 4 + i code 16 + 4L + i (L, i < 4), so that interleaving each 128-bit lane's low
 * and high four words with zeros gives codes 0-15 and 16-31 in order. */
static const uint16_t HALF_ORDER[32] = {
    0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23,
    8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};

/* minifloat_decode's rule (below), 32 values at a time: entries with at most 7 mantissa
 * bits (shift >= 16; minifloat_map allows 1 to 7) have float32 patterns ending in 16 zero
 * bits, so their top halves are computed in 16-bit lanes, twice as many per instruction,
 * and widened by interleaving with zeros (measured: bridged fp8 step 3% faster). */
HOT int64_t minifloat_decode_halves(const uint8_t *codes, const Buf *b, float scale,
                                    float *out, int64_t len, const int is_signed) {
    const int s16 = b->shift - 16;
    const int32_t offset = minifloat_offset(b);
    const __m512 s = _mm512_set1_ps(scale);
    const __m512i zero = _mm512_set1_epi16(127), base = _mm512_set1_epi16((short)(offset << s16));
    const __m512i sign = _mm512_set1_epi16((short)0x8000), none = _mm512_setzero_si512();
    const __m512i order = _mm512_loadu_si512((const void *)HALF_ORDER);
    const __m128i count = _mm_cvtsi32_si128(s16);
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512i d = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(codes + i)));
        if (is_signed) d = _mm512_sub_epi16(d, zero);
        const __m512i index = is_signed ? _mm512_abs_epi16(d) : d;
        __m512i bits = _mm512_maskz_add_epi16(_mm512_test_epi16_mask(index, index),
                                              _mm512_sll_epi16(index, count), base);
        if (is_signed) bits = _mm512_ternarylogic_epi32(bits, d, sign, 0xF8);
        bits = _mm512_permutexvar_epi16(order, bits);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_unpacklo_epi16(none, bits)), s));
        _mm512_storeu_ps(out + i + 16, _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_unpackhi_epi16(none, bits)), s));
    }
    return i;
}
#endif

#if defined(__AVX512F__)
/* A minifloat map's entries by arithmetic (moopt/states/minifloat_codec.py
 * minifloat_entries): d = code - 127 (signed maps) or the code (unsigned ones), pattern
 * (|d| + o) << S with the sign of d, zero for d = 0; times the block scale. Returns how many
 * values it did (whole vectors of 16). */
HOT int64_t minifloat_decode(const uint8_t *codes, const Buf *b, float scale, float *out,
                             int64_t len) {
    const int shift = b->shift;
    const int32_t zero_code = b->minifloat == 1 ? 127 : 0;
    const int32_t offset = minifloat_offset(b);
    const __m512 s = _mm512_set1_ps(scale);
    const __m512i zero = _mm512_set1_epi32(zero_code), base = _mm512_set1_epi32(offset << shift);
    const __m512i sign = _mm512_set1_epi32((int32_t)0x80000000u);
    const __m128i count = _mm_cvtsi32_si128(shift);
    int64_t i = 0;
#if defined(__AVX512BW__)
    if (shift >= 16)
        i = b->minifloat == 1 ? minifloat_decode_halves(codes, b, scale, out, len, 1)
                              : minifloat_decode_halves(codes, b, scale, out, len, 0);
#endif
    for (; i + 16 <= len; i += 16) {
        __m512i d = _mm512_sub_epi32(
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i))), zero);
        __m512i index = _mm512_abs_epi32(d);
        __m512i bits = _mm512_add_epi32(_mm512_sll_epi32(index, count), base);
        /* bits | (d & sign) where the index is not 0, else 0 */
        bits = _mm512_maskz_ternarylogic_epi32(_mm512_test_epi32_mask(index, index), bits, d,
                                               sign, 0xF8);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_castsi512_ps(bits), s));
    }
    return i;
}
#endif

/* Values [start, start + n) of `b` as float32 in `out` (n spans whole blocks, or the tail). */
HOT void load(const Buf *b, int64_t start, int64_t n, float *restrict out) {
    if (b->kind == KIND_BF16) {
        const uint16_t *restrict src = (const uint16_t *)b->data + start;
        for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(src[i]);
        return;
    }
    const uint8_t *restrict codes = (const uint8_t *)b->data + start;
    const float *restrict values = b->values;
    int64_t bs = b->block;
    const float *scales = b->absmax + start / bs;  /* n spans whole blocks from `start` */
    for (int64_t j = 0; j < n; j += bs) {
        int64_t len = n - j < bs ? n - j : bs;
        float scale = *scales++;
#if defined(__AVX512F__)
        int64_t i = b->minifloat ? minifloat_decode(codes + j, b, scale, out + j, len)
                                 : decode_simd(codes + j, values, b->planes, scale, out + j, len);
#else
        int64_t i = decode_simd(codes + j, values, b->planes, scale, out + j, len);
#endif
        for (; i < len; i++) out[j + i] = values[codes[j + i]] * scale;
    }
}

/* |x| as an integer: for non-negative floats the bit patterns sort like the values, and NaN
 * patterns sort above inf, so NaN wins like in torch.amax. */
static inline uint32_t magnitude_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u & 0x7FFFFFFFu;
}
#define TRACK(t, x) do { uint32_t a_ = magnitude_bits(x); t = a_ > t ? a_ : t; } while (0)

/* Writes values [start, start + n) of `b` from `in`. `tops`, if given, holds every block's
 * magnitude maximum as magnitude_bits() (the update loop keeps them), else they are found
 * here. */
HOT void store(const Buf *b, int64_t start, int64_t n, const float *restrict in,
               const uint32_t *tops) {
    if (b->kind == KIND_BF16) {
        uint16_t *restrict dst = (uint16_t *)b->data + start;
        for (int64_t i = 0; i < n; i++) dst[i] = f32_to_bf16(in[i]);
        return;
    }
    uint8_t *restrict codes = (uint8_t *)b->data + start;
    const int32_t *restrict table = b->table;
    int64_t bs = b->block, first = start / bs;
    for (int64_t j = 0; j < n; j += bs) {
        int64_t len = n - j < bs ? n - j : bs;
        const float *restrict x = in + j;
        uint32_t top = 0;
        if (tops) {
            top = tops[j / bs];
        } else {
            for (int64_t i = 0; i < len; i++) TRACK(top, x[i]);
        }
        float amax;
        memcpy(&amax, &top, 4);
        b->absmax[first + j / bs] = amax;
        uint32_t e = top >> 23;
        if (amax > 0.0f) {
            /* The key is the top 16 bits of the float32 pattern of the quotient (see
             * quotient()); the one map midpoint inside a key's interval, if any, shares
             * them. The key's table entry is `T << 16 | step << 8 | code`: the code is
             * the answer unless the pattern's low 16 bits exceed T, then it is code + step
             * (mod 256). Positive keys: T = the midpoint's low bits, step +1; negative
             * ones, whose values fall as their patterns grow: T = those bits - 1, step -1
             * from the code above the midpoint; T = 0xFFFF where nothing can pass (see
             * native.py's _map_tables). One integer gather and one compare per value, no
             * sign handling. */
            Divisor d = {1.0f, 0.0f};
            float scale = amax;
            if (e < 50 || (e > 226 && e < 255)) {
                /* finite, outside [2^-77, 2^100): scale by 2^(127 - e) first (exact; the
                 * subnormal 2^-127 for e = 254); an infinite scale has r = 0 */
                uint32_t fbits = e == 254 ? 0x00400000u : (254u - e) << 23;
                memcpy(&d.f, &fbits, 4);
                scale = amax * d.f;
            }
            d.r = 1.0f / scale;
            int64_t i = encode_block(x, d, b, codes + j, len);
            for (; i < len; i++) {
                float q = quotient(x[i], d);
                int32_t bits;
                memcpy(&bits, &q, 4);
                codes[j + i] = code_of(bits, table);
            }
        } else {
            /* Zero or NaN blocks keep scale 1 (as in torch; NaN signs survive). */
            for (int64_t i = 0; i < len; i++) {
                int32_t bits;
                memcpy(&bits, &x[i], 4);
                codes[j + i] = code_of(bits, table);
            }
        }
    }
}

/* like torch.maximum: NaN wins (ties, +0 and -0, give a). Written as x86's max (the second
 * operand where the comparison fails, a NaN a included) with one check of b, so that the
 * loops use three instructions instead of five (measured: bridged fp8 step 2% faster). */
static inline float maximum(float a, float b) {
    float m = b > a ? b : a;
    return b != b ? b : m;
}

/* like torch.clamp(x, -bound, bound): NaN stays NaN. Two x86 min/max instructions: each
 * keeps x where the comparison fails, NaN included. */
static inline float clamp(float x, float bound) {
    x = bound < x ? bound : x;
    return -bound > x ? -bound : x;
}

#if defined(__AVX512F__)
#define VECTOR16 1
/* The same helpers on 16 floats at a time (GCC vector types: + - * / act lane-wise and a
 * float operand is broadcast), each the same instruction per lane as the scalar one, so
 * that the policies' element rules below can be written once for both (via _Generic). */
typedef __m512 F16;
HOT F16 abs16(F16 x) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x),
                                                _mm512_set1_epi32(0x7FFFFFFF)));
}
HOT F16 sqrt16(F16 x) { return _mm512_sqrt_ps(x); }
/* maximum(): _mm512_max_ps(b, a) is b > a ? b : a lane-wise (a where either is NaN). */
HOT F16 maximum16(F16 a, F16 b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), _mm512_max_ps(b, a), b);
}
/* clamp(): _mm512_min_ps(x, y) is x < y ? x : y, _mm512_max_ps(x, y) x > y ? x : y. */
HOT F16 clamp16(F16 x, float bound) {
    x = _mm512_min_ps(_mm512_set1_ps(bound), x);
    return _mm512_max_ps(_mm512_set1_ps(-bound), x);
}
#define ELEMENTWISE(SCALAR, VECTOR, x) _Generic((x), F16: VECTOR, default: SCALAR)
#else
#define ELEMENTWISE(SCALAR, VECTOR, x) SCALAR
#endif

/* ---------------------------------------------------------------------------------------
 * The policies' math, element by element, as declared in moopt/states/{adam,bridged}.py.
 *
 * Scalars and buffers are found by name: the build defines, from the declarations
 * (moopt/states/fast/native_tables.py), P_C_<coefficient> (offset in a term block of the
 * scalar vector, after the term's scale at offset 0), P_S_<buffer> (slot of the buffer in an
 * alternating step), P_NSHARED, P_NOWN, P_NCOEF and P_MIX for P in SHARED, DECOUPLED,
 * BRIDGED. The scalar vector (moopt/states/rule.py) is [decay, a_1 .. a_K, term blocks].
 * --------------------------------------------------------------------------------------- */

/* The cancellation guard of bridged (moopt/states/bridged.py, guarded_direction): the one
 * place it is written here, for float and (with AVX-512) F16 values, in two halves: the
 * radicand max(|vk_hat + vb_hat|, (|vk_hat| + |vb_hat|) u), then the direction
 * (mk_hat + mb_hat) / (sqrt(radicand) + eps), clipped to [-bound, bound] (the halves let the
 * vector loop below overlap one vector's square root and division with the next one's
 * arithmetic). `vb_abs` is |vb_hat| (a joint step computes it once for all its terms).
 * `clamped` 0 leaves out the clip, for a bound of +inf only: there the clip is the identity
 * (NaN included), and float32 state has no bound. */
#define DEFINE_GUARD(T, SUFFIX, ABS, SQRT, MAXIMUM, CLAMP)                                    \
    HOT T guard_radicand##SUFFIX(T vk_hat, T vb_hat, T vb_abs, float guard_u) {              \
        return MAXIMUM(ABS(vk_hat + vb_hat), (ABS(vk_hat) + vb_abs) * guard_u);               \
    }                                                                                         \
    HOT T guarded_finish##SUFFIX(T numerator, T radicand, float eps, float bound,             \
                                 const int clamped) {                                         \
        T direction = numerator / (SQRT(radicand) + eps);                                     \
        return clamped ? CLAMP(direction, bound) : direction;                                 \
    }
DEFINE_GUARD(float, , fabsf, sqrtf, maximum, clamp)
#if defined(VECTOR16)
DEFINE_GUARD(F16, 16, abs16, sqrt16, maximum16, clamp16)
#endif
#define GUARD_RADICAND(vk_hat, ...)                                                           \
    ELEMENTWISE(guard_radicand, guard_radicand16, vk_hat)(vk_hat, __VA_ARGS__)
#define GUARDED_FINISH(numerator, ...)                                                        \
    ELEMENTWISE(guarded_finish, guarded_finish16, numerator)(numerator, __VA_ARGS__)
#define ABS_OF(x) ELEMENTWISE(fabsf, abs16, x)(x)

/* Adam (shared, decoupled): adam.adam_update. The coefficients of a term are read into a
 * local struct first (the compiler cannot know that the arrays do not alias the scalar
 * vector); loops name it K (one term) or K1, K2 (two). */
typedef struct { float b1, a1, b2, a2, c1, c2, eps, bound; } AdamCoef;
#define ADAM_COEF(P, t)                                                                       \
    ((AdamCoef){(t)[P##_C_b1], (t)[P##_C_a1], (t)[P##_C_b2], (t)[P##_C_a2], (t)[P##_C_c1],    \
                (t)[P##_C_c2], (t)[P##_C_eps], (t)[P##_C_bound]})
#define ADAM_SCALARS(P, t) const AdamCoef K = ADAM_COEF(P, t)
#define ADAM_ELEMENT_K(K, grad, m_old, v_old, m_new, v_new, dir)                              \
    do {                                                                                      \
        m_new = (m_old) * (K).b1 + (grad) * (K).a1;                                           \
        v_new = (v_old) * (K).b2 + (grad) * (grad) * (K).a2;                                  \
        dir = clamp((m_new * (K).c1) / (sqrtf(v_new * (K).c2) + (K).eps), (K).bound);         \
    } while (0)
#define ADAM_ELEMENT(...) ADAM_ELEMENT_K(K, __VA_ARGS__)

/* Bridged: BridgedPolicy.update. */
typedef struct {
    float b1, a1, b2, a2, b3, a3, b4, a4, cb1, cb2, c1, c2, eps, guard_u, bound;
} BridgedCoef;
#define BRIDGED_COEF(t)                                                                       \
    ((BridgedCoef){(t)[BRIDGED_C_b1], (t)[BRIDGED_C_a1], (t)[BRIDGED_C_b2], (t)[BRIDGED_C_a2], \
                   (t)[BRIDGED_C_b3], (t)[BRIDGED_C_a3], (t)[BRIDGED_C_b4], (t)[BRIDGED_C_a4], \
                   (t)[BRIDGED_C_cb1], (t)[BRIDGED_C_cb2], (t)[BRIDGED_C_c1], (t)[BRIDGED_C_c2], \
                   (t)[BRIDGED_C_eps], (t)[BRIDGED_C_guard_u], (t)[BRIDGED_C_bound]})
#define BRIDGED_SCALARS(t) const BridgedCoef K = BRIDGED_COEF(t)
/* One term up to the guard's radicand, for float or F16 values, given the products of the
 * base that do not depend on the gradient: mb_hat = m_b cb1, vb_hat = v_b cb2, vb_abs =
 * |vb_hat|, mb_kept = m_b b3, vb_kept = v_b b4 (a joint step whose terms share the base
 * coefficients computes them once); GUARDED_FINISH(numerator, radicand, ...) is its
 * direction. */
#define BRIDGED_TERM_FRONT(K, grad, mb_hat, vb_hat, vb_abs, mb_kept, vb_kept, mk_old, vk_old,   \
                           mk_new, vk_new, mb_new, vb_new, numerator, radicand)               \
    do {                                                                                      \
        const __typeof__(mk_new) g2_ = (grad) * (grad);                                       \
        mk_new = (mk_old) * (K).b1 + ((grad) - (mb_hat)) * (K).a1;                            \
        vk_new = (vk_old) * (K).b2 + (g2_ - (vb_hat)) * (K).a2;                               \
        numerator = mk_new * (K).c1 + (mb_hat);                                               \
        radicand = GUARD_RADICAND(vk_new * (K).c2, vb_hat, vb_abs, (K).guard_u);              \
        mb_new = (mb_kept) + (grad) * (K).a3;                                                 \
        vb_new = (vb_kept) + g2_ * (K).a4;                                                    \
    } while (0)
#define BRIDGED_TERM(K, grad, mb_hat, vb_hat, vb_abs, mb_kept, vb_kept, mk_old, vk_old,         \
                     mk_new, vk_new, mb_new, vb_new, dir, clamped)                            \
    do {                                                                                      \
        __typeof__(mk_new) numerator_, radicand_;                                             \
        BRIDGED_TERM_FRONT(K, grad, mb_hat, vb_hat, vb_abs, mb_kept, vb_kept, mk_old, vk_old, \
                           mk_new, vk_new, mb_new, vb_new, numerator_, radicand_);            \
        dir = GUARDED_FINISH(numerator_, radicand_, (K).eps, (K).bound, clamped);             \
    } while (0)
/* A whole alternating element (one term, the base products from the old base values). */
#define BRIDGED_ELEMENT_FRONT(K, grad, mb_old, vb_old, mk_old, vk_old, mk_new, vk_new, mb_new,  \
                              vb_new, numerator, radicand)                                    \
    do {                                                                                      \
        const __typeof__(mk_new) mb_hat_ = (mb_old) * (K).cb1, vb_hat_ = (vb_old) * (K).cb2;  \
        BRIDGED_TERM_FRONT(K, grad, mb_hat_, vb_hat_, ABS_OF(vb_hat_), (mb_old) * (K).b3,     \
                           (vb_old) * (K).b4, mk_old, vk_old, mk_new, vk_new, mb_new, vb_new, \
                           numerator, radicand);                                              \
    } while (0)
#define BRIDGED_ELEMENT_K(K, grad, mb_old, vb_old, mk_old, vk_old, mk_new, vk_new, mb_new,     \
                          vb_new, dir)                                                        \
    do {                                                                                      \
        __typeof__(mk_new) numerator_, radicand_;                                             \
        BRIDGED_ELEMENT_FRONT(K, grad, mb_old, vb_old, mk_old, vk_old, mk_new, vk_new, mb_new, \
                              vb_new, numerator_, radicand_);                                 \
        dir = GUARDED_FINISH(numerator_, radicand_, (K).eps, (K).bound, 1);                   \
    } while (0)
#define BRIDGED_ELEMENT(...) BRIDGED_ELEMENT_K(K, __VA_ARGS__)
/* The new buffer values in slot order (for the 8-bit maxima, kept per slot). */
#define BRIDGED_IN_SLOTS(in_slot, mb_new, vb_new, mk_new, vk_new)                             \
    do {                                                                                      \
        in_slot[BRIDGED_S_m_base] = mb_new; in_slot[BRIDGED_S_v_base] = vb_new;               \
        in_slot[BRIDGED_S_m] = mk_new; in_slot[BRIDGED_S_v] = vk_new;                         \
    } while (0)

/* The update loops, written once and instantiated for float32 state (updated in place, or
 * in scratch after decoding) and for bfloat16 state (converted in registers, so that a
 * bf16 step streams every buffer once, side by side, like a float32 one). */
#define LD_F32(a, i) ((a)[i])
#define ST_F32(a, i, x) ((a)[i] = (x))
#define LD_BF16(a, i) bf16_to_f32((a)[i])
#define ST_BF16(a, i, x) ((a)[i] = f32_to_bf16(x))


/* The update loops run block by block (`bs` values; the whole range if not TOPS) and, with
 * TOPS, keep the per-block maximum magnitude of each of their NTOP output buffers in
 * top[k * nb + block] for the 8-bit encoder (TRACK(t0..t3, value) in the body).
 * VECTORS(TOPS) (NO_VECTORS, or a loop's vector part) does the first values of each block
 * [j, end) a vector at a time, advancing `i` and setting t0..t3 for them; the body does the
 * rest. */
#define FOR_BLOCKS(TOPS, NTOP, VECTORS, ...)                                                  \
    const int64_t nb = TOPS ? (n + bs - 1) / bs : 1;                                          \
    if (!TOPS) bs = n;                                                                        \
    for (int64_t j = 0; j < n; j += bs) {                                                     \
        const int64_t end = n - j < bs ? n : j + bs;                                          \
        uint32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;                                              \
        int64_t i = j;                                                                        \
        VECTORS(TOPS)                                                                         \
        for (; i < end; i++) { __VA_ARGS__ }                                                  \
        if (TOPS) {                                                                           \
            const uint32_t found[4] = {t0, t1, t2, t3};                                       \
            for (int k_ = 0; k_ < NTOP; k_++) top[k_ * nb + j / bs] = found[k_];              \
        }                                                                                     \
    }

/* Alternating steps, in place: p <- p decay - lr direction, buffers in their slot order
 * (t: the term block; s[0]: decay). Kept out of line (UPDATE_LOOP): inlined into the
 * piece driver, which holds the codecs' state too, the update loop lost registers to it
 * and spilled its bound, and its speed swung with unrelated edits (measured on the AMD EPYC
 * of docs/benchmarks.md: a bridged fp8 step 3-4% faster out of line; the call is once per
 * piece of 256 or more values). */
#define UPDATE_LOOP __attribute__((noinline)) static void
#define NO_VECTORS(TOPS)
#define DEFINE_ADAM_CHUNK(NAME, P, T, LD, ST, TOPS)                                           \
    UPDATE_LOOP NAME(float *restrict p, const float *restrict g, T *restrict m,               \
                     T *restrict v, int64_t n, const float *s, int64_t bs,                    \
                     uint32_t *restrict top) {                                                \
        const float *t = s + 2;                                                               \
        const float decay = s[0], lr = t[0];                                                  \
        ADAM_SCALARS(P, t);                                                                   \
        FOR_BLOCKS(TOPS, 2, NO_VECTORS,                                                       \
            float grad = g[i], m_new, v_new, direction;                                       \
            ADAM_ELEMENT(grad, LD(m, i), LD(v, i), m_new, v_new, direction);                  \
            p[i] = p[i] * decay - lr * direction;                                             \
            ST(m, i, m_new);                                                                  \
            ST(v, i, v_new);                                                                  \
            if (TOPS) { /* maxima in slot order */                                            \
                float in_slot[2]; in_slot[P##_S_m] = m_new; in_slot[P##_S_v] = v_new;         \
                TRACK(t0, in_slot[0]); TRACK(t1, in_slot[1]); })                              \
    }

#if defined(VECTOR16)
/* Alternating bridged steps on the whole vectors of [0, n) of float32 arrays, software-
 * pipelined: each iteration does one vector's arithmetic up to the guard's radicand (and
 * its new state) and the previous vector's square root, division and parameter update, so
 * that the long chain through the divider overlaps independent work instead of waiting
 * for it (the compiler's loop waits: measured on the AMD EPYC of docs/benchmarks.md, 40
 * cycles per 16 values with data in the cache, 37 pipelined; a bridged fp8 step 3% faster).
 * The same operations per value as BRIDGED_ELEMENT. Returns how many values it did; with
 * `tops`, most[slot] is the largest magnitude_bits() of each buffer's new values. */
HOT int64_t bridged_vectors(float *restrict p, const float *restrict g, float *restrict mb,
                            float *restrict vb, float *restrict mk, float *restrict vk,
                            int64_t n, const BridgedCoef *coef, float decay, float lr,
                            const int tops, uint32_t most[4]) {
    const int64_t whole = n & ~(int64_t)15;
    if (whole == 0) return 0;
    const BridgedCoef K = *coef;
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
    __m512i top16[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};
    F16 numerator, radicand;
#define BRIDGED_FRONT16(at)                                                                   \
    do {                                                                                      \
        const F16 grad_ = _mm512_loadu_ps(g + (at));                                          \
        const F16 mb_old_ = _mm512_loadu_ps(mb + (at)), vb_old_ = _mm512_loadu_ps(vb + (at)); \
        F16 mk_new_, vk_new_, mb_new_, vb_new_;                                               \
        BRIDGED_ELEMENT_FRONT(K, grad_, mb_old_, vb_old_, _mm512_loadu_ps(mk + (at)),         \
                              _mm512_loadu_ps(vk + (at)), mk_new_, vk_new_, mb_new_, vb_new_, \
                              numerator, radicand);                                           \
        _mm512_storeu_ps(mk + (at), mk_new_);                                                 \
        _mm512_storeu_ps(vk + (at), vk_new_);                                                 \
        _mm512_storeu_ps(mb + (at), mb_new_);                                                 \
        _mm512_storeu_ps(vb + (at), vb_new_);                                                 \
        if (tops) {                                                                           \
            F16 in_slot_[4];                                                                  \
            BRIDGED_IN_SLOTS(in_slot_, mb_new_, vb_new_, mk_new_, vk_new_);                   \
            for (int k_ = 0; k_ < 4; k_++)                                                    \
                top16[k_] = _mm512_max_epu32(                                                 \
                    top16[k_], _mm512_and_si512(_mm512_castps_si512(in_slot_[k_]), magnitude)); \
        }                                                                                     \
    } while (0)
#define BRIDGED_BACK16(at, numerator_of, radicand_of)                                        \
    do {                                                                                      \
        const F16 direction_ = GUARDED_FINISH(numerator_of, radicand_of, K.eps, K.bound, 1);  \
        _mm512_storeu_ps(p + (at), _mm512_loadu_ps(p + (at)) * decay - lr * direction_);      \
    } while (0)
    BRIDGED_FRONT16(0);
    for (int64_t i = 16; i < whole; i += 16) {
        const F16 numerator_before = numerator, radicand_before = radicand;
        BRIDGED_FRONT16(i);
        BRIDGED_BACK16(i - 16, numerator_before, radicand_before);
    }
    BRIDGED_BACK16(whole - 16, numerator, radicand);
#undef BRIDGED_FRONT16
#undef BRIDGED_BACK16
    if (tops)
        for (int k = 0; k < 4; k++) most[k] = _mm512_reduce_max_epu32(top16[k]);
    return whole;
}
/* FOR_BLOCKS' VECTORS for the float32 bridged loops. */
#define BRIDGED_VECTORS(TOPS)                                                                 \
    {                                                                                         \
        uint32_t most_[4] = {0, 0, 0, 0};                                                     \
        i += bridged_vectors(p + i, g + i, mb + i, vb + i, mk + i, vk + i, end - i, &K, decay, \
                             lr, TOPS, most_);                                                \
        t0 = most_[0]; t1 = most_[1]; t2 = most_[2]; t3 = most_[3];                           \
    }
#else
#define BRIDGED_VECTORS NO_VECTORS
#endif

#define DEFINE_BRIDGED_CHUNK(NAME, T, LD, ST, TOPS, VECTORS)                                  \
    UPDATE_LOOP NAME(float *restrict p, const float *restrict g, T *restrict mb,              \
                     T *restrict vb, T *restrict mk, T *restrict vk, int64_t n,               \
                     const float *s, int64_t bs, uint32_t *restrict top) {                    \
        const float *t = s + 2;                                                               \
        const float decay = s[0], lr = t[0];                                                  \
        BRIDGED_SCALARS(t);                                                                   \
        FOR_BLOCKS(TOPS, 4, VECTORS,                                                          \
            float grad = g[i], mk_new, vk_new, mb_new, vb_new, direction;                     \
            BRIDGED_ELEMENT(grad, LD(mb, i), LD(vb, i), LD(mk, i), LD(vk, i), mk_new, vk_new,  \
                            mb_new, vb_new, direction);                                       \
            p[i] = p[i] * decay - lr * direction;                                             \
            ST(mk, i, mk_new);                                                                \
            ST(vk, i, vk_new);                                                                \
            ST(mb, i, mb_new);                                                                \
            ST(vb, i, vb_new);                                                                \
            if (TOPS) { /* maxima in slot order */                                            \
                float in_slot[4];                                                             \
                BRIDGED_IN_SLOTS(in_slot, mb_new, vb_new, mk_new, vk_new);                    \
                TRACK(t0, in_slot[0]); TRACK(t1, in_slot[1]);                                 \
                TRACK(t2, in_slot[2]); TRACK(t3, in_slot[3]); })                              \
    }

DEFINE_ADAM_CHUNK(shared_chunk, SHARED, float, LD_F32, ST_F32, 0)
DEFINE_ADAM_CHUNK(shared_chunk_bf16, SHARED, uint16_t, LD_BF16, ST_BF16, 0)
DEFINE_ADAM_CHUNK(shared_chunk_tops, SHARED, float, LD_F32, ST_F32, 1)
DEFINE_ADAM_CHUNK(decoupled_chunk, DECOUPLED, float, LD_F32, ST_F32, 0)
DEFINE_ADAM_CHUNK(decoupled_chunk_bf16, DECOUPLED, uint16_t, LD_BF16, ST_BF16, 0)
DEFINE_ADAM_CHUNK(decoupled_chunk_tops, DECOUPLED, float, LD_F32, ST_F32, 1)
DEFINE_BRIDGED_CHUNK(bridged_chunk, float, LD_F32, ST_F32, 0, BRIDGED_VECTORS)
DEFINE_BRIDGED_CHUNK(bridged_chunk_bf16, uint16_t, LD_BF16, ST_BF16, 0, NO_VECTORS)
DEFINE_BRIDGED_CHUNK(bridged_chunk_tops, float, LD_F32, ST_F32, 1, BRIDGED_VECTORS)

/* Kernel families (native.py FAMILY): the built-in policies. */
enum { FAMILY_SHARED = 0, FAMILY_DECOUPLED = 1, FAMILY_BRIDGED = 2 };

/* What the rule needs of each family (native_tables.py places these from the declarations):
 * shared and per-objective buffer counts, coefficients per term, "mix" joint mode. */
typedef struct { int shared, own, coefficients, mix; } Family;
static const Family FAMILIES[3] = {
    {SHARED_NSHARED, SHARED_NOWN, SHARED_NCOEF, SHARED_MIX},
    {DECOUPLED_NSHARED, DECOUPLED_NOWN, DECOUPLED_NCOEF, DECOUPLED_MIX},
    {BRIDGED_NSHARED, BRIDGED_NOWN, BRIDGED_NCOEF, BRIDGED_MIX},
};

/* One piece of an alternating step through the loop of `family`, buffers in slot order
 * (tops: per-block maxima for 8-bit buffers, or NULL). */
#define DISPATCH(SUFFIX, B)                                                                   \
    do {                                                                                      \
        switch (family) {                                                                     \
        case FAMILY_SHARED:                                                                   \
            shared_chunk##SUFFIX(p, g, B[SHARED_S_m], B[SHARED_S_v], n, s, bs, top); break;   \
        case FAMILY_DECOUPLED:                                                                \
            decoupled_chunk##SUFFIX(p, g, B[DECOUPLED_S_m], B[DECOUPLED_S_v], n, s, bs, top); \
            break;                                                                            \
        default:                                                                              \
            bridged_chunk##SUFFIX(p, g, B[BRIDGED_S_m_base], B[BRIDGED_S_v_base],             \
                                  B[BRIDGED_S_m], B[BRIDGED_S_v], n, s, bs, top);             \
            break;                                                                            \
        }                                                                                     \
    } while (0)

static void run_f32(int family, float *p, const float *g, float **b, int64_t n,
                    const float *s, int64_t bs, uint32_t *top) {
    if (top) DISPATCH(_tops, b); else DISPATCH(, b);
}

static void run_bf16(int family, float *p, const float *g, uint16_t **h, int64_t n,
                     const float *s) {
    int64_t bs = 0;
    uint32_t *top = NULL;
    DISPATCH(_bf16, h);
}

/* Joint steps: one term of a family on plain float arrays (restrict pointers, so that the
 * loops vectorise), combined with the terms before it in the same loop (the rule of
 * moopt/states/rule.py, in its order of operations):
 *   u = scale * direction (first term) or acc + scale * direction; the last term writes
 *   p <- p * decay - u, the others keep u in `acc`;
 *   a shared buffer's new value x: with one term x itself, else x * a (first term) or
 *   sum + x * a, kept in its accumulator `*_sum` (after the last term: its new value).
 * The objective's own buffers are updated in place. The math assumes the roles the
 * declarations give (checked here). */
_Static_assert(SHARED_NSHARED == 2 && SHARED_NOWN == 0, "shared: m and v are shared");
_Static_assert(DECOUPLED_NSHARED == 0 && DECOUPLED_NOWN == 2, "decoupled: m and v are own");
_Static_assert(BRIDGED_NSHARED == 2 && BRIDGED_NOWN == 2 && BRIDGED_S_m_base < 2 &&
               BRIDGED_S_v_base < 2, "bridged: the base is shared, the deltas own");

/* How a term combines with the others (see above); FIRST and LAST are constants of each
 * instantiation below, so that every loop vectorises without branches. */
typedef struct {
    float scale, a, decay;
} Term;

#define COMBINE_UPDATE(FIRST, LAST, i, direction)                                              \
    do {                                                                                      \
        float u_ = c.scale * (direction);                                                     \
        if (!(FIRST)) u_ = acc[i] + u_;                                                       \
        if (LAST) p[i] = p[i] * c.decay - u_; else acc[i] = u_;                               \
    } while (0)
#define COMBINE_SHARED(FIRST, LAST, sum, i, value)                                            \
    do {                                                                                      \
        float x_ = (value);                                                                   \
        if (!((FIRST) && (LAST))) x_ = (FIRST) ? x_ * c.a : (sum)[i] + x_ * c.a;              \
        (sum)[i] = x_;                                                                        \
    } while (0)

#define DEFINE_TERMS(FIRST, LAST, SUFFIX)                                                     \
    static void shared_term##SUFFIX(const float *restrict g, int64_t n, const float *t,       \
                                    Term c, const float *restrict m, const float *restrict v, \
                                    float *restrict m_sum, float *restrict v_sum,             \
                                    float *restrict acc, float *restrict p) {                 \
        ADAM_SCALARS(SHARED, t);                                                              \
        for (int64_t i = 0; i < n; i++) {                                                     \
            float m_new, v_new, direction;                                                    \
            ADAM_ELEMENT(g[i], m[i], v[i], m_new, v_new, direction);                          \
            COMBINE_UPDATE(FIRST, LAST, i, direction);                                        \
            COMBINE_SHARED(FIRST, LAST, m_sum, i, m_new);                                                  \
            COMBINE_SHARED(FIRST, LAST, v_sum, i, v_new);                                                  \
        }                                                                                     \
    }                                                                                         \
    static void decoupled_term##SUFFIX(const float *restrict g, int64_t n, const float *t,    \
                                       Term c, float *restrict m, float *restrict v,          \
                                       float *restrict acc, float *restrict p) {              \
        ADAM_SCALARS(DECOUPLED, t);                                                           \
        for (int64_t i = 0; i < n; i++) {                                                     \
            float m_new, v_new, direction;                                                    \
            ADAM_ELEMENT(g[i], m[i], v[i], m_new, v_new, direction);                          \
            m[i] = m_new;                                                                     \
            v[i] = v_new;                                                                     \
            COMBINE_UPDATE(FIRST, LAST, i, direction);                                        \
        }                                                                                     \
    }                                                                                         \
    static void bridged_term##SUFFIX(const float *restrict g, int64_t n, const float *t,      \
                                     Term c, const float *restrict mb,                        \
                                     const float *restrict vb, float *restrict mk,            \
                                     float *restrict vk, float *restrict mb_sum,              \
                                     float *restrict vb_sum, float *restrict acc,             \
                                     float *restrict p) {                                     \
        BRIDGED_SCALARS(t);                                                                   \
        for (int64_t i = 0; i < n; i++) {                                                     \
            float mk_new, vk_new, mb_new, vb_new, direction;                                  \
            BRIDGED_ELEMENT(g[i], mb[i], vb[i], mk[i], vk[i], mk_new, vk_new, mb_new, vb_new,  \
                            direction);                                                       \
            mk[i] = mk_new;                                                                   \
            vk[i] = vk_new;                                                                   \
            COMBINE_UPDATE(FIRST, LAST, i, direction);                                        \
            COMBINE_SHARED(FIRST, LAST, mb_sum, i, mb_new);                                                \
            COMBINE_SHARED(FIRST, LAST, vb_sum, i, vb_new);                                                \
        }                                                                                     \
    }                                                                                         \
    static void run_term##SUFFIX(int family, const float *g, int64_t n, const float *t,       \
                                 Term c, float *const *in, float *const *sum,                 \
                                 float *const *own, float *acc, float *p) {                   \
        switch (family) {                                                                     \
        case FAMILY_SHARED:                                                                   \
            shared_term##SUFFIX(g, n, t, c, in[SHARED_S_m], in[SHARED_S_v], sum[SHARED_S_m],  \
                                sum[SHARED_S_v], acc, p);                                     \
            break;                                                                            \
        case FAMILY_DECOUPLED:                                                                \
            decoupled_term##SUFFIX(g, n, t, c, own[DECOUPLED_S_m - DECOUPLED_NSHARED],        \
                                   own[DECOUPLED_S_v - DECOUPLED_NSHARED], acc, p);           \
            break;                                                                            \
        default:                                                                              \
            bridged_term##SUFFIX(g, n, t, c, in[BRIDGED_S_m_base], in[BRIDGED_S_v_base],      \
                                 own[BRIDGED_S_m - BRIDGED_NSHARED],                          \
                                 own[BRIDGED_S_v - BRIDGED_NSHARED], sum[BRIDGED_S_m_base],   \
                                 sum[BRIDGED_S_v_base], acc, p);                              \
            break;                                                                            \
        }                                                                                     \
    }

/* `in`: the shared buffers' current values (slot order), `sum`: their accumulators, `own`:
 * the term's own buffers (slot order after the shared ones). */
DEFINE_TERMS(1, 1, _only)
DEFINE_TERMS(1, 0, _first)
DEFINE_TERMS(0, 0, _middle)
DEFINE_TERMS(0, 1, _last)

static void run_term(int family, const float *g, int64_t n, const float *t, Term c, int first,
                     int last, float *const *in, float *const *sum, float *const *own,
                     float *acc, float *p) {
    if (first && last) run_term_only(family, g, n, t, c, in, sum, own, acc, p);
    else if (first) run_term_first(family, g, n, t, c, in, sum, own, acc, p);
    else if (last) run_term_last(family, g, n, t, c, in, sum, own, acc, p);
    else run_term_middle(family, g, n, t, c, in, sum, own, acc, p);
}

/* The calling thread's index in its parallel region (0 without OpenMP). */
static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Chunk length: whole blocks of every 8-bit buffer (0 if their block sizes differ). */
static int64_t chunk_length(const Buf *bufs, int nbuf) {
    int64_t block = 0;
    for (int k = 0; k < nbuf; k++) {
        if (bufs[k].kind != KIND_INT8) continue;
        if (block && block != bufs[k].block) return 0;
        block = bufs[k].block;
    }
    if (!block) return 4096;
    int64_t chunk = block;
    while (chunk < 4096) chunk += block;
    return chunk;
}

/* Low-bit buffers go through scratch in pieces of at least PIECE values (whole 8-bit blocks),
 * small enough for the scratch to stay in the L1 cache between decoding, updating and
 * encoding (measured: 9% faster than whole 4096-value chunks for 8-bit bridged), and of at
 * least PIECE_MANY with more than two low-bit buffers (bridged: four; measured on the AMD
 * EPYC of docs/benchmarks.md: an fp8 step 7% faster with 256 than with 512, while shared
 * and decoupled, with two, are fastest at 512). */
#define PIECE 512
#define PIECE_MANY 256
/* Joint steps keep more arrays in scratch per piece. */
#define JOINT_PIECE 128

/* The piece length for a step whose 8-bit buffers have blocks of `qblock` (0: none). */
static int64_t piece_length(int64_t qblock, int64_t least, int64_t chunk) {
    int64_t piece = qblock ? qblock : least;
    while (piece < least) piece += piece;
    return piece > chunk ? chunk : piece;
}

/* Alternating step of one parameter. Returns 0, -1 if the buffers cannot be taken, -2 if
 * scratch could not be allocated (nothing changed then). */
static int run_alternating(int family, float *p, const float *g, int64_t n, Buf *bufs,
                           int nbuf, const float *s, int threads) {
    int64_t chunk = chunk_length(bufs, nbuf);
    if (chunk <= 0) return -1;
    int64_t nchunks = (n + chunk - 1) / chunk;
    /* bf16-only state is converted in registers by the _bf16 loops and needs no scratch. */
    int all_bf16 = 1, lowbit = 0;
    int64_t qblock = 0;  /* the 8-bit buffers' block size (chunk_length checked they agree) */
    for (int k = 0; k < nbuf; k++) {
        all_bf16 &= bufs[k].kind == KIND_BF16;
        lowbit += bufs[k].kind != KIND_F32;
        if (bufs[k].kind == KIND_INT8) qblock = bufs[k].block;
    }
    if (all_bf16) lowbit = 0;
    /* Low-bit state goes through scratch in pieces; float32 and bfloat16 state is updated in
     * place, a whole chunk at a time. */
    int64_t piece = lowbit ? piece_length(qblock, lowbit > 2 ? PIECE_MANY : PIECE, chunk)
                           : chunk;
    if (threads < 1 || nchunks < 2) threads = 1;
    /* Scratch for every thread (values, per-block maxima), allocated before anything is
     * written. */
    size_t per_thread = (size_t)(piece * (lowbit + MAX_BUFS));
    float *scratch = NULL;
    if (lowbit) {
        scratch = (float *)malloc(sizeof(float) * per_thread * (size_t)threads);
        if (!scratch) return -2;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t start = c * chunk;
        int64_t len = n - start < chunk ? n - start : chunk;
        const int tid = thread_id();
        float *mine = scratch ? scratch + (size_t)tid * per_thread : NULL;
        uint32_t *tops = mine ? (uint32_t *)(mine + piece * lowbit) : NULL;
        for (int64_t at = start; at < start + len; at += piece) {
            int64_t m = start + len - at < piece ? start + len - at : piece;
            if (!lowbit) {  /* float32 and bfloat16 state: in place, every buffer streamed once */
                if (all_bf16) {
                    uint16_t *h[MAX_BUFS];
                    for (int k = 0; k < nbuf; k++) h[k] = (uint16_t *)bufs[k].data + at;
                    run_bf16(family, p + at, g + at, h, m, s);
                } else {
                    float *f[MAX_BUFS];
                    for (int k = 0; k < nbuf; k++) f[k] = (float *)bufs[k].data + at;
                    run_f32(family, p + at, g + at, f, m, s, 0, NULL);
                }
                continue;
            }
            float *ptr[MAX_BUFS];
            int used = 0;
            for (int k = 0; k < nbuf; k++) {
                if (bufs[k].kind == KIND_F32) {
                    ptr[k] = (float *)bufs[k].data + at;
                } else {
                    ptr[k] = mine + piece * used++;
                    load(&bufs[k], at, m, ptr[k]);
                }
            }
            /* With 8-bit buffers the update also takes every block's absmax. */
            int64_t nb = qblock ? (m + qblock - 1) / qblock : 0;
            uint32_t *t = qblock ? tops : NULL;
            run_f32(family, p + at, g + at, ptr, m, s, qblock, t);
            for (int k = 0; k < nbuf; k++)
                if (bufs[k].kind != KIND_F32) store(&bufs[k], at, m, ptr[k], t ? t + k * nb : NULL);
        }
    }
    free(scratch);
    return 0;
}

/* A buffer's values [at, at + m) as float32: the array itself (float32 state) or `scratch`
 * after decoding. */
static float *view_of(const Buf *b, int64_t at, int64_t m, float *scratch) {
    if (b->kind == KIND_F32) return (float *)b->data + at;
    load(b, at, m, scratch);
    return scratch;
}

/* Joint step of one parameter over `count` objectives, each piece in one pass (the rule of
 * moopt/states/rule.py): every term reads the same shared values; its own buffers take its
 * results; the parameter takes p decay - sum_t scale_t direction_t and the shared buffers
 * sum_t a_t new_t (with one term, new_1 as it is). A "mix" family runs one term on
 * sum_k a_k g_k. Returns as run_alternating. */
static int run_joint(int family, float *p, const float *const *grads, int count, int64_t n,
                     Buf *bufs, int nbuf, const float *s, int threads) {
    const Family f = FAMILIES[family];
    const int nsh = f.shared, nown = f.own;
    const int mix = f.mix, terms = mix ? 1 : count;
    const int64_t width = 1 + f.coefficients;
    int64_t chunk = chunk_length(bufs, nbuf);
    if (chunk <= 0) return -1;
    int64_t qblock = 0;
    for (int k = 0; k < nbuf; k++)
        if (bufs[k].kind == KIND_INT8) qblock = bufs[k].block;
    int64_t piece = piece_length(qblock, JOINT_PIECE, chunk);
    int64_t nchunks = (n + chunk - 1) / chunk;
    if (threads < 1 || nchunks < 2) threads = 1;
    /* Per thread: the mixed gradient, the update's running sum, and per shared buffer its
     * decoded value and its running sum; per own buffer a decoded value. */
    const int arrays = 2 + 2 * nsh + nown;
    size_t per_thread = (size_t)(piece * arrays);
    float *scratch = (float *)malloc(sizeof(float) * per_thread * (size_t)threads);
    if (!scratch) return -2;
    const float *a = s + 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t start = c * chunk;
        int64_t len = n - start < chunk ? n - start : chunk;
        const int tid = thread_id();
        float *mine = scratch + (size_t)tid * per_thread;
        float *mixed = mine, *acc = mine + piece, *sums = mine + 2 * piece;
        float *shared_old = sums + nsh * piece, *own_scratch = shared_old + nsh * piece;
        for (int64_t at = start; at < start + len; at += piece) {
            int64_t m = start + len - at < piece ? start + len - at : piece;
            float *in[MAX_BUFS], *sum[MAX_BUFS], *own_values[MAX_BUFS];
            for (int j = 0; j < nsh; j++) {
                in[j] = view_of(&bufs[j], at, m, shared_old + j * piece);
                sum[j] = sums + j * piece;
            }
            if (mix) {
                const float *g0 = grads[0] + at;
                for (int64_t i = 0; i < m; i++) mixed[i] = g0[i] * a[0];
                for (int k = 1; k < count; k++) {
                    const float *gk = grads[k] + at;
                    const float ak = a[k];
                    for (int64_t i = 0; i < m; i++) mixed[i] = mixed[i] + gk[i] * ak;
                }
            }
            for (int term = 0; term < terms; term++) {
                const float *t = s + 1 + count + term * width;
                Term how = {t[0], a[term], s[0]};
                Buf *own = bufs + nsh + term * nown;
                for (int j = 0; j < nown; j++)
                    own_values[j] = view_of(&own[j], at, m, own_scratch + j * piece);
                run_term(family, mix ? mixed : grads[term] + at, m, t, how, term == 0,
                         term == terms - 1, in, sum, own_values, acc, p + at);
                for (int j = 0; j < nown; j++)
                    if (own[j].kind != KIND_F32) store(&own[j], at, m, own_values[j], NULL);
            }
            for (int j = 0; j < nsh; j++) {
                if (bufs[j].kind == KIND_F32) {
                    memcpy((float *)bufs[j].data + at, sum[j], sizeof(float) * (size_t)m);
                } else {
                    store(&bufs[j], at, m, sum[j], NULL);
                }
            }
        }
    }
    free(scratch);
    return 0;
}

/* Joint steps of two objectives with float32 state (the common joint step): both terms in
 * one loop over the tensor, so every array streams once, side by side (measured against the
 * piece driver above: it kept fewer arrays in flight and lost to the compiled path's single
 * loop). The same operations, in the same order, as run_joint. `common`: the terms' base
 * coefficients are equal (they are the group's), so the base's products are computed once;
 * `clamped` 0: both bounds are +inf (float32 state). Measured on the AMD EPYC of
 * docs/benchmarks.md, with the two: the loop's arithmetic 14% less time on cached data, the
 * joint step 3.5% less (it is bound by memory bandwidth). */
HOT void bridged_pair_loop(float *restrict p, const float *restrict g1,
                           const float *restrict g2, float *restrict mb, float *restrict vb,
                           float *restrict m1, float *restrict v1, float *restrict m2,
                           float *restrict v2, int64_t n, const float *s, const int common,
                           const int clamped) {
    const int64_t width = 1 + BRIDGED_NCOEF;
    const float decay = s[0], w1 = s[1], w2 = s[2];
    const float *t1 = s + 3, *t2 = t1 + width;
    const float scale1 = t1[0], scale2 = t2[0];
    const BridgedCoef K1 = BRIDGED_COEF(t1), K2 = BRIDGED_COEF(t2);
    for (int64_t i = 0; i < n; i++) {
        float mk1, vk1, mbn1, vbn1, d1, mk2, vk2, mbn2, vbn2, d2;
        if (common) {
            const float mb_hat = mb[i] * K1.cb1, vb_hat = vb[i] * K1.cb2;
            const float vb_abs = fabsf(vb_hat), mb_kept = mb[i] * K1.b3, vb_kept = vb[i] * K1.b4;
            BRIDGED_TERM(K1, g1[i], mb_hat, vb_hat, vb_abs, mb_kept, vb_kept, m1[i], v1[i], mk1,
                         vk1, mbn1, vbn1, d1, clamped);
            BRIDGED_TERM(K2, g2[i], mb_hat, vb_hat, vb_abs, mb_kept, vb_kept, m2[i], v2[i], mk2,
                         vk2, mbn2, vbn2, d2, clamped);
        } else {
            BRIDGED_ELEMENT_K(K1, g1[i], mb[i], vb[i], m1[i], v1[i], mk1, vk1, mbn1, vbn1, d1);
            BRIDGED_ELEMENT_K(K2, g2[i], mb[i], vb[i], m2[i], v2[i], mk2, vk2, mbn2, vbn2, d2);
        }
        m1[i] = mk1; v1[i] = vk1; m2[i] = mk2; v2[i] = vk2;
        p[i] = p[i] * decay - (scale1 * d1 + scale2 * d2);
        mb[i] = mbn1 * w1 + mbn2 * w2;
        vb[i] = vbn1 * w1 + vbn2 * w2;
    }
}

static void bridged_pair(float *restrict p, const float *restrict g1, const float *restrict g2,
                         float *restrict mb, float *restrict vb, float *restrict m1,
                         float *restrict v1, float *restrict m2, float *restrict v2,
                         int64_t n, const float *s) {
    const float *t1 = s + 3, *t2 = t1 + 1 + BRIDGED_NCOEF;
    static const int base[] = {BRIDGED_C_cb1, BRIDGED_C_cb2, BRIDGED_C_b3, BRIDGED_C_b4,
                               BRIDGED_C_a3, BRIDGED_C_a4};
    int common = 1;
    for (int k = 0; k < 6; k++) common &= memcmp(t1 + base[k], t2 + base[k], 4) == 0;
    const int unbounded = t1[BRIDGED_C_bound] == INFINITY && t2[BRIDGED_C_bound] == INFINITY;
    if (common && unbounded) bridged_pair_loop(p, g1, g2, mb, vb, m1, v1, m2, v2, n, s, 1, 0);
    else if (common) bridged_pair_loop(p, g1, g2, mb, vb, m1, v1, m2, v2, n, s, 1, 1);
    else bridged_pair_loop(p, g1, g2, mb, vb, m1, v1, m2, v2, n, s, 0, 1);
}

static void decoupled_pair(float *restrict p, const float *restrict g1,
                           const float *restrict g2, float *restrict m1, float *restrict v1,
                           float *restrict m2, float *restrict v2, int64_t n, const float *s) {
    const int64_t width = 1 + DECOUPLED_NCOEF;
    const float decay = s[0];
    const float *t1 = s + 3, *t2 = t1 + width;
    const float scale1 = t1[0], scale2 = t2[0];
    const AdamCoef K1 = ADAM_COEF(DECOUPLED, t1), K2 = ADAM_COEF(DECOUPLED, t2);
    for (int64_t i = 0; i < n; i++) {
        float mn1, vn1, d1, mn2, vn2, d2;
        ADAM_ELEMENT_K(K1, g1[i], m1[i], v1[i], mn1, vn1, d1);
        ADAM_ELEMENT_K(K2, g2[i], m2[i], v2[i], mn2, vn2, d2);
        m1[i] = mn1; v1[i] = vn1; m2[i] = mn2; v2[i] = vn2;
        p[i] = p[i] * decay - (scale1 * d1 + scale2 * d2);
    }
}

static void shared_pair(float *restrict p, const float *restrict g1, const float *restrict g2,
                        float *restrict m, float *restrict v, int64_t n, const float *s) {
    const float decay = s[0], w1 = s[1], w2 = s[2];
    const float *t = s + 3;
    const float scale = t[0];
    const AdamCoef K = ADAM_COEF(SHARED, t);
    for (int64_t i = 0; i < n; i++) {
        float grad = g1[i] * w1 + g2[i] * w2, m_new, v_new, direction;
        ADAM_ELEMENT(grad, m[i], v[i], m_new, v_new, direction);
        m[i] = m_new; v[i] = v_new;
        p[i] = p[i] * decay - scale * direction;
    }
}

/* Whether a joint step takes the pair loops: two objectives, every buffer float32. */
static int pairs(int count, const Buf *bufs, int nbuf) {
    if (count != 2) return 0;
    for (int k = 0; k < nbuf; k++)
        if (bufs[k].kind != KIND_F32) return 0;
    return 1;
}

static int run_pair(int family, float *p, const float *const *grads, int64_t n, Buf *bufs,
                    const float *s, int threads) {
    const int64_t chunk = 4096, nchunks = (n + chunk - 1) / chunk;
    if (threads < 1 || nchunks < 2) threads = 1;
#define F(k) ((float *)bufs[k].data + at)
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t at = c * chunk, m = n - at < chunk ? n - at : chunk;
        const float *g1 = grads[0] + at, *g2 = grads[1] + at;
        switch (family) {
        case FAMILY_SHARED:
            shared_pair(p + at, g1, g2, F(SHARED_S_m), F(SHARED_S_v), m, s);
            break;
        case FAMILY_DECOUPLED:  /* slots: objective 1's own buffers, then objective 2's */
            decoupled_pair(p + at, g1, g2, F(DECOUPLED_S_m), F(DECOUPLED_S_v),
                           F(DECOUPLED_NOWN + DECOUPLED_S_m), F(DECOUPLED_NOWN + DECOUPLED_S_v),
                           m, s);
            break;
        default:
            bridged_pair(p + at, g1, g2, F(BRIDGED_S_m_base), F(BRIDGED_S_v_base),
                         F(BRIDGED_S_m), F(BRIDGED_S_v), F(BRIDGED_NOWN + BRIDGED_S_m),
                         F(BRIDGED_NOWN + BRIDGED_S_v), m, s);
            break;
        }
    }
#undef F
    return 0;
}

/* One step of one float32 parameter `p` with `count` gradients (1: alternating mode) of the
 * built-in policy `family`; `bufs` in the rule's slot order (shared buffers, then each
 * objective's own), `s` its scalar vector of `ns` values. Returns 0, or < 0 if it cannot
 * (nothing changed then). */
int moopt_step(int family, float *p, const float *const *grads, int count, int64_t n,
               Buf *bufs, int nbuf, const float *s, int ns, int threads) {
    if (family < FAMILY_SHARED || family > FAMILY_BRIDGED || count < 1) return -1;
    const Family f = FAMILIES[family];
    const int terms = f.mix && count > 1 ? 1 : count;
    if (nbuf != f.shared + count * f.own || ns != 1 + count + terms * (1 + f.coefficients))
        return -1;
    if (count == 1) {
        if (nbuf > MAX_BUFS) return -1;
        return run_alternating(family, p, grads[0], n, bufs, nbuf, s, threads);
    }
    if (f.shared + f.own > MAX_BUFS) return -1;
    if (pairs(count, bufs, nbuf)) return run_pair(family, p, grads, n, bufs, s, threads);
    return run_joint(family, p, grads, count, n, bufs, nbuf, s, threads);
}

/* One step of `count` parameters of one family, each as moopt_step takes it: parameter k
 * is p[k] (n[k] values) with gradients grads[k * nobj .. k * nobj + nobj - 1], buffers
 * bufs[k] (nbuf of them) and scalars s[k] (ns values); status[k] receives moopt_step's
 * return value. Parameters of at least `parallel_min` values are stepped one after another
 * with `threads` threads each; the smaller ones, single-threaded, are shared among the
 * threads (one call instead of one per tensor: models with many small tensors, such as
 * biases, norms and LoRA factors, pay a few microseconds per tensor less). Every parameter
 * runs the same loops as alone, whatever thread takes it, so the results do not depend on
 * the thread count. */
void moopt_step_many(int family, int count, float *const *p, const float *const *grads,
                     int nobj, const int64_t *n, Buf *const *bufs, int nbuf,
                     const float *const *s, int ns, int threads, int64_t parallel_min,
                     int32_t *status) {
    int64_t small = 0;
    for (int k = 0; k < count; k++) {
        if (n[k] < parallel_min) {
            small += n[k];
            continue;
        }
        status[k] = moopt_step(family, p[k], grads + (int64_t)k * nobj, nobj, n[k], bufs[k],
                               nbuf, s[k], ns, threads);
    }
    /* Small tensors in parallel only when there is enough work for a parallel region. */
    const int team = threads > 1 && small >= parallel_min ? threads : 1;
#pragma omp parallel for num_threads(team) schedule(dynamic, 4)
    for (int k = 0; k < count; k++) {
        if (n[k] >= parallel_min) continue;
        status[k] = moopt_step(family, p[k], grads + (int64_t)k * nobj, nobj, n[k], bufs[k],
                               nbuf, s[k], ns, 1);
    }
}

/* 1 if no value of the float32 array is NaN or inf (exponent bits all ones), else 0. The
 * AVX-512 loop keeps the largest exponent field in four accumulators and prefetches 8 KB
 * ahead (measured: 32 MB of gradients in 2.8 ms instead of 4.4 ms with the plain loop, which
 * the compiler vectorises poorly); the scan is a whole extra pass over the gradients, the
 * one a step pays for checking them before it writes anything. */
int moopt_all_finite(const float *x, int64_t n, int threads) {
    const uint32_t *restrict u = (const uint32_t *)x;
    uint32_t bad = 0;
    int64_t head = 0;
    if (threads < 1 || n < (1 << 16)) threads = 1;
#if defined(__AVX512F__)
    enum { STEP = 256, AHEAD = 2048 };
    const int64_t body = n & ~(int64_t)(STEP - 1);
#pragma omp parallel for num_threads(threads) reduction(| : bad) schedule(static)
    for (int64_t i = 0; i < body; i += STEP) {
        const __m512i e = _mm512_set1_epi32(0x7F800000);
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < STEP; j += 64) {
            _mm_prefetch((const char *)(u + i + j + AHEAD), _MM_HINT_T0);
            a0 = _mm512_max_epu32(a0, _mm512_and_si512(_mm512_loadu_si512(u + i + j), e));
            a1 = _mm512_max_epu32(a1, _mm512_and_si512(_mm512_loadu_si512(u + i + j + 16), e));
            a2 = _mm512_max_epu32(a2, _mm512_and_si512(_mm512_loadu_si512(u + i + j + 32), e));
            a3 = _mm512_max_epu32(a3, _mm512_and_si512(_mm512_loadu_si512(u + i + j + 48), e));
        }
        a0 = _mm512_max_epu32(_mm512_max_epu32(a0, a1), _mm512_max_epu32(a2, a3));
        bad |= (uint32_t)(_mm512_cmpeq_epi32_mask(a0, e) != 0);
    }
    head = body;
#endif
    for (int64_t i = head; i < n; i++) bad |= (uint32_t)((u[i] & 0x7F800000u) == 0x7F800000u);
    return bad ? 0 : 1;
}

/* Block-wise codec entry points (Int8Storage.read / write and tests): decode or encode the
 * n values of an 8-bit buffer; the buffer's blocks start at value 0. Chunks of whole blocks
 * go to the threads. */
static void codec(const Buf *b, int64_t n, float *out, const float *in, int threads) {
    int64_t chunk = chunk_length(b, 1);
    int64_t nchunks = (n + chunk - 1) / chunk;
    if (threads < 1 || nchunks < 2) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t start = c * chunk, len = n - start < chunk ? n - start : chunk;
        if (out) load(b, start, len, out + start);
        else store(b, start, len, in + start, NULL);
    }
}

void moopt_decode(const Buf *b, int64_t n, float *out, int threads) {
    codec(b, n, out, NULL, threads);
}

/* Returns 0 (the encoder reads `in` as it is: no scratch). */
int moopt_encode(const Buf *b, int64_t n, const float *in, int threads) {
    codec(b, n, NULL, in, threads);
    return 0;
}
