/*
 * test_image.c - unit tests of image.h (PNG decoding, preprocessing) and
 * labels.h.
 *
 * Every PNG here is made in memory with libpng's writer, so each colour type
 * and bit depth is covered without test files; the expected pixels follow
 * from the samples written, by PIL's convert("RGB") rules. Bad inputs are
 * made by cutting and corrupting a good PNG, and by writing headers by hand.
 * The preprocessing references (hashes, spot values) were computed once with
 * PIL 9.4 + torchvision 0.14 (tests/ref/preprocess_ref.py's transform).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <png.h>

#include "image.h"
#include "labels.h"

#define PLANE (SI_IMAGE_SIZE * SI_IMAGE_SIZE)

/* ------------------------------------------------------------- helpers */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void buf_write(png_structp png, png_bytep data, size_t n) {
    buf_t *b = png_get_io_ptr(png);
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) png_error(png, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_flush(png_structp png) {
    (void)png;
}

/* What to write: w x h samples of `channels` values each (0 .. 2^depth - 1),
 * row-major, before packing. */
typedef struct spec {
    uint32_t w, h;
    int depth, color, interlace;
    const uint16_t *samples;
    const png_color *pal; /* palette images only */
    int npal;
    const png_byte *trns_alpha; /* palette tRNS */
    int ntrns;
    const png_color_16 *trns_color; /* gray / RGB tRNS */
} spec_t;

static int channels_of(int color) {
    switch (color) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    default: return 4;
    }
}

/* Packs samples into PNG rows (big-endian 16-bit, MSB-first sub-byte) and
 * encodes them; returns the PNG in a malloc'd buffer. */
