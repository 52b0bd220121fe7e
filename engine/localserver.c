/* localserver.c - spawn and reap private nats-servers, alone or as a loopback cluster (see localserver.h). A
 * cluster node is a localserver whose configuration carries server_name and a cluster block, so spawning and
 * stopping are the single-server code paths. */
#include "localserver.h"

#include "broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* A free port not among used[0..*n), appended to used. */
static int pick_distinct(int *used, int *n)
{
    for (int tries = 0; tries < 20; tries++) {
        int p = pick_port();
        bool dup = p <= 0;
        for (int i = 0; i < *n && !dup; i++)
            dup = used[i] == p;
        if (!dup) {
            used[(*n)++] = p;
            return p;
        }
    }
    return -1;
}

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static bool port_open(int port)
{
    int fd = connect_local(port);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

const char *localserver_binary(void)
{
    const char *b = getenv("VERDICT_NATS_SERVER");
    return b && b[0] ? b : "nats-server";
}

/* A fresh store directory and client and monitoring ports (distinct from used[]). */
static vstatus prepare(localserver *ls, int *used, int *nused, verror *e)
{
    memset(ls, 0, sizeof *ls);
    snprintf(ls->dir, sizeof ls->dir, "/tmp/verdict-nats-XXXXXX");
    if (!mkdtemp(ls->dir)) {
        ls->dir[0] = 0;
        return verror_set(e, V_EIO, "cannot create a temporary directory for the JetStream store");
    }
    ls->port = pick_distinct(used, nused);
    ls->http_port = pick_distinct(used, nused);
    if (ls->port < 0 || ls->http_port < 0)
        return verror_set(e, V_EIO, "no free loopback port");
    snprintf(ls->url, sizeof ls->url, "nats://127.0.0.1:%d", ls->port);
    return V_OK;
}

static void conf_path(const localserver *ls, char *out, size_t cap)
{
    snprintf(out, cap, "%s/nats-server.conf", ls->dir);
}

/* Forks and execs the server on ls's ports and store (with its config file when with_conf), and waits until it
 * accepts connections. */
static vstatus spawn(localserver *ls, bool with_conf, verror *e)
{
    char port[16], http[16], log[200], conf[200];
    snprintf(port, sizeof port, "%d", ls->port);
    snprintf(http, sizeof http, "%d", ls->http_port);
    snprintf(log, sizeof log, "%s/nats-server.log", ls->dir);
    conf_path(ls, conf, sizeof conf);
    const char *bin = localserver_binary();
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return verror_set(e, V_EIO, "fork failed");
    if (pid == 0) {
        /* a bench or demo killed mid-run takes its servers with it (a cluster bench runs several) */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
            _exit(126);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (with_conf)
            execlp(bin, bin, "-js", "-a", "127.0.0.1", "-p", port, "-m", http, "-sd", ls->dir, "-c", conf,
                   (char *)NULL);
        else
            execlp(bin, bin, "-js", "-a", "127.0.0.1", "-p", port, "-m", http, "-sd", ls->dir, (char *)NULL);
        _exit(127);
    }
    ls->pid = pid;
    for (int i = 0; i < 400; i++) {
        if (port_open(ls->port))
            return V_OK;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            ls->pid = 0;
            bool missing = WIFEXITED(st) && WEXITSTATUS(st) == 127;
            return verror_set(e, V_EIO, missing ? "%s not found: run tools/install-deps"
                                                : "%s exited at start (see its log)",
                              bin);
        }
        sleep_ms(25);
    }
    return verror_set(e, V_ETIMEOUT, "nats-server did not start within 10s");
}

vstatus localserver_start_conf(localserver *ls, const char *conf, verror *e)
{
    int used[2], nused = 0;
    vstatus st = prepare(ls, used, &nused, e);
    if (st == V_OK && conf) {
        char path[200];
        conf_path(ls, path, sizeof path);
        FILE *f = fopen(path, "w");
        if (!f || fputs(conf, f) < 0 || fclose(f) != 0)
            st = verror_set(e, V_EIO, "cannot write %s", path);
    }
    if (st == V_OK)
        st = spawn(ls, conf != NULL, e);
    if (st != V_OK)
        localserver_stop(ls);
    return st;
}

vstatus localserver_start(localserver *ls, verror *e)
{
    return localserver_start_conf(ls, NULL, e);
}

void localserver_stop(localserver *ls)
{
    if (ls->pid > 0) {
        kill(ls->pid, SIGTERM);
        int st;
        for (int i = 0; i < 200 && waitpid(ls->pid, &st, WNOHANG) != ls->pid; i++) {
            sleep_ms(25);
            if (i == 199) {
                kill(ls->pid, SIGKILL);
                waitpid(ls->pid, &st, 0);
            }
        }
        ls->pid = 0;
    }
    if (ls->dir[0]) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", ls->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", ls->dir);
        ls->dir[0] = 0;
    }
}

bool localserver_http_get(int port, const char *path, char *out, size_t cap)
{
    int fd = connect_local(port);
    if (fd < 0 || cap == 0) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    char req[256];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    bool ok = len > 0 && (size_t)len < sizeof req && write(fd, req, (size_t)len) == (ssize_t)len;
    size_t n = 0;
    for (ssize_t r = 1; ok && r > 0 && n + 1 < cap; n += (size_t)r)
        r = read(fd, out + n, cap - 1 - n);
    close(fd);
    out[n] = 0;
    return ok && n > 0;
}

