#include "bt_memory.h"

#include <malloc.h>

int bt_memory_release_free(void) { return malloc_trim(0); }

int bt_memory_reuse_freed(void) {
    // The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2): blocks below it come from
    // the heap and are reused; free memory at the top of the heap is kept up to 1 GiB.
    int ok = mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    return ok && mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
}

int bt_memory_return_large_blocks(void) {
    // A fixed threshold also turns off glibc's dynamic one, which rises to the size of each mmapped block
    // freed (up to 32 MiB): after the first reload, a model's and an engine's blocks would come from the
    // heap, and what of them went back to the system would depend on what small blocks lie between them.
    return mallopt(M_MMAP_THRESHOLD, 256 * 1024);
}
