/* streamread.c - ordered ephemeral reads of a stream range (see streamread.h). */
#include "streamread.h"

#include "broker.h"

#include <stdlib.h>
#include <string.h>

struct stream_reader {
    natsSubscription *sub;
    uint64_t first, end, last_seen;
    bool done;   /* the last message said nothing is pending */
    bool follow; /* no end: reads on as messages arrive (stream_reader_open_follow) */
};

static vstatus open_reader(jsCtx *js, const char *stream, const char *filter, uint64_t start_seq,
                           int64_t start_time_ns, bool headers_only, bool follow, stream_reader **out, verror *e)
{
    *out = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot read the stream's info");
    stream_reader *r = calloc(1, sizeof *r);
    if (!r) {
        jsStreamInfo_Destroy(si);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    r->first = si->State.FirstSeq;
    r->end = follow ? UINT64_MAX : si->State.LastSeq;
    r->follow = follow;
    r->last_seen = follow && start_seq ? start_seq - 1 : 0;
    const char *subj = filter ? filter : (si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : ">");
    bool all_subjects = filter == NULL && si->Config->SubjectsLen != 1;
    char subjbuf[256];
    str_copy(subjbuf, sizeof subjbuf, all_subjects ? ">" : subj);
    jsStreamInfo_Destroy(si);
    if (!follow && (r->end == 0 || (start_seq && start_seq > r->end))) {
        *out = r; /* empty: next() reports the end at once */
        return V_OK;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Ordered = true;
    so.Config.HeadersOnly = headers_only;
    if (start_seq) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = start_seq;
    } else if (start_time_ns) {
        so.Config.DeliverPolicy = js_DeliverByStartTime;
        so.Config.OptStartTime = start_time_ns;
    } else {
        so.Config.DeliverPolicy = js_DeliverAll;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    s = js_SubscribeSync(&r->sub, js, subjbuf, &jo, &so, &jerr);
    if (s != NATS_OK) {
        free(r);
        return broker_err(e, s, jerr, "cannot open an ordered consumer on the stream");
    }
    /* a follower stays open while the stream grows: a smaller buffer bounds what it holds between two reads
     * (beyond it messages are dropped, which stream_reader_dropped reports, and its owner reopens it) */
    s = follow ? natsSubscription_SetPendingLimits(r->sub, 65536, 64 << 20)
               : natsSubscription_SetPendingLimits(r->sub, 1 << 20, 256 << 20);
    if (s != NATS_OK) {
        stream_reader_close(r);
        return broker_err(e, s, 0, "cannot size the reader's buffer");
    }
    if (follow) { /* no end to find: a timeout means nothing has arrived yet (stream_reader_drained says more) */
        *out = r;
        return V_OK;
    }
    /* A range with no message (every message older than start_time) delivers nothing: say so now, so that a
     * timeout in next() always means a stalled read, never the end. */
    jsConsumerInfo *ci = NULL;
    s = natsSubscription_GetConsumerInfo(&ci, r->sub, NULL, &jerr);
    if (s != NATS_OK) {
        stream_reader_close(r);
        return broker_err(e, s, jerr, "cannot read the reader's consumer state");
    }
    r->done = ci->NumPending == 0 && ci->Delivered.Consumer == 0;
    jsConsumerInfo_Destroy(ci);
    *out = r;
    return V_OK;
}

vstatus stream_reader_open(jsCtx *js, const char *stream, const char *filter, uint64_t start_seq,
                           int64_t start_time_ns, stream_reader **out, verror *e)
{
    return open_reader(js, stream, filter, start_seq, start_time_ns, false, false, out, e);
}

vstatus stream_reader_open_follow(jsCtx *js, const char *stream, uint64_t start_seq, stream_reader **out, verror *e)
{
    return open_reader(js, stream, NULL, start_seq ? start_seq : 1, 0, false, true, out, e);
}

vstatus stream_reader_open_headers(jsCtx *js, const char *stream, uint64_t start_seq, int64_t start_time_ns,
                                   stream_reader **out, verror *e)
{
    return open_reader(js, stream, NULL, start_seq, start_time_ns, true, false, out, e);
}

vstatus stream_reader_next(stream_reader *r, natsMsg **msg, uint64_t *seq, int64_t *store_ns, int timeout_ms,
                           verror *e)
{
    *msg = NULL;
    if (!r->sub || r->done || r->last_seen >= r->end)
        return V_ENOTFOUND;
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, r->sub, timeout_ms);
    if (s == NATS_TIMEOUT)
        return verror_set(e, V_ETIMEOUT, "no message within %d ms", timeout_ms);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "reading the stream failed");
    js_meta meta;
    if (!broker_parse_ack_subject(natsMsg_GetReply(m), &meta)) {
        natsMsg_Destroy(m);
        return verror_set(e, V_ENATS, "a message without JetStream metadata");
    }
    r->last_seen = meta.stream_seq;
    if (!r->follow)
        r->done = meta.pending == 0; /* deleted tail messages never arrive: stop here rather than time out */
    if (meta.stream_seq > r->end) {
        natsMsg_Destroy(m);
        return V_ENOTFOUND;
    }
    *msg = m;
    *seq = meta.stream_seq;
    *store_ns = meta.timestamp_ns;
    return V_OK;
}

uint64_t stream_reader_end(const stream_reader *r) { return r->end; }
uint64_t stream_reader_last(const stream_reader *r) { return r->last_seen; }

bool stream_reader_dropped(const stream_reader *r)
{
    int64_t dropped = 0;
    if (!r->sub)
        return false;
    /* an error here means the subscription is gone: as good as dropped, the owner reopens */
    return natsSubscription_GetDropped(r->sub, &dropped) != NATS_OK || dropped > 0;
}

vstatus stream_reader_drained(stream_reader *r, bool *drained, verror *e)
{
    *drained = false;
    int pending = 0;
    if (!r->sub || natsSubscription_GetPending(r->sub, &pending, NULL) != NATS_OK)
        return verror_set(e, V_ENATS, "the reader's subscription is gone");
    if (pending > 0)
        return V_OK;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsSubscription_GetConsumerInfo(&ci, r->sub, NULL, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot read the reader's consumer state");
    /* nothing left to deliver, and nothing delivered that has not reached us (none in flight) */
    *drained = ci->NumPending == 0 && ci->Delivered.Stream <= r->last_seen;
    jsConsumerInfo_Destroy(ci);
    return V_OK;
}
uint64_t stream_reader_first(const stream_reader *r) { return r->first; }

void stream_reader_close(stream_reader *r)
{
    if (!r)
        return;
    if (r->sub) {
        natsSubscription_Unsubscribe(r->sub);
        natsSubscription_Destroy(r->sub);
    }
    free(r);
}
