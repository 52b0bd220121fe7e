/* test_chaos.c - nothing lost under failure: a few thousand mixed transactions (valid, duplicates, poison) while
 * the engine is killed with SIGKILL several times and nats-server is restarted once; then `verdict audit` must
 * prove decisions + dead letters == transactions with none in both. Bounded in count and time. */
#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TOTAL 2400

Test(chaos, kill9_and_server_restart_lose_nothing, .timeout = 300)
{
    test_server srv;
    cr_assert(server_start(&srv, NULL));
    char logp[256], out[256];
    temp_path(logp, sizeof logp, ".log");
    temp_path(out, sizeof out, ".out");
    natsConnection *nc = tc_connect(srv.url);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, &jo), NATS_OK);
    const char *extra[] = {"--ack-wait", "2s", "--backoff", "", "--batch", "16", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);

    int poison = 0, published = 0;
    unsigned char buf[2048];
    for (int i = 0; i < TOTAL; i++) {
        char id[32];
        snprintf(id, sizeof id, "chaos-%d", i);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 10000;
        natsStatus s;
        if (i % 97 == 5) {
            /* poison: not protobuf */
            char pid_[40];
            snprintf(pid_, sizeof pid_, "poison-%d", i);
            po.MsgId = pid_;
            jsPubAck *pa = NULL;
            do {
                s = js_Publish(&pa, js, "txn.chaos", "\x08\xff\xff\xff", 4, &po, NULL);
                if (s != NATS_OK)
                    tc_sleep_ms(100);
            } while (s != NATS_OK);
            jsPubAck_Destroy(pa);
            poison++;
        } else {
            Transaction t;
            tc_txn(&t, id, 100 + i);
            int n = tc_pack(&t, buf);
            po.MsgId = id;
            jsPubAck *pa = NULL;
            do { /* a client retries until the stream confirms, as a payment service must */
                s = js_Publish(&pa, js, "txn.chaos", buf, n, &po, NULL);
                if (s != NATS_OK)
                    tc_sleep_ms(100);
            } while (s != NATS_OK);
            jsPubAck_Destroy(pa);
            if (i % 50 == 0) /* a client retry that the stream deduplicates */
                js_Publish(NULL, js, "txn.chaos", buf, n, &po, NULL);
            published++;
        }
        if (i == 600 || i == 1200 || i == 1800) {
            kill(pid, SIGKILL);
            child_wait(pid, 5000);
            pid = tc_start_engine(srv.url, logp, extra);
        }
        if (i == 1500) {
            cr_assert(server_restart(&srv), "nats-server restarted");
        }
    }
    /* let the last engine finish everything, including redeliveries after AckWait */
    uint64_t want = (uint64_t)published;
    uint64_t got = tc_wait_msgs(js, "DECISIONS", want, 60000);
    cr_assert_eq(got, want, "decisions %llu of %llu", (unsigned long long)got, (unsigned long long)want);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", (uint64_t)poison, 20000), (uint64_t)poison);
    tc_sleep_ms(2500);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), want, "no transaction decided twice");

    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, NULL};
    pid_t ap = verdict_spawn(audit, out);
    int rc = child_wait(ap, 120000);
    cr_assert(file_wait_for(out, "OK: every transaction", 100), "audit output in %s", out);
    cr_assert_eq(rc, 0);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    server_stop(&srv);
    unlink(logp);
    unlink(out);
}
