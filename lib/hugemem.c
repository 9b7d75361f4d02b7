/*
 * hugemem.c - see hugemem.h.
 */
#include "hugemem.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *si_huge_reserve(size_t len, size_t *mapped, si_err_t *err) {
    if (len == 0 || len > SIZE_MAX - 2 * SI_HUGE_PAGE) {
        si_err_set(err, "huge pages: bad length %zu", len);
        return NULL;
    }
    if (len < SI_HUGE_MIN) {
        /* Mostly padding as a huge page: plain pages, zeroed all the same. */
        size_t want = (len + 4095) & ~(size_t)4095;
        void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            si_err_set(err, "mmap of %zu bytes: %s", want, strerror(errno));
            return NULL;
        }
        *mapped = want;
        return p;
    }
    size_t want = (len + SI_HUGE_PAGE - 1) & ~(SI_HUGE_PAGE - 1);
    /* One huge page more than needed, then the unaligned ends unmapped:
     * kernels before 6.7 do not align large anonymous mappings themselves,
     * and a huge page needs a 2 MiB-aligned virtual range. */
    size_t over = want + SI_HUGE_PAGE;
    uint8_t *raw = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        si_err_set(err, "huge pages: mmap of %zu bytes: %s", over, strerror(errno));
        return NULL;
    }
    uintptr_t a = ((uintptr_t)raw + SI_HUGE_PAGE - 1) & ~(uintptr_t)(SI_HUGE_PAGE - 1);
    uint8_t *p = (uint8_t *)a;
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + over > p + want) munmap(p + want, (size_t)(raw + over - (p + want)));
    const char *env = getenv("SPLITINFER_HUGE");
    /* Advice only: without it (THP "never", an old kernel) the pages are 4 KiB. */
    if (!env || strcmp(env, "off")) (void)madvise(p, want, MADV_HUGEPAGE);
    *mapped = want;
    return p;
}

void si_huge_populate(void *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
    /* A huge page at a time (5-15 ms for 100 MB here). madvise wants a
     * page-aligned start; the fault of any byte brings its whole huge page. */
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, b = (uintptr_t)p + len;
    if (len) (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
#else
    (void)p, (void)len;
#endif
}

void *si_huge_alloc(size_t len, size_t *mapped, si_err_t *err) {
    void *p = si_huge_reserve(len, mapped, err);
    if (p) si_huge_populate(p, *mapped);
    return p;
}

void si_huge_free(void *p, size_t mapped) {
    if (p) munmap(p, mapped);
}

long long si_huge_backed(const void *p, size_t len) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    uintptr_t lo = (uintptr_t)p, hi = lo + len;
    long long total = 0;
    int inside = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        uintptr_t a, b;
        long long kb;
        /* A mapping's first line: "start-end perms ..."; its fields follow. */
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &a, &b) == 2 &&
            strchr(line, '-') < strchr(line, ' '))
            inside = a < hi && b > lo;
        else if (inside && sscanf(line, "AnonHugePages: %lld kB", &kb) == 1)
            total += kb * 1024;
    }
    fclose(f);
    return total;
}
