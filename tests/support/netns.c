/* netns.c - private network namespaces for partition tests (see netns.h). The namespaces, veths and bridge are
 * made with iproute2's `ip` (-n runs a command inside a named namespace), so nothing here depends on how a
 * particular kernel exposes netlink; entering a namespace is setns(2) on /run/netns/<name>. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netns.h"

#include "harness.h"
#include "localserver.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_PREFIX "verdict-pt-"

/* Runs a shell command built from fmt; true when it exits 0. Failures are reported with the command. */
static bool run(bool quiet, const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 20, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd - 20)
        return false;
    if (quiet)
        strcat(cmd, " >/dev/null 2>&1");
    int st = system(cmd);
    bool ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok && !quiet)
        fprintf(stderr, "netns: failed: %s\n", cmd);
    return ok;
}

const char *netns_unavailable(void)
{
    if (geteuid() != 0)
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN); run the partition test as root";
    if (!run(true, "command -v ip"))
        return "iproute2's `ip` is not installed (apt-get install iproute2)";
    return NULL;
}

/* Kills every process inside namespace name and deletes it. */
static void ns_remove(const char *name)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "ip netns pids '%s' 2>/dev/null", name);
    FILE *p = popen(cmd, "r");
    if (p) {
        char line[64];
        while (fgets(line, sizeof line, p)) {
            long pid = strtol(line, NULL, 10);
            if (pid > 1 && pid != (long)getpid())
                kill((pid_t)pid, SIGKILL);
        }
        pclose(p);
    }
    run(true, "ip netns del '%s'", name);
}

/* Removes namespaces verdict-pt-<pid>-* whose creating process no longer exists. */
static void sweep_stale(void)
{
    DIR *d = opendir("/run/netns");
    if (!d)
        return;
    char stale[64][300];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64) {
        if (strncmp(e->d_name, NS_PREFIX, strlen(NS_PREFIX)) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + strlen(NS_PREFIX), &end, 10);
        if (pid <= 0 || !end || *end != '-')
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(stale[n++], sizeof stale[0], "%s", e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "netns: removing %s, left behind by a run that is gone\n", stale[i]);
        ns_remove(stale[i]);
    }
}

bool netns_lab_create(netns_lab *l, int n)
{
    memset(l, 0, sizeof *l);
    if (n < 1 || n > NETNS_MAX_HOSTS)
        return false;
    sweep_stale();
    l->n = n;
    snprintf(l->prefix, sizeof l->prefix, NS_PREFIX "%d", (int)getpid());
    snprintf(l->hub, sizeof l->hub, "%s-hub", l->prefix);
    l->created = true; /* from here on, destroy removes whatever exists */
    if (!run(false, "ip netns add '%s'", l->hub) || !run(false, "ip -n '%s' link set lo up", l->hub) ||
        !run(false, "ip -n '%s' link add br0 type bridge", l->hub) || !run(false, "ip -n '%s' link set br0 up", l->hub))
        goto fail;
    for (int i = 0; i < n; i++) {
        snprintf(l->host[i], sizeof l->host[i], "%s-h%d", l->prefix, i);
        snprintf(l->addr[i], sizeof l->addr[i], "10.77.0.%d", 10 + i);
        if (!run(false, "ip netns add '%s'", l->host[i]) || !run(false, "ip -n '%s' link set lo up", l->host[i]) ||
            /* the bridge port p<i> stays in the hub; its peer moves into the host and is renamed eth0 there */
            !run(false, "ip -n '%s' link add p%d type veth peer name eth0 netns '%s'", l->hub, i, l->host[i]) ||
            !run(false, "ip -n '%s' link set p%d master br0", l->hub, i) ||
            !run(false, "ip -n '%s' link set p%d up", l->hub, i) ||
            !run(false, "ip -n '%s' addr add %s/24 dev eth0", l->host[i], l->addr[i]) ||
            !run(false, "ip -n '%s' link set eth0 up", l->host[i]))
            goto fail;
    }
    return true;
fail:
    netns_lab_destroy(l);
    return false;
}

bool netns_cut(netns_lab *l, int i)
{
    return i >= 0 && i < l->n && run(false, "ip -n '%s' link set p%d down", l->hub, i);
}

bool netns_heal(netns_lab *l, int i)
{
    return i >= 0 && i < l->n && run(false, "ip -n '%s' link set p%d up", l->hub, i);
}

bool netns_cut_pair(netns_lab *l, int i, int j)
{
    return i >= 0 && i < l->n && j >= 0 && j < l->n && i != j &&
           run(false, "ip -n '%s' route add blackhole %s/32", l->host[i], l->addr[j]) &&
           run(false, "ip -n '%s' route add blackhole %s/32", l->host[j], l->addr[i]);
}

bool netns_heal_pair(netns_lab *l, int i, int j)
{
    if (i < 0 || i >= l->n || j < 0 || j >= l->n || i == j)
        return false;
    bool a = run(false, "ip -n '%s' route del blackhole %s/32", l->host[i], l->addr[j]);
    bool b = run(false, "ip -n '%s' route del blackhole %s/32", l->host[j], l->addr[i]);
    return a && b;
}

