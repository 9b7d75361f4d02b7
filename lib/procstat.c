/* procstat.c - see procstat.h. */
#include "procstat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Reads a small text file (/proc, cgroup files are a few KB) into buf,
 * NUL-terminated and cut at len - 1 bytes. -1 when it cannot be opened. */
static int read_text(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) return -1;
    buf[n] = 0;
    return 0;
}

int si_procstat_parse_stat(const char *text, long ticks_per_second, double *cpu_seconds,
                           si_err_t *err) {
    /* "pid (comm) state ppid ...": comm may hold ") (", so the last ')' ends it. */
    const char *p = strrchr(text, ')');
    if (!p || ticks_per_second <= 0) return si_err_set(err, "/proc stat: no ')' after the name");
    p++;
    /* After ')': field 3 (state) is the 1st token, utime (14) the 12th, stime the 13th. */
    unsigned long long v[13];
    for (int i = 0; i < 13; i++) {
        while (*p == ' ') p++;
        if (!*p || *p == '\n')
            return si_err_set(err, "/proc stat: only %d fields after the name", i);
        if (i >= 1) {
            char *end;
            errno = 0;
            v[i] = strtoull(p, &end, 10);
            if (errno || end == p || (*end != ' ' && *end != '\n' && *end))
                return si_err_set(err, "/proc stat: field %d is not a number", i + 3);
            p = end;
        } else {
            p += strcspn(p, " \n");
        }
    }
    *cpu_seconds = (double)(v[11] + v[12]) / (double)ticks_per_second;
    return 0;
}

/* The value of a "Key:   123 kB" line of /proc/PID/status, in bytes. */
static int status_kb(const char *text, const char *key, uint64_t *bytes) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) || p[kl] != ':') continue;
        char *end;
        errno = 0;
        unsigned long long kb = strtoull(p + kl + 1, &end, 10);
        if (errno || end == p + kl + 1) return -1;
        while (*end == ' ' || *end == '\t') end++;
        if (strncmp(end, "kB", 2)) return -1;
        *bytes = (uint64_t)kb * 1024u;
        return 0;
    }
    return -1;
}

int si_procstat_parse_status(const char *text, uint64_t *rss_bytes, uint64_t *hwm_bytes,
                             si_err_t *err) {
    if (status_kb(text, "VmRSS", rss_bytes) < 0)
        return si_err_set(err, "/proc status: no VmRSS line in kB");
    if (status_kb(text, "VmHWM", hwm_bytes) < 0)
        return si_err_set(err, "/proc status: no VmHWM line in kB");
    return 0;
}

int si_procstat_read(pid_t pid, si_procstat_t *out, si_err_t *err) {
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_text(path, buf, sizeof buf) < 0)
        return si_err_set(err, "%s: %s", path, strerror(errno));
    if (si_procstat_parse_stat(buf, sysconf(_SC_CLK_TCK), &out->cpu_seconds, err) < 0)
        return si_err_prefix(err, "pid %d", (int)pid);
    /* The same sum in ns from the process's CPU clock: 10 ms ticks are too
     * coarse for a window of a few requests. The ticks stay the fallback. */
    clockid_t cid;
    struct timespec ts;
    if (clock_getcpuclockid(pid, &cid) == 0 && clock_gettime(cid, &ts) == 0)
        out->cpu_seconds = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (read_text(path, buf, sizeof buf) < 0)
        return si_err_set(err, "%s: %s", path, strerror(errno));
    if (si_procstat_parse_status(buf, &out->rss_bytes, &out->hwm_bytes, err) < 0)
        return si_err_prefix(err, "pid %d", (int)pid);
    return 0;
}

int si_procstat_parse_host(const char *text, long ticks_per_second, si_hoststat_t *out,
                           si_err_t *err) {
    unsigned long long v[8] = {0};
    int n = 0;
    if (strncmp(text, "cpu ", 4) || ticks_per_second <= 0)
        return si_err_set(err, "/proc/stat: does not start with a \"cpu\" line");
    n = sscanf(text + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]);
    if (n < 7)
        return si_err_set(err, "/proc/stat: %d fields on the cpu line, want 7 or more",
                          n < 0 ? 0 : n);
    double t = (double)ticks_per_second;
    out->busy_seconds = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / t;
    out->total_seconds = out->busy_seconds + (double)(v[3] + v[4]) / t;
    return 0;
}

