/*
 * image.h - PNG in, normalized NCHW float32 tensor out.
 *
 * Decoding is libpng; every PNG colour type and bit depth (1/2/4/8/16-bit
 * gray, gray+alpha, palette with or without tRNS, RGB, RGBA, Adam7-
 * interlaced) is turned into 8-bit RGB the way PIL's Image.convert("RGB")
 * does it: low-bit gray scaled to 0..255, 16-bit samples keep their high
 * byte, alpha and tRNS are dropped, not composited, gAMA/iCCP are ignored.
 * (One deliberate difference: PIL opens 16-bit gray as a 32-bit integer
 * image and clips it to 255 on conversion, which whitens almost every pixel;
 * we keep the high byte there too.)
 *
 * Preprocessing is torchvision's ImageNet eval transform:
 *   Resize(256) (shorter side to 256, bilinear with PIL's antialiasing
 *   filter, 8-bit rounding between the horizontal and vertical pass),
 *   CenterCrop(224), ToTensor, Normalize(mean, std)
 * reimplemented operation for operation, so the tensor is bit-identical to
 * PIL 9.4 + torchvision 0.14's on the sample photos (tests/t_preprocess.sh
 * allows one 8-bit step, 0.02, for other library versions).
 */
#ifndef SI_IMAGE_H
#define SI_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Limits, checked from the PNG header before any pixel memory is taken. */
#define SI_IMAGE_MAX_SIDE 16384u                  /* pixels, either side */
#define SI_IMAGE_MAX_PIXELS (40u * 1000u * 1000u) /* width x height: 40 MP */

#define SI_IMAGE_SIZE 224   /* side of the crop fed to the network */
#define SI_IMAGE_RESIZE 256 /* shorter side after resizing */

/* An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B.
 * Owned by whoever filled it; release with si_rgb_free. */
typedef struct si_rgb {
    uint32_t w, h; /* pixels */
    uint8_t *px;   /* w * h * 3 bytes */
} si_rgb_t;

/* Decodes a PNG held in memory into *out (pixels malloc'd; free with
 * si_rgb_free). Fails (-1, err set, *out untouched) on anything that is not
 * a complete PNG within the limits above: empty or non-PNG bytes ("not a PNG
 * file"), data ending before IEND ("truncated PNG: ..."), bad CRCs or zlib
 * data ("corrupt PNG: ..."), a header over the limits (names the limit; no
 * pixel memory is taken). Never crashes on bad bytes; libpng prints nothing.
 * Warnings libpng recovers from (a bad ancillary chunk) do not fail it. */
int si_image_decode_png(const void *buf, size_t len, si_rgb_t *out, si_err_t *err);

/* Reads and decodes a PNG file; decode errors are prefixed with the path. */
int si_image_load_png(const char *path, si_rgb_t *out, si_err_t *err);

/* Frees img's pixels and zeroes it; img may be NULL or already freed. */
void si_rgb_free(si_rgb_t *img);

/* Resize shorter side to 256, center-crop 224, normalize; writes
 * 3 * 224 * 224 floats in CHW order into out (caller's memory). Images
 * smaller than the crop are upscaled by the same rule, so any size >= 1x1
 * works. Fails (-1) only for an empty or over-limit image, or out of memory.
 * Only the cropped region is resampled (same result, less work). */
int si_image_preprocess(const si_rgb_t *img, float *out, si_err_t *err);

/* Convenience: load a PNG file and preprocess it into out (3*224*224 floats). */
int si_image_file_to_tensor(const char *path, float *out, si_err_t *err);

#endif
