#include "bt_memory.h"

#include <malloc.h>

int bt_memory_release_free(void) { return malloc_trim(0); }

int bt_memory_reuse_freed(void) {
    // The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2): blocks below it come from
    // the heap and are reused; free memory at the top of the heap is kept up to 1 GiB.
    int ok = mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    return ok && mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
}
