/* gptlab._core: CPython + NumPy bindings of the C core.
 *
 * This file only parses arguments, validates them (dtype, rank, shape, contiguity, ranges),
 * releases the GIL and calls the gl_ functions; the math lives in the other csrc/ files.
 * Arrays are taken as they are, never silently copied: the Python layer (gptlab/*.py) converts
 * user input to C-contiguous float32/int32 first, and this layer refuses anything else with a
 * TypeError/ValueError that says what was expected. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define PY_ARRAY_UNIQUE_SYMBOL gptlab_ARRAY_API
#include <numpy/arrayobject.h>

#include <math.h>
#include <string.h>

#include "gptlab.h"

/* ---- validation helpers shared by every binding ---------------------------------------- */

/* Checks that o is a NumPy array of the given type (NPY_FLOAT32 / NPY_INT32), C-contiguous
 * and aligned, with ndim dimensions (-1: any), writeable if asked. Returns it (borrowed) or
 * NULL with an exception naming the argument. */
static PyArrayObject *arr_check(PyObject *o, const char *name, int typenum, int ndim,
                                int writable) {
    if (!PyArray_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a numpy.ndarray, got %s", name,
                     Py_TYPE(o)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)o;
    if (PyArray_TYPE(a) != typenum) {
        PyErr_Format(PyExc_TypeError, "%s: expected dtype %s, got %s", name,
                     typenum == NPY_FLOAT32 ? "float32" : "int32",
                     PyArray_DESCR(a)->typeobj->tp_name);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-D array, got %d-D", name, ndim,
                     PyArray_NDIM(a));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous aligned array", name);
        return NULL;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a writeable array", name);
        return NULL;
    }
    return a;
}

/* Checks that dimension d of a has size n. */
static int dim_check(PyArrayObject *a, const char *name, int d, npy_intp n) {
    if (PyArray_DIM(a, d) != n) {
        PyErr_Format(PyExc_ValueError, "%s: expected size %zd along axis %d, got %zd", name,
                     (Py_ssize_t)n, d, (Py_ssize_t)PyArray_DIM(a, d));
        return -1;
    }
    return 0;
}

/* Checks that every element of a float32 array is finite. */
static int finite_check(PyArrayObject *a, const char *name) {
    const float *p = (const float *)PyArray_DATA(a);
    npy_intp n = PyArray_SIZE(a);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (npy_intp i = 0; i < n; i++) bad |= !isfinite(p[i]);
    Py_END_ALLOW_THREADS;
    if (bad) {
        PyErr_Format(PyExc_ValueError, "%s: expected finite numbers, found NaN or Inf", name);
        return -1;
    }
    return 0;
}

/* Checks that every id of an int32 array lies in [0, V). */
static int ids_check(PyArrayObject *a, const char *name, int V) {
    const int32_t *p = (const int32_t *)PyArray_DATA(a);
    npy_intp n = PyArray_SIZE(a);
    for (npy_intp i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= V) {
            PyErr_Format(PyExc_ValueError, "%s: token id %d at flat index %zd is out of range "
                         "[0, %d)", name, (int)p[i], (Py_ssize_t)i, V);
            return -1;
        }
    }
    return 0;
}

/* ---- threads and gemm ------------------------------------------------------------------ */

static PyObject *py_set_num_threads(PyObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (n < 1 || n > 1024) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: expected 1 <= n <= 1024, got %d", n);
        return NULL;
    }
    gl_set_num_threads(n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs) {
    return PyLong_FromLong(gl_get_num_threads());
}

/* sgemm(transA, transB, A, B, C, alpha, beta): C = alpha op(A) op(B) + beta C, 2-D arrays. */
static PyObject *py_sgemm(PyObject *self, PyObject *args) {
    int ta, tb;
    PyObject *oa, *ob, *oc;
    float alpha = 1.0f, beta = 0.0f;
    if (!PyArg_ParseTuple(args, "ppOOO|ff", &ta, &tb, &oa, &ob, &oc, &alpha, &beta)) return NULL;
    PyArrayObject *A = arr_check(oa, "A", NPY_FLOAT32, 2, 0);
    PyArrayObject *B = arr_check(ob, "B", NPY_FLOAT32, 2, 0);
    PyArrayObject *C = arr_check(oc, "C", NPY_FLOAT32, 2, 1);
    if (!A || !B || !C) return NULL;
    npy_intp M = ta ? PyArray_DIM(A, 1) : PyArray_DIM(A, 0);
    npy_intp K = ta ? PyArray_DIM(A, 0) : PyArray_DIM(A, 1);
    npy_intp KB = tb ? PyArray_DIM(B, 1) : PyArray_DIM(B, 0);
    npy_intp N = tb ? PyArray_DIM(B, 0) : PyArray_DIM(B, 1);
    if (K != KB || PyArray_DIM(C, 0) != M || PyArray_DIM(C, 1) != N) {
        PyErr_Format(PyExc_ValueError, "sgemm: shapes do not agree: op(A) (%zd,%zd), op(B) "
                     "(%zd,%zd), C (%zd,%zd)", (Py_ssize_t)M, (Py_ssize_t)K, (Py_ssize_t)KB,
                     (Py_ssize_t)N, (Py_ssize_t)PyArray_DIM(C, 0), (Py_ssize_t)PyArray_DIM(C, 1));
        return NULL;
    }
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "sgemm: dimensions must fit in int32");
        return NULL;
    }
    const float *a = PyArray_DATA(A), *b = PyArray_DATA(B);
    float *c = PyArray_DATA(C);
    int lda = (int)PyArray_DIM(A, 1), ldb = (int)PyArray_DIM(B, 1), ldc = (int)N;
    Py_BEGIN_ALLOW_THREADS;
    gl_sgemm(ta, tb, (int)M, (int)N, (int)K, alpha, a, lda, b, ldb, beta, c, ldc);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *py_gemm_isa(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(gl_gemm_isa());
}

