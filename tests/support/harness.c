/* harness.c - starts and stops real nats-servers (alone or as a cluster) and verdict processes for integration
 * tests. A cluster node is an ordinary test_server whose config file carries server_name and a cluster block,
 * so spawning, killing and restarting are the single-server code paths. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include "localserver.h"

#include <arpa/inet.h>
#include <nats/nats.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* In a freshly forked child, before exec: the kernel sends SIGKILL when the thread that forked it ends, so a
 * server or engine never outlives its test, however the test ends (a failed assertion skips the test's own
 * clean-up; a timeout or crash kills the test process). parent is the forking process's pid from before the
 * fork: if it is already gone, the signal will never come, so the child gives up at once. */
static void die_with_parent(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
}

int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* The first line `bin --version` prints, NUL-terminated in out (empty if it could not run). */
static void server_version(const char *bin, char *out, size_t cap)
{
    out[0] = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s' --version 2>/dev/null", bin);
    FILE *p = popen(cmd, "r");
    if (!p)
        return;
    if (!fgets(out, (int)cap, p))
        out[0] = 0;
    pclose(p);
    out[strcspn(out, "\r\n")] = 0;
}

const char *harness_nats_server(void)
{
    static int checked; /* 0: not yet, 1: usable, -1: refused */
    static const char *bin;
    if (checked)
        return checked > 0 ? bin : NULL;
    bin = getenv("VERDICT_NATS_SERVER");
    if (!bin || !bin[0])
        bin = "nats-server";
    const char *want = getenv("VERDICT_NATS_VERSION");
    checked = 1;
    if (want && want[0]) {
        char got[128], expect[160];
        server_version(bin, got, sizeof got);
        snprintf(expect, sizeof expect, "nats-server: v%s", want);
        if (strcmp(got, expect) != 0) {
            fprintf(stderr,
                    "harness: VERDICT_NATS_VERSION=%s but %s reports \"%s\": refusing to run tests against it "
                    "(set VERDICT_NATS_SERVER to a nats-server %s, e.g. `tools/get-nats-server %s`)\n",
                    want, bin, got[0] ? got : "nothing (cannot run it)", want, want);
            checked = -1;
        }
    }
    return checked > 0 ? bin : NULL;
}

static bool spawn_server(test_server *s)
{
    const char *bin = harness_nats_server();
    if (!bin)
        return false;
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    char log[300];
    snprintf(log, sizeof log, "%s.log", s->store);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        die_with_parent(parent);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (s->conf[0])
            execlp(bin, "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->store, "-c", s->conf,
                   (char *)NULL);
        else
            execlp(bin, "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->store, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 200; i++) {
        if (port_open(s->port))
            return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "harness: %s exited early; see %s\n", bin, log);
            s->pid = 0;
            return false;
        }
        sleep_ms(25);
    }
    fprintf(stderr, "harness: nats-server did not open port %d in 5s\n", s->port);
    return false;
}

/* A fresh temporary store for s (and the config path next to it when with_conf). */
static bool server_prepare(test_server *s, bool with_conf)
{
    memset(s, 0, sizeof *s);
    snprintf(s->store, sizeof s->store, "/tmp/verdict-test-XXXXXX");
    if (!mkdtemp(s->store)) {
        s->store[0] = 0;
        return false;
    }
    if (with_conf)
        snprintf(s->conf, sizeof s->conf, "%s.conf", s->store);
    return true;
}

bool server_start(test_server *s, const char *extra_conf)
{
    if (!server_prepare(s, extra_conf != NULL))
        return false;
    if (extra_conf) {
        FILE *f = fopen(s->conf, "w");
        if (!f)
            return false;
        fputs(extra_conf, f);
        fclose(f);
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = free_port();
        snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
        if (spawn_server(s))
            return true;
    }
    return false;
}

bool server_restart(test_server *s)
{
    if (s->pid > 0)
        server_kill(s, SIGTERM);
    for (int i = 0; i < 100 && port_open(s->port); i++)
        sleep_ms(50);
    return spawn_server(s);
}

void server_kill(test_server *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    int st;
    for (int i = 0; i < 200; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        sleep_ms(25);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
}

void server_stop(test_server *s)
{
    server_kill(s, SIGTERM);
    if (s->store[0]) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log' '%s.conf'", s->store, s->store, s->store);
        if (system(cmd) != 0)
            fprintf(stderr, "harness: could not remove %s\n", s->store);
        s->store[0] = 0;
    }
}

