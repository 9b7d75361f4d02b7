/*
 * hugemem.h - memory on transparent huge pages, for weights that every
 * request reads.
 *
 * Why: a function reads all of its weights (ResNet50: 100 MB) once per
 * request, and a function on a serverless platform sits idle between
 * requests. Measured on this project's 2-vCPU VM (a stage holding the whole
 * model, its compute time per request, 6 requests after each pause):
 *   weights read from the mapped .sfm:    58-67 ms back to back, 68-76 after
 *                                         0.5 s idle, 84-105 after 2 s
 *   copied to anonymous 4 KiB pages:      43-47, 43-48, 46-58
 *   copied to 2 MiB huge pages (this):    42-50, 41-45, 43-51
 * A pure compute loop did not slow down after idling; a scan of 100 MB of
 * anonymous memory did (2.6-2.9 ms back to back, 6.1 after 2 s on 4 KiB
 * pages, 3.4 on huge pages): the cost is in reaching memory, not in the core.
 * The likely cause is page walks whose caches the host's other work evicted
 * while the function waited (two-dimensional in a VM): huge pages need 50
 * entries for 100 MB instead of 25 600. Why the file's own pages fared worse
 * than anonymous 4 KiB ones was not pinned down.
 *
 * A region is an anonymous private mapping, 2 MiB-aligned and rounded up to
 * 2 MiB, with MADV_HUGEPAGE: the kernel backs it with huge pages when
 * transparent huge pages are "always" or "madvise"
 * (/sys/kernel/mm/transparent_hugepage/enabled), with 4 KiB pages otherwise
 * or when it has no free huge page - the memory works the same either way.
 * SPLITINFER_HUGE=off in the environment leaves out the MADV_HUGEPAGE (for
 * comparing the two).
 */
#ifndef SI_HUGEMEM_H
#define SI_HUGEMEM_H

#include <stddef.h>

#include "err.h"

#define SI_HUGE_PAGE ((size_t)2 << 20) /* bytes */
#define SI_HUGE_MIN ((size_t)1 << 20)  /* smaller regions get 4 KiB pages */

/* A zeroed, writable region of at least len bytes (len > 0), starting on a
 * 2 MiB boundary; *mapped gets its length, which si_huge_free needs. NULL
 * and err set when the mapping fails. A region under SI_HUGE_MIN is only
 * rounded up to 4 KiB, on 4 KiB pages: as a huge page it would be mostly
 * padding, resident all the same. */
void *si_huge_alloc(size_t len, size_t *mapped, si_err_t *err);

/* si_huge_alloc without faulting the region in: nothing of it is resident
 * until touched or si_huge_populate'd. For a region filled a part at a time
 * while memory it replaces is given back (modelfile.h, si_model_hot_step). */
void *si_huge_reserve(size_t len, size_t *mapped, si_err_t *err);

/* Faults [p, p + len) of a region of si_huge_reserve in now, whole huge
 * pages: the same faults taken inside a later pread into it cost up to 5x
 * more here. A no-op before Linux 5.14 (first touch faults them then). */
void si_huge_populate(void *p, size_t len);

/* Unmaps a region of si_huge_alloc; p may be NULL. */
void si_huge_free(void *p, size_t mapped);

/* Bytes of [p, p + len) the kernel backs with huge pages now, from
 * /proc/self/smaps (AnonHugePages of the mappings it overlaps; a mapping
 * that only partly overlaps counts whole); -1 when smaps cannot be read. */
long long si_huge_backed(const void *p, size_t len);

#endif
