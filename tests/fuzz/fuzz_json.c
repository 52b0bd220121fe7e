/* fuzz_json.c - libFuzzer target: a Transaction in the proto3 JSON mapping (engine/jsoncodec.c), the body any
 * requester may send to verdict.v1.decide. The input is the JSON text. Oracles: a refusal always says why; an
 * accepted text packs to protobuf that unpacks; that message written back as JSON (pbjson_encode) is accepted
 * again and packs to the very same bytes (the mapping is a round trip); and the request path
 * (json_request_read on a message with that body) agrees with the codec. Leaks are checked by ASan. */
#include "jsoncodec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* nats.c must be opened before its messages are used (natsMsg_Destroy goes through its collector) */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return nats_Open(-1) == NATS_OK ? 0 : 1;
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_json: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *pb = NULL;
    size_t n = 0;
    verror e = {0};
    vstatus rc = pbjson_txn_to_pb((const char *)data, size, &pb, &n, &e);
    if (rc != V_OK) {
        if (!e.msg[0] || pb)
            fail("a refusal without a reason, or with a result");
        return 0;
    }
    Transaction *t = verdict__v1__transaction__unpack(NULL, n, pb);
    if (!t)
        fail("accepted JSON packed to protobuf that does not unpack");
    json_t *j = pbjson_encode(&t->base);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!text)
        fail("an accepted transaction cannot be written back as JSON");
    unsigned char *pb2 = NULL;
    size_t n2 = 0;
    verror e2 = {0};
    if (pbjson_txn_to_pb(text, strlen(text), &pb2, &n2, &e2) != V_OK) {
        fprintf(stderr, "fuzz_json: %s\n%s\n", e2.msg, text);
        fail("the JSON written back is refused");
    }
    if (n2 != n || memcmp(pb, pb2, n) != 0)
        fail("the round trip changed the protobuf");

    /* the endpoint's path: no headers, so JSON exactly when the body starts with '{' */
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, "verdict.v1.decide", NULL, (const char *)data, (int)size) == NATS_OK) {
        json_request r;
        verror e3 = {0};
        vstatus rr = json_request_read(m, &r, &e3);
        if (size > 0 && data[0] == '{') {
            if (rr != V_OK || !r.reply_json || (size_t)r.len != n || memcmp(r.data, pb, n) != 0)
                fail("the request path disagrees with the codec");
        } else if (rr != V_OK || r.reply_json || r.data != natsMsg_GetData(m)) {
            fail("a body not starting with '{' was not taken as protobuf");
        }
        json_request_done(&r);
        natsMsg_Destroy(m);
    }
    free(pb2);
    free(text);
    json_decref(j);
    verdict__v1__transaction__free_unpacked(t, NULL);
    free(pb);
    return 0;
}
