/* test_compose.c - the container files are valid without a container engine: Debian's docker-compose validates
 * the compose files (`config -q`, refusing a missing password), the two stacks can run side by side and start in
 * order, nats-server accepts their config files (`-t`), and the Dockerfile's HEALTHCHECK command, run as written
 * against a real engine, says healthy only when it is. tools/compose-test (`make compose-test`) runs them for real. */
#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(compose, .timeout = 120);

/* Runs a shell command in compose/; returns its exit status (-1 if abnormal). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "cd '%s/compose' && ", VERDICT_SOURCE_DIR);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define PW "VERDICT_NATS_PASSWORD=a PAYMENTS_NATS_PASSWORD=b ADMIN_NATS_PASSWORD=c "
/* the server binary under test (make test NATS_VERSION=..., docs/testing.md) */
#define NATS_SERVER "\"${VERDICT_NATS_SERVER:-nats-server}\" "

Test(compose, the_compose_files_validate)
{
    cr_assert_eq(sh("command -v docker-compose >/dev/null"), 0, "docker-compose missing: run tools/install-deps");
    cr_assert_eq(sh("docker-compose -f compose.yaml config -q"), 0, "compose.yaml is invalid");
    cr_assert_eq(sh("docker-compose -f compose.yaml --profile demo config --services | grep -qx payments"), 0);
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml config -q"), 0, "compose.cluster.yaml is invalid");
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml config --services | grep -c '^nats-[123]$' | grep -qx 3"),
                 0, "the cluster file has three nats nodes");
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml config | grep -q 'VERDICT_REPLICAS: .3.'"), 0,
                 "the cluster's engine creates R3 streams");
    /* without compose/.env and the environment, a password is a clear refusal, not an empty string */
    char empty[256];
    temp_path(empty, sizeof empty, ".env");
    FILE *f = fopen(empty, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(sh("env -u VERDICT_NATS_PASSWORD docker-compose --env-file '%s' -f compose.yaml config -q "
                    "2>&1 | grep -q 'set VERDICT_NATS_PASSWORD'",
                    empty),
                 0, "a missing password must be refused by name");
    unlink(empty);
}

/* What real runs found (issue 17), checked on `docker-compose config`: the simulator started with a stack waits
 * for a healthy engine (not merely a started one) and does not inherit the engine image's HEALTHCHECK, the nats
 * services come back after a crash, and the two files publish no host port in common. */
Test(compose, the_stacks_start_in_order_and_fit_side_by_side)
{
    static const char check[] =
        "import sys, yaml\n"
        "ports = []\n"
        "for f in sys.argv[1:]:\n"
        "    s = yaml.safe_load(open(f))['services']\n"
        "    p = s['payments']\n"
        "    assert p['depends_on']['engine']['condition'] == 'service_healthy', f + ': payments starts early'\n"
        "    assert p.get('healthcheck', {}).get('test') == ['NONE'], f + ': payments inherits the HEALTHCHECK'\n"
        "    for n, v in s.items():\n"
        "        if v['image'].startswith('nats:'):\n"
        "            assert v.get('restart') in ('always', 'unless-stopped'), f + ': ' + n + ' has no restart policy'\n"
        "    ports.append({q['published'] for v in s.values() for q in v.get('ports', [])})\n"
        "assert not ports[0] & ports[1], 'host ports in both files: %s' % sorted(ports[0] & ports[1])\n";
    char py[256], single[256], cluster[256];
    temp_path(py, sizeof py, ".py");
    temp_path(single, sizeof single, ".yaml");
    temp_path(cluster, sizeof cluster, ".yaml");
    FILE *f = fopen(py, "w");
    cr_assert_not_null(f);
    fputs(check, f);
    fclose(f);
    cr_assert_eq(sh(PW "docker-compose -f compose.yaml --profile demo config > '%s'", single), 0);
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml --profile demo config > '%s'", cluster), 0);
    cr_assert_eq(sh("python3 '%s' '%s' '%s'", py, single, cluster), 0, "see the assertion above");
    unlink(py);
    unlink(single);
    unlink(cluster);
}

Test(compose, nats_server_accepts_the_config_files)
{
    cr_assert_eq(sh(PW NATS_SERVER "-t -c nats.conf >/dev/null 2>&1"), 0, "compose/nats.conf is invalid");
    cr_assert_eq(sh("NATS_NODE=nats-1 " NATS_SERVER "-t -c nats-cluster.conf >/dev/null 2>&1"), 0,
                 "compose/nats-cluster.conf is invalid");
    /* and the check is real: a broken file fails it */
    char bad[256];
    temp_path(bad, sizeof bad, ".conf");
    FILE *f = fopen(bad, "w");
    cr_assert_not_null(f);
    fputs("jetstream { store_dir: \n", f);
    fclose(f);
    cr_assert_neq(sh(NATS_SERVER "-t -c '%s' >/dev/null 2>&1", bad), 0);
    unlink(bad);
}