int si_procstat_host(si_hoststat_t *out, si_err_t *err) {
    char buf[1024];
    if (read_text("/proc/stat", buf, sizeof buf) < 0)
        return si_err_set(err, "/proc/stat: %s", strerror(errno));
    return si_procstat_parse_host(buf, sysconf(_SC_CLK_TCK), out, err);
}

/* ---- cgroups ---- */

/* dir/file into path; -1 when it does not fit (then nothing is read). */
static int join(char *path, size_t len, const char *dir, const char *file) {
    int n = snprintf(path, len, "%s/%s", dir, file);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* A file of one integer (or "max") under dir. 1 = number, 0 = "max", -1 none. */
static int read_int(const char *dir, const char *file, long long *v) {
    char path[768], buf[128];
    if (join(path, sizeof path, dir, file) < 0 || read_text(path, buf, sizeof buf) < 0) return -1;
    if (!strncmp(buf, "max", 3)) return 0;
    char *end;
    errno = 0;
    *v = strtoll(buf, &end, 10);
    return errno || end == buf ? -1 : 1;
}

static int is_dir_with(const char *dir, const char *file) {
    char path[768];
    return join(path, sizeof path, dir, file) == 0 && access(path, R_OK) == 0;
}

/* v1 memory limits of "no limit" are PAGE_COUNTER_MAX pages rounded: ~2^63. */
#define CG_V1_UNLIMITED (1LL << 60)

static void v1_cpu(const char *dir, si_cgroupstat_t *o) {
    long long q, p;
    if (o->cpu_quota < 0 && read_int(dir, "cpu.cfs_quota_us", &q) == 1 &&
        read_int(dir, "cpu.cfs_period_us", &p) == 1 && p > 0) {
        o->cpu_quota = q < 0 ? 0 : (double)q / (double)p;
        snprintf(o->cpu_dir, sizeof o->cpu_dir, "%s", dir);
    }
}

static void v1_cpuacct(const char *dir, si_cgroupstat_t *o) {
    long long ns;
    if (o->cpu_seconds < 0 && read_int(dir, "cpuacct.usage", &ns) == 1) {
        o->cpu_seconds = (double)ns * 1e-9;
        if (!o->cpu_dir[0]) snprintf(o->cpu_dir, sizeof o->cpu_dir, "%s", dir);
    }
}

static void v1_memory(const char *dir, si_cgroupstat_t *o) {
    long long v;
    if (o->mem_limit_bytes < 0 && read_int(dir, "memory.limit_in_bytes", &v) == 1) {
        o->mem_limit_bytes = v >= CG_V1_UNLIMITED ? 0 : v;
        snprintf(o->mem_dir, sizeof o->mem_dir, "%s", dir);
    }
    if (o->mem_peak_bytes < 0 && read_int(dir, "memory.max_usage_in_bytes", &v) == 1)
        o->mem_peak_bytes = v;
}

static void v2_all(const char *dir, si_cgroupstat_t *o) {
    char path[768], buf[512];
    long long v;
    if (o->cpu_quota < 0 && join(path, sizeof path, dir, "cpu.max") == 0 &&
        read_text(path, buf, sizeof buf) == 0) {
        long long q = 0, p = 0;
        if (!strncmp(buf, "max", 3))
            o->cpu_quota = 0;
        else if (sscanf(buf, "%lld %lld", &q, &p) == 2 && p > 0)
            o->cpu_quota = (double)q / (double)p;
        if (o->cpu_quota >= 0 && !o->cpu_dir[0]) snprintf(o->cpu_dir, sizeof o->cpu_dir, "%s", dir);
    }
    if (o->cpu_seconds < 0 && join(path, sizeof path, dir, "cpu.stat") == 0 &&
        read_text(path, buf, sizeof buf) == 0) {
        const char *u = strstr(buf, "usage_usec ");
        if (u && (u == buf || u[-1] == '\n')) o->cpu_seconds = (double)atoll(u + 11) * 1e-6;
    }
    int r;
    if (o->mem_limit_bytes < 0 && (r = read_int(dir, "memory.max", &v)) >= 0) {
        o->mem_limit_bytes = r == 0 ? 0 : v;
        if (!o->mem_dir[0]) snprintf(o->mem_dir, sizeof o->mem_dir, "%s", dir);
    }
    if (o->mem_peak_bytes < 0 && read_int(dir, "memory.peak", &v) == 1) o->mem_peak_bytes = v;
}

/* Calls fn on the first of root/ctrls/path, root/<each controller>/path that
 * has `probe`, for a v1 line whose controller list holds `want`. */
static void v1_try(const char *root, const char *ctrls, size_t clen, const char *path,
                   const char *want, const char *probe, void (*fn)(const char *, si_cgroupstat_t *),
                   si_cgroupstat_t *o) {
    char list[128];
    if (clen >= sizeof list) return;
    memcpy(list, ctrls, clen), list[clen] = 0;
    int has = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
        has |= !strcmp(t, want);
    if (!has) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%.*s%s", root, (int)clen, ctrls, path);
    if (!is_dir_with(dir, probe)) snprintf(dir, sizeof dir, "%s/%s%s", root, want, path);
    if (is_dir_with(dir, probe)) fn(dir, o);
}

int si_cgroup_read_text(const char *text, const char *root, si_cgroupstat_t *o, si_err_t *err) {
    memset(o, 0, sizeof *o);
    o->cpu_quota = -1, o->cpu_seconds = -1, o->mem_limit_bytes = -1, o->mem_peak_bytes = -1;
    char v2path[256] = "";
    int have_v2 = 0;
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        const char *c1 = memchr(line, ':', ll);
        const char *c2 = c1 ? memchr(c1 + 1, ':', ll - (size_t)(c1 + 1 - line)) : NULL;
        if (c2) {
            char path[256];
            size_t pl = ll - (size_t)(c2 + 1 - line);
            if (pl >= sizeof path) pl = sizeof path - 1;
            memcpy(path, c2 + 1, pl), path[pl] = 0;
            if (!strcmp(path, "/")) path[0] = 0; /* the root group: root/ctrl itself */
            const char *ctrls = c1 + 1;
            size_t clen = (size_t)(c2 - ctrls);
            if (clen == 0 && !strncmp(line, "0:", 2)) {
                snprintf(v2path, sizeof v2path, "%s", path);
                have_v2 = 1;
            } else if (clen) {
                v1_try(root, ctrls, clen, path, "cpu", "cpu.cfs_quota_us", v1_cpu, o);
                v1_try(root, ctrls, clen, path, "cpuacct", "cpuacct.usage", v1_cpuacct, o);
                v1_try(root, ctrls, clen, path, "memory", "memory.limit_in_bytes", v1_memory, o);
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    if (have_v2) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s%s", root, v2path);
        if (is_dir_with(dir, "cgroup.controllers")) v2_all(dir, o);
        snprintf(dir, sizeof dir, "%s/unified%s", root, v2path);
        if (is_dir_with(dir, "cgroup.controllers")) v2_all(dir, o);
    }
    if (o->cpu_quota < 0 && o->cpu_seconds < 0 && o->mem_limit_bytes < 0 && o->mem_peak_bytes < 0)
        return si_err_set(err, "no cgroup controller files found under %s", root);
    return 0;
}

int si_cgroup_read(pid_t pid, const char *root, si_cgroupstat_t *out, si_err_t *err) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    if (read_text(path, buf, sizeof buf) < 0) {
        memset(out, 0, sizeof *out);
        out->cpu_quota = -1, out->cpu_seconds = -1, out->mem_limit_bytes = -1;
        out->mem_peak_bytes = -1;
        return si_err_set(err, "%s: %s", path, strerror(errno));
    }
    return si_cgroup_read_text(buf, root, out, err);
}
