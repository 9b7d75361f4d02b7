/*
 * image.c - PNG decoding (libpng) and torchvision's ImageNet eval transform;
 * see image.h.
 *
 * The resize reimplements what PIL's Image.resize(size, BILINEAR) computes
 * (Pillow 9.x, libImaging/Resample.c), because the network was trained on
 * PIL's output and a "better" bilinear changes its answers: a triangle filter
 * whose support grows with the downscale factor (that is PIL's antialiasing),
 * weights rounded to fixed point with 22 fractional bits, a horizontal pass
 * then a vertical pass, each rounding and clamping to 8 bits. The float
 * arithmetic that places the filter follows PIL's operation for operation so
 * that the weights, and hence the pixels, come out bit-identical.
 */
#include "image.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Files larger than this are refused (while reading, so pipes work too): a
 * PNG within the pixel limit is far smaller unless padded with junk. Bytes. */
#define SI_IMAGE_MAX_FILE (1024u * 1024u * 1024u)

/* ---------------------------------------------------------------- decoding */

/* State libpng's callbacks share with the decoder. It lives in the caller of
 * the function that calls setjmp, so its fields keep the values the callbacks
 * wrote when libpng longjmps back (C11 7.13.2.1p3 only spares locals of the
 * setjmp caller itself). */
typedef struct si_png_ctx {
    const uint8_t *buf; /* the whole PNG */
    size_t len;         /* bytes in buf */
    size_t off;         /* bytes libpng has consumed */
    bool truncated;     /* libpng asked for bytes past the end */
    char msg[256];      /* libpng's error message */
    char warn[160];     /* libpng's last warning, often the reason for msg */
} si_png_ctx_t;

static void si_png_read(png_structp png, png_bytep dst, size_t n) {
    si_png_ctx_t *c = png_get_io_ptr(png);
    if (n > c->len - c->off) {
        c->truncated = true;
        png_error(png, "unexpected end of data");
    }
    memcpy(dst, c->buf + c->off, n);
    c->off += n;
}

/* libpng must not print: keep the message and unwind to the setjmp. */
static void si_png_on_error(png_structp png, png_const_charp msg) {
    si_png_ctx_t *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

/* Warnings (odd ancillary chunks, bad ICC profiles, ...) do not stop the
 * decode, as they do not stop PIL; the last one is kept because libpng's
 * error for a bad header ("Invalid IHDR data") is explained only by the
 * warning before it. */
static void si_png_on_warning(png_structp png, png_const_charp msg) {
    si_png_ctx_t *c = png_get_error_ptr(png);
    snprintf(c->warn, sizeof c->warn, "%s", msg ? msg : "");
}

static uint32_t si_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks the image size against our limits, with a message naming the limit. */
static int si_image_check_size(uint32_t w, uint32_t h, si_err_t *err) {
    if (w == 0 || h == 0) return si_err_set(err, "corrupt PNG: image is %ux%u pixels", w, h);
    if (w > SI_IMAGE_MAX_SIDE || h > SI_IMAGE_MAX_SIDE)
        return si_err_set(err, "PNG is %ux%u pixels; the limit is %u pixels a side", w, h,
                          SI_IMAGE_MAX_SIDE);
    if ((uint64_t)w * h > SI_IMAGE_MAX_PIXELS)
        return si_err_set(err, "PNG is %ux%u = %llu pixels; the limit is %u pixels", w, h,
                          (unsigned long long)w * h, SI_IMAGE_MAX_PIXELS);
    return 0;
}

/* Turns what libpng's callbacks recorded into our message. */
static int si_png_fail(const si_png_ctx_t *c, si_err_t *err) {
    if (c->truncated)
        return si_err_set(err,
                          "truncated PNG: the data ends after %zu bytes, before the image "
                          "is complete",
                          c->len);
    if (c->warn[0] && strcmp(c->warn, c->msg) != 0)
        return si_err_set(err, "corrupt PNG: %s (%s)", c->msg, c->warn);
    return si_err_set(err, "corrupt PNG: %s", c->msg);
}

/* The part of decoding that runs under libpng's setjmp: fills out, or
 * returns -1 with err set. Locals assigned after setjmp and read on the
 * error path are volatile, so their values survive the longjmp. */
static int si_png_decode(si_png_ctx_t *c, si_rgb_t *out, si_err_t *err) {
    png_structp png = NULL;
    png_infop info = NULL;
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    volatile bool libpng_failed = true; /* false once err holds our own message */

    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, si_png_on_error, si_png_on_warning);
    if (!png) return si_err_set(err, "out of memory creating the PNG decoder");
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return si_err_set(err, "out of memory creating the PNG decoder");
    }
    if (setjmp(png_jmpbuf(png))) goto err;

    png_set_read_fn(png, c, si_png_read);
    /* A second line behind the caller's IHDR check: libpng itself refuses
     * larger sides, before it allocates rows. */
    png_set_user_limits(png, SI_IMAGE_MAX_SIDE, SI_IMAGE_MAX_SIDE);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    if (si_image_check_size(w, h, err)) {
        libpng_failed = false;
        goto err;
    }

    /* Everything to 8-bit RGB, as PIL's convert("RGB") does: palette and
     * low-bit gray expanded (gray scaled to 0..255), 16-bit cut to its high
     * byte, gray copied to R=G=B, alpha and tRNS dropped, not composited. No
     * gamma correction: PIL ignores gAMA and so do we. */
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t stride = (size_t)w * 3;
    if (png_get_bit_depth(png, info) != 8 || png_get_channels(png, info) != 3 ||
        png_get_rowbytes(png, info) != stride) {
        si_err_set(err, "unsupported PNG layout (colour type %d, %d-bit)", color, depth);
        libpng_failed = false;
        goto err;
    }
    px = malloc(stride * h);
    rows = malloc(sizeof *rows * h);
    if (!px || !rows) {
        si_err_set(err, "out of memory for a %ux%u image", w, h);
        libpng_failed = false;
        goto err;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = px + stride * y;
    png_read_image(png, rows);
    /* Demands the rest up to IEND with valid CRCs: a file cut after its last
     * IDAT is refused, not half-trusted. */
    png_read_end(png, NULL);

    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->w = w;
    out->h = h;
    out->px = px;
    return 0;

err:
    free(rows);
    free(px);
    png_destroy_read_struct(&png, &info, NULL);
    return libpng_failed ? si_png_fail(c, err) : -1;
}

