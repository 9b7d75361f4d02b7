/* test_procstat.c - /proc and cgroup readings: the parsers on made-up files
 * (hostile command names, missing fields), the readers on this process (CPU
 * time that grows by what we burn, a peak RSS that grows by what we touch),
 * and the cgroup reader on fake v1, co-mounted v1, v2 and hybrid trees. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "procstat.h"

/* A real line of a process named "a) (b c" (the kernel allows any bytes). */
static const char *stat_line =
    "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 987654 "
    "123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 17 1 0 0 0 0 0\n";

static void test_parse_stat(void **state) {
    (void)state;
    double cpu = -1;
    si_err_t err = {{0}};
    assert_int_equal(si_procstat_parse_stat(stat_line, 100, &cpu, &err), 0);
    assert_float_equal(cpu, 3.25, 1e-12); /* (250 + 75) ticks / 100 Hz */
    assert_int_equal(si_procstat_parse_stat(stat_line, 1000, &cpu, &err), 0);
    assert_float_equal(cpu, 0.325, 1e-12);
}

static void test_parse_stat_bad(void **state) {
    (void)state;
    double cpu = -1;
    si_err_t err = {{0}};
    assert_int_equal(si_procstat_parse_stat("4242 (x S 1 2 3", 100, &cpu, &err), -1);
    assert_non_null(strstr(err.msg, "')'"));
    assert_int_equal(si_procstat_parse_stat("4242 (x) S 1 2 3 4 5 6 7 8 9\n", 100, &cpu, &err), -1);
    assert_non_null(strstr(err.msg, "fields"));
    assert_int_equal(si_procstat_parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 1x 3\n", 100, &cpu, &err),
                     -1);
    assert_non_null(strstr(err.msg, "field 14"));
    assert_int_equal(si_procstat_parse_stat(stat_line, 0, &cpu, &err), -1);
    assert_float_equal(cpu, -1, 0); /* untouched on failure */
}

static void test_parse_status(void **state) {
    (void)state;
    const char *text = "Name:\tsplitinfer\nVmPeak:\t  900000 kB\nVmHWM:\t  153600 kB\n"
                       "VmRSS:\t  102400 kB\nThreads:\t3\n";
    uint64_t rss = 0, hwm = 0;
    si_err_t err = {{0}};
    assert_int_equal(si_procstat_parse_status(text, &rss, &hwm, &err), 0);
    assert_int_equal(rss, 102400ull * 1024);
    assert_int_equal(hwm, 153600ull * 1024);
    /* A key that only starts the same ("VmRSSx") is not VmRSS; kernel threads have none. */
    assert_int_equal(si_procstat_parse_status("VmRSSx:\t1 kB\nVmHWM:\t2 kB\n", &rss, &hwm, &err),
                     -1);
    assert_non_null(strstr(err.msg, "VmRSS"));
    assert_int_equal(si_procstat_parse_status("VmRSS:\t1 kB\n", &rss, &hwm, &err), -1);
    assert_non_null(strstr(err.msg, "VmHWM"));
    assert_int_equal(si_procstat_parse_status("VmRSS:\t1 MB\nVmHWM:\t2 kB\n", &rss, &hwm, &err),
                     -1);
}

