/* test_jsonwire.c - JSON on the decide endpoint: the proto3 JSON mapping of Transaction and Decision
 * (engine/jsoncodec.c: both field spellings, 64-bit integers as strings or numbers, enums by name or number,
 * strict refusals that name the field), and real requests with nats.c against an engine and a real
 * nats-server: a JSON body is decided and answered in JSON, Accept chooses the reply's format, refusals are
 * 400/415 service errors, a retry is answered from the stored decision in JSON, and TXN holds protobuf. */

#include "client.h"
#include "harness.h"
#include "jsoncodec.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- the mapping, without a broker ------------------------------------------------------------------------ */

static Transaction *parse(const char *json, verror *e)
{
    unsigned char *pb = NULL;
    size_t n = 0;
    if (pbjson_txn_to_pb(json, strlen(json), &pb, &n, e) != V_OK)
        return NULL;
    Transaction *t = verdict__v1__transaction__unpack(NULL, n, pb);
    free(pb);
    cr_assert(t, "the packed result does not unpack");
    return t;
}

Test(jsoncodec, a_transaction_in_either_spelling_packs_to_the_same_protobuf)
{
    verror e = {0};
    Transaction *t = parse("{\"txnId\":\"j-1\",\"amountMinor\":\"12345\",\"currency\":\"EUR\",\"cardId\":\"tok_1\","
                           "\"created_at_ms\":1700000000000,\"mcc\":\"5411\",\"channel\":\"CHANNEL_POS\","
                           "\"attributes\":{\"k\":\"v\",\"x\":\"y\"},\"cardBin\":\"424242\",\"ip\":null}",
                           &e);
    cr_assert(t, "%s", e.msg);
    cr_expect_str_eq(t->txn_id, "j-1");
    cr_expect_eq(t->amount_minor, 12345);
    cr_expect_eq(t->created_at_ms, 1700000000000LL);
    cr_expect_eq(t->mcc, 5411u);
    cr_expect_eq(t->channel, VERDICT__V1__CHANNEL__CHANNEL_POS);
    cr_expect_str_eq(t->card_bin, "424242");
    cr_expect_str_eq(t->ip, "");
    cr_expect_eq(t->n_attributes, 2u);
    verdict__v1__transaction__free_unpacked(t, NULL);

    /* numbers for int64, a number for the enum, 1e3 as an integer */
    t = parse("{\"txn_id\":\"j-2\",\"amount_minor\":1e3,\"currency\":\"USD\",\"card_id\":\"c\",\"channel\":3}", &e);
    cr_assert(t, "%s", e.msg);
    cr_expect_eq(t->amount_minor, 1000);
    cr_expect_eq(t->channel, VERDICT__V1__CHANNEL__CHANNEL_ATM);
    verdict__v1__transaction__free_unpacked(t, NULL);

    /* the largest int64 survives as a string, where a double would round it */
    t = parse("{\"txnId\":\"j-3\",\"createdAtMs\":\"9223372036854775807\"}", &e);
    cr_assert(t, "%s", e.msg);
    cr_expect_eq(t->created_at_ms, INT64_MAX);
    verdict__v1__transaction__free_unpacked(t, NULL);
}

#define REFUSED(json, needle)                                                                                          \
    do {                                                                                                               \
        verror e_ = {0};                                                                                               \
        Transaction *t_ = parse((json), &e_);                                                                          \
        cr_expect(t_ == NULL, "accepted: %s", (json));                                                                 \
        if (t_)                                                                                                        \
            verdict__v1__transaction__free_unpacked(t_, NULL);                                                         \
        cr_expect(strstr(e_.msg, (needle)) != NULL, "%s: message \"%s\" lacks \"%s\"", (json), e_.msg, (needle));      \
    } while (0)

Test(jsoncodec, strict_refusals_name_the_field)
{
    REFUSED("{\"txnId\":\"a\",\"amount\":5}", "unknown field 'amount' in verdict.v1.Transaction");
    REFUSED("{\"txnId\":\"a\",\"txn_id\":\"b\"}", "field 'txn_id' of verdict.v1.Transaction given twice");
    REFUSED("{\"txnId\":\"a\",\"txnId\":\"b\"}", "duplicate");
    REFUSED("{\"amountMinor\":1.5}", "field 'amount_minor': 1.5 is not an integer");
    REFUSED("{\"amountMinor\":\"12x\"}", "field 'amount_minor': \"12x\" is not a decimal integer");
    REFUSED("{\"amountMinor\":\"9223372036854775808\"}", "is not a decimal integer in range");
    REFUSED("{\"amountMinor\":true}", "field 'amount_minor': expected an integer");
    REFUSED("{\"mcc\":-1}", "field 'mcc': -1 is out of range");
    REFUSED("{\"mcc\":4294967296}", "field 'mcc': 4294967296 is out of range");
    REFUSED("{\"txnId\":5}", "field 'txn_id': expected a string, got a number");
    REFUSED("{\"channel\":\"ecom\"}", "unknown Channel 'ecom' (one of CHANNEL_UNSPECIFIED, CHANNEL_ECOM");
    REFUSED("{\"channel\":9}", "unknown Channel 9");
    REFUSED("{\"attributes\":{\"k\":1}}", "field 'attributes.k': expected a string");
    REFUSED("{\"attributes\":[]}", "expected an object (a map)");
    REFUSED("[1]", "must be a JSON object, not an array");
    REFUSED("{\"txnId\":", "not JSON");
}