static buf_t make_png(const spec_t *s) {
    buf_t b = {0};
    int ch = channels_of(s->color);
    size_t stride = ((size_t)s->w * ch * s->depth + 7) / 8;
    uint8_t *raw = calloc(s->h, stride);
    png_bytep *rows = calloc(s->h, sizeof *rows);
    assert_non_null(raw);
    assert_non_null(rows);
    for (uint32_t y = 0; y < s->h; y++) {
        uint8_t *r = raw + y * stride;
        rows[y] = r;
        for (uint32_t i = 0; i < s->w * (uint32_t)ch; i++) {
            uint16_t v = s->samples[(size_t)y * s->w * ch + i];
            if (s->depth == 16) {
                r[2 * i] = (uint8_t)(v >> 8);
                r[2 * i + 1] = (uint8_t)v;
            } else if (s->depth == 8) {
                r[i] = (uint8_t)v;
            } else {
                size_t bit = (size_t)i * s->depth;
                r[bit / 8] |= (uint8_t)(v << (8 - s->depth - bit % 8));
            }
        }
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng could not write the test PNG");
    png_set_write_fn(png, &b, buf_write, buf_flush);
    png_set_IHDR(png, info, s->w, s->h, s->depth, s->color, s->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->pal) png_set_PLTE(png, info, s->pal, s->npal);
    if (s->trns_alpha || s->trns_color)
        png_set_tRNS(png, info, s->trns_alpha, s->ntrns, s->trns_color);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(raw);
    return b;
}

/* A deterministic spread of values over all `depth` bits. */
static uint16_t sample_at(uint32_t x, uint32_t y, int c, int depth) {
    uint32_t v = (x * 2654435761u) ^ (y * 40503u) ^ ((uint32_t)c * 0x9e3779b9u);
    v ^= v >> 13;
    v *= 0x5bd1e995u;
    v ^= v >> 15;
    return (uint16_t)(v & ((1u << depth) - 1));
}

static uint16_t *make_samples(uint32_t w, uint32_t h, int ch, int depth) {
    uint16_t *s = malloc(sizeof *s * w * h * ch);
    assert_non_null(s);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (int c = 0; c < ch; c++)
                s[((size_t)y * w + x) * ch + c] = sample_at(x, y, c, depth);
    /* Pixel (0,0): a 16-bit value whose low byte would round its high byte
     * up, to tell "keep the high byte" from "round to 8 bits". */
    if (depth == 16)
        for (int c = 0; c < ch; c++) s[c] = 0x12ff;
    return s;
}

/* A sample as PIL's convert("RGB") shows it: low depths scaled to 0..255,
 * 16 bits cut to the high byte. */
static uint8_t to8(uint16_t v, int depth) {
    if (depth == 16) return (uint8_t)(v >> 8);
    if (depth == 8) return (uint8_t)v;
    return (uint8_t)(v * 255u / ((1u << depth) - 1));
}

static void expect_pixels(const spec_t *s, const si_rgb_t *img) {
    int ch = channels_of(s->color);
    assert_int_equal(img->w, s->w);
    assert_int_equal(img->h, s->h);
    for (uint32_t i = 0; i < s->w * s->h; i++) {
        const uint16_t *v = s->samples + (size_t)i * ch;
        uint8_t want[3];
        if (s->color == PNG_COLOR_TYPE_PALETTE) {
            want[0] = s->pal[v[0]].red;
            want[1] = s->pal[v[0]].green;
            want[2] = s->pal[v[0]].blue;
        } else if (ch <= 2) { /* gray, gray + alpha */
            want[0] = want[1] = want[2] = to8(v[0], s->depth);
        } else { /* RGB, RGBA */
            for (int c = 0; c < 3; c++) want[c] = to8(v[c], s->depth);
        }
        for (int c = 0; c < 3; c++) {
            if (img->px[3 * i + c] != want[c])
                fail_msg("pixel (%u,%u) channel %d: got %u, want %u", i % s->w, i / s->w, c,
                         img->px[3 * i + c], want[c]);
        }
    }
}

/* Writes s as a PNG, decodes it and compares every pixel. */
static void roundtrip(spec_t *s) {
    int ch = channels_of(s->color);
    uint16_t *samples = make_samples(s->w, s->h, ch, s->depth);
    s->samples = samples;
    buf_t b = make_png(s);
    si_rgb_t img = {0};
    si_err_t err = {{0}};
    int rc = si_image_decode_png(b.p, b.len, &img, &err);
    if (rc) fail_msg("decode failed: %s", err.msg);
    expect_pixels(s, &img);
    si_rgb_free(&img);
    assert_null(img.px);
    free(b.p);
    free(samples);
}

static void gray(int depth, int interlace) {
    spec_t s = {
        .w = 13, .h = 11, .depth = depth, .color = PNG_COLOR_TYPE_GRAY, .interlace = interlace};
    roundtrip(&s);
}

/* A palette of 2^depth distinct colours, none gray. */
static void palette(int depth, int interlace, int with_trns) {
    png_color pal[256];
    png_byte alpha[256];
    int n = 1 << depth;
    for (int i = 0; i < n; i++) {
        pal[i] = (png_color){(png_byte)(i * 37 + 1), (png_byte)(255 - i), (png_byte)(i * 11 + 5)};
        alpha[i] = (png_byte)(i * 3);
    }
    spec_t s = {.w = 17,
                .h = 9,
                .depth = depth,
                .color = PNG_COLOR_TYPE_PALETTE,
                .interlace = interlace,
                .pal = pal,
                .npal = n};
    if (with_trns) {
        s.trns_alpha = alpha;
        s.ntrns = n;
    }
    roundtrip(&s);
}

static void color(int color_type, int depth, int interlace) {
    spec_t s = {.w = 19, .h = 10, .depth = depth, .color = color_type, .interlace = interlace};
    roundtrip(&s);
}

/* --------------------------------------------------------- decode: good */

static void test_gray1(void **st) {
    (void)st;
    gray(1, PNG_INTERLACE_NONE);
}
static void test_gray2(void **st) {
    (void)st;
    gray(2, PNG_INTERLACE_NONE);
}
static void test_gray4(void **st) {
    (void)st;
    gray(4, PNG_INTERLACE_NONE);
}
static void test_gray8(void **st) {
    (void)st;
    gray(8, PNG_INTERLACE_NONE);
}
static void test_gray16(void **st) {
    (void)st;
    gray(16, PNG_INTERLACE_NONE);
}

static void test_gray_alpha8(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE);
}
static void test_gray_alpha16(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_GRAY_ALPHA, 16, PNG_INTERLACE_NONE);
}

static void test_palette1(void **st) {
    (void)st;
    palette(1, PNG_INTERLACE_NONE, 0);
}
static void test_palette2(void **st) {
    (void)st;
    palette(2, PNG_INTERLACE_NONE, 0);
}
static void test_palette4(void **st) {
    (void)st;
    palette(4, PNG_INTERLACE_NONE, 0);
}
static void test_palette8(void **st) {
    (void)st;
    palette(8, PNG_INTERLACE_NONE, 0);
}
/* tRNS gives palette entries alpha; PIL's convert("RGB") drops it. */
static void test_palette8_trns(void **st) {
    (void)st;
    palette(8, PNG_INTERLACE_NONE, 1);
}
static void test_palette2_trns(void **st) {
    (void)st;
    palette(2, PNG_INTERLACE_NONE, 1);
}

