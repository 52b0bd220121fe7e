/* harness.c - starts and stops real nats-servers and verdict processes for integration tests. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

static bool spawn_server(test_server *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    char log[300];
    snprintf(log, sizeof log, "%s.log", s->store);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (s->conf[0])
            execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->store, "-c",
                   s->conf, (char *)NULL);
        else
            execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->store,
                   (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 200; i++) {
        if (port_open(s->port))
            return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "harness: nats-server exited early; see %s\n", log);
            s->pid = 0;
            return false;
        }
        sleep_ms(25);
    }
    fprintf(stderr, "harness: nats-server did not open port %d in 5s\n", s->port);
    return false;
}

bool server_start(test_server *s, const char *extra_conf)
{
    memset(s, 0, sizeof *s);
    snprintf(s->store, sizeof s->store, "/tmp/verdict-test-XXXXXX");
    if (!mkdtemp(s->store))
        return false;
    if (extra_conf) {
        snprintf(s->conf, sizeof s->conf, "%s.conf", s->store);
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

pid_t verdict_spawn(const char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 2);
        dup2(fd, 1);
        close(fd);
    }
    int n = 0;
    while (argv[n])
        n++;
    char **args = calloc((size_t)n + 1, sizeof *args);
    args[0] = (char *)VERDICT_BIN;
    for (int i = 1; i < n; i++)
        args[i] = (char *)argv[i];
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

void temp_path(char *out, size_t cap, const char *suffix)
{
    static int counter;
    snprintf(out, cap, "/tmp/verdict-t-%d-%d%s", (int)getpid(), ++counter, suffix ? suffix : "");
}
