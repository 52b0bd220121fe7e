/* localserver.h - a private nats-server with JetStream on a free loopback port and a temporary store, for the
 * demo and the benchmarks (tests have their own harness), optionally with configuration text (a jetstream block,
 * say) and optionally as a cluster on loopback. The binary is $VERDICT_NATS_SERVER if set, else nats-server on
 * PATH. Every server dies with the process that started it (PR_SET_PDEATHSIG) and is stopped and its store
 * removed by localserver_stop / localcluster_stop. */
#ifndef VERDICT_LOCALSERVER_H
#define VERDICT_LOCALSERVER_H

#include "common.h"

#include <sys/types.h>

typedef struct localserver {
    pid_t pid;
    int port;
    int http_port;  /* monitoring (/varz), 127.0.0.1 */
    int route_port; /* a cluster node's route listener; 0 alone */
    char url[64];
    char dir[128]; /* the JetStream store (-sd), with nats-server.log and nats-server.conf beside it */
} localserver;

vstatus localserver_start(localserver *ls, verror *e);
/* As localserver_start, with conf (nats-server configuration text, NULL for none) in a file passed with -c. */
vstatus localserver_start_conf(localserver *ls, const char *conf, verror *e);
void localserver_stop(localserver *ls);
/* The nats-server binary this module runs. */
const char *localserver_binary(void);
/* GET http://127.0.0.1:<http_port>/varz into out (NUL-terminated, truncated to cap); false on error. */
bool localserver_varz(const localserver *ls, char *out, size_t cap);
/* GET http://127.0.0.1:<port><path> (HTTP/1.0; the reply with its headers) into out; false on error. */
bool localserver_http_get(int port, const char *path, char *out, size_t cap);
/* True when JetStream answers through url (one URL or a comma-separated list) and places, then deletes, a
 * memory stream with `replicas` replicas: a meta leader exists and knows enough peers. One try; on failure,
 * why (if not NULL) says which step failed and what the server answered. */
bool localserver_placeable(const char *url, int replicas, char *why, size_t cap);
/* A loopback port free at the time of asking (for a child's listener), or -1. */
int localserver_free_port(void);

#define LOCALCLUSTER_MAX 5

typedef struct localcluster {
    int n;
    localserver nodes[LOCALCLUSTER_MAX];
    char urls[LOCALCLUSTER_MAX * 32]; /* "nats://127.0.0.1:a,nats://127.0.0.1:b,..." */
} localcluster;

/* n (2..LOCALCLUSTER_MAX) nodes routed to each other on loopback, each with its own store; conf (NULL for none) is
 * appended to every node's configuration. Returns once JetStream can place a stream with n replicas (bounded);
 * on failure everything started is stopped and removed. */
vstatus localcluster_start(localcluster *c, int n, const char *conf, verror *e);
void localcluster_stop(localcluster *c);

#endif
