// Debian's libopenblas-dev installs cblas.h under the multiarch include directory
// (an alternatives link), which is on the default search path.
#include <cblas.h>
