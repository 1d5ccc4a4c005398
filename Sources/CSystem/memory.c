#include "bt_memory.h"

#include <malloc.h>

int bt_memory_release_free(void) { return malloc_trim(0); }