/* --- cluster ------------------------------------------------------------------------------------------ */

static bool write_node_conf(const test_cluster *c, int i, const char *extra_conf)
{
    const test_server *s = &c->nodes[i];
    FILE *f = fopen(s->conf, "w");
    if (!f)
        return false;
    /* client host and port, -js and the store (-sd) come from spawn_server's command line; nats-server refuses
     * a store_dir given both ways */
    fprintf(f, "# JetStream store: %s (-sd)\nserver_name: n%d\nhttp: \"127.0.0.1:%d\"\n", s->store, i,
            c->http_port[i]);
    fprintf(f, "cluster {\n  name: verdict-test\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", c->route_port[i]);
    for (int j = 0; j < c->n; j++)
        if (j != i)
            fprintf(f, "    \"nats-route://127.0.0.1:%d\"\n", c->route_port[j]);
    fprintf(f, "  ]\n}\n");
    if (extra_conf)
        fprintf(f, "%s\n", extra_conf);
    return fclose(f) == 0;
}

/* Distinct free ports for every node's client, route and monitoring listeners. */
static bool pick_ports(test_cluster *c)
{
    int used[CLUSTER_MAX * 3], nused = 0;
    for (int i = 0; i < c->n; i++) {
        int *dst[3] = {&c->nodes[i].port, &c->route_port[i], &c->http_port[i]};
        for (int k = 0; k < 3; k++) {
            int p = -1;
            for (int tries = 0; tries < 20 && p < 0; tries++) {
                p = free_port();
                for (int u = 0; u < nused && p > 0; u++)
                    if (used[u] == p)
                        p = -1;
            }
            if (p <= 0)
                return false;
            used[nused++] = p;
            *dst[k] = p;
        }
        snprintf(c->nodes[i].url, sizeof c->nodes[i].url, "nats://127.0.0.1:%d", c->nodes[i].port);
    }
    size_t o = 0;
    c->urls[0] = 0;
    for (int i = 0; i < c->n; i++)
        o += (size_t)snprintf(c->urls + o, sizeof c->urls - o, "%s%s", i ? "," : "", c->nodes[i].url);
    return true;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One round of readiness checks through node i: when probe_replicas > 0, a memory stream with that many
 * replicas can be placed (so the meta leader knows enough peers); else the JetStream API answers (so a meta
 * leader exists and this node is routed to it). */
static bool node_ready(const test_cluster *c, int i, int probe_replicas)
{
    if (probe_replicas > 0)
        return localserver_placeable(c->nodes[i].url, probe_replicas, NULL, 0);
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsAccountInfo *ai = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, c->nodes[i].url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(o, false);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, o);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    if (s == NATS_OK)
        s = natsConnection_JetStream(&js, nc, &jo);
    if (s == NATS_OK)
        s = js_GetAccountInfo(&ai, js, NULL, NULL);
    jsAccountInfo_Destroy(ai);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    return s == NATS_OK;
}

bool cluster_wait_ready(test_cluster *c, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    int running = 0;
    for (int i = 0; i < c->n; i++)
        running += c->nodes[i].pid > 0;
    bool probed = running < 2;
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid <= 0)
            continue;
        /* the placement probe once, through the first running node; every node must reach the API */
        int probe = probed ? 0 : running;
        probed = true;
        while (!node_ready(c, i, probe)) {
            if (mono_ms() >= deadline) {
                fprintf(stderr, "harness: JetStream not ready through node n%d within %d ms; see %s.log\n", i,
                        timeout_ms, c->nodes[i].store);
                return false;
            }
            sleep_ms(100);
        }
    }
    return true;
}

static bool cluster_try_start(test_cluster *c, const char *extra_conf)
{
    if (!pick_ports(c))
        return false;
    for (int i = 0; i < c->n; i++)
        if (!write_node_conf(c, i, extra_conf))
            return false;
    for (int i = 0; i < c->n; i++)
        if (!spawn_server(&c->nodes[i]))
            return false;
    return cluster_wait_ready(c, 30000);
}