Test(jsoncodec, a_decision_is_written_in_lower_camel_case_with_int64_as_strings)
{
    Decision d = VERDICT__V1__DECISION__INIT;
    Reason r = VERDICT__V1__REASON__INIT, *rp = &r;
    r.rule_id = "big";
    r.text = "amount over 100";
    d.txn_id = "j-9";
    d.outcome = VERDICT__V1__OUTCOME__OUTCOME_DECLINE;
    d.score = 0.25;
    d.n_reasons = 1;
    d.reasons = &rp;
    d.rules_version = "abc";
    d.latency_us = 1234;
    d.decided_at_ms = 1700000000123LL;
    unsigned char buf[1024];
    size_t n = decision_encode(&d, buf, sizeof buf);
    char *s = pbjson_decision_text(buf, n);
    cr_assert(s);
    json_t *j = json_loads(s, 0, NULL);
    cr_assert(j, "%s", s);
    cr_expect_str_eq(json_string_value(json_object_get(j, "txnId")), "j-9");
    cr_expect_str_eq(json_string_value(json_object_get(j, "outcome")), "OUTCOME_DECLINE");
    cr_expect_str_eq(json_string_value(json_object_get(j, "latencyUs")), "1234");
    cr_expect_str_eq(json_string_value(json_object_get(j, "decidedAtMs")), "1700000000123");
    cr_expect_eq(json_real_value(json_object_get(j, "score")), 0.25);
    cr_expect(json_is_false(json_object_get(j, "budgetExceeded")), "defaults are written too: %s", s);
    json_t *r0 = json_array_get(json_object_get(j, "reasons"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(r0, "ruleId")), "big");
    json_decref(j);
    free(s);
}

/* --- real requests ------------------------------------------------------------------------------------------ */

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256];
static char rulesp[256];
static pid_t engine;

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(rulesp, sizeof rulesp, ".rules");
    FILE *f = fopen(rulesp, "w");
    cr_assert(f);
    fputs("rule big decline \"amount over 100\" when amount > 100\n", f);
    fclose(f);
    engine = tc_start_engine(srv.url, logp, (const char *const[]){"--rules", rulesp, NULL});
}

static void teardown(void)
{
    kill(engine, SIGTERM);
    if (child_wait(engine, 15000) == -1) {
        kill(engine, SIGKILL);
        child_wait(engine, 5000);
    }
    unlink(rulesp);
    tc_fixture_down(&srv, nc, js, logp);
}

/* A request with optional Content-Type and Accept; the reply (caller destroys). */
static natsMsg *request(const void *body, int len, const char *ctype, const char *accept)
{
    natsMsg *m = NULL, *reply = NULL;
    cr_assert_eq(natsMsg_Create(&m, "verdict.v1.decide", NULL, body, len), NATS_OK);
    if (ctype)
        cr_assert_eq(natsMsgHeader_Set(m, "Content-Type", ctype), NATS_OK);
    if (accept)
        cr_assert_eq(natsMsgHeader_Set(m, "Accept", accept), NATS_OK);
    natsStatus s = natsConnection_RequestMsg(&reply, nc, m, 10000);
    natsMsg_Destroy(m);
    cr_assert_eq(s, NATS_OK, "request: %s; see %s", natsStatus_GetText(s), logp);
    return reply;
}

static const char *hdr(natsMsg *m, const char *k)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, k, &v) == NATS_OK && v ? v : "";
}

static json_t *reply_json(natsMsg *r)
{
    json_error_t je;
    json_t *j = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, &je);
    cr_assert(j, "reply is not JSON (%s): %.*s", je.text, natsMsg_GetDataLength(r), natsMsg_GetData(r));
    return j;
}

#define TXN_JSON(id, amount)                                                                                           \
    "{\"txnId\":\"" id "\",\"amountMinor\":\"" amount "\",\"currency\":\"EUR\",\"cardId\":\"tok_j\","                  \
    "\"channel\":\"CHANNEL_ECOM\",\"attributes\":{\"source\":\"shell\"}}"

