// Debian's libpq (libpq-dev): the PostgreSQL client library behind the PostgreSQL worklist.
#include <libpq-fe.h>