int si_image_decode_png(const void *buf, size_t len, si_rgb_t *out, si_err_t *err) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *p = buf;

    if (!buf || len == 0) return si_err_set(err, "not a PNG file: it is empty (0 bytes)");
    if (len < sizeof sig) {
        if (memcmp(p, sig, len) == 0)
            return si_err_set(err, "truncated PNG: only %zu bytes, not even the signature", len);
        return si_err_set(err, "not a PNG file (%zu bytes, no PNG signature)", len);
    }
    if (memcmp(p, sig, sizeof sig) != 0)
        return si_err_set(err, "not a PNG file (no PNG signature in its first 8 bytes)");

    /* The size limits are checked from the raw IHDR (always the first chunk:
     * 4-byte length 13, "IHDR", width, height) before libpng sees the file,
     * because libpng reports a size beyond its user limits only as "Invalid
     * IHDR data". If the first chunk is not an IHDR, libpng says so below. */
    if (len >= 24 && si_be32(p + 8) == 13 && memcmp(p + 12, "IHDR", 4) == 0 &&
        si_image_check_size(si_be32(p + 16), si_be32(p + 20), err))
        return -1;

    si_png_ctx_t c = {.buf = p, .len = len};
    return si_png_decode(&c, out, err);
}

/* Reads a whole file into a malloc'd buffer (*buf, *len); the caller frees. */
static int si_read_file(const char *path, uint8_t **buf, size_t *len, si_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return si_err_set(err, "cannot open %s: %s", path, strerror(errno));
    uint8_t *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            /* Grows geometrically; stat sizes are not trusted (pipes, /proc). */
            size_t ncap = cap ? cap * 2 : 64 * 1024;
            if (ncap > SI_IMAGE_MAX_FILE + 1) ncap = SI_IMAGE_MAX_FILE + 1;
            if (ncap == cap) {
                si_err_set(err, "%s: file is larger than %u bytes", path, SI_IMAGE_MAX_FILE);
                goto err;
            }
            uint8_t *nb = realloc(b, ncap);
            if (!nb) {
                si_err_set(err, "%s: out of memory reading the file", path);
                goto err;
            }
            b = nb;
            cap = ncap;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        si_err_set(err, "cannot read %s: %s", path, strerror(errno));
        goto err;
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;

err:
    free(b);
    fclose(f);
    return -1;
}

int si_image_load_png(const char *path, si_rgb_t *out, si_err_t *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (si_read_file(path, &buf, &len, err)) return -1;
    int rc = si_image_decode_png(buf, len, out, err);
    free(buf);
    if (rc) return si_err_prefix(err, "%s", path);
    return 0;
}

void si_rgb_free(si_rgb_t *img) {
    if (!img) return;
    free(img->px);
    img->px = NULL;
    img->w = img->h = 0;
}