static double now_s(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_read_self(void **state) {
    (void)state;
    si_procstat_t a, b;
    si_err_t err = {{0}};
    assert_int_equal(si_procstat_read(getpid(), &a, &err), 0);
    assert_true(a.rss_bytes > 0 && a.hwm_bytes >= a.rss_bytes);
    /* Burn 300 ms of CPU, touch 64 MiB. */
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    volatile double x = 0;
    while (now_s(CLOCK_PROCESS_CPUTIME_ID) - t0 < 0.3) x += 1;
    size_t big = 64u << 20;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, 1, big);
    assert_int_equal(si_procstat_read(getpid(), &b, &err), 0);
    double used = now_s(CLOCK_PROCESS_CPUTIME_ID) - t0;
    /* The CPU clock is exact; were it unreadable, ticks would be within a few of it. */
    assert_true(b.cpu_seconds - a.cpu_seconds >= used - 0.05);
    assert_true(b.cpu_seconds - a.cpu_seconds <= used + 0.05);
    /* Another process's clock: a child that burns 200 ms. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        volatile double y = 0;
        while (now_s(CLOCK_PROCESS_CPUTIME_ID) - c0 < 0.2) y += 1;
        char ch = 1;
        if (write(fds[1], &ch, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char ch;
    assert_int_equal(read(fds[0], &ch, 1), 1);
    si_procstat_t c;
    assert_int_equal(si_procstat_read(pid, &c, &err), 0);
    assert_true(c.cpu_seconds >= 0.2 && c.cpu_seconds < 0.3);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]), close(fds[1]);
    assert_true(b.hwm_bytes >= a.rss_bytes + big - (4u << 20));
    assert_true(b.rss_bytes >= big);
    free(p);
}

static void test_read_gone(void **state) {
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    si_procstat_t s;
    si_err_t err = {{0}};
    assert_int_equal(si_procstat_read(pid, &s, &err), -1);
    assert_non_null(strstr(err.msg, "/proc/"));
}

static void test_host(void **state) {
    (void)state;
    si_hoststat_t h;
    si_err_t err = {{0}};
    const char *text = "cpu  100 20 30 400 50 6 4 10 0 0\ncpu0 50 10 15 200 25 3 2 5 0 0\n";
    assert_int_equal(si_procstat_parse_host(text, 100, &h, &err), 0);
    assert_float_equal(h.busy_seconds, 1.70, 1e-12);  /* 100+20+30+6+4+10 ticks */
    assert_float_equal(h.total_seconds, 6.20, 1e-12); /* + 400 idle + 50 iowait */
    assert_int_equal(si_procstat_parse_host("cpu  1 2 3 4 5 6 7\n", 100, &h, &err),
                     0); /* no steal */
    assert_float_equal(h.busy_seconds, 0.19, 1e-12);
    assert_int_equal(si_procstat_parse_host("cpu0 1 2 3 4 5 6 7 8\n", 100, &h, &err), -1);
    assert_int_equal(si_procstat_parse_host("cpu  1 2 3\n", 100, &h, &err), -1);
    assert_non_null(strstr(err.msg, "3 fields"));
    /* The real one grows with what we burn. */
    si_hoststat_t a, b;
    assert_int_equal(si_procstat_host(&a, &err), 0);
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    volatile double x = 0;
    while (now_s(CLOCK_PROCESS_CPUTIME_ID) - t0 < 0.1) x += 1;
    assert_int_equal(si_procstat_host(&b, &err), 0);
    assert_true(b.busy_seconds - a.busy_seconds >= 0.05);
    assert_true(b.total_seconds >= b.busy_seconds);
}

/* ---- cgroups on a fake tree ---- */

static char root[64];

