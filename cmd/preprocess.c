/*
 * preprocess.c - `splitinfer preprocess IMAGE -o OUT.bin`: the tensor the
 * network would see, written as 3 * 224 * 224 little-endian float32 in CHW
 * order, so it can be compared with PIL + torchvision (tests/t_preprocess.sh).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "image.h"

#define SI_TENSOR_FLOATS (3 * SI_IMAGE_SIZE * SI_IMAGE_SIZE)

/* Writes the floats little-endian whatever the host's byte order; on failure
 * removes the partial file so no half-written tensor is left to be trusted. */
static int si_write_tensor(const char *path, const float *t, size_t n, si_err_t *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return si_err_set(err, "cannot create %s: %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &t[i], sizeof u);
        uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        if (fwrite(b, 1, sizeof b, f) != sizeof b) {
            si_err_set(err, "cannot write %s: %s", path, strerror(errno));
            fclose(f);
            goto err;
        }
    }
    if (fclose(f) != 0) {
        si_err_set(err, "cannot write %s: %s", path, strerror(errno));
        goto err;
    }
    return 0;

err:
    unlink(path);
    return -1;
}

/* argv holds the arguments after "preprocess"; -o may come before or after
 * the image. Returns the process exit code: 0, or 1 after printing
 * "splitinfer: <why>" to stderr. */
int si_cmd_preprocess(int argc, char **argv) {
    cli_opts_t o;
    /* cli_parse leaves o.args allocated (or NULL) when it fails, too. */
    if (cli_parse(argc, argv, "o", &o)) {
        free(o.args);
        return 1;
    }
    if (o.n_args != 1 || !o.output) {
        free(o.args);
        return cli_fail("usage: splitinfer preprocess IMAGE.png -o OUT.bin");
    }

    /* 588 KiB: on the heap, not the stack. */
    float *t = malloc(sizeof *t * SI_TENSOR_FLOATS);
    si_err_t err = {{0}};
    int rc = 0;
    if (!t)
        rc = cli_fail("out of memory");
    else if (si_image_file_to_tensor(o.args[0], t, &err) ||
             si_write_tensor(o.output, t, SI_TENSOR_FLOATS, &err))
        rc = cli_fail("%s", err.msg);
    free(t);
    free(o.args);
    return rc;
}
