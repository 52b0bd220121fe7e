/* jsoncodec.h - verdict.v1 messages in protobuf's proto3 JSON mapping, and JSON on the decide endpoint.
 *
 * The mapping is driven by protobuf-c's descriptors, so it follows the .proto without a second schema:
 * lowerCamelCase names on output (both spellings accepted on input), 64-bit integers as strings on output
 * (strings or numbers accepted), enums by name (names or numbers accepted), maps as objects, null as the
 * default. Parsing is strict: an unknown field, a field given twice (under either name), a wrong type, a
 * fractional or out-of-range integer or an unknown enum name is refused with a message naming the field.
 *
 * On the wire (docs/operations.md, "JSON on the wire"): a decide request is JSON when its Content-Type is
 * application/json, or when it has no Content-Type and its body starts with '{' (a byte no protobuf
 * Transaction can start with: it would be field 15 with the deprecated group wire type). The ingress stores
 * the protobuf form in TXN, so every stream keeps one format; the reply is JSON when Accept asks for it, or
 * when the request was JSON and Accept does not ask for protobuf. That choice travels to the worker that
 * replies in the stored message's JSON_REPLY_HEADER. None of this allocates for a protobuf request. */
#ifndef VERDICT_JSONCODEC_H
#define VERDICT_JSONCODEC_H

#include "codec.h"

#include <jansson.h>
#include <nats/nats.h>

/* A proto3 JSON object for m (every field present, defaults included); NULL when out of memory. */
json_t *pbjson_encode(const ProtobufCMessage *m);

/* Parses JSON text into a new message of type d (free with protobuf_c_message_free_unpacked(m, NULL)).
 * V_EINVAL with the reason in e when the text is not that message in the proto3 JSON mapping. */
vstatus pbjson_decode(const ProtobufCMessageDescriptor *d, const char *json, size_t len, ProtobufCMessage **out,
                      verror *e);

/* A Transaction in JSON, packed as protobuf into a malloc'd buffer (*out, *out_len; the caller frees). The
 * engine's own checks (txn_decode) run on the result as on any protobuf request. */
vstatus pbjson_txn_to_pb(const char *json, size_t len, unsigned char **out, size_t *out_len, verror *e);

/* A stored Decision (protobuf bytes) as compact JSON text, malloc'd; NULL if it does not decode. */
char *pbjson_decision_text(const void *pb, size_t len);

/* --- the decide endpoint ------------------------------------------------------------------------------- */

#define JSON_REPLY_HEADER "Verdict-Reply-Format" /* on the TXN copy of a request: "json" */

typedef struct json_request {
    const void *data; /* the request as protobuf: its own body, or buf */
    int len;
    unsigned char *buf; /* owned: the protobuf made from a JSON body */
    bool reply_json;    /* answer in JSON */
    int code;           /* on failure: the service error code (400 bad JSON, 415 unknown Content-Type) */
} json_request;

/* Reads a decide request's format and the reply format wanted; a JSON body is converted. V_EINVAL with the
 * message in e and r->code set when the request cannot be read. */
vstatus json_request_read(natsMsg *req, json_request *r, verror *e);
void json_request_done(json_request *r);

/* The reply to a request whose stored copy is in: decision's protobuf bytes, or its JSON when in carries
 * JSON_REPLY_HEADER (then with Content-Type: application/json). Headers are the caller's to add. */
natsStatus json_reply_create(natsMsg **out, const char *reply_to, natsMsg *decision, natsMsg *in);

#endif
