#ifndef BT_MEMORY_H
#define BT_MEMORY_H

#ifdef __cplusplus
extern "C" {
#endif

/// Returns free heap memory to the system (glibc's malloc_trim): after a model and its engine are
/// replaced, so that a long-running daemon does not keep the old ones' pages resident. 1 when some
/// memory was returned.
int bt_memory_release_free(void);

/// Keeps freed heap memory for reuse instead of returning it at once (glibc's mallopt: mmap threshold
/// 32 MiB, trim threshold 1 GiB), for a process that decodes one large image after another: each image
/// then reuses the pages of the one before instead of faulting in fresh zeroed pages (a quarter to a
/// third of a large image's decode time). Pair it with `bt_memory_release_free` when idle. 1 on success.
int bt_memory_reuse_freed(void);

/// Serves blocks of 256 KiB or more with mappings of their own, returned to the system when freed (glibc's
/// mallopt: a fixed mmap threshold; a block that fits a free heap chunk still comes from the heap), for the
/// daemon: a model and its engine, replaced at a reload, then leave next to nothing resident behind,
/// whatever was allocated between their blocks. 1 on success.
int bt_memory_return_large_blocks(void);

#ifdef __cplusplus
}
#endif

#endif
