// Debian's libopenblas-dev installs cblas.h under the multiarch include directory
// (an alternatives link), which is on the default search path.
#include <cblas.h>

// LAPACK's Cholesky solve, which OpenBLAS exports (Fortran calling convention; no lapacke.h needed).
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb, int *info);

// LAPACK's LU solve of a general system (the head study's Newton steps with a free intercept).
void dgesv_(const int *n, const int *nrhs, double *a, const int *lda, int *ipiv, double *b, const int *ldb, int *info);