bool cluster_start(test_cluster *c, int n, const char *extra_conf)
{
    memset(c, 0, sizeof *c);
    if (n < 2 || n > CLUSTER_MAX)
        return false;
    for (int attempt = 0; attempt < 3; attempt++) {
        c->n = n;
        bool prepared = true;
        for (int i = 0; i < n && prepared; i++)
            prepared = server_prepare(&c->nodes[i], true);
        if (prepared && cluster_try_start(c, extra_conf))
            return true;
        /* a port taken between free_port() and the listen, or a slow start: clean up and try new ports */
        fprintf(stderr, "harness: cluster start attempt %d failed; retrying\n", attempt + 1);
        cluster_stop(c);
        c->n = n;
    }
    memset(c, 0, sizeof *c);
    return false;
}

void cluster_kill_node(test_cluster *c, int i, int sig)
{
    if (i >= 0 && i < c->n)
        server_kill(&c->nodes[i], sig);
}

bool cluster_restart_node(test_cluster *c, int i)
{
    if (i < 0 || i >= c->n)
        return false;
    return server_restart(&c->nodes[i]);
}

int cluster_node_index(const test_cluster *c, const char *server_name)
{
    if (!server_name || server_name[0] != 'n')
        return -1;
    char *end = NULL;
    long i = strtol(server_name + 1, &end, 10);
    if (end == server_name + 1 || *end || i < 0 || i >= c->n)
        return -1;
    return (int)i;
}

void cluster_stop(test_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        server_stop(&c->nodes[i]);
    c->n = 0;
}

bool http_get_local(int port, const char *path, char *out, size_t cap)
{
    if (cap == 0)
        return false;
    out[0] = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || n <= 0 || (size_t)n >= sizeof req ||
        write(fd, req, (size_t)n) != n) {
        close(fd);
        return false;
    }
    /* headers and body into out; then the body is moved to the front */
    size_t have = 0;
    ssize_t r;
    while (have < cap - 1 && (r = read(fd, out + have, cap - 1 - have)) > 0)
        have += (size_t)r;
    close(fd);
    out[have] = 0;
    char *body = strstr(out, "\r\n\r\n");
    if (strncmp(out, "HTTP/1.", 7) != 0 || !body || strncmp(out + 9, "200", 3) != 0)
        return false;
    body += 4;
    memmove(out, body, strlen(body) + 1);
    return true;
}

pid_t verdict_spawn(const char *const argv[], const char *log_path)
{
    /* everything that allocates happens before the fork: the child of a threaded process runs only
     * async-signal-safe calls until exec */
    int n = 0;
    while (argv[n])
        n++;
    char **args = calloc((size_t)n + 1, sizeof *args);
    if (!args)
        return -1;
    args[0] = (char *)VERDICT_BIN;
    for (int i = 1; i < n; i++)
        args[i] = (char *)argv[i];
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        free(args);
        return pid;
    }
    die_with_parent(parent);
    int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 2);
        dup2(fd, 1);
        close(fd);
    }
    execv(VERDICT_BIN, args);
    _exit(127);
}

int child_wait(pid_t pid, int timeout_ms)
{
    int st;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0)
            return -1;
        sleep_ms(10);
    }
    return -1;
}

bool file_wait_for(const char *log_path, const char *needle, int timeout_ms)
{
    static char buf[1 << 20];
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        FILE *f = fopen(log_path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
            if (strstr(buf, needle))
                return true;
        }
        sleep_ms(20);
    }
    return false;
}

/* Unique across runs, not only within one: pids wrap (pid_max is 32768 here) after a few thousand test
 * processes, and a name made of the pid and a counter alone met a file a test of an earlier run had kept. An
 * engine log reopened for appending still said "engine started", so a test went on before its engine had started
 * (CI: cli::rules_show_says_which_version_each_engine_runs found no rules bucket 0.00 s into the test). */
void temp_path(char *out, size_t cap, const char *suffix)
{
    static int counter;
    static unsigned token;
    if (!token) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        token = ((unsigned)ts.tv_nsec ^ (unsigned)ts.tv_sec * 2654435761u ^ (unsigned)getpid() * 40503u) | 1u;
    }
    snprintf(out, cap, "/tmp/verdict-t-%d-%08x-%d%s", (int)getpid(), token, ++counter, suffix ? suffix : "");
}
