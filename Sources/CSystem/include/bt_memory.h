#ifndef BT_MEMORY_H
#define BT_MEMORY_H

#ifdef __cplusplus
extern "C" {
#endif

/// Returns free heap memory to the system (glibc's malloc_trim): after a model and its engine are
/// replaced, so that a long-running daemon does not keep the old ones' pages resident. 1 when some
/// memory was returned.
int bt_memory_release_free(void);

#ifdef __cplusplus
}
#endif

#endif