bool localserver_varz(const localserver *ls, char *out, size_t cap)
{
    return localserver_http_get(ls->http_port, "/varz", out, cap);
}

int localserver_free_port(void) { return pick_port(); }

/* --- cluster ------------------------------------------------------------------------------------------ */

static vstatus write_node_conf(const localcluster *c, int i, const char *conf, verror *e)
{
    char path[200];
    conf_path(&c->nodes[i], path, sizeof path);
    FILE *f = fopen(path, "w");
    if (!f)
        return verror_set(e, V_EIO, "cannot write %s", path);
    /* host, ports and the store (-sd) come from the command line: nats-server refuses a store_dir given twice */
    fprintf(f, "server_name: n%d\ncluster {\n  name: verdict-local\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", i,
            c->nodes[i].route_port);
    for (int j = 0; j < c->n; j++)
        if (j != i)
            fprintf(f, "    \"nats-route://127.0.0.1:%d\"\n", c->nodes[j].route_port);
    fprintf(f, "  ]\n}\n%s\n", conf ? conf : "");
    return fclose(f) == 0 ? V_OK : verror_set(e, V_EIO, "cannot write %s", path);
}

/* The last lines of a node's log on stderr: its store (and log) is removed with it. */
static void log_tail(const localserver *ls, int lines)
{
    char path[200], buf[4096];
    snprintf(path, sizeof path, "%s/nats-server.log", ls->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : 0;
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    size_t n = fseek(f, from, SEEK_SET) == 0 ? fread(buf, 1, sizeof buf - 1, f) : 0;
    fclose(f);
    buf[n] = 0;
    char *p = buf + n;
    for (int k = 0; p > buf && k <= lines; k += *p == '\n')
        p--;
    fprintf(stderr, "--- %s (last lines)\n%s\n", path, p);
}

bool localserver_placeable(const char *url, int replicas, char *why, size_t cap)
{
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    char name[64], subj[64];
    snprintf(name, sizeof name, "LOCAL_PROBE_%d", (int)getpid());
    snprintf(subj, sizeof subj, "localserver.probe.%d", (int)getpid());
    const char *subjects[] = {subj};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_MemoryStorage;
    sc.Replicas = replicas;
    jsErrCode je = 0;
    bool connected = false;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = broker_set_servers(o, url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(o, false);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, o);
    if (s == NATS_OK)
        s = natsConnection_JetStream(&js, nc, &jo);
    if (s == NATS_OK) {
        connected = true;
        s = js_AddStream(&si, js, &sc, NULL, &je);
    }
    if (s == NATS_OK)
        s = js_DeleteStream(js, name, NULL, NULL);
    if (s != NATS_OK && why && cap > 0) {
        const char *last = nats_GetLastError(NULL);
        if (connected)
            snprintf(why, cap, "no stream of %d replicas placed through %s: %s (JetStream error %d) %s", replicas, url,
                     natsStatus_GetText(s), (int)je, last ? last : "");
        else
            snprintf(why, cap, "cannot connect to %s: %s %s", url, natsStatus_GetText(s), last ? last : "");
    }
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    return s == NATS_OK;
}

vstatus localcluster_start(localcluster *c, int n, const char *conf, verror *e)
{
    memset(c, 0, sizeof *c);
    if (n < 2 || n > LOCALCLUSTER_MAX)
        return verror_set(e, V_EINVAL, "a local cluster has 2..%d nodes", LOCALCLUSTER_MAX);
    c->n = n;
    int used[LOCALCLUSTER_MAX * 3], nused = 0;
    vstatus st = V_OK;
    for (int i = 0; i < n && st == V_OK; i++) {
        st = prepare(&c->nodes[i], used, &nused, e);
        if (st == V_OK && (c->nodes[i].route_port = pick_distinct(used, &nused)) < 0)
            st = verror_set(e, V_EIO, "no free loopback port");
    }
    for (int i = 0; i < n && st == V_OK; i++)
        st = write_node_conf(c, i, conf, e);
    for (int i = 0; i < n && st == V_OK; i++)
        st = spawn(&c->nodes[i], true, e);
    size_t o = 0;
    for (int i = 0; i < n && st == V_OK; i++)
        o += (size_t)snprintf(c->urls + o, sizeof c->urls - o, "%s%s", i ? "," : "", c->nodes[i].url);
    /* 60 s: a 2.10.27 cluster once took over 30 s to elect its meta leader on a machine loaded 14 deep */
    int64_t deadline = now_ms() + 60000;
    while (st == V_OK && !localserver_placeable(c->nodes[0].url, n, NULL, 0)) {
        if (now_ms() > deadline) {
            st = verror_set(e, V_ETIMEOUT, "the cluster could not place an R%d stream within 60 s (node logs above)",
                            n);
            for (int i = 0; i < n; i++)
                log_tail(&c->nodes[i], 5);
        }
        sleep_ms(100);
    }
    if (st != V_OK)
        localcluster_stop(c);
    return st;
}

void localcluster_stop(localcluster *c)
{
    for (int i = 0; i < c->n; i++)
        localserver_stop(&c->nodes[i]);
    c->n = 0;
}