static PyObject *py_gemm_set_isa(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (gl_gemm_set_isa(name) != 0) {
        PyErr_Format(PyExc_ValueError, "gemm_set_isa: '%s' is not available on this CPU/build "
                     "(expected 'avx512', 'avx2', 'portable' or 'auto')", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ==== layers ============================================================================ */

/* ==== model ============================================================================= */

/* ==== losses ============================================================================ */

#define GL_FLT_MAX 3.4028234663852886e38 /* the largest float */
#define GL_FLT_MIN 1.1754943508222875e-38 /* the smallest normal float */

/* Helpers of the losses and optim bindings. The Python layer (gptlab/losses.py) flattens its
 * arrays, so every per-token or per-prompt argument here is a 1-D (N) vector. */

/* A float32 1-D vector argument of n elements (n < 0: any length >= 1): an input (checked
 * finite) or, when out != 0, an output (writeable). Returns it (borrowed) or NULL. */
static PyArrayObject *loss_vec(PyObject *o, const char *name, npy_intp n, int out) {
    PyArrayObject *a = arr_check(o, name, NPY_FLOAT32, 1, out);
    if (!a) return NULL;
    if (n >= 0 && dim_check(a, name, 0, n)) return NULL;
    if (n < 0 && PyArray_DIM(a, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected at least one element", name);
        return NULL;
    }
    if (PyArray_DIM(a, 0) > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d elements", name, (int)INT32_MAX);
        return NULL;
    }
    if (!out && finite_check(a, name)) return NULL;
    return a;
}

/* Like loss_vec for an optional argument: None sets *data = NULL. Returns 0, or -1. */
static int loss_opt_vec(PyObject *o, const char *name, npy_intp n, int out, float **data) {
    *data = NULL;
    if (o == Py_None) return 0;
    PyArrayObject *a = loss_vec(o, name, n, out);
    if (!a) return -1;
    *data = (float *)PyArray_DATA(a);
    return 0;
}

/* Fails unless arrays a and b share no memory. */
static int loss_disjoint(PyArrayObject *a, const char *an, PyArrayObject *b, const char *bn) {
    const char *pa = PyArray_BYTES(a), *pb = PyArray_BYTES(b);
    if (pa < pb + PyArray_NBYTES(b) && pb < pa + PyArray_NBYTES(a)) {
        PyErr_Format(PyExc_ValueError, "%s and %s must not overlap in memory", an, bn);
        return -1;
    }
    return 0;
}

/* Fails unless lo <= x <= hi (NaN fails). */
static int loss_range(double x, const char *name, double lo, double hi) {
    if (!(x >= lo && x <= hi)) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: expected a number in [%g, %g], got %g", name, lo, hi, x);
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    return 0;
}

/* The logits (N, V) of a row-wise loss and its targets (N) int32 in [0, V). */
static int loss_logits(PyObject *ol, PyObject *ot, PyArrayObject **logits,
                       PyArrayObject **targets) {
    *logits = arr_check(ol, "logits", NPY_FLOAT32, 2, 0);
    if (!*logits) return -1;
    npy_intp N = PyArray_DIM(*logits, 0), V = PyArray_DIM(*logits, 1);
    if (N < 1 || V < 1 || N > INT32_MAX || V > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "logits: expected shape (N, V) with 1 <= N, V < 2^31, "
                     "got (%zd, %zd)", (Py_ssize_t)N, (Py_ssize_t)V);
        return -1;
    }
    *targets = arr_check(ot, "targets", NPY_INT32, 1, 0);
    if (!*targets || dim_check(*targets, "targets", 0, N) || ids_check(*targets, "targets", (int)V))
        return -1;
    return finite_check(*logits, "logits");
}

/* crossentropy_forward(losses|None, logits, targets, mask|None) -> mean loss (NaN if the
 * mask selects no row). */
static PyObject *py_crossentropy_forward(PyObject *self, PyObject *args) {
    PyObject *olosses, *ologits, *otargets, *omask;
    if (!PyArg_ParseTuple(args, "OOOO", &olosses, &ologits, &otargets, &omask)) return NULL;
    PyArrayObject *logits, *targets;
    if (loss_logits(ologits, otargets, &logits, &targets)) return NULL;
    int N = (int)PyArray_DIM(logits, 0), V = (int)PyArray_DIM(logits, 1);
    float *mask, *losses;
    if (loss_opt_vec(omask, "mask", N, 0, &mask) || loss_opt_vec(olosses, "losses", N, 1, &losses))
        return NULL;
    if (losses && loss_disjoint((PyArrayObject *)olosses, "losses", logits, "logits")) return NULL;
    const float *x = PyArray_DATA(logits);
    const int32_t *t = PyArray_DATA(targets);
    float loss;
    Py_BEGIN_ALLOW_THREADS;
    loss = gl_crossentropy_forward(losses, x, t, mask, N, V);
    Py_END_ALLOW_THREADS;
    return PyFloat_FromDouble(loss);
}

/* crossentropy_backward(dlogits, logits, targets, mask|None, dloss): dlogits += gradient; if
 * dlogits is the logits array itself, the gradient overwrites it. */
static PyObject *py_crossentropy_backward(PyObject *self, PyObject *args) {
    PyObject *odl, *ologits, *otargets, *omask;
    float dloss;
    if (!PyArg_ParseTuple(args, "OOOOf", &odl, &ologits, &otargets, &omask, &dloss)) return NULL;
    PyArrayObject *logits, *targets;
    if (loss_logits(ologits, otargets, &logits, &targets)) return NULL;
    int N = (int)PyArray_DIM(logits, 0), V = (int)PyArray_DIM(logits, 1);
    PyArrayObject *dl = arr_check(odl, "dlogits", NPY_FLOAT32, 2, 1);
    if (!dl || dim_check(dl, "dlogits", 0, N) || dim_check(dl, "dlogits", 1, V)) return NULL;
    float *mask;
    if (loss_opt_vec(omask, "mask", N, 0, &mask) || loss_range(dloss, "dloss", -GL_FLT_MAX, GL_FLT_MAX))
        return NULL;
    if (PyArray_DATA(dl) != PyArray_DATA(logits) && loss_disjoint(dl, "dlogits", logits, "logits"))
        return NULL;
    float *d = PyArray_DATA(dl);
    const float *x = PyArray_DATA(logits);
    const int32_t *t = PyArray_DATA(targets);
    Py_BEGIN_ALLOW_THREADS;
    gl_crossentropy_backward(d, x, t, mask, dloss, N, V);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* logprobs_forward(logp, entropy|None, logits, targets, temperature). */
static PyObject *py_logprobs_forward(PyObject *self, PyObject *args) {
    PyObject *ologp, *oent, *ologits, *otargets;
    float temperature;
    if (!PyArg_ParseTuple(args, "OOOOf", &ologp, &oent, &ologits, &otargets, &temperature))
        return NULL;
    PyArrayObject *logits, *targets;
    if (loss_logits(ologits, otargets, &logits, &targets)) return NULL;
    int N = (int)PyArray_DIM(logits, 0), V = (int)PyArray_DIM(logits, 1);
    PyArrayObject *lp = loss_vec(ologp, "logp", N, 1);
    float *ent;
    if (!lp || loss_opt_vec(oent, "entropy", N, 1, &ent) ||
        loss_range(temperature, "temperature", GL_FLT_MIN, GL_FLT_MAX) ||
        loss_disjoint(lp, "logp", logits, "logits"))
        return NULL;
    if (ent && loss_disjoint((PyArrayObject *)oent, "entropy", logits, "logits")) return NULL;
    float *l = PyArray_DATA(lp);
    const float *x = PyArray_DATA(logits);
    const int32_t *t = PyArray_DATA(targets);
    Py_BEGIN_ALLOW_THREADS;
    gl_logprobs_forward(l, ent, x, t, temperature, N, V);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* logprobs_backward(dlogits, logits, targets, dlogp, dentropy|None, temperature). */
static PyObject *py_logprobs_backward(PyObject *self, PyObject *args) {
    PyObject *odl, *ologits, *otargets, *odlogp, *odent;
    float temperature;
    if (!PyArg_ParseTuple(args, "OOOOOf", &odl, &ologits, &otargets, &odlogp, &odent,
                          &temperature))
        return NULL;
    PyArrayObject *logits, *targets;
    if (loss_logits(ologits, otargets, &logits, &targets)) return NULL;
    int N = (int)PyArray_DIM(logits, 0), V = (int)PyArray_DIM(logits, 1);
    PyArrayObject *dl = arr_check(odl, "dlogits", NPY_FLOAT32, 2, 1);
    if (!dl || dim_check(dl, "dlogits", 0, N) || dim_check(dl, "dlogits", 1, V) ||
        loss_disjoint(dl, "dlogits", logits, "logits"))
        return NULL;
    PyArrayObject *dlp = loss_vec(odlogp, "dlogp", N, 0);
    float *dent;
    if (!dlp || loss_opt_vec(odent, "dentropy", N, 0, &dent) ||
        loss_range(temperature, "temperature", GL_FLT_MIN, GL_FLT_MAX))
        return NULL;
    float *d = PyArray_DATA(dl);
    const float *x = PyArray_DATA(logits), *g = PyArray_DATA(dlp);
    const int32_t *t = PyArray_DATA(targets);
    Py_BEGIN_ALLOW_THREADS;
    gl_logprobs_backward(d, x, t, g, dent, temperature, N, V);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* The rewards (P, K) of a ranking loss and its optional counts (P) int32 in [2, K]. */
static int loss_rankings(PyObject *orw, PyObject *oc, PyArrayObject **rewards,
                         const int32_t **counts) {
    *rewards = arr_check(orw, "rewards", NPY_FLOAT32, 2, 0);
    if (!*rewards) return -1;
    npy_intp P = PyArray_DIM(*rewards, 0), K = PyArray_DIM(*rewards, 1);
    if (P < 1 || K < 2 || P > INT32_MAX || K > 65536) {
        PyErr_Format(PyExc_ValueError, "rewards: expected shape (P, K) with P >= 1 prompts and "
                     "2 <= K <= 65536 ranked responses, got (%zd, %zd)", (Py_ssize_t)P,
                     (Py_ssize_t)K);
        return -1;
    }
    *counts = NULL;
    if (oc != Py_None) {
        PyArrayObject *c = arr_check(oc, "counts", NPY_INT32, 1, 0);
        if (!c || dim_check(c, "counts", 0, P)) return -1;
        const int32_t *k = PyArray_DATA(c);
        for (npy_intp p = 0; p < P; p++) {
            if (k[p] < 2 || k[p] > K) {
                PyErr_Format(PyExc_ValueError, "counts: expected 2 <= counts[p] <= K = %zd, got "
                             "%d at index %zd", (Py_ssize_t)K, (int)k[p], (Py_ssize_t)p);
                return -1;
            }
        }
        *counts = k;
    }
    /* only the ranked entries must be finite: those past counts[p] are ignored */
    const float *r = PyArray_DATA(*rewards);
    for (npy_intp p = 0; p < P; p++) {
        int k = *counts ? (*counts)[p] : (int)K;
        for (int i = 0; i < k; i++) {
            if (!isfinite(r[p * K + i])) {
                PyErr_SetString(PyExc_ValueError,
                                "rewards: expected finite numbers, found NaN or Inf");
                return -1;
            }
        }
    }
    return 0;
}

/* ranking_loss_forward(losses|None, rewards, counts|None, margin, center_coef)
 * -> (loss, accuracy, mean pair margin). */
static PyObject *py_ranking_loss_forward(PyObject *self, PyObject *args) {
    PyObject *olosses, *orw, *oc;
    float margin, coef;
    if (!PyArg_ParseTuple(args, "OOOff", &olosses, &orw, &oc, &margin, &coef)) return NULL;
    PyArrayObject *rewards;
    const int32_t *counts;
    if (loss_rankings(orw, oc, &rewards, &counts)) return NULL;
    int P = (int)PyArray_DIM(rewards, 0), K = (int)PyArray_DIM(rewards, 1);
    float *losses;
    if (loss_opt_vec(olosses, "losses", P, 1, &losses) ||
        loss_range(margin, "margin", -GL_FLT_MAX, GL_FLT_MAX) ||
        loss_range(coef, "center_coef", 0.0, GL_FLT_MAX))
        return NULL;
    const float *r = PyArray_DATA(rewards);
    gl_ranking_stats st;
    float loss;
    Py_BEGIN_ALLOW_THREADS;
    loss = gl_ranking_loss_forward(losses, &st, r, counts, margin, coef, P, K);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(ddd)", (double)loss, (double)st.accuracy, (double)st.margin);
}

/* ranking_loss_backward(drewards, rewards, counts|None, margin, center_coef, dloss). */
static PyObject *py_ranking_loss_backward(PyObject *self, PyObject *args) {
    PyObject *od, *orw, *oc;
    float margin, coef, dloss;
    if (!PyArg_ParseTuple(args, "OOOfff", &od, &orw, &oc, &margin, &coef, &dloss)) return NULL;
    PyArrayObject *rewards;
    const int32_t *counts;
    if (loss_rankings(orw, oc, &rewards, &counts)) return NULL;
    int P = (int)PyArray_DIM(rewards, 0), K = (int)PyArray_DIM(rewards, 1);
    PyArrayObject *d = arr_check(od, "drewards", NPY_FLOAT32, 2, 1);
    if (!d || dim_check(d, "drewards", 0, P) || dim_check(d, "drewards", 1, K) ||
        loss_range(margin, "margin", -GL_FLT_MAX, GL_FLT_MAX) ||
        loss_range(coef, "center_coef", 0.0, GL_FLT_MAX) ||
        loss_range(dloss, "dloss", -GL_FLT_MAX, GL_FLT_MAX))
        return NULL;
    float *dr = PyArray_DATA(d);
    const float *r = PyArray_DATA(rewards);
    Py_BEGIN_ALLOW_THREADS;
    gl_ranking_loss_backward(dr, r, counts, margin, coef, dloss, P, K);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* Parses the N-vectors names[0..n) of a per-token loss from objs into data; the first one
 * sets N (*N). Inputs are checked finite. */
static int loss_vecs(PyObject **objs, const char **names, int n, const float **data, int *N) {
    npy_intp len = -1;
    for (int i = 0; i < n; i++) {
        PyArrayObject *a = loss_vec(objs[i], names[i], len, 0);
        if (!a) return -1;
        len = PyArray_DIM(a, 0);
        data[i] = PyArray_DATA(a);
    }
    *N = (int)len;
    return 0;
}

/* ppo_policy_forward(logp, old_logp, advantages, mask|None, clip)
 * -> (loss, clipfrac, approx_kl, ratio_mean). */
static PyObject *py_ppo_policy_forward(PyObject *self, PyObject *args) {
    PyObject *o[3], *omask;
    float clip;
    if (!PyArg_ParseTuple(args, "OOOOf", &o[0], &o[1], &o[2], &omask, &clip)) return NULL;
    const char *names[3] = {"logp", "old_logp", "advantages"};
    const float *x[3];
    float *mask;
    int N;
    if (loss_vecs(o, names, 3, x, &N) || loss_opt_vec(omask, "mask", N, 0, &mask) ||
        loss_range(clip, "clip", 0.0, INFINITY))
        return NULL;
    gl_ppo_stats st;
    float loss;
    Py_BEGIN_ALLOW_THREADS;
    loss = gl_ppo_policy_forward(&st, x[0], x[1], x[2], mask, clip, N);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(dddd)", (double)loss, (double)st.clipfrac, (double)st.approx_kl,
                         (double)st.ratio_mean);
}

/* ppo_policy_backward(dlogp, logp, old_logp, advantages, mask|None, clip, dloss). */
static PyObject *py_ppo_policy_backward(PyObject *self, PyObject *args) {
    PyObject *od, *o[3], *omask;
    float clip, dloss;
    if (!PyArg_ParseTuple(args, "OOOOOff", &od, &o[0], &o[1], &o[2], &omask, &clip, &dloss))
        return NULL;
    const char *names[3] = {"logp", "old_logp", "advantages"};
    const float *x[3];
    float *mask;
    int N;
    if (loss_vecs(o, names, 3, x, &N)) return NULL;
    PyArrayObject *d = loss_vec(od, "dlogp", N, 1);
    if (!d || loss_opt_vec(omask, "mask", N, 0, &mask) || loss_range(clip, "clip", 0.0, INFINITY)
        || loss_range(dloss, "dloss", -GL_FLT_MAX, GL_FLT_MAX))
        return NULL;
    float *dl = PyArray_DATA(d);
    Py_BEGIN_ALLOW_THREADS;
    gl_ppo_policy_backward(dl, x[0], x[1], x[2], mask, clip, dloss, N);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* value_loss_forward(values, old_values, returns, mask|None, clip) -> (loss, clipfrac). */
static PyObject *py_value_loss_forward(PyObject *self, PyObject *args) {
    PyObject *o[3], *omask;
    float clip;
    if (!PyArg_ParseTuple(args, "OOOOf", &o[0], &o[1], &o[2], &omask, &clip)) return NULL;
    const char *names[3] = {"values", "old_values", "returns"};
    const float *x[3];
    float *mask;
    int N;
    if (loss_vecs(o, names, 3, x, &N) || loss_opt_vec(omask, "mask", N, 0, &mask) ||
        loss_range(clip, "clip", 0.0, INFINITY))
        return NULL;
    float loss, clipfrac;
    Py_BEGIN_ALLOW_THREADS;
    loss = gl_value_loss_forward(&clipfrac, x[0], x[1], x[2], mask, clip, N);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(dd)", (double)loss, (double)clipfrac);
}

/* value_loss_backward(dvalues, values, old_values, returns, mask|None, clip, dloss). */
static PyObject *py_value_loss_backward(PyObject *self, PyObject *args) {
    PyObject *od, *o[3], *omask;
    float clip, dloss;
    if (!PyArg_ParseTuple(args, "OOOOOff", &od, &o[0], &o[1], &o[2], &omask, &clip, &dloss))
        return NULL;
    const char *names[3] = {"values", "old_values", "returns"};
    const float *x[3];
    float *mask;
    int N;
    if (loss_vecs(o, names, 3, x, &N)) return NULL;
    PyArrayObject *d = loss_vec(od, "dvalues", N, 1);
    if (!d || loss_opt_vec(omask, "mask", N, 0, &mask) || loss_range(clip, "clip", 0.0, INFINITY)
        || loss_range(dloss, "dloss", -GL_FLT_MAX, GL_FLT_MAX))
        return NULL;
    float *dv = PyArray_DATA(d);
    Py_BEGIN_ALLOW_THREADS;
    gl_value_loss_backward(dv, x[0], x[1], x[2], mask, clip, dloss, N);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static int loss_kl_kind(int kind) {
    if (kind < 1 || kind > 3) {
        PyErr_Format(PyExc_ValueError, "kind: expected 1 (k1), 2 (k2) or 3 (k3), got %d", kind);
        return -1;
    }
    return 0;
}

/* kl_forward(kl, logp, ref_logp, kind). */
static PyObject *py_kl_forward(PyObject *self, PyObject *args) {
    PyObject *okl, *o[2];
    int kind;
    if (!PyArg_ParseTuple(args, "OOOi", &okl, &o[0], &o[1], &kind)) return NULL;
    const char *names[2] = {"logp", "ref_logp"};
    const float *x[2];
    int N;
    if (loss_vecs(o, names, 2, x, &N) || loss_kl_kind(kind)) return NULL;
    PyArrayObject *k = loss_vec(okl, "kl", N, 1);
    if (!k) return NULL;
    float *kl = PyArray_DATA(k);
    Py_BEGIN_ALLOW_THREADS;
    gl_kl_forward(kl, x[0], x[1], kind, N);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* kl_backward(dlogp, logp, ref_logp, dkl, kind). */
static PyObject *py_kl_backward(PyObject *self, PyObject *args) {
    PyObject *od, *o[3];
    int kind;
    if (!PyArg_ParseTuple(args, "OOOOi", &od, &o[0], &o[1], &o[2], &kind)) return NULL;
    const char *names[3] = {"logp", "ref_logp", "dkl"};
    const float *x[3];
    int N;
    if (loss_vecs(o, names, 3, x, &N) || loss_kl_kind(kind)) return NULL;
    PyArrayObject *d = loss_vec(od, "dlogp", N, 1);
    if (!d) return NULL;
    float *dl = PyArray_DATA(d);
    Py_BEGIN_ALLOW_THREADS;
    gl_kl_backward(dl, x[0], x[1], x[2], kind, N);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static const char *dpo_names[4] = {"policy_chosen_logp", "policy_rejected_logp",
                                   "ref_chosen_logp", "ref_rejected_logp"};

/* dpo_forward(chosen_rewards|None, rejected_rewards|None, policy_chosen_logp,
 * policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)
 * -> (loss, accuracy, mean chosen reward, mean rejected reward, mean margin). */
static PyObject *py_dpo_forward(PyObject *self, PyObject *args) {
    PyObject *oc, *orj, *o[4];
    float beta;
    if (!PyArg_ParseTuple(args, "OOOOOOf", &oc, &orj, &o[0], &o[1], &o[2], &o[3], &beta))
        return NULL;
    const float *x[4];
    float *cr, *rr;
    int P;
    if (loss_vecs(o, dpo_names, 4, x, &P) || loss_opt_vec(oc, "chosen_rewards", P, 1, &cr) ||
        loss_opt_vec(orj, "rejected_rewards", P, 1, &rr) ||
        loss_range(beta, "beta", GL_FLT_MIN, GL_FLT_MAX))
        return NULL;
    gl_dpo_stats st;
    float loss;
    Py_BEGIN_ALLOW_THREADS;
    loss = gl_dpo_forward(cr, rr, &st, x[0], x[1], x[2], x[3], beta, P);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(ddddd)", (double)loss, (double)st.accuracy, (double)st.chosen_reward,
                         (double)st.rejected_reward, (double)st.margin);
}

/* dpo_backward(dpolicy_chosen, dpolicy_rejected, policy_chosen_logp, policy_rejected_logp,
 * ref_chosen_logp, ref_rejected_logp, beta, dloss). */
static PyObject *py_dpo_backward(PyObject *self, PyObject *args) {
    PyObject *odc, *odr, *o[4];
    float beta, dloss;
    if (!PyArg_ParseTuple(args, "OOOOOOff", &odc, &odr, &o[0], &o[1], &o[2], &o[3], &beta,
                          &dloss))
        return NULL;
    const float *x[4];
    int P;
    if (loss_vecs(o, dpo_names, 4, x, &P)) return NULL;
    PyArrayObject *dc = loss_vec(odc, "dpolicy_chosen", P, 1);
    PyArrayObject *dr = dc ? loss_vec(odr, "dpolicy_rejected", P, 1) : NULL;
    if (!dr || loss_disjoint(dc, "dpolicy_chosen", dr, "dpolicy_rejected") ||
        loss_range(beta, "beta", GL_FLT_MIN, GL_FLT_MAX) ||
        loss_range(dloss, "dloss", -GL_FLT_MAX, GL_FLT_MAX))
        return NULL;
    float *gc = PyArray_DATA(dc), *gr = PyArray_DATA(dr);
    Py_BEGIN_ALLOW_THREADS;
    gl_dpo_backward(gc, gr, x[0], x[1], x[2], x[3], beta, dloss, P);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *py_losses_isa(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(gl_losses_isa());
}

static PyObject *py_losses_set_isa(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (gl_losses_set_isa(name) != 0) {
        PyErr_Format(PyExc_ValueError, "losses_set_isa: '%s' is not available on this CPU/build "
                     "(expected 'avx2', 'portable' or 'auto')", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ==== optim ============================================================================= */

/* adamw_update(p, m, v, g, lr, beta1, beta2, eps, weight_decay, t): one AdamW step in place
 * on p, m, v (float32, same shape, C-contiguous, distinct) from g. */
static PyObject *py_adamw_update(PyObject *self, PyObject *args) {
    PyObject *op, *om, *ov, *og;
    float lr, b1, b2, eps, wd;
    long long t;
    if (!PyArg_ParseTuple(args, "OOOOfffffL", &op, &om, &ov, &og, &lr, &b1, &b2, &eps, &wd, &t))
        return NULL;
    PyArrayObject *p = arr_check(op, "p", NPY_FLOAT32, -1, 1);
    PyArrayObject *m = p ? arr_check(om, "m", NPY_FLOAT32, -1, 1) : NULL;
    PyArrayObject *v = m ? arr_check(ov, "v", NPY_FLOAT32, -1, 1) : NULL;
    PyArrayObject *g = v ? arr_check(og, "g", NPY_FLOAT32, -1, 0) : NULL;
    if (!g) return NULL;
    PyArrayObject *arrs[4] = {p, m, v, g};
    const char *names[4] = {"p", "m", "v", "g"};
    for (int i = 1; i < 4; i++) {
        if (!PyArray_SAMESHAPE(p, arrs[i])) {
            PyErr_Format(PyExc_ValueError, "%s: expected the shape of p", names[i]);
            return NULL;
        }
        for (int j = 0; j < i; j++)
            if (loss_disjoint(arrs[j], names[j], arrs[i], names[i])) return NULL;
    }
    if (loss_range(lr, "lr", 0.0, GL_FLT_MAX) || loss_range(b1, "beta1", 0.0, 0.99999994) ||
        loss_range(b2, "beta2", 0.0, 0.99999994) || loss_range(eps, "eps", 0.0, GL_FLT_MAX) ||
        loss_range(wd, "weight_decay", 0.0, GL_FLT_MAX))
        return NULL;
    if (t < 1 || t > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "t: expected a step number >= 1, got %lld", t);
        return NULL;
    }
    float *pp = PyArray_DATA(p), *mp = PyArray_DATA(m), *vp = PyArray_DATA(v);
    const float *gp = PyArray_DATA(g);
    size_t n = (size_t)PyArray_SIZE(p);
    Py_BEGIN_ALLOW_THREADS;
    gl_adamw_update(pp, mp, vp, gp, lr, b1, b2, eps, wd, (int)t, n);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* sumsq(x) -> float: sum of squares of a float32 array (any shape), in double. */
static PyObject *py_sumsq(PyObject *self, PyObject *args) {
    PyObject *ox;
    if (!PyArg_ParseTuple(args, "O", &ox)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    const float *xp = PyArray_DATA(x);
    size_t n = (size_t)PyArray_SIZE(x);
    double s;
    Py_BEGIN_ALLOW_THREADS;
    s = gl_sumsq(xp, n);
    Py_END_ALLOW_THREADS;
    return PyFloat_FromDouble(s);
}

/* scale(x, s): x *= s in place (float32 array, any shape). */
static PyObject *py_scale(PyObject *self, PyObject *args) {
    PyObject *ox;
    float s;
    if (!PyArg_ParseTuple(args, "Of", &ox, &s)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 1);
    if (!x || loss_range(s, "s", -GL_FLT_MAX, GL_FLT_MAX)) return NULL;
    float *xp = PyArray_DATA(x);
    size_t n = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS;
    gl_scale(xp, s, n);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* lr_cosine(step, warmup, total, lr_max, lr_min) -> float. */
static PyObject *py_lr_cosine(PyObject *self, PyObject *args) {
    int step, warmup, total;
    float lr_max, lr_min;
    if (!PyArg_ParseTuple(args, "iiiff", &step, &warmup, &total, &lr_max, &lr_min)) return NULL;
    if (step < 0 || warmup < 0 || total < 0) {
        PyErr_Format(PyExc_ValueError, "lr_cosine: expected step, warmup, total >= 0, got %d, "
                     "%d, %d", step, warmup, total);
        return NULL;
    }
    if (loss_range(lr_max, "lr_max", 0.0, GL_FLT_MAX) || loss_range(lr_min, "lr_min", 0.0, lr_max))
        return NULL;
    return PyFloat_FromDouble(gl_lr_cosine(step, warmup, total, lr_max, lr_min));
}

/* ==== tokenizer ========================================================================= */

/* ==== module ============================================================================ */

static PyMethodDef core_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_VARARGS, "set_num_threads(n): OpenMP threads."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"sgemm", py_sgemm, METH_VARARGS,
     "sgemm(transA, transB, A, B, C, alpha=1, beta=0): C = alpha op(A) op(B) + beta C."},
    {"gemm_isa", py_gemm_isa, METH_NOARGS, "gemm_isa() -> the SIMD path gl_sgemm uses."},
    {"gemm_set_isa", py_gemm_set_isa, METH_VARARGS, "gemm_set_isa(name): force a SIMD path."},
    /* -- layers -- */

    /* -- model -- */

    /* -- losses -- */
    {"crossentropy_forward", py_crossentropy_forward, METH_VARARGS,
     "crossentropy_forward(losses|None, logits, targets, mask|None) -> mean loss."},
    {"crossentropy_backward", py_crossentropy_backward, METH_VARARGS,
     "crossentropy_backward(dlogits, logits, targets, mask|None, dloss): dlogits += grad."},
    {"logprobs_forward", py_logprobs_forward, METH_VARARGS,
     "logprobs_forward(logp, entropy|None, logits, targets, temperature)."},
    {"logprobs_backward", py_logprobs_backward, METH_VARARGS,
     "logprobs_backward(dlogits, logits, targets, dlogp, dentropy|None, temperature)."},
    {"ranking_loss_forward", py_ranking_loss_forward, METH_VARARGS,
     "ranking_loss_forward(losses|None, rewards, counts|None, margin, center_coef) -> "
     "(loss, accuracy, margin)."},
    {"ranking_loss_backward", py_ranking_loss_backward, METH_VARARGS,
     "ranking_loss_backward(drewards, rewards, counts|None, margin, center_coef, dloss)."},
    {"ppo_policy_forward", py_ppo_policy_forward, METH_VARARGS,
     "ppo_policy_forward(logp, old_logp, advantages, mask|None, clip) -> "
     "(loss, clipfrac, approx_kl, ratio_mean)."},
    {"ppo_policy_backward", py_ppo_policy_backward, METH_VARARGS,
     "ppo_policy_backward(dlogp, logp, old_logp, advantages, mask|None, clip, dloss)."},
    {"value_loss_forward", py_value_loss_forward, METH_VARARGS,
     "value_loss_forward(values, old_values, returns, mask|None, clip) -> (loss, clipfrac)."},
    {"value_loss_backward", py_value_loss_backward, METH_VARARGS,
     "value_loss_backward(dvalues, values, old_values, returns, mask|None, clip, dloss)."},
    {"kl_forward", py_kl_forward, METH_VARARGS, "kl_forward(kl, logp, ref_logp, kind 1|2|3)."},
    {"kl_backward", py_kl_backward, METH_VARARGS,
     "kl_backward(dlogp, logp, ref_logp, dkl, kind 1|2|3)."},
    {"dpo_forward", py_dpo_forward, METH_VARARGS,
     "dpo_forward(chosen_rewards|None, rejected_rewards|None, policy_chosen_logp, "
     "policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta) -> "
     "(loss, accuracy, chosen_reward, rejected_reward, margin)."},
    {"dpo_backward", py_dpo_backward, METH_VARARGS,
     "dpo_backward(dpolicy_chosen, dpolicy_rejected, policy_chosen_logp, policy_rejected_logp, "
     "ref_chosen_logp, ref_rejected_logp, beta, dloss)."},
    {"losses_isa", py_losses_isa, METH_NOARGS, "losses_isa() -> the SIMD path of the softmax."},
    {"losses_set_isa", py_losses_set_isa, METH_VARARGS,
     "losses_set_isa(name): force 'avx2', 'portable' or 'auto'."},

    /* -- optim -- */
    {"adamw_update", py_adamw_update, METH_VARARGS,
     "adamw_update(p, m, v, g, lr, beta1, beta2, eps, weight_decay, t): one AdamW step."},
    {"sumsq", py_sumsq, METH_VARARGS, "sumsq(x) -> sum of squares (float64 accumulation)."},
    {"scale", py_scale, METH_VARARGS, "scale(x, s): x *= s in place."},
    {"lr_cosine", py_lr_cosine, METH_VARARGS,
     "lr_cosine(step, warmup, total, lr_max, lr_min) -> learning rate."},

    /* -- tokenizer -- */

    {NULL, NULL, 0, NULL}};

static struct PyModuleDef core_module = {PyModuleDef_HEAD_INIT, "gptlab._core",
                                         "gptlab's C core (see csrc/).", -1, core_methods};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    /* -- types -- */

    return m;
}
