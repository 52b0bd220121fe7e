/* test_demo.c - `verdict demo` against a real nats-server: right every time, not only the first (a run id in
 * every txn id, counts restricted to the run), and right through a server restart (retries as a payment
 * service does them, counts read from the streams). */

#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static test_server srv;
static char outp[256];

static void setup(void)
{
    cr_assert(server_start(&srv, NULL), "nats-server did not start");
    temp_path(outp, sizeof outp, ".out");
}

static void teardown(void)
{
    server_stop(&srv);
    unlink(outp);
}

/* The run's output on stderr, for a failure's report. */
static void dump(void)
{
    FILE *f = fopen(outp, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '{' && strncmp(line, "  approve", 9) != 0)
            fputs(line, stderr);
    if (f)
        fclose(f);
}

static int wait_or_kill(pid_t pid, int timeout_ms)
{
    int rc = child_wait(pid, timeout_ms);
    if (rc == -1) {
        kill(pid, SIGKILL);
        child_wait(pid, 5000);
    }
    return rc;
}

TestSuite(demo, .init = setup, .fini = teardown, .timeout = 240);

Test(demo, runs_twice_in_a_row_against_one_server_and_both_balance)
{
    const char *argv[] = {"verdict", "demo", "--nats-url", srv.url, "--count", "800", "--quiet", "--timeout", "30",
                          NULL};
    for (int run = 1; run <= 2; run++) {
        unlink(outp);
        int rc = wait_or_kill(verdict_spawn(argv, outp), 90000);
        if (rc != 0)
            dump();
        cr_assert_eq(rc, 0, "run %d failed; see %s", run, outp);
        cr_assert(file_wait_for(outp, "decisions                   800", 100), "run %d counts its own; see %s", run,
                  outp);
        cr_assert(file_wait_for(outp, "dead letters                  2  (poison sent: 2)", 100),
                  "run %d: its own poison only; see %s", run, outp);
        cr_assert(file_wait_for(outp, "result                   ok", 100));
    }
    /* and the books of the server balance across both runs */
    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, NULL};
    unlink(outp);
    cr_assert_eq(wait_or_kill(verdict_spawn(audit, outp), 30000), 0, "see %s", outp);
    cr_assert(file_wait_for(outp, "1600 decided + 4 dead-lettered", 100), "see %s", outp);
}

Test(demo, a_run_through_a_server_restart_retries_and_balances)
{
    const char *argv[] = {"verdict", "demo", "--nats-url", srv.url, "--count", "6000", "--quiet", "--timeout", "60",
                          NULL};
    pid_t pid = verdict_spawn(argv, outp);
    cr_assert(file_wait_for(outp, "simulated payment service", 30000), "see %s", outp);
    tc_sleep_ms(800);
    /* the server dies under load and comes back on the same port and store, after longer than one request's
     * timeout (5 s; nats.c buffers what is sent while it reconnects, so a shorter outage needs no retry):
     * requests and publishes time out and are retried, the connections reconnect */
    server_kill(&srv, SIGKILL);
    tc_sleep_ms(7000);
    cr_assert(server_restart(&srv), "nats-server did not restart");
    int rc = wait_or_kill(pid, 180000);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0, "the demo must end right through a restart; see %s", outp);
    cr_assert(file_wait_for(outp, "decisions                  6000", 100), "see %s", outp);
    cr_assert(file_wait_for(outp, "result                   ok", 100), "see %s", outp);
    cr_assert_not(file_wait_for(outp, "retried sends                 0 ", 100), "the outage hit no send; see %s",
                  outp);
}

/* Partitioned (--partitions 8): a third of the demo's transactions and its poison are published straight to TXN;
 * they must go to the partition subject txn.p.<P>.<card_id> (the poison: its id as the key), since a subject such
 * as txn.p.direct.<id> is stored in TXN (txn.p.>) but delivered by no partition's consumer. Failed before the demo
 * computed the partition: the direct third stayed undecided and the run timed out unaccounted. */
Test(demo, partitioned_its_direct_publishes_go_to_the_partition_subjects_and_balance)
{
    const char *argv[] = {"verdict", "demo", "--nats-url", srv.url, "--count", "600", "--quiet", "--timeout", "30",
                          "--partitions", "8", NULL};
    unlink(outp);
    int rc = wait_or_kill(verdict_spawn(argv, outp), 90000);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0, "the partitioned demo failed; see %s", outp);
    cr_assert(file_wait_for(outp, "decisions                   600", 100), "see %s", outp);
    cr_assert(file_wait_for(outp, "result                   ok", 100), "see %s", outp);
    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, "--partitions", "8", NULL};
    unlink(outp);
    cr_assert_eq(wait_or_kill(verdict_spawn(audit, outp), 30000), 0, "see %s", outp);
    cr_assert(file_wait_for(outp, "600 decided + 1 dead-lettered", 100), "see %s", outp);
}