void netns_lab_destroy(netns_lab *l)
{
    if (!l->created)
        return;
    for (int i = 0; i < l->n; i++)
        if (l->host[i][0])
            ns_remove(l->host[i]);
    ns_remove(l->hub); /* the bridge and the remaining veth ends go with it */
    l->created = false;
}

static bool enter(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/run/netns/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = setns(fd, CLONE_NEWNET) == 0;
    close(fd);
    return ok;
}

bool netns_enter(const netns_lab *l, int i)
{
    if (i < 0 || i >= l->n || !enter(l->host[i])) {
        fprintf(stderr, "netns: cannot enter host %d: %s\n", i, strerror(errno));
        return false;
    }
    return true;
}

pid_t netns_spawn(const netns_lab *l, int i, const char *const argv[], const char *log_path)
{
    if (i < 0 || i >= l->n)
        return -1;
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    if (!enter(l->host[i]))
        _exit(126);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

bool netns_sysctl(const netns_lab *l, int i, const char *key, const char *value)
{
    if (i < 0 || i >= l->n || strstr(key, ".."))
        return false;
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) { /* a child, so that this process stays where it is */
        char path[256];
        snprintf(path, sizeof path, "/proc/sys/%s", key);
        if (!enter(l->host[i]))
            _exit(1);
        FILE *f = fopen(path, "w");
        if (!f)
            _exit(2);
        bool ok = fputs(value, f) >= 0;
        _exit(fclose(f) == 0 && ok ? 0 : 3);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "netns: cannot set %s to '%s' in host %d\n", key, value, i);
        return false;
    }
    return true;
}

int netns_http_get(const char *addr, int port, const char *path, int timeout_ms, char *out, size_t cap)
{
    if (out && cap)
        out[0] = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char req[512];
    size_t bufcap = 256 * 1024; /* /connz of a busy node */
    char *buf = malloc(bufcap);
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr);
    if (!buf || inet_pton(AF_INET, addr, &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        n <= 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        free(buf);
        return -1;
    }
    size_t have = 0;
    ssize_t r = 0;
    while (have < bufcap - 1 && (r = read(fd, buf + have, bufcap - 1 - have)) > 0)
        have += (size_t)r;
    bool timed_out = r < 0;
    close(fd);
    buf[have] = 0;
    int status = -1;
    if (!timed_out && sscanf(buf, "HTTP/1.%*d %d", &status) == 1) {
        const char *body = strstr(buf, "\r\n\r\n");
        if (out && cap && body)
            snprintf(out, cap, "%s", body + 4);
    } else {
        status = -1;
    }
    free(buf);
    return status;
}

void netns_servers_remove(pid_t pid[], char store[][64], int n, bool keep_logs, const char *who)
{
    for (int i = 0; i < n; i++)
        if (pid[i] > 0) {
            kill(pid[i], SIGKILL);
            child_wait(pid[i], 5000);
            pid[i] = 0;
        }
    for (int i = 0; i < n; i++) {
        if (!store[i][0])
            continue;
        char cmd[600];
        if (keep_logs)
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", store[i]);
        else
            snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.conf' '%s.log'", store[i], store[i], store[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "%s: could not remove %s\n", who, store[i]);
    }
}

bool netns_js_ready(const char *urls, int replicas, int timeout_ms, const char *who)
{
    char last[512] = "nothing tried";
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!localserver_placeable(urls, replicas, last, sizeof last)) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 >= timeout_ms) {
            fprintf(stderr, "%s: JetStream is not ready after %d ms: %s\n", who, timeout_ms, last);
            return false;
        }
        usleep(250 * 1000);
    }
    return true;
}

void netns_print_meta_group(const netns_lab *l, int n, const char *who)
{
    static char body[65536];
    for (int i = 0; i < n; i++) {
        int st = netns_http_get(l->addr[i], 8222, "/jsz", 2000, body, sizeof body);
        json_t *j = st == 200 ? json_loads(body, 0, NULL) : NULL;
        json_t *meta = json_object_get(j, "meta_cluster");
        char replicas[128] = "";
        size_t k, o = 0;
        json_t *r;
        json_array_foreach(json_object_get(meta, "replicas"), k, r)
        {
            const char *rn = json_string_value(json_object_get(r, "name"));
            o += (size_t)snprintf(replicas + o, sizeof replicas - o, " %s", rn ? rn : "?");
            if (o >= sizeof replicas)
                break;
        }
        const char *leader = json_string_value(json_object_get(meta, "leader"));
        fprintf(stderr, "%s: n%d: /jsz %d, meta leader %s, cluster size %lld%s%s\n", who, i, st,
                leader ? leader : "none", (long long)json_integer_value(json_object_get(meta, "cluster_size")),
                replicas[0] ? ", replicas" : "", replicas);
        json_decref(j);
    }
}