Test(jsonwire, a_json_request_is_decided_and_answered_in_json, .init = setup, .fini = teardown)
{
    const char *body = TXN_JSON("jw-1", "50000");
    natsMsg *r = request(body, (int)strlen(body), NULL, NULL);
    cr_expect_str_eq(hdr(r, "Content-Type"), "application/json");
    cr_expect_str_eq(hdr(r, "Verdict-Outcome"), "decline");
    json_t *j = reply_json(r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "txnId")), "jw-1");
    cr_expect_str_eq(json_string_value(json_object_get(j, "outcome")), "OUTCOME_DECLINE");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "reasons"), 0), "ruleId")),
                     "big");
    json_decref(j);
    natsMsg_Destroy(r);

    /* TXN holds the protobuf form, so replay, rebuild and the DLQ tools read it as any other */
    natsMsg *stored = NULL;
    cr_assert_eq(js_GetLastMsg(&stored, js, "TXN", "txn.req", NULL, NULL), NATS_OK);
    Transaction *t = verdict__v1__transaction__unpack(NULL, (size_t)natsMsg_GetDataLength(stored),
                                                      (const uint8_t *)natsMsg_GetData(stored));
    cr_assert(t, "TXN does not hold a protobuf Transaction");
    cr_expect_str_eq(t->txn_id, "jw-1");
    cr_expect_eq(t->amount_minor, 50000);
    cr_expect_eq(t->n_attributes, 1u);
    verdict__v1__transaction__free_unpacked(t, NULL);
    natsMsg_Destroy(stored);

    /* a retry of the same request gets the stored decision, in JSON too */
    r = request(body, (int)strlen(body), "application/json", NULL);
    cr_expect_str_eq(hdr(r, "Verdict-Duplicate"), "true");
    j = reply_json(r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "txnId")), "jw-1");
    json_decref(j);
    natsMsg_Destroy(r);
}

Test(jsonwire, accept_chooses_the_reply_format, .init = setup, .fini = teardown)
{
    /* JSON in, protobuf out */
    const char *body = TXN_JSON("jw-2", "50");
    natsMsg *r = request(body, (int)strlen(body), "application/json; charset=utf-8", "application/protobuf");
    Decision *d =
        verdict__v1__decision__unpack(NULL, (size_t)natsMsg_GetDataLength(r), (const uint8_t *)natsMsg_GetData(r));
    cr_assert(d, "not a protobuf Decision: %.*s", natsMsg_GetDataLength(r), natsMsg_GetData(r));
    cr_expect_str_eq(d->txn_id, "jw-2");
    cr_expect_eq(d->outcome, VERDICT__V1__OUTCOME__OUTCOME_APPROVE);
    verdict__v1__decision__free_unpacked(d, NULL);
    natsMsg_Destroy(r);

    /* protobuf in, JSON out */
    Transaction t;
    tc_txn(&t, "jw-3", 70000);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    r = request(buf, n, NULL, "text/html, application/json");
    json_t *j = reply_json(r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "txnId")), "jw-3");
    json_decref(j);
    natsMsg_Destroy(r);

    /* protobuf in, nothing asked: protobuf out, as before */
    tc_txn(&t, "jw-4", 70000);
    n = tc_pack(&t, buf);
    r = request(buf, n, NULL, NULL);
    cr_expect_str_eq(hdr(r, "Content-Type"), "");
    d = verdict__v1__decision__unpack(NULL, (size_t)natsMsg_GetDataLength(r), (const uint8_t *)natsMsg_GetData(r));
    cr_assert(d);
    cr_expect_str_eq(d->txn_id, "jw-4");
    verdict__v1__decision__free_unpacked(d, NULL);
    natsMsg_Destroy(r);
}

Test(jsonwire, bad_json_and_unknown_content_types_are_refused_by_name, .init = setup, .fini = teardown)
{
    const char *body = "{\"txnId\":\"jw-5\",\"amountMinor\":\"5\",\"currency\":\"EUR\",\"cardId\":\"c\",\"amount\":5}";
    natsMsg *r = request(body, (int)strlen(body), NULL, NULL);
    cr_expect_str_eq(hdr(r, "Nats-Service-Error-Code"), "400");
    cr_expect(strstr(hdr(r, "Nats-Service-Error"), "unknown field 'amount'"), "%s", hdr(r, "Nats-Service-Error"));
    natsMsg_Destroy(r);

    /* the engine's own checks run on the converted transaction */
    body = "{\"txnId\":\"jw-6\",\"amountMinor\":\"5\",\"currency\":\"eur\",\"cardId\":\"c\"}";
    r = request(body, (int)strlen(body), NULL, NULL);
    cr_expect_str_eq(hdr(r, "Nats-Service-Error-Code"), "400");
    cr_expect(strstr(hdr(r, "Nats-Service-Error"), "currency"), "%s", hdr(r, "Nats-Service-Error"));
    natsMsg_Destroy(r);

    r = request("hello", 5, "text/plain", NULL);
    cr_expect_str_eq(hdr(r, "Nats-Service-Error-Code"), "415");
    cr_expect(strstr(hdr(r, "Nats-Service-Error"), "unsupported Content-Type 'text/plain'"), "%s",
              hdr(r, "Nats-Service-Error"));
    natsMsg_Destroy(r);
    cr_expect_eq(tc_stream_msgs(js, "TXN"), 0u, "a refused request was stored");
}