static void put(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *s = path + strlen(root) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_tree(void **state) {
    (void)state;
    snprintf(root, sizeof root, "/tmp/test_procstat-XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown_tree(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_cgroup_v1_split(void **state) {
    (void)state;
    /* The layout of this project's CI hosts: one mount per controller. */
    const char *c = "/libpod_parent/libpod-abc";
    char rel[256];
    snprintf(rel, sizeof rel, "cpu%s/cpu.cfs_quota_us", c), put(rel, "35000\n");
    snprintf(rel, sizeof rel, "cpu%s/cpu.cfs_period_us", c), put(rel, "100000\n");
    snprintf(rel, sizeof rel, "cpuacct%s/cpuacct.usage", c), put(rel, "2500000000\n");
    snprintf(rel, sizeof rel, "memory%s/memory.limit_in_bytes", c), put(rel, "536870912\n");
    snprintf(rel, sizeof rel, "memory%s/memory.max_usage_in_bytes", c), put(rel, "35766272\n");
    const char *text =
        "9:name=systemd:/libpod_parent/libpod-abc\n4:memory:/libpod_parent/libpod-abc\n"
        "2:cpuacct:/libpod_parent/libpod-abc\n1:cpu:/libpod_parent/libpod-abc\n"
        "0::/libpod_parent/libpod-abc\n";
    si_cgroupstat_t s;
    si_err_t err = {{0}};
    assert_int_equal(si_cgroup_read_text(text, root, &s, &err), 0);
    assert_float_equal(s.cpu_quota, 0.35, 1e-12);
    assert_float_equal(s.cpu_seconds, 2.5, 1e-12);
    assert_int_equal(s.mem_limit_bytes, 536870912);
    assert_int_equal(s.mem_peak_bytes, 35766272);
    assert_non_null(strstr(s.cpu_dir, "/cpu/libpod_parent/libpod-abc"));
    assert_non_null(strstr(s.mem_dir, "/memory/libpod_parent/libpod-abc"));
}

static void test_cgroup_v1_comounted_unlimited(void **state) {
    (void)state;
    /* "cpu,cpuacct" mounted together (systemd hosts); no quota, no limit; root group. */
    put("cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put("cpu,cpuacct/cpuacct.usage", "1000\n");
    put("memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("memory/memory.max_usage_in_bytes", "4096\n");
    si_cgroupstat_t s;
    si_err_t err = {{0}};
    assert_int_equal(si_cgroup_read_text("3:cpu,cpuacct:/\n5:memory:/\n", root, &s, &err), 0);
    assert_float_equal(s.cpu_quota, 0, 0);
    assert_float_equal(s.cpu_seconds, 1e-6, 1e-15);
    assert_int_equal(s.mem_limit_bytes, 0);
    assert_int_equal(s.mem_peak_bytes, 4096);
}

static void test_cgroup_v2(void **state) {
    (void)state;
    put("unified/job/cgroup.controllers", "cpu memory\n");
    put("unified/job/cpu.max", "50000 100000\n");
    put("unified/job/cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n");
    put("unified/job/memory.max", "max\n");
    put("unified/job/memory.peak", "1048576\n");
    si_cgroupstat_t s;
    si_err_t err = {{0}};
    /* Hybrid: v1 lines point at groups that do not exist here; v2 fills in. */
    assert_int_equal(si_cgroup_read_text("1:cpu:/nothere\n0::/job\n", root, &s, &err), 0);
    assert_float_equal(s.cpu_quota, 0.5, 1e-12);
    assert_float_equal(s.cpu_seconds, 1.5, 1e-12);
    assert_int_equal(s.mem_limit_bytes, 0);
    assert_int_equal(s.mem_peak_bytes, 1048576);
    assert_non_null(strstr(s.cpu_dir, "unified/job"));
}

static void test_cgroup_none(void **state) {
    (void)state;
    si_cgroupstat_t s;
    si_err_t err = {{0}};
    assert_int_equal(si_cgroup_read_text("1:cpu:/missing\n0::/missing\n", root, &s, &err), -1);
    assert_non_null(strstr(err.msg, "no cgroup"));
    assert_float_equal(s.cpu_quota, -1, 0);
    assert_int_equal(s.mem_peak_bytes, -1);
    assert_int_equal(si_cgroup_read_text("", root, &s, &err), -1);
    assert_int_equal(si_cgroup_read_text("garbage without colons\n", root, &s, &err), -1);
}

static void test_cgroup_self(void **state) {
    (void)state;
    /* This machine's own tree: whatever it has must read back sane. */
    si_cgroupstat_t s;
    si_err_t err = {{0}};
    if (si_cgroup_read(getpid(), "/sys/fs/cgroup", &s, &err) < 0) {
        assert_true(err.msg[0] != 0);
        return;
    }
    assert_true(s.cpu_quota == -1 || s.cpu_quota >= 0);
    assert_true(s.cpu_seconds == -1 || s.cpu_seconds > 0);
    assert_true(s.mem_peak_bytes == -1 || s.mem_peak_bytes > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_stat),
        cmocka_unit_test(test_parse_stat_bad),
        cmocka_unit_test(test_parse_status),
        cmocka_unit_test(test_read_self),
        cmocka_unit_test(test_read_gone),
        cmocka_unit_test(test_host),
        cmocka_unit_test_setup_teardown(test_cgroup_v1_split, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cgroup_v1_comounted_unlimited, setup_tree,
                                        teardown_tree),
        cmocka_unit_test_setup_teardown(test_cgroup_v2, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cgroup_none, setup_tree, teardown_tree),
        cmocka_unit_test(test_cgroup_self),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
