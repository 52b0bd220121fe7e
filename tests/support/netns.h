/* netns.h - test support: a private network of Linux network namespaces for partition tests.
 *
 * A lab is one "hub" namespace holding a bridge, and up to NETNS_MAX_HOSTS host namespaces, each with one veth
 * interface (eth0, 10.77.0.<10+i>/24) whose other end is a port of the bridge in the hub. Host i is cut off by
 * taking its bridge port down (nothing it sends arrives, nothing arrives for it: a black hole, as a dropped
 * network path looks to TCP on both sides) and healed by bringing the port up again. Everything lives inside
 * namespaces named verdict-pt-<pid>-*: the root namespace's interfaces, addresses, routes and firewall are never
 * touched, and the addresses cannot collide with anything outside. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and
 * iproute2's `ip`. */
#ifndef VERDICT_TEST_NETNS_H
#define VERDICT_TEST_NETNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define NETNS_MAX_HOSTS 8

typedef struct netns_lab {
    int n;                          /* hosts */
    char prefix[48];                /* verdict-pt-<pid> */
    char hub[64];                   /* the bridge's namespace */
    char host[NETNS_MAX_HOSTS][64]; /* host namespaces */
    char addr[NETNS_MAX_HOSTS][16]; /* host i's IPv4 address */
    bool created;
} netns_lab;

/* Why namespaces cannot be used here (not root, no `ip`), or NULL when they can. A test skips only on this. */
const char *netns_unavailable(void);

/* Creates the hub, its bridge and n host namespaces with addresses, all links up. Namespaces left behind by
 * an earlier run of this test whose process is gone (a test killed by its timeout) are removed first, with the
 * processes still running in them. On failure everything created is removed and false is returned with the
 * failing command on stderr. */
bool netns_lab_create(netns_lab *l, int n);
/* Cuts host i off the network / reconnects it. */
bool netns_cut(netns_lab *l, int i);
bool netns_heal(netns_lab *l, int i);
/* Cuts only the path between hosts i and j (a blackhole route to the other's address in each of the two), both
 * staying reachable from every other host: a partition that is not transitive (i and j each still talk to k).
 * netns_heal_pair removes the two routes. */
bool netns_cut_pair(netns_lab *l, int i, int j);
bool netns_heal_pair(netns_lab *l, int i, int j);
/* Kills (SIGKILL) every process still inside the lab's namespaces and deletes them (with their veths and the
 * bridge). Safe to call twice and on a lab that was never created. */
void netns_lab_destroy(netns_lab *l);

/* Stops the lab's servers and removes their stores: each pid[i] > 0 is killed (SIGKILL) and waited for up to
 * 5 s, then set to 0; each store[i] that is set is removed, and with it store[i].conf and store[i].log unless
 * keep_logs (a failed run's logs stay to study). who names the test in messages. */
void netns_servers_remove(pid_t pid[], char store[][64], int n, bool keep_logs, const char *who);

/* Moves the calling thread into host i's namespace; threads it creates afterwards inherit it. Call it before
 * the first nats.c call of the process: nats.c's library threads (timers, reconnects) must be created there
 * too, or a reconnect made from one of them would run in the old namespace. */
bool netns_enter(const netns_lab *l, int i);

/* Forks a child that enters host i's namespace and execs argv[0] (searched on PATH) with argv; stdout and
 * stderr go to log_path (appended). Returns the child's pid, or -1. */
pid_t netns_spawn(const netns_lab *l, int i, const char *const argv[], const char *log_path);

/* Writes value to /proc/sys/<key> (key as a path: "net/ipv4/tcp_wmem") inside host i's namespace; only
 * per-namespace settings (most of net/) make sense. */
bool netns_sysctl(const netns_lab *l, int i, const char *key, const char *value);

/* GET http://addr:port/path with a timeout_ms socket timeout. Returns the HTTP status (200, 503, ...), or -1
 * when no answer arrived in time. The body (NUL-terminated, truncated to cap) goes to out if not NULL. */
int netns_http_get(const char *addr, int port, const char *path, int timeout_ms, char *out, size_t cap);

/* Waits up to timeout_ms until JetStream, through the server(s) at urls, places a memory stream with `replicas`
 * replicas (localserver_placeable): a meta leader that knows enough peers. On a timeout, says on stderr
 * (prefixed by who) what the last try answered. */
bool netns_js_ready(const char *urls, int replicas, int timeout_ms, const char *who);

/* Prints, prefixed by who, each of servers 0..n-1's view of the JetStream meta group from its monitor port
 * (/jsz on addr:8222): its leader, the group's size, the leader's replicas. */
void netns_print_meta_group(const netns_lab *l, int n, const char *who);

#endif