/* ----------------------------------------------------------- preprocessing */

/* PIL's fixed point: 32-bit accumulators, 8 bits of result, 2 bits of
 * headroom for filters with negative lobes. The triangle has none, but the
 * rounding of the weights, and so the output, depends on this exact value. */
#define SI_PRECISION_BITS (32 - 8 - 2)

/* torchvision's ImageNet statistics (mean, std of each channel of 0..1 RGB),
 * as float32 like the tensors torchvision.transforms.Normalize makes. */
static const float si_mean[3] = {0.485f, 0.456f, 0.406f};
static const float si_std[3] = {0.229f, 0.224f, 0.225f};

/* The resampling weights of one axis for a run of output samples: output j
 * reads inputs first[j] .. first[j] + count[j] - 1 with weights
 * k[j * ksize + i] (scaled by 2^SI_PRECISION_BITS). */
typedef struct si_axis {
    int ksize;  /* weights per output sample, >= every count[j] */
    int *first; /* [n] */
    int *count; /* [n] */
    int32_t *k; /* [n * ksize] */
} si_axis_t;

static void si_axis_free(si_axis_t *a) {
    free(a->first);
    free(a->count);
    free(a->k);
    *a = (si_axis_t){0};
}

/* PIL's bilinear kernel: a triangle of support 1. */
static double si_triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Weights for outputs o0 .. o0 + n - 1 of an in_size -> out_size resize.
 * Only the outputs the center crop keeps are computed; each output depends
 * only on its own weights, so this equals resizing all and cropping. */
static int si_axis_init(si_axis_t *a, int in_size, int out_size, int o0, int n, si_err_t *err) {
    /* PIL: scale from the float box (0, in_size), support widened by the
     * downscale factor so every input contributes (antialiasing). */
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    double ss = 1.0 / filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc(sizeof *w * (size_t)ksize);

    *a = (si_axis_t){.ksize = ksize};
    a->first = malloc(sizeof *a->first * (size_t)n);
    a->count = malloc(sizeof *a->count * (size_t)n);
    a->k = malloc(sizeof *a->k * (size_t)n * (size_t)ksize);
    if (!w || !a->first || !a->count || !a->k) {
        free(w);
        si_axis_free(a);
        return si_err_set(err, "out of memory for resize weights");
    }
    for (int j = 0; j < n; j++) {
        int xx = o0 + j;
        double center = 0.0 + (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5); /* PIL rounds by truncation */
        int xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        int cnt = xmax - xmin;
        if (cnt > ksize) cnt = ksize; /* cannot happen: the span is <= 2 * support + 1 */
        double ww = 0.0;
        for (int i = 0; i < cnt; i++) {
            w[i] = si_triangle((i + xmin - center + 0.5) * ss);
            ww += w[i];
        }
        int32_t *k = a->k + (size_t)j * ksize;
        for (int i = 0; i < ksize; i++) {
            double v = i < cnt ? (ww != 0.0 ? w[i] / ww : w[i]) : 0.0;
            /* Round half away from zero, as PIL does (weights are >= 0 here). */
            k[i] = (int32_t)(v < 0 ? -0.5 + v * (1 << SI_PRECISION_BITS)
                                   : 0.5 + v * (1 << SI_PRECISION_BITS));
        }
        a->first[j] = xmin;
        a->count[j] = cnt;
    }
    free(w);
    return 0;
}

