#ifndef BT_PROCESS_H
#define BT_PROCESS_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Starts `path` with `argv` and `envp` as a helper process that cannot outlive its parent: the child
/// gets SIGKILL when the parent dies (PR_SET_PDEATHSIG), inherits no descriptor but its own (stdin
/// from *to_child, a stream socket to write with MSG_NOSIGNAL; stdout into *from_child, a pipe; stderr
/// shared with the parent), and starts with no signal blocked and SIGTERM, SIGINT, SIGHUP and SIGPIPE
/// ignored (it is a helper that ends when its input closes, so a stop signal sent to the whole service
/// never cuts a piece of work short).
/// Both returned descriptors are close-on-exec. Returns 0, or an errno value (exec failures included:
/// they are reported through a close-on-exec pipe, so an executable that cannot start is an error
/// here, not a child that dies later).
int bt_spawn_piped(const char *path, char *const argv[], char *const envp[], int *to_child, int *from_child, pid_t *pid);

/// Ignore SIGTERM, SIGINT and SIGHUP (a helper that ends when its input closes, so that a stop signal
/// sent to the whole service never cuts a piece of work short) and SIGPIPE (a write to a parent that
/// is gone fails instead of killing the process).
void bt_ignore_stop_signals(void);

#ifdef __cplusplus
}
#endif

#endif
