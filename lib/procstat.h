/*
 * procstat.h - CPU time and memory of a process, read from outside: from
 * /proc/PID and from the process's cgroup (v1, or v2 where v1 has nothing).
 *
 * What a benchmark needs to measure functions it started (a child process, or
 * a container's main process as the host sees it): CPU seconds over a window
 * (read twice, subtract), the peak resident set (VmHWM), and the cgroup's
 * limits, so a report can say how CPU and memory were capped and check that
 * `podman run --cpus 0.35` really was applied.
 *
 * The parsers take the files' text so tests can feed them made-up files; the
 * readers open /proc and the cgroup tree. Nothing here prints.
 */
#ifndef SI_PROCSTAT_H
#define SI_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* One reading of /proc/PID. */
typedef struct si_procstat {
    double cpu_seconds; /* CPU time of every thread so far, s: the process's CPU clock
                           (ns), or utime + stime of /proc/PID/stat (10 ms ticks) */
    uint64_t
        rss_bytes; /* VmRSS: resident set now (anonymous + file-backed, e.g. mmapped weights) */
    uint64_t hwm_bytes; /* VmHWM: peak resident set since the process started */
} si_procstat_t;

/* Reads /proc/PID/stat, the CPU clock of pid (clock_getcpuclockid) and
 * /proc/PID/status. -1 when the process is gone or the files cannot be parsed. */
int si_procstat_read(pid_t pid, si_procstat_t *out, si_err_t *err);

/* Parses the text of /proc/PID/stat: utime + stime (fields 14 and 15, counted
 * after the ')' that ends the command name, which may itself hold spaces and
 * parentheses) divided by ticks_per_second (sysconf(_SC_CLK_TCK)). */
int si_procstat_parse_stat(const char *text, long ticks_per_second, double *cpu_seconds,
                           si_err_t *err);

/* Parses the text of /proc/PID/status: VmRSS and VmHWM ("kB" lines) into
 * bytes. Both must be present (kernel threads have neither). */
int si_procstat_parse_status(const char *text, uint64_t *rss_bytes, uint64_t *hwm_bytes,
                             si_err_t *err);

/* CPU time of the whole host, from the "cpu" line of /proc/stat: what every
 * process used, ours and everybody else's (a shared machine's noise). */
typedef struct si_hoststat {
    double busy_seconds;  /* user + nice + system + irq + softirq + steal, summed over CPUs, s */
    double total_seconds; /* busy + idle + iowait */
} si_hoststat_t;

/* Reads /proc/stat. */
int si_procstat_host(si_hoststat_t *out, si_err_t *err);

/* Parses the text of /proc/stat (the first line, "cpu  user nice system idle
 * iowait irq softirq steal ..."; kernels before 2.6.11 lack steal: 0). */
int si_procstat_parse_host(const char *text, long ticks_per_second, si_hoststat_t *out,
                           si_err_t *err);

/* What the cgroup of a process allows and has used. A value that could not
 * be read is -1 (so 0 can mean "none used"). */
typedef struct si_cgroupstat {
    double cpu_quota;        /* CPUs the group may use: CFS quota / period (0.35 for
                                `--cpus 0.35`); 0 = no quota; -1 unknown */
    double cpu_seconds;      /* CPU time of every process in the group so far, s */
    int64_t mem_limit_bytes; /* memory limit; 0 = none; -1 unknown */
    int64_t mem_peak_bytes;  /* peak usage (v1 memory.max_usage_in_bytes, v2 memory.peak);
                                counts the group's page cache too, unlike VmHWM */
    char cpu_dir[256];       /* the directories read ("" when none was found) */
    char mem_dir[256];
} si_cgroupstat_t;

/* Reads the cgroup of pid: /proc/PID/cgroup, then the controller files under
 * root (normally "/sys/fs/cgroup"). Returns 0 when at least one value was
 * read, -1 when none could be (no cgroup filesystem, process gone). */
int si_cgroup_read(pid_t pid, const char *root, si_cgroupstat_t *out, si_err_t *err);

/* The same from the text of a /proc/PID/cgroup file, for tests. The v1
 * directory of a line "ID:CONTROLLERS:PATH" is tried as root/CONTROLLERS/PATH
 * (a co-mounted "cpu,cpuacct") and as root/CONTROLLER/PATH for each
 * controller; the v2 line "0::PATH" as root/PATH and root/unified/PATH (the
 * hybrid layout). v1 values win; v2 fills what v1 did not give. */
int si_cgroup_read_text(const char *cgroup_text, const char *root, si_cgroupstat_t *out,
                        si_err_t *err);

#endif
