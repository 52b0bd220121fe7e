/* localserver.h - a private nats-server with JetStream on a free loopback port and a temporary store, for the
 * demo and the benchmarks (tests have their own harness). Stopped and removed by localserver_stop. */
#ifndef VERDICT_LOCALSERVER_H
#define VERDICT_LOCALSERVER_H

#include "common.h"

#include <sys/types.h>

typedef struct localserver {
    pid_t pid;
    int port;
    char url[64];
    char dir[128];
} localserver;

vstatus localserver_start(localserver *ls, verror *e);
void localserver_stop(localserver *ls);

#endif
