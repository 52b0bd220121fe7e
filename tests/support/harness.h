/* harness.h - test support: a real nats-server on a free loopback port with a temporary store (or a cluster of
 * them), and helpers to run the verdict binary as a child process. Never a mock of NATS.
 *
 * Every process started here (server_start, cluster_start, server_restart, verdict_spawn) gets
 * PR_SET_PDEATHSIG = SIGKILL: it dies when the thread that started it ends, so a test that fails an assertion
 * (which skips its own clean-up), times out or crashes takes its servers and engines with it; Criterion's
 * worker itself dies with the runner the same way. Start them from the test's own thread, never from a helper
 * thread that ends before them. A stopped test's temporary store may stay in /tmp; its processes do not. */
#ifndef VERDICT_TEST_HARNESS_H
#define VERDICT_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct test_server {
    pid_t pid;
    int port;
    char url[64];
    char store[256]; /* temporary JetStream store, removed by server_stop */
    char conf[300];  /* optional config file path (empty if none) */
} test_server;

/* The nats-server binary every test runs: $VERDICT_NATS_SERVER, or "nats-server" on PATH when unset (the Makefile
 * sets it: `make test NATS_VERSION=2.15.1`, docs/testing.md "nats-server versions"). When $VERDICT_NATS_VERSION
 * is set, the binary must report exactly that version (`nats-server: v<VERSION>`); if it does not, this returns
 * NULL after saying why on stderr, and every server start fails: a suite meant for one version never runs
 * silently against another. The answer is computed once per process. */
const char *harness_nats_server(void);

/* A free TCP port on 127.0.0.1 (bound and released). */
int free_port(void);

/* Starts nats-server -js on a free loopback port and waits until it accepts connections. extra_conf, if not
 * NULL, is written into a config file and passed with -c. Returns false (with a message on stderr) on failure. */
bool server_start(test_server *s, const char *extra_conf);
/* Restarts on the same port and store (for crash tests). */
bool server_restart(test_server *s);
void server_kill(test_server *s, int sig);
void server_stop(test_server *s);

/* --- a JetStream cluster on loopback ---------------------------------------------------------------------
 * n nodes named n0..n{n-1} (server_name), each a test_server with its own store and config file: client port,
 * cluster port and monitoring port free on 127.0.0.1, routes to every other node. Nodes keep their ports and
 * stores across cluster_kill_node / cluster_restart_node, so a restarted node rejoins with its data. */
#define CLUSTER_MAX 5

typedef struct test_cluster {
    int n;
    test_server nodes[CLUSTER_MAX];
    int route_port[CLUSTER_MAX];
    int http_port[CLUSTER_MAX];              /* monitoring: /healthz, /connz, /jsz */
    char urls[CLUSTER_MAX * 32];             /* "nats://127.0.0.1:a,nats://127.0.0.1:b,..." for clients */
} test_cluster;

/* Starts n (2..CLUSTER_MAX) nodes and waits (bounded) until JetStream has a meta leader and can place a stream
 * with n replicas. extra_conf, if not NULL, is appended to every node's config. On failure everything started
 * is stopped and removed, and false is returned with a message on stderr. */
bool cluster_start(test_cluster *c, int n, const char *extra_conf);
/* Sends sig to node i and reaps it (SIGKILL for a crash). */
void cluster_kill_node(test_cluster *c, int i, int sig);
/* Starts node i again on the same ports and store. */
bool cluster_restart_node(test_cluster *c, int i);
/* Polls (bounded) until JetStream answers through every running node and can place an R<running nodes> stream. */
bool cluster_wait_ready(test_cluster *c, int timeout_ms);
/* The index of the node with this server_name ("n1" -> 1), or -1. */
int cluster_node_index(const test_cluster *c, const char *server_name);
/* Stops every node and removes the stores, logs and config files. Safe to call twice. */
void cluster_stop(test_cluster *c);

/* GET http://127.0.0.1:port/path; the body (NUL-terminated, truncated to cap) in out. Returns false on error. */
bool http_get_local(int port, const char *path, char *out, size_t cap);

/* Spawns the verdict binary with argv (argv[0] ignored; NULL-terminated). stderr goes to log_path if given.
 * Returns the child's pid. */
pid_t verdict_spawn(const char *const argv[], const char *log_path);
/* Waits for a child with a timeout; returns its exit status (or -1 on timeout / abnormal exit). */
int child_wait(pid_t pid, int timeout_ms);

/* Polls until log_path contains needle or the timeout passes. */
bool file_wait_for(const char *log_path, const char *needle, int timeout_ms);

/* A unique temporary path (for logs, rules files). */
void temp_path(char *out, size_t cap, const char *suffix);

#endif