static void test_rgb8(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE);
}
static void test_rgb16(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE);
}
static void test_rgba8(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE);
}
static void test_rgba16(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_RGBA, 16, PNG_INTERLACE_NONE);
}

/* Adam7: sizes not multiples of 8, so every pass has partial blocks. */
static void test_interlaced_rgb8(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7);
}
static void test_interlaced_rgba16(void **st) {
    (void)st;
    color(PNG_COLOR_TYPE_RGBA, 16, PNG_INTERLACE_ADAM7);
}
static void test_interlaced_gray2(void **st) {
    (void)st;
    gray(2, PNG_INTERLACE_ADAM7);
}
static void test_interlaced_palette4_trns(void **st) {
    (void)st;
    palette(4, PNG_INTERLACE_ADAM7, 1);
}

/* A tRNS colour key on gray and RGB images is dropped too, not turned into
 * black or alpha. */
static void test_rgb_trns_key(void **st) {
    (void)st;
    png_color_16 key = {.red = sample_at(0, 0, 0, 8),
                        .green = sample_at(0, 0, 1, 8),
                        .blue = sample_at(0, 0, 2, 8)};
    spec_t s = {.w = 6, .h = 5, .depth = 8, .color = PNG_COLOR_TYPE_RGB, .trns_color = &key};
    roundtrip(&s);
}
static void test_gray_trns_key(void **st) {
    (void)st;
    png_color_16 key = {.gray = sample_at(0, 0, 0, 4)};
    spec_t s = {.w = 6, .h = 5, .depth = 4, .color = PNG_COLOR_TYPE_GRAY, .trns_color = &key};
    roundtrip(&s);
}

static void test_one_pixel(void **st) {
    (void)st;
    uint16_t px[3] = {200, 100, 50};
    spec_t s = {.w = 1, .h = 1, .depth = 8, .color = PNG_COLOR_TYPE_RGB, .samples = px};
    buf_t b = make_png(&s);
    si_rgb_t img = {0};
    si_err_t err = {{0}};
    assert_int_equal(si_image_decode_png(b.p, b.len, &img, &err), 0);
    assert_int_equal(img.w, 1);
    assert_int_equal(img.h, 1);
    assert_int_equal(img.px[0], 200);
    assert_int_equal(img.px[1], 100);
    assert_int_equal(img.px[2], 50);

    /* Upscaled 1x1 -> 256x256 and cropped: the same colour everywhere. */
    float *t = malloc(sizeof *t * 3 * PLANE);
    assert_non_null(t);
    assert_int_equal(si_image_preprocess(&img, t, &err), 0);
    const float want[3] = {(200 / 255.0f - 0.485f) / 0.229f, (100 / 255.0f - 0.456f) / 0.224f,
                           (50 / 255.0f - 0.406f) / 0.225f};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < PLANE; i++) assert_true(t[c * PLANE + i] == want[c]);
    free(t);
    si_rgb_free(&img);
    free(b.p);
}

/* ------------------------------------------------------- preprocessing */

static float *tensor(void) {
    float *t = malloc(sizeof *t * 3 * PLANE);
    assert_non_null(t);
    return t;
}

static si_rgb_t constant_image(uint32_t w, uint32_t h, const uint8_t rgb[3]) {
    si_rgb_t img = {w, h, malloc((size_t)w * h * 3)};
    assert_non_null(img.px);
    for (size_t i = 0; i < (size_t)w * h; i++) memcpy(img.px + 3 * i, rgb, 3);
    return img;
}

/* A constant image stays constant through resize (the weights of each output
 * sum to 1 within the rounding PIL's 8-bit result absorbs), so the tensor is
 * ((v / 255) - mean) / std everywhere, computed in float32 as torchvision
 * does; checked at a downscale, an upscale and a 2:1 shape. */
