/* localserver.c - spawn and reap a private nats-server (see localserver.h). */
#include "localserver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

vstatus localserver_start(localserver *ls, verror *e)
{
    memset(ls, 0, sizeof *ls);
    snprintf(ls->dir, sizeof ls->dir, "/tmp/verdict-nats-XXXXXX");
    if (!mkdtemp(ls->dir))
        return verror_set(e, V_EIO, "cannot create a temporary directory for the JetStream store");
    ls->port = pick_port();
    if (ls->port < 0)
        return verror_set(e, V_EIO, "no free loopback port");
    snprintf(ls->url, sizeof ls->url, "nats://127.0.0.1:%d", ls->port);
    char port[16], log[200];
    snprintf(port, sizeof port, "%d", ls->port);
    snprintf(log, sizeof log, "%s/nats-server.log", ls->dir);
    /* the binary: $VERDICT_NATS_SERVER (how the test suite picks a nats-server version), else nats-server on PATH */
    const char *bin = getenv("VERDICT_NATS_SERVER");
    if (!bin || !bin[0])
        bin = "nats-server";
    pid_t pid = fork();
    if (pid < 0)
        return verror_set(e, V_EIO, "fork failed");
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp(bin, "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", ls->dir, (char *)NULL);
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
            localserver_stop(ls);
            if (missing)
                return verror_set(e, V_EIO, "%s not found: run tools/install-deps", bin);
            return verror_set(e, V_EIO, "%s exited at start (see its log)", bin);
        }
        struct timespec ts = {0, 25000000};
        nanosleep(&ts, NULL);
    }
    localserver_stop(ls);
    return verror_set(e, V_ETIMEOUT, "nats-server did not start within 10s");
}

void localserver_stop(localserver *ls)
{
    if (ls->pid > 0) {
        kill(ls->pid, SIGTERM);
        int st;
        for (int i = 0; i < 200 && waitpid(ls->pid, &st, WNOHANG) != ls->pid; i++) {
            struct timespec ts = {0, 25000000};
            nanosleep(&ts, NULL);
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