/* An accumulator back to 8 bits: PIL's clip8. */
static inline uint8_t si_clip8(int32_t ss) {
    if (ss < 0) return 0;
    ss >>= SI_PRECISION_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

/* torchvision's center-crop offset: int(round((size - 224) / 2.0)). Python's
 * round() goes to the even neighbour on .5, so an odd excess d = 2k + 1 gives
 * k when k is even and k + 1 when k is odd. */
static int si_crop_offset(int size) {
    int d = size - SI_IMAGE_SIZE;
    int k = d / 2;
    if (d % 2 && k % 2) k++;
    return k;
}

int si_image_preprocess(const si_rgb_t *img, float *out, si_err_t *err) {
    if (!img || !img->px || img->w == 0 || img->h == 0)
        return si_err_set(err, "preprocess: empty image");
    if (img->w > SI_IMAGE_MAX_SIDE || img->h > SI_IMAGE_MAX_SIDE ||
        (uint64_t)img->w * img->h > SI_IMAGE_MAX_PIXELS)
        return si_err_set(err, "preprocess: image %ux%u is over the size limit", img->w, img->h);

    /* torchvision's Resize(256) on a PIL image (_compute_resized_output_size):
     * the shorter side becomes 256, the longer int(256 * long / short) with
     * Python's float division, which double division reproduces exactly. */
    int w = (int)img->w, h = (int)img->h;
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    int new_short = SI_IMAGE_RESIZE;
    int new_long = (int)((double)SI_IMAGE_RESIZE * longer / shorter);
    int nw = w <= h ? new_short : new_long;
    int nh = w <= h ? new_long : new_short;
    /* The shorter side is 256 >= 224, so the crop always fits: no padding. */
    int top = si_crop_offset(nh), left = si_crop_offset(nw);

    /* torchvision skips the resize when the size already matches and PIL
     * skips a pass whose axis keeps its size; both passes are run anyway,
     * since at scale 1 PIL's weights are exactly (1, 0) and the pass is the
     * identity. */
    si_axis_t ax = {0}, ay = {0};
    uint8_t *tmp = NULL, *res = NULL;
    if (si_axis_init(&ax, w, nw, left, SI_IMAGE_SIZE, err)) return -1;
    if (si_axis_init(&ay, h, nh, top, SI_IMAGE_SIZE, err)) goto err;

    /* Horizontal pass first, as PIL, over only the source rows the vertical
     * pass reads: [y0, y1). */
    int y0 = ay.first[0];
    int y1 = ay.first[SI_IMAGE_SIZE - 1] + ay.count[SI_IMAGE_SIZE - 1];
    size_t tstride = (size_t)SI_IMAGE_SIZE * 3;
    tmp = malloc(tstride * (size_t)(y1 - y0));
    res = malloc(tstride * SI_IMAGE_SIZE);
    if (!tmp || !res) {
        si_err_set(err, "out of memory for the resized image");
        goto err;
    }
    const int32_t half = 1 << (SI_PRECISION_BITS - 1);
    for (int y = y0; y < y1; y++) {
        const uint8_t *src = img->px + (size_t)y * w * 3;
        uint8_t *dst = tmp + (size_t)(y - y0) * tstride;
        for (int x = 0; x < SI_IMAGE_SIZE; x++) {
            const int32_t *k = ax.k + (size_t)x * ax.ksize;
            const uint8_t *s = src + (size_t)ax.first[x] * 3;
            int32_t r = half, g = half, b = half;
            for (int i = 0; i < ax.count[x]; i++) {
                r += s[3 * i + 0] * k[i];
                g += s[3 * i + 1] * k[i];
                b += s[3 * i + 2] * k[i];
            }
            dst[3 * x + 0] = si_clip8(r);
            dst[3 * x + 1] = si_clip8(g);
            dst[3 * x + 2] = si_clip8(b);
        }
    }
    /* Vertical pass a source row at a time into a row of sums: the inner loop
     * runs along the row, which the compiler vectorizes (integer sums, so the
     * order of the taps changes nothing). */
    int32_t acc[SI_IMAGE_SIZE * 3];
    for (int y = 0; y < SI_IMAGE_SIZE; y++) {
        const int32_t *k = ay.k + (size_t)y * ay.ksize;
        const uint8_t *col = tmp + (size_t)(ay.first[y] - y0) * tstride;
        uint8_t *dst = res + (size_t)y * tstride;
        for (size_t x = 0; x < tstride; x++) acc[x] = half;
        for (int i = 0; i < ay.count[y]; i++) {
            const uint8_t *row = col + (size_t)i * tstride;
            int32_t ki = k[i];
            for (size_t x = 0; x < tstride; x++) acc[x] += row[x] * ki;
        }
        for (size_t x = 0; x < tstride; x++) dst[x] = si_clip8(acc[x]);
    }

    /* ToTensor then Normalize, in float32 and in torchvision's order:
     * (v / 255 - mean) / std. A table of the 256 possible results per
     * channel gives the same floats as computing each pixel. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - si_mean[c]) / si_std[c];
    const size_t plane = (size_t)SI_IMAGE_SIZE * SI_IMAGE_SIZE;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) out[c * plane + i] = lut[c][res[3 * i + c]];

    free(res);
    free(tmp);
    si_axis_free(&ay);
    si_axis_free(&ax);
    return 0;

err:
    free(res);
    free(tmp);
    si_axis_free(&ay);
    si_axis_free(&ax);
    return -1;
}

int si_image_file_to_tensor(const char *path, float *out, si_err_t *err) {
    si_rgb_t img = {0};
    if (si_image_load_png(path, &img, err)) return -1;
    int rc = si_image_preprocess(&img, out, err);
    si_rgb_free(&img);
    if (rc) return si_err_prefix(err, "%s", path);
    return 0;
}