static void test_preprocess_constant(void **st) {
    (void)st;
    static const uint8_t rgb[3] = {10, 128, 250};
    static const uint32_t sizes[][2] = {{640, 480}, {100, 150}, {256, 256}, {1000, 500}};
    const float want[3] = {(10 / 255.0f - 0.485f) / 0.229f, (128 / 255.0f - 0.456f) / 0.224f,
                           (250 / 255.0f - 0.406f) / 0.225f};
    /* The same numbers written out, so a shared mistake in mean/std shows. */
    assert_float_equal(want[0], -1.946656, 1e-5);
    assert_float_equal(want[1], 0.205182, 1e-5);
    assert_float_equal(want[2], 2.552854, 1e-5);
    float *t = tensor();
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        si_rgb_t img = constant_image(sizes[k][0], sizes[k][1], rgb);
        si_err_t err = {{0}};
        assert_int_equal(si_image_preprocess(&img, t, &err), 0);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < PLANE; i++)
                if (t[c * PLANE + i] != want[c])
                    fail_msg("%ux%u: channel %d value %d is %.9g, want %.9g", img.w, img.h, c, i,
                             t[c * PLANE + i], want[c]);
        si_rgb_free(&img);
    }
    free(t);
}

/* The pattern the references below were computed on. */
static si_rgb_t pattern_image(uint32_t w, uint32_t h) {
    si_rgb_t img = {w, h, malloc((size_t)w * h * 3)};
    assert_non_null(img.px);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *p = img.px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)((x * 7 + y * 3) & 255);
            p[1] = (uint8_t)((x ^ y) & 255);
            p[2] = (uint8_t)((x * y) % 251);
        }
    return img;
}

