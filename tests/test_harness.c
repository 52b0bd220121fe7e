/* test_harness.c - the test harness's own promises: a nats-server or verdict process started through
 * tests/support/harness.c dies with the test process that started it, however that test ends (issue 14
 * item 18: a failed test once left its `verdict serve` running for 37 minutes, attached to the next test's
 * server). A forked stand-in plays the test: it starts a server and an engine, reports their pids, then ends
 * without cleaning up, either by exiting (what a failed cr_assert does) or by SIGKILL (a timeout or a crash). */
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct spawned {
    pid_t server, engine;
    char store[256];
    char log[256];
} spawned;

/* Running, not a zombie (an orphan is reaped by whoever adopted it, perhaps late). */
static bool alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static bool gone_within(pid_t pid, int ms)
{
    for (int waited = 0; waited <= ms; waited += 20) {
        if (!alive(pid))
            return true;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* The stand-in test: never returns. */
static void stand_in(int fd, int go, bool crash)
{
    spawned sp = {0};
    test_server srv;
    if (!server_start(&srv, NULL))
        _exit(2);
    temp_path(sp.log, sizeof sp.log, ".log");
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--workers", "1", NULL};
    sp.engine = verdict_spawn(argv, sp.log);
    sp.server = srv.pid;
    snprintf(sp.store, sizeof sp.store, "%s", srv.store);
    bool started = file_wait_for(sp.log, "engine started", 20000);
    char c;
    if (write(fd, &sp, sizeof sp) != (ssize_t)sizeof sp || !started || read(go, &c, 1) != 1)
        _exit(3);
    if (!crash)
        _exit(1); /* like a failed assertion: the test's own clean-up never runs */
    pause();      /* the test kills us, as Criterion does on a timeout */
    _exit(4);
}

static void ends_and_takes_its_children(bool crash)
{
    int p[2], go[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pipe(go), 0);
    pid_t test = fork();
    cr_assert(test >= 0);
    if (test == 0) {
        close(p[0]);
        close(go[1]);
        stand_in(p[1], go[0], crash);
    }
    close(p[1]);
    close(go[0]);
    spawned sp = {0};
    ssize_t n = read(p[0], &sp, sizeof sp);
    close(p[0]);
    int st;
    if (n != (ssize_t)sizeof sp) {
        waitpid(test, &st, 0);
        cr_assert_fail("the stand-in did not start a server and an engine (exit status %d)", WEXITSTATUS(st));
    }
    cr_assert(alive(sp.server) && alive(sp.engine), "both children run while their test runs");
    cr_assert_eq(write(go[1], "x", 1), 1); /* now end, one way or the other */
    close(go[1]);
    if (crash)
        kill(test, SIGKILL);
    waitpid(test, &st, 0);
    bool server_gone = gone_within(sp.server, 5000), engine_gone = gone_within(sp.engine, 5000);
    /* never leave them behind, even when this test fails */
    if (!engine_gone)
        kill(sp.engine, SIGKILL);
    if (!server_gone)
        kill(sp.server, SIGKILL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log' '%s'", sp.store, sp.store, sp.log);
    cr_assert_eq(system(cmd), 0);
    cr_assert(engine_gone, "verdict serve (pid %d) outlived the test that started it", (int)sp.engine);
    cr_assert(server_gone, "nats-server (pid %d) outlived the test that started it", (int)sp.server);
}

Test(harness, children_die_when_a_test_exits_without_cleaning_up, .timeout = 60)
{
    ends_and_takes_its_children(false);
}

Test(harness, children_die_when_a_test_is_killed, .timeout = 60) { ends_and_takes_its_children(true); }