/* The HEALTHCHECK line's bash command, with the metrics port replaced. */
static void healthcheck_cmd(int port, char *out, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/compose/Dockerfile", VERDICT_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[1024], script[1024] = "";
    while (fgets(line, sizeof line, f)) {
        const char *c = strstr(line, "\"/bin/bash\", \"-c\", \"");
        if (!c)
            continue;
        c += strlen("\"/bin/bash\", \"-c\", \"");
        const char *end = strrchr(c, '"');
        cr_assert_not_null(end);
        size_t k = 0;
        for (const char *p = c; p < end && k < sizeof script - 1; p++) {
            if (p[0] == '\\' && p[1] == '\\') /* JSON \\ -> \ */
                p++;
            script[k++] = *p;
        }
        script[k] = 0;
    }
    fclose(f);
    cr_assert(script[0], "no bash HEALTHCHECK in the Dockerfile");
    char *p9464 = strstr(script, "/9464");
    cr_assert_not_null(p9464, "the healthcheck does not probe port 9464: %s", script);
    *p9464 = 0;
    snprintf(out, cap, "/bin/bash -c \"%s/%d%s\"", script, port, p9464 + 5);
}

Test(compose, the_dockerfile_healthcheck_reports_readiness)
{
    test_server srv;
    cr_assert(server_start(&srv, NULL));
    char logp[256];
    temp_path(logp, sizeof logp, ".log");
    int port = free_port();
    char cmd[2048];
    healthcheck_cmd(port, cmd, sizeof cmd);
    cr_assert_neq(sh("%s 2>/dev/null", cmd), 0, "healthy with nothing listening: %s", cmd);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    cr_assert_eq(sh("%s", cmd), 0, "not healthy while ready: %s", cmd);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    server_stop(&srv);
    unlink(logp);
}

/* A hot standby (--lease-ttl) answers /readyz 503 with "phase":"standby": healthy, as the compose cluster's second
 * engine must be, while an engine that is neither ready nor standing by is not. */
Test(compose, the_dockerfile_healthcheck_counts_a_standby_as_healthy)
{
    test_server srv;
    cr_assert(server_start(&srv, NULL));
    char logp[256], logp2[256];
    temp_path(logp, sizeof logp, ".log");
    temp_path(logp2, sizeof logp2, ".log");
    int port = free_port();
    char cmd[2048], addr[64], body[2048];
    healthcheck_cmd(port, cmd, sizeof cmd);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t owner = tc_start_engine(srv.url, logp, (const char *const[]){"--lease-ttl", "3s", NULL});
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--lease-ttl", "3s", "--metrics-addr", addr, NULL};
    pid_t standby = verdict_spawn(argv, logp2);
    cr_assert(file_wait_for(logp2, "standing by: another engine owns the consumer", 20000), "see %s", logp2);
    char bodyp[256];
    temp_path(bodyp, sizeof bodyp, ".http");
    cr_assert_eq(sh("/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && printf \"GET /readyz HTTP/1.0\\r\\n\\r\\n\" >&3 "
                    "&& cat <&3' > '%s'", port, bodyp), 0);
    FILE *bf = fopen(bodyp, "r");
    cr_assert_not_null(bf);
    size_t bn = fread(body, 1, sizeof body - 1, bf);
    body[bn] = 0;
    fclose(bf);
    unlink(bodyp);
    cr_assert(strstr(body, " 503 "), "/readyz of a standby says 503: %s", body);
    cr_assert(strstr(body, "\"phase\":\"standby\""), "/readyz of a standby: %s", body);
    cr_assert(strstr(body, "\"ready\":false"), "a standby is not ready to decide: %s", body);
    cr_assert_eq(sh("%s", cmd), 0, "a standby is not healthy: %s", cmd);
    kill(owner, SIGKILL); /* the standby takes over and is ready */
    cr_assert_eq(child_wait(owner, 5000), -1);
    cr_assert(file_wait_for(logp2, "engine started", 15000), "see %s", logp2);
    cr_assert_eq(sh("%s", cmd), 0, "the new owner is not healthy: %s", cmd);
    server_stop(&srv); /* NATS gone: neither ready nor standing by */
    bool unhealthy = false;
    for (int waited = 0; waited < 15000 && !unhealthy; waited += 250) {
        unhealthy = sh("%s 2>/dev/null", cmd) != 0;
        if (!unhealthy)
            tc_sleep_ms(250);
    }
    cr_assert(unhealthy, "still healthy with NATS down: %s", cmd);
    kill(standby, SIGTERM);
    child_wait(standby, 15000);
    unlink(logp);
    unlink(logp2);
}