/* FNV-1a 64 over the tensor as little-endian float32. */
static uint64_t tensor_hash(const float *t) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 3 * PLANE; i++) {
        uint32_t u;
        memcpy(&u, &t[i], sizeof u);
        for (int k = 0; k < 4; k++) {
            h ^= (u >> (8 * k)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

typedef struct spot {
    int y, x;
    float v[3];
} spot_t;

static void check_reference(uint32_t w, uint32_t h, uint64_t want_hash, const spot_t *spots,
                            int nspots) {
    si_rgb_t img = pattern_image(w, h);
    float *t = tensor();
    si_err_t err = {{0}};
    assert_int_equal(si_image_preprocess(&img, t, &err), 0);
    for (int k = 0; k < nspots; k++)
        for (int c = 0; c < 3; c++)
            assert_float_equal(t[c * PLANE + spots[k].y * SI_IMAGE_SIZE + spots[k].x],
                               spots[k].v[c], 1e-6);
    /* Bit-identical to PIL + torchvision over all 150528 values. */
    assert_int_equal(tensor_hash(t), want_hash);
    free(t);
    si_rgb_free(&img);
}

/* 517x389 -> 340x256 (antialiased downscale), crop at (left 58, top 16). */
static void test_preprocess_matches_torchvision_down(void **st) {
    (void)st;
    static const spot_t spots[] = {
        {0, 0, {0.9816765189170837f, -0.8977590203285217f, 0.9145100116729736f}},
        {100, 37, {-1.998030662536621f, -1.4579830169677734f, 0.7576472163200378f}},
        {223, 223, {2.0434112548828125f, 1.395658254623413f, 0.8796516060829163f}},
    };
    check_reference(517, 389, 0x536a130c985a1f86ull, spots, 3);
}

/* 37x23 -> 411x256 (upscale: the filter keeps support 1). */
static void test_preprocess_matches_torchvision_up(void **st) {
    (void)st;
    static const spot_t spots[] = {
        {0, 0, {-1.1075435876846313f, -1.8781511783599854f, -1.665010929107666f}},
        {100, 37, {-0.25130581855773926f, -1.983193278312683f, 0.1650545448064804f}},
        {223, 223, {-2.0494048595428467f, -1.8781511783599854f, -0.27067530155181885f}},
    };
    check_reference(37, 23, 0x4aa91c1f5b456e72ull, spots, 3);
}

/* torchvision's crop offset is int(round(excess / 2.0)) and Python rounds
 * half to even: excess 67 gives round(33.5) = 34, excess 65 gives
 * round(32.5) = 32 (rounding half up would say 33, truncating 32 and 33).
 * Images w x 256 are not resized (the shorter side is already 256), and
 * columns are coded by their index mod 256, so the value at crop column x
 * names the source column it came from. */
static void check_crop_left(uint32_t w, int want_left) {
    si_rgb_t img = {w, 256, malloc((size_t)w * 256 * 3)};
    assert_non_null(img.px);
    for (uint32_t y = 0; y < 256; y++)
        for (uint32_t x = 0; x < w; x++)
            memset(img.px + ((size_t)y * w + x) * 3, (int)(x & 255), 3);
    float *t = tensor();
    si_err_t err = {{0}};
    assert_int_equal(si_image_preprocess(&img, t, &err), 0);
    for (int x = 0; x < SI_IMAGE_SIZE; x += 37) {
        float want = ((float)((want_left + x) & 255) / 255.0f - 0.485f) / 0.229f;
        if (t[100 * SI_IMAGE_SIZE + x] != want)
            fail_msg("width %u: crop column %d is not source column %d", w, x, want_left + x);
    }
    free(t);
    si_rgb_free(&img);
}

static void test_preprocess_crop_rounding(void **st) {
    (void)st;
    check_crop_left(291, 34); /* round(33.5) = 34 */
    check_crop_left(289, 32); /* round(32.5) = 32, to even */
    check_crop_left(290, 33); /* 33 exactly */
    check_crop_left(256, 16);
}

static void test_preprocess_bad_image(void **st) {
    (void)st;
    float *t = tensor();
    si_err_t err = {{0}};
    si_rgb_t empty = {0, 0, NULL};
    assert_int_equal(si_image_preprocess(&empty, t, &err), -1);
    assert_true(strlen(err.msg) > 0);
    uint8_t px[3] = {0};
    si_rgb_t huge = {SI_IMAGE_MAX_SIDE + 1, 1, px};
    err.msg[0] = '\0';
    assert_int_equal(si_image_preprocess(&huge, t, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
    free(t);
}

/* ------------------------------------------------------- decode: bad */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return ~c;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Expects decoding to fail with a message containing `needle`. The input is
 * copied into a buffer of exactly its size, so ASan catches any read past
 * its end. */
static void expect_fail(const uint8_t *p, size_t len, const char *needle) {
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, p, len);
    si_rgb_t img = {7, 7, NULL};
    si_err_t err = {{0}};
    int rc = si_image_decode_png(copy, len, &img, &err);
    free(copy);
    if (getenv("SI_TEST_VERBOSE")) print_message("    %zu bytes: %s\n", len, err.msg);
    if (rc != -1) fail_msg("decoding %zu bad bytes returned %d, want -1", len, rc);
    assert_true(strlen(err.msg) > 0);
    if (needle && !strstr(err.msg, needle))
        fail_msg("message \"%s\" does not contain \"%s\"", err.msg, needle);
    /* out is left alone on failure. */
    assert_int_equal(img.w, 7);
    assert_null(img.px);
}

/* A small valid RGB PNG to cut and corrupt. */
static buf_t good_png(void) {
    static uint16_t samples[32 * 24 * 3];
    for (int i = 0; i < 32 * 24 * 3; i++) samples[i] = sample_at((uint32_t)i, 0, 0, 8);
    spec_t s = {.w = 32, .h = 24, .depth = 8, .color = PNG_COLOR_TYPE_RGB, .samples = samples};
    return make_png(&s);
}

/* Offset of the first byte of the first chunk named `type`'s length field. */
static size_t find_chunk(const buf_t *b, const char *type) {
    size_t off = 8;
    while (off + 12 <= b->len) {
        uint32_t n = (uint32_t)b->p[off] << 24 | (uint32_t)b->p[off + 1] << 16 |
                     (uint32_t)b->p[off + 2] << 8 | b->p[off + 3];
        if (memcmp(b->p + off + 4, type, 4) == 0) return off;
        off += 12 + n;
    }
    fail_msg("no %s chunk", type);
    return 0;
}

static void test_zero_bytes(void **st) {
    (void)st;
    expect_fail((const uint8_t *)"", 0, "empty");
    si_rgb_t img = {0};
    si_err_t err = {{0}};
    assert_int_equal(si_image_decode_png(NULL, 0, &img, &err), -1);
}

static void test_not_png(void **st) {
    (void)st;
    static const char text[] = "hello, this is a text file and not an image\n";
    expect_fail((const uint8_t *)text, sizeof text - 1, "not a PNG");
    static const uint8_t jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0};
    expect_fail(jpeg, sizeof jpeg, "not a PNG");
    expect_fail((const uint8_t *)"GIF89a", 6, "not a PNG");
}

/* Cut at every interesting point: inside the signature, inside IHDR, just
 * after it, in the middle of IDAT, before IEND, one byte short. */
static void test_truncated(void **st) {
    (void)st;
    buf_t b = good_png();
    size_t idat = find_chunk(&b, "IDAT");
    size_t iend = find_chunk(&b, "IEND");
    const size_t cuts[] = {1,        4,    8,        12,        20,
                           32,       33,   idat + 4, idat + 10, (idat + iend) / 2,
                           iend - 1, iend, iend + 8, b.len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) expect_fail(b.p, cuts[k], NULL);
    /* The messages say what happened. */
    expect_fail(b.p, 4, "truncated");
    expect_fail(b.p, (idat + iend) / 2, "truncated PNG");
    expect_fail(b.p, b.len - 1, "truncated PNG");
    /* ... and the whole file still decodes. */
    si_rgb_t img = {0};
    si_err_t err = {{0}};
    assert_int_equal(si_image_decode_png(b.p, b.len, &img, &err), 0);
    si_rgb_free(&img);
    free(b.p);
}

static void test_corrupt_idat(void **st) {
    (void)st;
    buf_t b = good_png();
    size_t idat = find_chunk(&b, "IDAT");
    uint32_t n = (uint32_t)b.p[idat] << 24 | (uint32_t)b.p[idat + 1] << 16 |
                 (uint32_t)b.p[idat + 2] << 8 | b.p[idat + 3];
    uint8_t *c = malloc(b.len);
    assert_non_null(c);

    /* A flipped data byte: zlib's Adler-32 at the end of the stream (in
     * the same chunk here) catches it before the chunk's CRC is checked. */
    memcpy(c, b.p, b.len);
    c[idat + 8 + n / 2] ^= 0x55;
    expect_fail(c, b.len, "corrupt PNG");

    /* A wrong CRC field over intact data. */
    memcpy(c, b.p, b.len);
    c[idat + 8 + n] ^= 0x01;
    expect_fail(c, b.len, "CRC");

    /* A broken zlib header with a CRC made to match: zlib must refuse it. */
    memcpy(c, b.p, b.len);
    c[idat + 8] = 0xff;
    put_be32(c + idat + 8 + n, crc32_of(c + idat + 4, n + 4));
    expect_fail(c, b.len, "corrupt PNG");

    /* Garbage deflate data, CRC matching: wrong rows or a zlib error, never
     * a crash; either way it must not decode as the original image. */
    memcpy(c, b.p, b.len);
    for (uint32_t i = 2; i < n; i++) c[idat + 8 + i] = (uint8_t)(i * 151 + 7);
    put_be32(c + idat + 8 + n, crc32_of(c + idat + 4, n + 4));
    expect_fail(c, b.len, NULL);

    /* A corrupt IHDR CRC. */
    memcpy(c, b.p, b.len);
    c[29] ^= 0xff;
    expect_fail(c, b.len, "CRC");

    /* A chunk length pointing far past the end. */
    memcpy(c, b.p, b.len);
    put_be32(c + idat, 0x7ffffff0u);
    expect_fail(c, b.len, NULL);
    free(c);
    free(b.p);
}

/* A signature plus an IHDR claiming w x h, with a correct CRC, then IEND. */
static size_t header_only(uint8_t out[57], uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out, sig, 8);
    put_be32(out + 8, 13);
    memcpy(out + 12, "IHDR", 4);
    put_be32(out + 16, w);
    put_be32(out + 20, h);
    out[24] = 8; /* bit depth */
    out[25] = 2; /* RGB */
    out[26] = out[27] = out[28] = 0;
    put_be32(out + 29, crc32_of(out + 12, 17));
    put_be32(out + 33, 0);
    memcpy(out + 37, "IEND", 4);
    put_be32(out + 41, crc32_of(out + 37, 4));
    return 45;
}

static void test_huge_header(void **st) {
    (void)st;
    uint8_t h[57];
    /* Refused from the header, naming the limit, before any pixel memory:
     * under ASan a 30 GB allocation attempt would abort the test. */
    expect_fail(h, header_only(h, 100000, 100000), "16384");
    expect_fail(h, header_only(h, 20000, 10), "limit");
    expect_fail(h, header_only(h, 10, 20000), "limit");
    /* Both sides allowed, the product (100 MP) is not. */
    expect_fail(h, header_only(h, 10000, 10000), "40000000 pixels");
    /* Within limits but no IDAT: libpng's own error. */
    expect_fail(h, header_only(h, 16, 16), "corrupt PNG");
    /* Zero width is not a PNG. */
    expect_fail(h, header_only(h, 0, 16), NULL);
    /* An IHDR that lies about its length is left to libpng, which refuses it. */
    header_only(h, 100000, 100000);
    put_be32(h + 8, 12);
    expect_fail(h, 45, NULL);
}

static void test_load_missing_file(void **st) {
    (void)st;
    si_rgb_t img = {0};
    si_err_t err = {{0}};
    assert_int_equal(si_image_load_png("/nonexistent/dir/x.png", &img, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.png"));
    assert_non_null(strstr(err.msg, "No such file"));
    float *t = tensor();
    err.msg[0] = '\0';
    assert_int_equal(si_image_file_to_tensor("/nonexistent/dir/x.png", t, &err), -1);
    assert_true(strlen(err.msg) > 0);
    /* A directory opens but cannot be read as a file. */
    err.msg[0] = '\0';
    assert_int_equal(si_image_file_to_tensor("/", t, &err), -1);
    assert_true(strlen(err.msg) > 0);
    free(t);
}

/* si_image_file_to_tensor end to end on a file written here. */
static void test_file_to_tensor(void **st) {
    (void)st;
    uint16_t px[2 * 2 * 3];
    for (int i = 0; i < 12; i++) px[i] = 77;
    spec_t s = {.w = 2, .h = 2, .depth = 8, .color = PNG_COLOR_TYPE_RGB, .samples = px};
    buf_t b = make_png(&s);
    char path[] = "/tmp/test_image_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b.p, 1, b.len, f), b.len);
    assert_int_equal(fclose(f), 0);
    float *t = tensor();
    si_err_t err = {{0}};
    int rc = si_image_file_to_tensor(path, t, &err);
    unlink(path);
    assert_int_equal(rc, 0);
    assert_true(t[0] == (77 / 255.0f - 0.485f) / 0.229f);
    assert_true(t[2 * PLANE + PLANE - 1] == (77 / 255.0f - 0.406f) / 0.225f);
    free(t);
    free(b.p);
}

/* -------------------------------------------------------------- labels */

static void test_labels(void **st) {
    (void)st;
    assert_string_equal(si_label(0), "tench");
    assert_string_equal(si_label(1), "goldfish");
    assert_string_equal(si_label(999), "toilet tissue");
    assert_string_equal(si_label(1000), "?");
    assert_string_equal(si_label(-1), "?");
    /* Quotes in names survived the generation. */
    assert_string_equal(si_label(607), "jack-o'-lantern");
    for (int i = 0; i < SI_NUM_LABELS; i++) {
        assert_non_null(si_label(i));
        assert_true(strlen(si_label(i)) > 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gray1),
        cmocka_unit_test(test_gray2),
        cmocka_unit_test(test_gray4),
        cmocka_unit_test(test_gray8),
        cmocka_unit_test(test_gray16),
        cmocka_unit_test(test_gray_alpha8),
        cmocka_unit_test(test_gray_alpha16),
        cmocka_unit_test(test_palette1),
        cmocka_unit_test(test_palette2),
        cmocka_unit_test(test_palette4),
        cmocka_unit_test(test_palette8),
        cmocka_unit_test(test_palette8_trns),
        cmocka_unit_test(test_palette2_trns),
        cmocka_unit_test(test_rgb8),
        cmocka_unit_test(test_rgb16),
        cmocka_unit_test(test_rgba8),
        cmocka_unit_test(test_rgba16),
        cmocka_unit_test(test_interlaced_rgb8),
        cmocka_unit_test(test_interlaced_rgba16),
        cmocka_unit_test(test_interlaced_gray2),
        cmocka_unit_test(test_interlaced_palette4_trns),
        cmocka_unit_test(test_rgb_trns_key),
        cmocka_unit_test(test_gray_trns_key),
        cmocka_unit_test(test_one_pixel),
        cmocka_unit_test(test_preprocess_constant),
        cmocka_unit_test(test_preprocess_matches_torchvision_down),
        cmocka_unit_test(test_preprocess_matches_torchvision_up),
        cmocka_unit_test(test_preprocess_crop_rounding),
        cmocka_unit_test(test_preprocess_bad_image),
        cmocka_unit_test(test_zero_bytes),
        cmocka_unit_test(test_not_png),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt_idat),
        cmocka_unit_test(test_huge_header),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_file_to_tensor),
        cmocka_unit_test(test_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
