#define _GNU_SOURCE
#include "bt_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void close_quietly(int fd) {
    if (fd >= 0) close(fd);
}

int bt_spawn_piped(const char *path, char *const argv[], char *const envp[], int *to_child, int *from_child, pid_t *pid) {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, report[2] = {-1, -1};
    /* The child's stdin is a socket, so that the parent can write with MSG_NOSIGNAL: a child that died
       is an EPIPE to handle, not a SIGPIPE that kills the parent. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0) {
        int e = errno;
        close_quietly(in[0]); close_quietly(in[1]); close_quietly(out[0]); close_quietly(out[1]);
        close_quietly(report[0]); close_quietly(report[1]);
        return e;
    }
    /* Read before fork: the child closes every descriptor up to this if close_range is not available. */
    struct rlimit files;
    int highest = 65536;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY && files.rlim_cur < (rlim_t)highest)
        highest = (int)files.rlim_cur;
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        int e = errno;
        close(in[0]); close(in[1]); close(out[0]); close(out[1]); close(report[0]); close(report[1]);
        return e;
    }
    if (child == 0) {
        /* Only async-signal-safe calls from here to exec. Dispositions first, then the mask: a signal
           that arrives in between must not run a handler the parent installed. Ignored from the first
           instruction (SIG_IGN survives exec): a stop signal sent to the whole service while the child
           starts must not end it; it ends when its input closes. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        /* Through descriptors above 2 first, so that the pipes land on 0 and 1 without close-on-exec
           even when the parent had 0 or 1 closed (dup2 onto the same number keeps the flag). */
        int input = fcntl(in[0], F_DUPFD, 3), output = fcntl(out[1], F_DUPFD, 3);
        if (input < 0 || output < 0 || dup2(input, 0) < 0 || dup2(output, 1) < 0) {
            int e = errno;
            (void)!write(report[1], &e, sizeof e);
            _exit(127);
        }
        /* Everything else from the parent is closed here (sockets, inotify, the database), with a loop
           where close_range is not available (kernels before 5.9, some seccomp filters). */
        int keep = report[1];
        if ((keep > 3 && close_range(3, (unsigned)keep - 1, 0) != 0) || close_range((unsigned)keep + 1, ~0U, 0) != 0) {
            for (int fd = 3; fd < highest; fd++)
                if (fd != keep) close(fd);
        }
        execve(path, argv, envp);
        int e = errno;
        (void)!write(report[1], &e, sizeof e);
        _exit(127);
    }
    close(in[0]);
    shutdown(in[1], SHUT_RD);
    close(out[1]);
    close(report[1]);
    int e = 0;
    ssize_t n;
    do { n = read(report[0], &e, sizeof e); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof e && e != 0) {
        close(in[1]);
        close(out[0]);
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        return e;
    }
    *to_child = in[1];
    *from_child = out[0];
    *pid = child;
    return 0;
}

void bt_ignore_stop_signals(void) {
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
}
