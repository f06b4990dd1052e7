/* gptlab._core: CPython + NumPy bindings of the C core.
 *
 * This file only parses arguments, validates them (dtype, rank, shape, contiguity, ranges),
 * releases the GIL and calls the gl_ functions; the math lives in the other csrc/ files.
 * Arrays are taken as they are, never silently copied: the Python layer (gptlab/ modules) converts
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

static PyObject *py_gemm_precision(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(gl_gemm_precision());
}

static PyObject *py_gemm_set_precision(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (gl_gemm_set_precision(name) != 0) {
        if (strcmp(name, "bfloat16") == 0)
            PyErr_SetString(PyExc_ValueError, "gemm_set_precision: 'bfloat16' needs a CPU with "
                            "AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake and later)");
        else
            PyErr_Format(PyExc_ValueError, "gemm_set_precision: unknown precision '%s' "
                         "(expected 'float32' or 'bfloat16')", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_gemm_bf16_kernel(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(gl_gemm_bf16_kernel());
}

static PyObject *py_gemm_set_bf16_kernel(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (gl_gemm_set_bf16_kernel(name) != 0) {
        PyErr_Format(PyExc_ValueError, "gemm_set_bf16_kernel: '%s' is not available on this "
                     "CPU/OS/build (expected 'amx', 'avx512bf16' or 'auto')", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ==== layers ============================================================================ */

/* Bindings of the layers.c kernels, for tests and notebooks. Forward bindings return fresh
 * arrays; backward bindings ACCUMULATE (+=) into the gradient arrays they are given (exactly as
 * the C kernels do) and return None. "(..., C)" means any number of leading axes, which are
 * flattened into the N rows the kernel sees. */

/* Writes a's shape as "(2, 3, 4)" into buf. */
static void shape_str(char *buf, size_t len, PyArrayObject *a) {
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < PyArray_NDIM(a) && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, d ? ", %zd" : "%zd",
                              (Py_ssize_t)PyArray_DIM(a, d));
    if (PyArray_NDIM(a) == 1 && k < len) k += (size_t)snprintf(buf + k, len - k, ",");
    if (k < len) snprintf(buf + k, len - k, ")");
}

/* Checks that a has exactly the shape of ref (a is named name, ref is named refname). */
static int shape_like(PyArrayObject *a, const char *name, PyArrayObject *ref,
                      const char *refname) {
    int same = PyArray_NDIM(a) == PyArray_NDIM(ref);
    for (int d = 0; same && d < PyArray_NDIM(a); d++)
        same = PyArray_DIM(a, d) == PyArray_DIM(ref, d);
    if (!same) {
        char sa[128], sr[128];
        shape_str(sa, sizeof sa, a);
        shape_str(sr, sizeof sr, ref);
        PyErr_Format(PyExc_ValueError, "%s: expected shape %s (as %s), got %s", name, sr,
                     refname, sa);
        return -1;
    }
    return 0;
}

/* Checks that a has the shape of ref without its last axis, then last (-1: no last axis). */
static int shape_lead(PyArrayObject *a, const char *name, PyArrayObject *ref,
                      const char *refname, npy_intp last) {
    int nd = PyArray_NDIM(ref) - 1 + (last >= 0);
    int same = PyArray_NDIM(a) == nd;
    for (int d = 0; same && d < PyArray_NDIM(ref) - 1; d++)
        same = PyArray_DIM(a, d) == PyArray_DIM(ref, d);
    if (same && last >= 0) same = PyArray_DIM(a, nd - 1) == last;
    if (!same) {
        char sa[128], sr[128];
        shape_str(sa, sizeof sa, a);
        shape_str(sr, sizeof sr, ref);
        if (last >= 0)
            PyErr_Format(PyExc_ValueError, "%s: expected the shape of %s %s with last axis "
                         "%zd, got %s", name, refname, sr, (Py_ssize_t)last, sa);
        else
            PyErr_Format(PyExc_ValueError, "%s: expected the shape of %s %s without its last "
                         "axis, got %s", name, refname, sr, sa);
        return -1;
    }
    return 0;
}

/* For an array (..., C): *N = product of the leading axes, *C = the last axis (>= 1). */
static int rows_cols(PyArrayObject *a, const char *name, int *N, int *C) {
    int nd = PyArray_NDIM(a);
    if (nd < 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected an array of shape (..., C), got 0-D", name);
        return -1;
    }
    npy_intp n = 1, c = PyArray_DIM(a, nd - 1);
    for (int d = 0; d < nd - 1; d++) n *= PyArray_DIM(a, d);
    if (c < 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected a last axis of size >= 1, got 0", name);
        return -1;
    }
    if (n > INT32_MAX || c > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes must fit in int32", name);
        return -1;
    }
    *N = (int)n;
    *C = (int)c;
    return 0;
}

/* Checks that every size of a fits in int32 (the kernels' index type). */
static int dims_fit(PyArrayObject *a, const char *name) {
    for (int d = 0; d < PyArray_NDIM(a); d++)
        if (PyArray_DIM(a, d) > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: sizes must fit in int32", name);
            return -1;
        }
    return 0;
}

static PyArrayObject *new_f32(int nd, const npy_intp *dims) {
    return (PyArrayObject *)PyArray_EMPTY(nd, (npy_intp *)dims, NPY_FLOAT32, 0);
}

#define F32(a) ((float *)PyArray_DATA(a))
#define I32(a) ((int32_t *)PyArray_DATA(a))

/* embedding_forward(idx, wte, wpe) -> out (B,T,C). */
static PyObject *py_embedding_forward(PyObject *self, PyObject *args) {
    PyObject *oi, *oe, *op;
    if (!PyArg_ParseTuple(args, "OOO", &oi, &oe, &op)) return NULL;
    PyArrayObject *idx = arr_check(oi, "idx", NPY_INT32, 2, 0);
    if (!idx) return NULL;
    PyArrayObject *wte = arr_check(oe, "wte", NPY_FLOAT32, 2, 0);
    if (!wte) return NULL;
    PyArrayObject *wpe = arr_check(op, "wpe", NPY_FLOAT32, 2, 0);
    if (!wpe) return NULL;
    if (dims_fit(idx, "idx") || dims_fit(wte, "wte") || dims_fit(wpe, "wpe")) return NULL;
    npy_intp B = PyArray_DIM(idx, 0), T = PyArray_DIM(idx, 1), C = PyArray_DIM(wte, 1);
    if (dim_check(wpe, "wpe", 1, C)) return NULL;
    if (T > PyArray_DIM(wpe, 0)) {
        PyErr_Format(PyExc_ValueError, "idx: sequence length %zd exceeds the %zd positions of "
                     "wpe", (Py_ssize_t)T, (Py_ssize_t)PyArray_DIM(wpe, 0));
        return NULL;
    }
    if (ids_check(idx, "idx", (int)PyArray_DIM(wte, 0))) return NULL;
    npy_intp dims[3] = {B, T, C};
    PyArrayObject *out = new_f32(3, dims);
    if (!out) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_embedding_forward(F32(out), I32(idx), F32(wte), F32(wpe), (int)B, (int)T, (int)C);
    Py_END_ALLOW_THREADS;
    return (PyObject *)out;
}

/* embedding_backward(dwte, dwpe, dout, idx): dwte, dwpe accumulate. */
static PyObject *py_embedding_backward(PyObject *self, PyObject *args) {
    PyObject *oge, *ogp, *od, *oi;
    if (!PyArg_ParseTuple(args, "OOOO", &oge, &ogp, &od, &oi)) return NULL;
    PyArrayObject *dwte = arr_check(oge, "dwte", NPY_FLOAT32, 2, 1);
    if (!dwte) return NULL;
    PyArrayObject *dwpe = arr_check(ogp, "dwpe", NPY_FLOAT32, 2, 1);
    if (!dwpe) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, 3, 0);
    if (!dout) return NULL;
    PyArrayObject *idx = arr_check(oi, "idx", NPY_INT32, 2, 0);
    if (!idx) return NULL;
    if (dims_fit(dwte, "dwte") || dims_fit(dwpe, "dwpe") || dims_fit(dout, "dout")) return NULL;
    npy_intp B = PyArray_DIM(idx, 0), T = PyArray_DIM(idx, 1), C = PyArray_DIM(dwte, 1);
    if (dim_check(dwpe, "dwpe", 1, C) || dim_check(dout, "dout", 0, B) ||
        dim_check(dout, "dout", 1, T) || dim_check(dout, "dout", 2, C))
        return NULL;
    if (T > PyArray_DIM(dwpe, 0)) {
        PyErr_Format(PyExc_ValueError, "idx: sequence length %zd exceeds the %zd positions of "
                     "dwpe", (Py_ssize_t)T, (Py_ssize_t)PyArray_DIM(dwpe, 0));
        return NULL;
    }
    if (ids_check(idx, "idx", (int)PyArray_DIM(dwte, 0))) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_embedding_backward(F32(dwte), F32(dwpe), F32(dout), I32(idx), (int)B, (int)T, (int)C);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* The weight and bias of a layernorm over x's last axis: float32 vectors of its size C; N is
 * the number of rows. Returns -1 with the error set. */
static int layernorm_params(PyObject *ow, PyObject *ob, PyArrayObject *x, const char *xname,
                            PyArrayObject **w, PyArrayObject **b, int *N, int *C) {
    if (!(*w = arr_check(ow, "w", NPY_FLOAT32, 1, 0))) return -1;
    if (!(*b = arr_check(ob, "b", NPY_FLOAT32, 1, 0))) return -1;
    if (rows_cols(x, xname, N, C) || dim_check(*w, "w", 0, *C) || dim_check(*b, "b", 0, *C))
        return -1;
    return 0;
}

/* layernorm_forward(x, w, b) -> (out, mean, rstd). */
static PyObject *py_layernorm_forward(PyObject *self, PyObject *args) {
    PyObject *ox, *ow, *ob;
    if (!PyArg_ParseTuple(args, "OOO", &ox, &ow, &ob)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0), *w, *b;
    int N, C;
    if (!x || layernorm_params(ow, ob, x, "x", &w, &b, &N, &C)) return NULL;
    int nd = PyArray_NDIM(x);
    PyArrayObject *out = new_f32(nd, PyArray_DIMS(x));
    PyArrayObject *mean = new_f32(nd - 1, PyArray_DIMS(x));
    PyArrayObject *rstd = new_f32(nd - 1, PyArray_DIMS(x));
    if (!out || !mean || !rstd) {
        Py_XDECREF(out);
        Py_XDECREF(mean);
        Py_XDECREF(rstd);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    gl_layernorm_forward(F32(out), F32(mean), F32(rstd), F32(x), F32(w), F32(b), N, C);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(NNN)", out, mean, rstd);
}

/* residual_layernorm_forward(a, x, w, b) -> (res, out, mean, rstd): res = a + x, then
 * layernorm_forward(res, w, b). */
static PyObject *py_residual_layernorm_forward(PyObject *self, PyObject *args) {
    PyObject *oa, *ox, *ow, *ob;
    if (!PyArg_ParseTuple(args, "OOOO", &oa, &ox, &ow, &ob)) return NULL;
    PyArrayObject *a = arr_check(oa, "a", NPY_FLOAT32, -1, 0);
    if (!a) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0), *w, *b;
    if (!x || shape_like(x, "x", a, "a")) return NULL;
    int N, C;
    if (layernorm_params(ow, ob, a, "a", &w, &b, &N, &C)) return NULL;
    int nd = PyArray_NDIM(a);
    PyArrayObject *res = new_f32(nd, PyArray_DIMS(a));
    PyArrayObject *out = new_f32(nd, PyArray_DIMS(a));
    PyArrayObject *mean = new_f32(nd - 1, PyArray_DIMS(a));
    PyArrayObject *rstd = new_f32(nd - 1, PyArray_DIMS(a));
    if (!res || !out || !mean || !rstd) {
        Py_XDECREF(res);
        Py_XDECREF(out);
        Py_XDECREF(mean);
        Py_XDECREF(rstd);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    gl_residual_layernorm_forward(F32(res), F32(out), F32(mean), F32(rstd), F32(a), F32(x),
                                  F32(w), F32(b), N, C);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(NNNN)", res, out, mean, rstd);
}

/* layernorm_backward(dx, dw, db, dout, x, w, mean, rstd): dx, dw, db accumulate. */
static PyObject *py_layernorm_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *odw, *odb, *od, *ox, *ow, *om, *or;
    int accumulate = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOO|p", &odx, &odw, &odb, &od, &ox, &ow, &om, &or,
                          &accumulate))
        return NULL;
    PyArrayObject *dx = arr_check(odx, "dx", NPY_FLOAT32, -1, 1);
    if (!dx) return NULL;
    PyArrayObject *dw = arr_check(odw, "dw", NPY_FLOAT32, 1, 1);
    if (!dw) return NULL;
    PyArrayObject *db = arr_check(odb, "db", NPY_FLOAT32, 1, 1);
    if (!db) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, -1, 0);
    if (!dout) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *w = arr_check(ow, "w", NPY_FLOAT32, 1, 0);
    if (!w) return NULL;
    PyArrayObject *mean = arr_check(om, "mean", NPY_FLOAT32, -1, 0);
    if (!mean) return NULL;
    PyArrayObject *rstd = arr_check(or, "rstd", NPY_FLOAT32, -1, 0);
    if (!rstd) return NULL;
    int N, C;
    if (rows_cols(x, "x", &N, &C) || shape_like(dx, "dx", x, "x") ||
        shape_like(dout, "dout", x, "x") || dim_check(w, "w", 0, C) ||
        dim_check(dw, "dw", 0, C) || dim_check(db, "db", 0, C) ||
        shape_lead(mean, "mean", x, "x", -1) || shape_lead(rstd, "rstd", x, "x", -1))
        return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_layernorm_backward(F32(dx), F32(dw), F32(db), F32(dout), F32(x), F32(w), F32(mean),
                          F32(rstd), N, C, accumulate);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* matmul_forward(x, w, b=None) -> out (..., OC). */
static PyObject *py_matmul_forward(PyObject *self, PyObject *args) {
    PyObject *ox, *ow, *ob = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O", &ox, &ow, &ob)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *w = arr_check(ow, "w", NPY_FLOAT32, 2, 0);
    if (!w) return NULL;
    PyArrayObject *b = NULL;
    if (ob != Py_None && !(b = arr_check(ob, "b", NPY_FLOAT32, 1, 0))) return NULL;
    int N, C;
    if (rows_cols(x, "x", &N, &C) || dim_check(w, "w", 0, C) || dims_fit(w, "w")) return NULL;
    npy_intp OC = PyArray_DIM(w, 1);
    if (b && dim_check(b, "b", 0, OC)) return NULL;
    int nd = PyArray_NDIM(x);
    npy_intp dims[NPY_MAXDIMS];
    memcpy(dims, PyArray_DIMS(x), sizeof(npy_intp) * (size_t)nd);
    dims[nd - 1] = OC;
    PyArrayObject *out = new_f32(nd, dims);
    if (!out) return NULL;
    const float *bp = b ? F32(b) : NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_matmul_forward(F32(out), F32(x), F32(w), bp, N, C, (int)OC);
    Py_END_ALLOW_THREADS;
    return (PyObject *)out;
}

/* matmul_backward(dx, dw, db, dout, x, w, accumulate=True): dx (or None) accumulates; dw, db
 * (or None) accumulate, or are written when accumulate is false. */
static PyObject *py_matmul_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *odw, *odb, *od, *ox, *ow;
    int accumulate = 1;
    if (!PyArg_ParseTuple(args, "OOOOOO|p", &odx, &odw, &odb, &od, &ox, &ow, &accumulate))
        return NULL;
    PyArrayObject *dx = NULL, *db = NULL;
    if (odx != Py_None && !(dx = arr_check(odx, "dx", NPY_FLOAT32, -1, 1))) return NULL;
    PyArrayObject *dw = arr_check(odw, "dw", NPY_FLOAT32, 2, 1);
    if (!dw) return NULL;
    if (odb != Py_None && !(db = arr_check(odb, "db", NPY_FLOAT32, 1, 1))) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, -1, 0);
    if (!dout) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *w = arr_check(ow, "w", NPY_FLOAT32, 2, 0);
    if (!w) return NULL;
    int N, C;
    if (rows_cols(x, "x", &N, &C) || dim_check(w, "w", 0, C) || dims_fit(w, "w") ||
        shape_like(dw, "dw", w, "w"))
        return NULL;
    npy_intp OC = PyArray_DIM(w, 1);
    if ((dx && shape_like(dx, "dx", x, "x")) || (db && dim_check(db, "db", 0, OC)) ||
        shape_lead(dout, "dout", x, "x", OC))
        return NULL;
    float *dxp = dx ? F32(dx) : NULL, *dbp = db ? F32(db) : NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_matmul_backward(dxp, F32(dw), dbp, F32(dout), F32(x), F32(w), N, C, (int)OC, accumulate);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* Checks qkv (B,T,3C) and n_head for attention; sets B, T, C. */
static int attention_sizes(PyArrayObject *qkv, int NH, int *B, int *T, int *C) {
    if (dims_fit(qkv, "qkv")) return -1;
    npy_intp C3 = PyArray_DIM(qkv, 2);
    if (C3 < 3 || C3 % 3 != 0) {
        PyErr_Format(PyExc_ValueError, "qkv: expected a last axis 3*C with C >= 1, got %zd",
                     (Py_ssize_t)C3);
        return -1;
    }
    if (NH < 1 || (C3 / 3) % NH != 0) {
        PyErr_Format(PyExc_ValueError, "n_head: expected a positive divisor of C = %zd, got %d",
                     (Py_ssize_t)(C3 / 3), NH);
        return -1;
    }
    if (PyArray_DIM(qkv, 0) * NH > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "qkv: B * n_head must fit in int32");
        return -1;
    }
    *B = (int)PyArray_DIM(qkv, 0);
    *T = (int)PyArray_DIM(qkv, 1);
    *C = (int)(C3 / 3);
    return 0;
}

/* attention_forward(qkv, n_head) -> (out (B,T,C), lse (B,NH,T)). */
static PyObject *py_attention_forward(PyObject *self, PyObject *args) {
    PyObject *oq;
    int NH, B, T, C;
    if (!PyArg_ParseTuple(args, "Oi", &oq, &NH)) return NULL;
    PyArrayObject *qkv = arr_check(oq, "qkv", NPY_FLOAT32, 3, 0);
    if (!qkv || attention_sizes(qkv, NH, &B, &T, &C)) return NULL;
    npy_intp od[3] = {B, T, C}, ld[3] = {B, NH, T};
    PyArrayObject *out = new_f32(3, od), *lse = new_f32(3, ld);
    if (!out || !lse) {
        Py_XDECREF(out);
        Py_XDECREF(lse);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    gl_attention_forward(F32(out), F32(lse), F32(qkv), B, T, C, NH);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(NN)", out, lse);
}

/* attention_backward(dqkv, dout, qkv, out, lse, n_head[, accumulate=True]): dqkv accumulates
 * (or is overwritten). */
static PyObject *py_attention_backward(PyObject *self, PyObject *args) {
    PyObject *odq, *od, *oq, *oo, *ol;
    int NH, B, T, C, accumulate = 1;
    if (!PyArg_ParseTuple(args, "OOOOOi|p", &odq, &od, &oq, &oo, &ol, &NH, &accumulate))
        return NULL;
    PyArrayObject *dqkv = arr_check(odq, "dqkv", NPY_FLOAT32, 3, 1);
    if (!dqkv) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, 3, 0);
    if (!dout) return NULL;
    PyArrayObject *qkv = arr_check(oq, "qkv", NPY_FLOAT32, 3, 0);
    if (!qkv) return NULL;
    PyArrayObject *out = arr_check(oo, "out", NPY_FLOAT32, 3, 0);
    if (!out) return NULL;
    PyArrayObject *lse = arr_check(ol, "lse", NPY_FLOAT32, 3, 0);
    if (!lse) return NULL;
    if (attention_sizes(qkv, NH, &B, &T, &C) || shape_like(dqkv, "dqkv", qkv, "qkv") ||
        shape_lead(dout, "dout", qkv, "qkv", C) || shape_like(out, "out", dout, "dout") ||
        dim_check(lse, "lse", 0, B) || dim_check(lse, "lse", 1, NH) ||
        dim_check(lse, "lse", 2, T))
        return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_attention_backward(F32(dqkv), F32(dout), F32(qkv), F32(out), F32(lse), B, T, C, NH,
                          accumulate);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* gelu_forward(x) -> out, any shape. */
static PyObject *py_gelu_forward(PyObject *self, PyObject *args) {
    PyObject *ox;
    if (!PyArg_ParseTuple(args, "O", &ox)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (!out) return NULL;
    size_t N = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS;
    gl_gelu_forward(F32(out), F32(x), N);
    Py_END_ALLOW_THREADS;
    return (PyObject *)out;
}

/* gelu_backward(dx, x, dout[, accumulate=True]): dx accumulates (or is overwritten). */
static PyObject *py_gelu_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *ox, *od;
    int accumulate = 1;
    if (!PyArg_ParseTuple(args, "OOO|p", &odx, &ox, &od, &accumulate)) return NULL;
    PyArrayObject *dx = arr_check(odx, "dx", NPY_FLOAT32, -1, 1);
    if (!dx) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, -1, 0);
    if (!dout) return NULL;
    if (shape_like(dx, "dx", x, "x") || shape_like(dout, "dout", x, "x")) return NULL;
    size_t N = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS;
    gl_gelu_backward(F32(dx), F32(x), F32(dout), N, accumulate);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* residual_forward(a, b) -> out = a + b, same shapes. */
static PyObject *py_residual_forward(PyObject *self, PyObject *args) {
    PyObject *oa, *ob;
    if (!PyArg_ParseTuple(args, "OO", &oa, &ob)) return NULL;
    PyArrayObject *a = arr_check(oa, "a", NPY_FLOAT32, -1, 0);
    if (!a) return NULL;
    PyArrayObject *b = arr_check(ob, "b", NPY_FLOAT32, -1, 0);
    if (!b || shape_like(b, "b", a, "a")) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(a), PyArray_DIMS(a));
    if (!out) return NULL;
    size_t N = (size_t)PyArray_SIZE(a);
    Py_BEGIN_ALLOW_THREADS;
    gl_residual_forward(F32(out), F32(a), F32(b), N);
    Py_END_ALLOW_THREADS;
    return (PyObject *)out;
}

/* residual_backward(da, db, dout): da, db accumulate. */
static PyObject *py_residual_backward(PyObject *self, PyObject *args) {
    PyObject *oda, *odb, *od;
    if (!PyArg_ParseTuple(args, "OOO", &oda, &odb, &od)) return NULL;
    PyArrayObject *da = arr_check(oda, "da", NPY_FLOAT32, -1, 1);
    if (!da) return NULL;
    PyArrayObject *db = arr_check(odb, "db", NPY_FLOAT32, -1, 1);
    if (!db) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, -1, 0);
    if (!dout) return NULL;
    if (shape_like(da, "da", dout, "dout") || shape_like(db, "db", dout, "dout")) return NULL;
    size_t N = (size_t)PyArray_SIZE(dout);
    Py_BEGIN_ALLOW_THREADS;
    gl_residual_backward(F32(da), F32(db), F32(dout), N);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* scalar_head_forward(x, w, b) -> out (...): x (..., C), w (C,), b (1,). */
static PyObject *py_scalar_head_forward(PyObject *self, PyObject *args) {
    PyObject *ox, *ow, *ob;
    if (!PyArg_ParseTuple(args, "OOO", &ox, &ow, &ob)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *w = arr_check(ow, "w", NPY_FLOAT32, 1, 0);
    if (!w) return NULL;
    PyArrayObject *b = arr_check(ob, "b", NPY_FLOAT32, 1, 0);
    if (!b) return NULL;
    int N, C;
    if (rows_cols(x, "x", &N, &C) || dim_check(w, "w", 0, C) || dim_check(b, "b", 0, 1))
        return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x) - 1, PyArray_DIMS(x));
    if (!out) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_scalar_head_forward(F32(out), F32(x), F32(w), F32(b), N, C);
    Py_END_ALLOW_THREADS;
    return (PyObject *)out;
}

/* scalar_head_backward(dx, dw, db, dout, x, w): dx (or None), dw, db accumulate. */
static PyObject *py_scalar_head_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *odw, *odb, *od, *ox, *ow;
    if (!PyArg_ParseTuple(args, "OOOOOO", &odx, &odw, &odb, &od, &ox, &ow)) return NULL;
    PyArrayObject *dx = NULL;
    if (odx != Py_None && !(dx = arr_check(odx, "dx", NPY_FLOAT32, -1, 1))) return NULL;
    PyArrayObject *dw = arr_check(odw, "dw", NPY_FLOAT32, 1, 1);
    if (!dw) return NULL;
    PyArrayObject *db = arr_check(odb, "db", NPY_FLOAT32, 1, 1);
    if (!db) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, -1, 0);
    if (!dout) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *w = arr_check(ow, "w", NPY_FLOAT32, 1, 0);
    if (!w) return NULL;
    int N, C;
    if (rows_cols(x, "x", &N, &C) || (dx && shape_like(dx, "dx", x, "x")) ||
        dim_check(w, "w", 0, C) || dim_check(dw, "dw", 0, C) || dim_check(db, "db", 0, 1) ||
        shape_lead(dout, "dout", x, "x", -1))
        return NULL;
    float *dxp = dx ? F32(dx) : NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_scalar_head_backward(dxp, F32(dw), F32(db), F32(dout), F32(x), F32(w), N, C);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

#undef F32
#undef I32


/* ==== model ============================================================================= */

/* _core.Model: owns one gl_model. Its parameter and gradient arenas are handed to Python as
 * NumPy views that keep the Model alive. `busy` is set while a call runs without the GIL, so
 * a second thread using the same model gets an error instead of a data race. */
typedef struct {
    PyObject_HEAD gl_model *m;
    int B, T;      /* shape of the last forward still held in the activations (0: none) */
    int loss_ready; /* the last forward computed a loss: backward_loss() may run */
    int busy;
} ModelObject;

static int model_enter(ModelObject *self) {
    if (!self->m) {
        PyErr_SetString(PyExc_ValueError, "Model: not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Model: already in use by another thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static void Model_dealloc(ModelObject *self) {
    gl_model_free(self->m);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"vocab_size", "block_size", "n_layer", "n_head", "n_embd", NULL};
    gl_config c;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiii", kwlist, &c.vocab_size, &c.block_size,
                                     &c.n_layer, &c.n_head, &c.n_embd))
        return -1;
    const char *err = gl_config_check(&c);
    if (err) {
        PyErr_Format(PyExc_ValueError, "GPTConfig: %s", err);
        return -1;
    }
    if (self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model: already initialised");
        return -1;
    }
    gl_model *m;
    Py_BEGIN_ALLOW_THREADS;
    m = gl_model_new(&c);
    Py_END_ALLOW_THREADS;
    if (!m) {
        PyErr_NoMemory();
        return -1;
    }
    self->m = m;
    return 0;
}

/* A 1-D float32 view of n floats at p whose base object is the model. */
static PyObject *arena_view(ModelObject *self, float *p, size_t n) {
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *a = PyArray_SimpleNewFromData(1, dims, NPY_FLOAT32, p);
    if (!a) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)a, (PyObject *)self) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static PyObject *Model_params(ModelObject *self, PyObject *noargs) {
    if (!self->m) return PyErr_Format(PyExc_ValueError, "Model: not initialised");
    return arena_view(self, gl_model_params(self->m), gl_model_num_params(self->m));
}

static PyObject *Model_grads(ModelObject *self, PyObject *noargs) {
    if (!self->m) return PyErr_Format(PyExc_ValueError, "Model: not initialised");
    return arena_view(self, gl_model_grads(self->m), gl_model_num_params(self->m));
}

/* tensors() -> list of (name, offset, shape): the layout of the arenas. */
static PyObject *Model_tensors(ModelObject *self, PyObject *noargs) {
    if (!self->m) return PyErr_Format(PyExc_ValueError, "Model: not initialised");
    int n = gl_model_num_tensors(self->m);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        const gl_tensor_info *t = gl_model_tensor(self->m, i);
        PyObject *shape = t->ndim == 2 ? Py_BuildValue("(ii)", t->shape[0], t->shape[1])
                                       : Py_BuildValue("(i)", t->shape[0]);
        PyObject *item = shape ? Py_BuildValue("(snN)", t->name, (Py_ssize_t)t->offset, shape)
                               : NULL;
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *Model_init_weights(ModelObject *self, PyObject *args) {
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "K", &seed)) return NULL;
    if (model_enter(self)) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_model_init_weights(self->m, (uint64_t)seed);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *Model_zero_grad(ModelObject *self, PyObject *noargs) {
    if (model_enter(self)) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gl_model_zero_grad(self->m);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    Py_RETURN_NONE;
}

/* Validates idx (B,T) int32 against the config and makes room for it. */
static PyArrayObject *check_idx(ModelObject *self, PyObject *o, const char *name) {
    const gl_config *c = gl_model_config(self->m);
    PyArrayObject *a = arr_check(o, name, NPY_INT32, 2, 0);
    if (!a) return NULL;
    npy_intp B = PyArray_DIM(a, 0), T = PyArray_DIM(a, 1);
    if (B < 1 || T < 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected a non-empty (B, T) array, got (%zd, %zd)",
                     name, (Py_ssize_t)B, (Py_ssize_t)T);
        return NULL;
    }
    if (T > c->block_size) {
        PyErr_Format(PyExc_ValueError, "%s: sequence length T=%zd exceeds block_size=%d", name,
                     (Py_ssize_t)T, c->block_size);
        return NULL;
    }
    if ((double)B * (double)T > 1e8) {
        PyErr_Format(PyExc_ValueError, "%s: batch of %zd x %zd tokens is too large", name,
                     (Py_ssize_t)B, (Py_ssize_t)T);
        return NULL;
    }
    if (ids_check(a, name, c->vocab_size)) return NULL;
    /* growing the arena drops the activations: a failure after this point (bad targets, no
     * memory) must not leave backward() running on a forward pass that is gone */
    self->B = self->T = 0, self->loss_ready = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS;
    rc = gl_model_reserve(self->m, (int)B, (int)T);
    Py_END_ALLOW_THREADS;
    if (rc) {
        PyErr_NoMemory();
        return NULL;
    }
    return a;
}

/* forward(idx, with_logits=True) -> new array: logits (B,T,V) or final hidden states (B,T,C). */
static PyObject *Model_forward(ModelObject *self, PyObject *args) {
    PyObject *oidx;
    int with_logits = 1;
    if (!PyArg_ParseTuple(args, "O|p", &oidx, &with_logits)) return NULL;
    if (model_enter(self)) return NULL;
    PyArrayObject *idx = check_idx(self, oidx, "idx");
    if (!idx) {
        self->busy = 0;
        return NULL;
    }
    const gl_config *c = gl_model_config(self->m);
    int B = (int)PyArray_DIM(idx, 0), T = (int)PyArray_DIM(idx, 1);
    npy_intp dims[3] = {B, T, with_logits ? c->vocab_size : c->n_embd};
    PyObject *out = PyArray_SimpleNew(3, dims, NPY_FLOAT32);
    if (!out) {
        self->busy = 0;
        return NULL;
    }
    const int32_t *ids = PyArray_DATA(idx);
    float *dst = PyArray_DATA((PyArrayObject *)out);
    size_t n = (size_t)B * T * dims[2];
    Py_BEGIN_ALLOW_THREADS;
    gl_model_forward(self->m, ids, B, T, with_logits);
    memcpy(dst, with_logits ? gl_model_logits(self->m) : gl_model_hidden(self->m),
           n * sizeof(float));
    Py_END_ALLOW_THREADS;
    self->B = B, self->T = T, self->loss_ready = 0, self->busy = 0;
    return out;
}

/* loss(idx, targets, mask=None) -> mean cross-entropy over the positions where mask != 0. */
static PyObject *Model_loss(ModelObject *self, PyObject *args) {
    PyObject *oidx, *otgt, *omask = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O", &oidx, &otgt, &omask)) return NULL;
    if (model_enter(self)) return NULL;
    PyArrayObject *idx = check_idx(self, oidx, "idx"), *tgt = NULL, *mask = NULL;
    const gl_config *c = gl_model_config(self->m);
    if (!idx) goto fail;
    if (!(tgt = arr_check(otgt, "targets", NPY_INT32, 2, 0))) goto fail;
    if (dim_check(tgt, "targets", 0, PyArray_DIM(idx, 0)) ||
        dim_check(tgt, "targets", 1, PyArray_DIM(idx, 1)) ||
        ids_check(tgt, "targets", c->vocab_size))
        goto fail;
    if (omask != Py_None) {
        if (!(mask = arr_check(omask, "mask", NPY_FLOAT32, 2, 0))) goto fail;
        if (dim_check(mask, "mask", 0, PyArray_DIM(idx, 0)) ||
            dim_check(mask, "mask", 1, PyArray_DIM(idx, 1)) || finite_check(mask, "mask"))
            goto fail;
        const float *mk = PyArray_DATA(mask);
        npy_intp n = PyArray_SIZE(mask), any = 0;
        for (npy_intp i = 0; i < n; i++) any |= mk[i] != 0.0f;
        if (!any) {
            PyErr_SetString(PyExc_ValueError, "mask: selects no position (the loss is a mean "
                                              "over the masked positions)");
            goto fail;
        }
    }
    int B = (int)PyArray_DIM(idx, 0), T = (int)PyArray_DIM(idx, 1);
    const int32_t *ids = PyArray_DATA(idx), *tg = PyArray_DATA(tgt);
    const float *mk = mask ? PyArray_DATA(mask) : NULL;
    float loss;
    Py_BEGIN_ALLOW_THREADS;
    gl_model_forward(self->m, ids, B, T, 1);
    loss = gl_model_loss(self->m, tg, mk);
    Py_END_ALLOW_THREADS;
    self->B = B, self->T = T, self->loss_ready = 1, self->busy = 0;
    return PyFloat_FromDouble(loss);
fail:
    self->busy = 0;
    return NULL;
}

/* backward(dlogits=None, dhidden=None, accumulate=True): back-propagate upstream gradients of
 * the last forward; with neither, the gradient of the last loss(). Accumulates into the
 * gradient arena, or writes every gradient over it when accumulate is false. */
static PyObject *Model_backward(ModelObject *self, PyObject *args) {
    PyObject *odl = Py_None, *odh = Py_None;
    int accumulate = 1;
    if (!PyArg_ParseTuple(args, "|OOp", &odl, &odh, &accumulate)) return NULL;
    if (model_enter(self)) return NULL;
    const gl_config *c = gl_model_config(self->m);
    PyArrayObject *dl = NULL, *dh = NULL;
    if (self->B == 0) {
        PyErr_SetString(PyExc_ValueError, "backward: no forward pass to go back through (call "
                                          "forward or the loss first)");
        goto fail;
    }
    if (odl != Py_None) {
        if (!(dl = arr_check(odl, "dlogits", NPY_FLOAT32, 3, 0))) goto fail;
        if (dim_check(dl, "dlogits", 0, self->B) || dim_check(dl, "dlogits", 1, self->T) ||
            dim_check(dl, "dlogits", 2, c->vocab_size) || finite_check(dl, "dlogits"))
            goto fail;
    }
    if (odh != Py_None) {
        if (!(dh = arr_check(odh, "dhidden", NPY_FLOAT32, 3, 0))) goto fail;
        if (dim_check(dh, "dhidden", 0, self->B) || dim_check(dh, "dhidden", 1, self->T) ||
            dim_check(dh, "dhidden", 2, c->n_embd) || finite_check(dh, "dhidden"))
            goto fail;
    }
    if (!dl && !dh && !self->loss_ready) {
        PyErr_SetString(PyExc_ValueError, "backward: without dlogits/dhidden it needs a loss "
                                          "forward first (model.forward(idx, targets))");
        goto fail;
    }
    const float *pdl = dl ? PyArray_DATA(dl) : NULL, *pdh = dh ? PyArray_DATA(dh) : NULL;
    int use_loss = !dl && !dh;
    Py_BEGIN_ALLOW_THREADS;
    if (use_loss) gl_model_backward_loss(self->m, accumulate);
    else gl_model_backward(self->m, pdl, pdh, accumulate);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    Py_RETURN_NONE;
fail:
    self->busy = 0;
    return NULL;
}

/* Called by gl_model_generate between tokens, without the GIL: lets Ctrl-C stop it. */
static int generate_interrupt(void *ctx) {
    (void)ctx;
    PyGILState_STATE st = PyGILState_Ensure();
    int stop = PyErr_CheckSignals() != 0;
    PyGILState_Release(st);
    return stop;
}

/* generate(tokens, prompt_len, max_new, temperature, top_k, top_p, stop, seed, want_logprobs)
 * -> logprobs (B, max_new) or None. tokens (B, Tmax) int32 is filled in place. */
static PyObject *Model_generate(ModelObject *self, PyObject *args) {
    PyObject *otok, *olen, *ostop;
    int max_new, top_k, want_lp;
    float temperature, top_p;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOiffiOKp", &otok, &olen, &max_new, &temperature, &top_p,
                          &top_k, &ostop, &seed, &want_lp))
        return NULL;
    if (model_enter(self)) return NULL;
    const gl_config *c = gl_model_config(self->m);
    PyArrayObject *tok, *len, *stop;
    PyObject *lp = NULL;
    if (!(tok = arr_check(otok, "tokens", NPY_INT32, 2, 1))) goto fail;
    if (!(len = arr_check(olen, "prompt_len", NPY_INT32, 1, 0))) goto fail;
    if (!(stop = arr_check(ostop, "stop", NPY_INT32, 1, 0))) goto fail;
    npy_intp B = PyArray_DIM(tok, 0), Tmax = PyArray_DIM(tok, 1);
    if (B < 1 || dim_check(len, "prompt_len", 0, B) || ids_check(stop, "stop", c->vocab_size))
        goto fail;
    if (max_new < 1) {
        PyErr_Format(PyExc_ValueError, "max_new_tokens: expected >= 1, got %d", max_new);
        goto fail;
    }
    if (!(temperature >= 0.0f) || !isfinite(temperature) || !(top_p > 0.0f && top_p <= 1.0f) ||
        top_k < 0) {
        PyErr_SetString(PyExc_ValueError, "sampling: expected temperature >= 0, 0 < top_p <= 1, "
                                          "top_k >= 0");
        goto fail;
    }
    const int32_t *pl = PyArray_DATA(len);
    for (npy_intp b = 0; b < B; b++) {
        if (pl[b] < 1 || (npy_intp)pl[b] + max_new > Tmax || pl[b] + max_new > c->block_size) {
            PyErr_Format(PyExc_ValueError, "generate: row %zd has prompt length %d; need 1 <= "
                         "prompt + max_new_tokens (%d) <= block_size (%d)", (Py_ssize_t)b,
                         (int)pl[b], max_new, c->block_size);
            goto fail;
        }
        const int32_t *row = (const int32_t *)PyArray_DATA(tok) + b * Tmax;
        for (int t = 0; t < pl[b]; t++)
            if (row[t] < 0 || row[t] >= c->vocab_size) {
                PyErr_Format(PyExc_ValueError, "idx: token id %d at (%zd, %d) is out of range "
                             "[0, %d)", (int)row[t], (Py_ssize_t)b, t, c->vocab_size);
                goto fail;
            }
    }
    if (want_lp) {
        npy_intp d[2] = {B, max_new};
        if (!(lp = PyArray_ZEROS(2, d, NPY_FLOAT32, 0))) goto fail;
    }
    int *plen = PyMem_Malloc((size_t)B * sizeof(int));
    if (!plen) {
        PyErr_NoMemory();
        goto fail;
    }
    for (npy_intp b = 0; b < B; b++) plen[b] = pl[b];
    gl_sampling s = {temperature, top_k, top_p, PyArray_DATA(stop), (int)PyArray_SIZE(stop),
                     (uint64_t)seed};
    int32_t *ptok = PyArray_DATA(tok);
    float *plp = lp ? PyArray_DATA((PyArrayObject *)lp) : NULL;
    int produced;
    Py_BEGIN_ALLOW_THREADS;
    produced = gl_model_generate(self->m, ptok, plp, plen, (int)B, (int)Tmax, max_new, &s,
                                 generate_interrupt, NULL);
    Py_END_ALLOW_THREADS;
    PyMem_Free(plen);
    self->B = self->T = 0, self->loss_ready = 0, self->busy = 0;
    if (PyErr_Occurred()) { /* interrupted (KeyboardInterrupt) */
        Py_XDECREF(lp);
        return NULL;
    }
    if (produced < 0) {
        Py_XDECREF(lp);
        return PyErr_NoMemory();
    }
    if (!lp) Py_RETURN_NONE;
    return lp;
fail:
    Py_XDECREF(lp);
    self->busy = 0;
    return NULL;
}

static PyObject *Model_get_config(ModelObject *self, void *closure) {
    if (!self->m) Py_RETURN_NONE;
    const gl_config *c = gl_model_config(self->m);
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i}", "vocab_size", c->vocab_size, "block_size",
                         c->block_size, "n_layer", c->n_layer, "n_head", c->n_head, "n_embd",
                         c->n_embd);
}

static PyMethodDef Model_methods[] = {
    {"params", (PyCFunction)Model_params, METH_NOARGS, "1-D float32 view of the parameters."},
    {"grads", (PyCFunction)Model_grads, METH_NOARGS, "1-D float32 view of the gradients."},
    {"tensors", (PyCFunction)Model_tensors, METH_NOARGS, "[(name, offset, shape)] of the arena."},
    {"init_weights", (PyCFunction)Model_init_weights, METH_VARARGS, "GPT-2 init for a seed."},
    {"zero_grad", (PyCFunction)Model_zero_grad, METH_NOARGS, "Set every gradient to 0."},
    {"forward", (PyCFunction)Model_forward, METH_VARARGS,
     "forward(idx, with_logits=True) -> logits (B,T,V) or hidden states (B,T,C)."},
    {"loss", (PyCFunction)Model_loss, METH_VARARGS,
     "loss(idx, targets, mask=None) -> mean cross-entropy over masked positions."},
    {"backward", (PyCFunction)Model_backward, METH_VARARGS,
     "backward(dlogits=None, dhidden=None, accumulate=True): gradients of the last forward,\n"
     "added to the gradient arena (accumulate) or written over all of it."},
    {"generate", (PyCFunction)Model_generate, METH_VARARGS,
     "generate(tokens, prompt_len, max_new, temperature, top_p, top_k, stop, seed, "
     "want_logprobs) -> logprobs or None; fills tokens in place."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Model_getset[] = {
    {"config", (getter)Model_get_config, NULL, "the config as a dict", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gptlab._core.Model",
    .tp_doc = "A GPT-2 model held by the C core.",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
};

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

/* The logits (N, V) of a row-wise loss (writable if it is to hold the gradient) and its
 * targets (N) int32 in [0, V). */
static int loss_logits(PyObject *ol, PyObject *ot, int writable, PyArrayObject **logits,
                       PyArrayObject **targets) {
    *logits = arr_check(ol, "logits", NPY_FLOAT32, 2, writable);
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
    if (loss_logits(ologits, otargets, 0, &logits, &targets)) return NULL;
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
    if (loss_logits(ologits, otargets, 0, &logits, &targets)) return NULL;
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

/* crossentropy_forward_backward(losses|None, logits, targets, mask|None, dloss) -> mean loss;
 * the gradient for dloss overwrites logits (the training step's loss, one pass). */
static PyObject *py_crossentropy_forward_backward(PyObject *self, PyObject *args) {
    PyObject *olosses, *ologits, *otargets, *omask;
    float dloss;
    if (!PyArg_ParseTuple(args, "OOOOf", &olosses, &ologits, &otargets, &omask, &dloss))
        return NULL;
    PyArrayObject *logits, *targets;
    if (loss_logits(ologits, otargets, 1, &logits, &targets)) return NULL;
    int N = (int)PyArray_DIM(logits, 0), V = (int)PyArray_DIM(logits, 1);
    float *mask, *losses;
    if (loss_opt_vec(omask, "mask", N, 0, &mask) || loss_opt_vec(olosses, "losses", N, 1, &losses) ||
        loss_range(dloss, "dloss", -GL_FLT_MAX, GL_FLT_MAX))
        return NULL;
    if (losses && loss_disjoint((PyArrayObject *)olosses, "losses", logits, "logits")) return NULL;
    float *x = PyArray_DATA(logits);
    const int32_t *t = PyArray_DATA(targets);
    float loss;
    Py_BEGIN_ALLOW_THREADS;
    loss = gl_crossentropy_forward_backward(losses, x, t, mask, dloss, N, V);
    Py_END_ALLOW_THREADS;
    return PyFloat_FromDouble(loss);
}

/* logprobs_forward(logp, entropy|None, logits, targets, temperature). */
static PyObject *py_logprobs_forward(PyObject *self, PyObject *args) {
    PyObject *ologp, *oent, *ologits, *otargets;
    float temperature;
    if (!PyArg_ParseTuple(args, "OOOOf", &ologp, &oent, &ologits, &otargets, &temperature))
        return NULL;
    PyArrayObject *logits, *targets;
    if (loss_logits(ologits, otargets, 0, &logits, &targets)) return NULL;
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
    if (loss_logits(ologits, otargets, 0, &logits, &targets)) return NULL;
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

/* Checks one tensor's p, m, v, g for an AdamW step: float32, C-contiguous, the shape of p,
 * p, m, v writeable (g too if `gwrite`: clipping writes it), no two overlapping. `tag` is ""
 * or an index "[k]" added to the names in the messages. */
static int adamw_tensors(PyObject *const o[4], const char *tag, int gwrite,
                         PyArrayObject *a[4]) {
    static const char *base[4] = {"p", "m", "v", "g"};
    char names[4][48];
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "%s%s", base[i], tag);
        a[i] = arr_check(o[i], names[i], NPY_FLOAT32, -1, i < 3 || gwrite);
        if (!a[i]) return -1;
        if (i > 0 && !PyArray_SAMESHAPE(a[0], a[i])) {
            PyErr_Format(PyExc_ValueError, "%s: expected the shape of %s", names[i], names[0]);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (loss_disjoint(a[j], names[j], a[i], names[i])) return -1;
    }
    return 0;
}

/* Checks AdamW's hyperparameters (weight decay: the caller's). */
static int adamw_hyper(float lr, float b1, float b2, float eps, long long t) {
    if (loss_range(lr, "lr", 0.0, GL_FLT_MAX) || loss_range(b1, "beta1", 0.0, 0.99999994) ||
        loss_range(b2, "beta2", 0.0, 0.99999994) || loss_range(eps, "eps", 0.0, GL_FLT_MAX))
        return -1;
    if (t < 1 || t > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "t: expected a step number >= 1, got %lld", t);
        return -1;
    }
    return 0;
}

/* adamw_update(p, m, v, g, lr, beta1, beta2, eps, weight_decay, t): one AdamW step in place
 * on p, m, v (float32, same shape, C-contiguous, distinct) from g. */
static PyObject *py_adamw_update(PyObject *self, PyObject *args) {
    PyObject *o[4];
    float lr, b1, b2, eps, wd;
    long long t;
    if (!PyArg_ParseTuple(args, "OOOOfffffL", &o[0], &o[1], &o[2], &o[3], &lr, &b1, &b2, &eps,
                          &wd, &t))
        return NULL;
    PyArrayObject *a[4];
    if (adamw_tensors(o, "", 0, a) || adamw_hyper(lr, b1, b2, eps, t) ||
        loss_range(wd, "weight_decay", 0.0, GL_FLT_MAX))
        return NULL;
    float *pp = PyArray_DATA(a[0]), *mp = PyArray_DATA(a[1]), *vp = PyArray_DATA(a[2]);
    const float *gp = PyArray_DATA(a[3]);
    size_t n = (size_t)PyArray_SIZE(a[0]);
    Py_BEGIN_ALLOW_THREADS;
    gl_adamw_update(pp, mp, vp, gp, lr, b1, b2, eps, wd, (int)t, n);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* adamw_update_many(ps, ms, vs, gs, weight_decays, grad_scale, lr, beta1, beta2, eps, t): one
 * AdamW step on every tensor of the lists (equal lengths; each p[k], m[k], v[k], g[k] as in
 * adamw_update), the gradients first scaled by grad_scale in place (clipping; 1: read only). */
static PyObject *py_adamw_update_many(PyObject *self, PyObject *args) {
    PyObject *lists[5], *fast[5] = {NULL, NULL, NULL, NULL, NULL}, *ret = NULL;
    static const char *lnames[5] = {"ps", "ms", "vs", "gs", "weight_decays"};
    float gscale, lr, b1, b2, eps;
    long long t;
    if (!PyArg_ParseTuple(args, "OOOOOfffffL", &lists[0], &lists[1], &lists[2], &lists[3],
                          &lists[4], &gscale, &lr, &b1, &b2, &eps, &t))
        return NULL;
    if (adamw_hyper(lr, b1, b2, eps, t) ||
        loss_range(gscale, "grad_scale", 0.0, GL_FLT_MAX))
        return NULL;
    Py_ssize_t count = 0;
    for (int i = 0; i < 5; i++) {
        fast[i] = PySequence_Fast(lists[i], "adamw_update_many: expected lists of arrays");
        if (!fast[i]) goto done;
        const Py_ssize_t len = PySequence_Fast_GET_SIZE(fast[i]);
        if (i == 0) count = len;
        if (len != count || len > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: expected %zd entries (as ps), got %zd",
                         lnames[i], count, len);
            goto done;
        }
    }
    /* one block for the pointers, sizes and decays of all tensors (bookkeeping, not data) */
    const size_t slots = (size_t)(count ? count : 1);
    float **ptr = PyMem_Malloc(slots * (4 * sizeof(float *) + sizeof(size_t) + sizeof(float)));
    if (!ptr) {
        PyErr_NoMemory();
        goto done;
    }
    size_t *n = (size_t *)(ptr + 4 * slots);
    float *wd = (float *)(n + slots);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *o[4];
        for (int i = 0; i < 4; i++) o[i] = PySequence_Fast_GET_ITEM(fast[i], k);
        char tag[24], wname[40];
        snprintf(tag, sizeof tag, "[%zd]", k);
        snprintf(wname, sizeof wname, "weight_decays%s", tag);
        PyArrayObject *a[4];
        if (adamw_tensors(o, tag, gscale != 1.0f, a)) goto free_block;
        const double w = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast[4], k));
        if ((w == -1.0 && PyErr_Occurred()) || loss_range(w, wname, 0.0, GL_FLT_MAX))
            goto free_block;
        for (int i = 0; i < 4; i++) ptr[i * count + k] = PyArray_DATA(a[i]);
        n[k] = (size_t)PyArray_SIZE(a[0]);
        wd[k] = (float)w;
    }
    Py_BEGIN_ALLOW_THREADS;
    gl_adamw_update_many((int)count, ptr, ptr + count, ptr + 2 * count, ptr + 3 * count, n, wd,
                         gscale, lr, b1, b2, eps, (int)t);
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
free_block:
    PyMem_Free(ptr);
done:
    for (int i = 0; i < 5; i++) Py_XDECREF(fast[i]);
    return ret;
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

/* sumsq_many(xs) -> float: sumsq of every array in the list, added in list order (the bits of
 * summing sumsq(x) in a loop), in one parallel region. */
static PyObject *py_sumsq_many(PyObject *self, PyObject *args) {
    PyObject *oxs, *fast, *ret = NULL;
    if (!PyArg_ParseTuple(args, "O", &oxs)) return NULL;
    fast = PySequence_Fast(oxs, "sumsq_many: expected a list of arrays");
    if (!fast) return NULL;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    if (count > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "sumsq_many: too many arrays");
        Py_DECREF(fast);
        return NULL;
    }
    /* one block for the pointers and sizes (bookkeeping, not data) */
    const size_t slots = (size_t)(count ? count : 1);
    const float **x = PyMem_Malloc(slots * (sizeof(float *) + sizeof(size_t)));
    if (!x) {
        PyErr_NoMemory();
        goto done;
    }
    size_t *n = (size_t *)(x + slots);
    for (Py_ssize_t k = 0; k < count; k++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zd]", k);
        PyArrayObject *a = arr_check(PySequence_Fast_GET_ITEM(fast, k), name, NPY_FLOAT32, -1, 0);
        if (!a) goto done;
        x[k] = PyArray_DATA(a);
        n[k] = (size_t)PyArray_SIZE(a);
    }
    double s;
    Py_BEGIN_ALLOW_THREADS;
    s = gl_sumsq_many((int)count, x, n);
    Py_END_ALLOW_THREADS;
    ret = PyFloat_FromDouble(s);
done:
    PyMem_Free(x);
    Py_DECREF(fast);
    return ret;
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

/* The C tokenizer and trainer travel to Python as capsules (gptlab/tokenizer.py wraps them). */
#define BPE_CAPSULE "gptlab._core.bpe"
#define BPE_TRAINER_CAPSULE "gptlab._core.bpe_trainer"

static void bpe_capsule_free(PyObject *cap) {
    gl_bpe_free((gl_bpe *)PyCapsule_GetPointer(cap, BPE_CAPSULE));
}

static void bpe_trainer_capsule_free(PyObject *cap) {
    gl_bpe_trainer_free((gl_bpe_trainer *)PyCapsule_GetPointer(cap, BPE_TRAINER_CAPSULE));
}

static gl_bpe *bpe_arg(PyObject *o) {
    if (!PyCapsule_IsValid(o, BPE_CAPSULE)) {
        PyErr_Format(PyExc_TypeError, "bpe: expected a tokenizer handle from bpe_new or "
                     "bpe_trainer_train, got %s", Py_TYPE(o)->tp_name);
        return NULL;
    }
    return (gl_bpe *)PyCapsule_GetPointer(o, BPE_CAPSULE);
}

/* Wraps a new tokenizer (or the error in err) into a capsule. */
static PyObject *bpe_wrap(gl_bpe *t, const char *err) {
    if (!t) {
        PyErr_SetString(strcmp(err, "out of memory") == 0 ? PyExc_MemoryError
                                                          : PyExc_ValueError, err);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(t, BPE_CAPSULE, bpe_capsule_free);
    if (!cap) gl_bpe_free(t);
    return cap;
}

/* UTF-8 bytes of the str o. Lone surrogates are written as surrogatepass does (3 bytes each),
 * in a new bytes object stored in *keep (the caller releases it); else *keep is NULL and the
 * buffer is the str's own cached UTF-8. */
static const char *str_utf8(PyObject *o, const char *name, Py_ssize_t *n, PyObject **keep) {
    *keep = NULL;
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: expected str, got %s", name, Py_TYPE(o)->tp_name);
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8AndSize(o, n);
    if (s) return s;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return NULL;
    PyErr_Clear();
    *keep = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass");
    if (!*keep) return NULL;
    *n = PyBytes_GET_SIZE(*keep);
    return PyBytes_AS_STRING(*keep);
}

/* allowed: None or a 1-D int32 array of special token ids. */
static int bpe_allowed_arg(gl_bpe *t, PyObject *o, const int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (o == Py_None) return 0;
    PyArrayObject *a = arr_check(o, "allowed_special", NPY_INT32, 1, 0);
    if (!a || ids_check(a, "allowed_special", gl_bpe_vocab_size(t)) != 0) return -1;
    const int32_t *p = (const int32_t *)PyArray_DATA(a);
    npy_intp k = PyArray_SIZE(a);
    for (npy_intp i = 0; i < k; i++)
        if (!gl_bpe_is_special(t, p[i])) {
            PyErr_Format(PyExc_ValueError, "allowed_special: token %d is not a special token",
                         (int)p[i]);
            return -1;
        }
    if (k > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "allowed_special: too many ids");
        return -1;
    }
    *ids = p;
    *n = (int)k;
    return 0;
}

static PyObject *ids_to_list(const int32_t *ids, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(ids[i]);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    return list;
}

static PyObject *encode_error(ptrdiff_t r) {
    if (r == -2)
        PyErr_SetString(PyExc_ValueError, "encode: text longer than 2**31 - 1 UTF-8 bytes");
    else
        PyErr_NoMemory();
    return NULL;
}

/* bpe_new(blob, off, special, merges): see gl_bpe_new. blob: bytes; off: int32 (V+1);
 * special: int32 (V); merges: int32 (M, 2). */
static PyObject *py_bpe_new(PyObject *self, PyObject *args) {
    PyObject *blob, *ooff, *ospec, *omerges;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyBytes_Type, &blob, &ooff, &ospec, &omerges))
        return NULL;
    PyArrayObject *off = arr_check(ooff, "off", NPY_INT32, 1, 0);
    PyArrayObject *spec = arr_check(ospec, "special", NPY_INT32, 1, 0);
    PyArrayObject *merges = arr_check(omerges, "merges", NPY_INT32, 2, 0);
    if (!off || !spec || !merges) return NULL;
    npy_intp V = PyArray_DIM(spec, 0), M = PyArray_DIM(merges, 0);
    if (V >= INT32_MAX || M >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "bpe_new: too many tokens or merges");
        return NULL;
    }
    if (dim_check(off, "off", 0, V + 1) || dim_check(merges, "merges", 1, 2)) return NULL;
    const int32_t *o = (const int32_t *)PyArray_DATA(off);
    if (V < 1 || o[V] < 0 || (Py_ssize_t)o[V] != PyBytes_GET_SIZE(blob)) {
        PyErr_Format(PyExc_ValueError, "off: expected the last offset to equal len(blob) = %zd",
                     PyBytes_GET_SIZE(blob));
        return NULL;
    }
    char err[256] = "";
    gl_bpe *t;
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(blob);
    const int32_t *s = (const int32_t *)PyArray_DATA(spec), *m = PyArray_DATA(merges);
    Py_BEGIN_ALLOW_THREADS;
    t = gl_bpe_new((int)V, b, o, s, (int)M, m, err, sizeof(err));
    Py_END_ALLOW_THREADS;
    return bpe_wrap(t, err);
}

/* bpe_encode(bpe, text, allowed, as_array) -> list[int], or an int32 array if as_array. */
static PyObject *py_bpe_encode(PyObject *self, PyObject *args) {
    PyObject *cap, *text, *oallowed;
    int as_array = 0;
    if (!PyArg_ParseTuple(args, "OOO|p", &cap, &text, &oallowed, &as_array)) return NULL;
    gl_bpe *t = bpe_arg(cap);
    if (!t) return NULL;
    const int32_t *allowed;
    int n_allowed;
    if (bpe_allowed_arg(t, oallowed, &allowed, &n_allowed) != 0) return NULL;
    Py_ssize_t n;
    PyObject *keep;
    const char *s = str_utf8(text, "text", &n, &keep);
    if (!s) return NULL;
    int32_t *out = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!out) {
        Py_XDECREF(keep);
        return PyErr_NoMemory();
    }
    ptrdiff_t k;
    Py_BEGIN_ALLOW_THREADS;
    k = gl_bpe_encode(t, out, (const uint8_t *)s, (size_t)n, allowed, n_allowed);
    Py_END_ALLOW_THREADS;
    Py_XDECREF(keep);
    PyObject *res = NULL;
    if (k < 0) {
        encode_error(k);
    } else if (as_array) {
        npy_intp dims[1] = {(npy_intp)k};
        res = PyArray_SimpleNew(1, dims, NPY_INT32);
        if (res) memcpy(PyArray_DATA((PyArrayObject *)res), out, (size_t)k * sizeof(int32_t));
    } else {
        res = ids_to_list(out, (size_t)k);
    }
    free(out);
    return res;
}

/* bpe_encode_batch(bpe, texts, allowed) -> list[list[int]], texts encoded in parallel. */
static PyObject *py_bpe_encode_batch(PyObject *self, PyObject *args) {
    PyObject *cap, *otexts, *oallowed;
    if (!PyArg_ParseTuple(args, "OOO", &cap, &otexts, &oallowed)) return NULL;
    gl_bpe *t = bpe_arg(cap);
    if (!t) return NULL;
    const int32_t *allowed;
    int n_allowed;
    if (bpe_allowed_arg(t, oallowed, &allowed, &n_allowed) != 0) return NULL;
    if (!PyList_Check(otexts)) {
        PyErr_Format(PyExc_TypeError, "texts: expected a list of str, got %s",
                     Py_TYPE(otexts)->tp_name);
        return NULL;
    }
    PyObject *texts = PySequence_List(otexts); /* a private copy: items cannot change under us */
    if (!texts) return NULL;
    Py_ssize_t nt = PyList_GET_SIZE(texts);
    if (nt > INT32_MAX) {
        Py_DECREF(texts);
        PyErr_SetString(PyExc_ValueError, "texts: too many texts");
        return NULL;
    }
    const uint8_t **ptrs = calloc((size_t)nt + 1, sizeof(*ptrs));
    size_t *lens = calloc((size_t)nt + 1, sizeof(size_t));
    size_t *offs = calloc((size_t)nt + 1, sizeof(size_t));
    size_t *counts = calloc((size_t)nt + 1, sizeof(size_t));
    PyObject **keep = calloc((size_t)nt + 1, sizeof(PyObject *));
    int32_t *out = NULL;
    PyObject *res = NULL;
    if (!ptrs || !lens || !offs || !counts || !keep) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    for (Py_ssize_t i = 0; i < nt; i++) {
        Py_ssize_t n;
        char name[48];
        snprintf(name, sizeof(name), "texts[%zd]", i);
        const char *s = str_utf8(PyList_GET_ITEM(texts, i), name, &n, &keep[i]);
        if (!s) goto done;
        ptrs[i] = (const uint8_t *)s;
        lens[i] = (size_t)n;
        offs[i] = total;
        total += (size_t)n;
    }
    out = malloc((total + 1) * sizeof(int32_t));
    if (!out) {
        PyErr_NoMemory();
        goto done;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS;
    rc = gl_bpe_encode_batch(t, out, counts, offs, ptrs, lens, (int)nt, allowed, n_allowed);
    Py_END_ALLOW_THREADS;
    if (rc != 0) {
        int too_long = 0;
        for (Py_ssize_t i = 0; i < nt; i++) too_long |= lens[i] > (size_t)INT32_MAX;
        encode_error(too_long ? -2 : -1);
        goto done;
    }
    res = PyList_New(nt);
    for (Py_ssize_t i = 0; res && i < nt; i++) {
        PyObject *l = ids_to_list(out + offs[i], counts[i]);
        if (!l) Py_CLEAR(res);
        else PyList_SET_ITEM(res, i, l);
    }
done:
    if (keep)
        for (Py_ssize_t i = 0; i < nt; i++) Py_XDECREF(keep[i]);
    Py_DECREF(texts);
    free(ptrs);
    free(lens);
    free(offs);
    free(counts);
    free(keep);
    free(out);
    return res;
}

/* bpe_decode(bpe, ids) -> bytes. ids: int32 1-D array of ids in range. */
static PyObject *py_bpe_decode(PyObject *self, PyObject *args) {
    PyObject *cap, *oids;
    if (!PyArg_ParseTuple(args, "OO", &cap, &oids)) return NULL;
    gl_bpe *t = bpe_arg(cap);
    if (!t) return NULL;
    PyArrayObject *ids = arr_check(oids, "ids", NPY_INT32, 1, 0);
    if (!ids || ids_check(ids, "ids", gl_bpe_vocab_size(t)) != 0) return NULL;
    const int32_t *p = (const int32_t *)PyArray_DATA(ids);
    size_t n = (size_t)PyArray_SIZE(ids);
    size_t nb = gl_bpe_decode(t, NULL, p, n);
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nb);
    if (!res) return NULL;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS;
    gl_bpe_decode(t, dst, p, n);
    Py_END_ALLOW_THREADS;
    return res;
}

/* bpe_info(bpe) -> (token bytes: list[bytes], special ids: list[int], merges: int32 (M, 2)) */
static PyObject *py_bpe_info(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    gl_bpe *t = bpe_arg(cap);
    if (!t) return NULL;
    int V = gl_bpe_vocab_size(t), M = gl_bpe_num_merges(t);
    PyObject *toks = PyList_New(V), *specials = PyList_New(0), *merges = NULL;
    if (!toks || !specials) goto fail;
    for (int i = 0; i < V; i++) {
        size_t len;
        const uint8_t *b = gl_bpe_token(t, i, &len);
        PyObject *o = PyBytes_FromStringAndSize((const char *)b, (Py_ssize_t)len);
        if (!o) goto fail;
        PyList_SET_ITEM(toks, i, o);
        if (gl_bpe_is_special(t, i)) {
            PyObject *id = PyLong_FromLong(i);
            int rc = id ? PyList_Append(specials, id) : -1;
            Py_XDECREF(id);
            if (rc != 0) goto fail;
        }
    }
    npy_intp dims[2] = {M, 2};
    merges = PyArray_SimpleNew(2, dims, NPY_INT32);
    if (!merges) goto fail;
    memcpy(PyArray_DATA((PyArrayObject *)merges), gl_bpe_merges(t), (size_t)M * 2 * sizeof(int32_t));
    return Py_BuildValue("(NNN)", toks, specials, merges);
fail:
    Py_XDECREF(toks);
    Py_XDECREF(specials);
    Py_XDECREF(merges);
    return NULL;
}

/* bpe_token_id(bpe, token: bytes) -> id of that special text or ordinary token, or -1. */
static PyObject *py_bpe_token_id(PyObject *self, PyObject *args) {
    PyObject *cap, *b;
    if (!PyArg_ParseTuple(args, "OO!", &cap, &PyBytes_Type, &b)) return NULL;
    gl_bpe *t = bpe_arg(cap);
    if (!t) return NULL;
    return PyLong_FromLong(gl_bpe_token_id(t, (const uint8_t *)PyBytes_AS_STRING(b),
                                           (size_t)PyBytes_GET_SIZE(b)));
}

/* bpe_pretokenize(bpe, text) -> list[str], the pieces of GPT-2's pattern. */
static PyObject *py_bpe_pretokenize(PyObject *self, PyObject *args) {
    PyObject *cap, *text;
    if (!PyArg_ParseTuple(args, "OO", &cap, &text)) return NULL;
    gl_bpe *t = bpe_arg(cap);
    if (!t) return NULL;
    Py_ssize_t n;
    PyObject *keep;
    const char *s = str_utf8(text, "text", &n, &keep);
    if (!s) return NULL;
    size_t *ends = malloc(((size_t)n + 1) * sizeof(size_t));
    if (!ends) {
        Py_XDECREF(keep);
        return PyErr_NoMemory();
    }
    size_t k;
    Py_BEGIN_ALLOW_THREADS;
    k = gl_bpe_pretokenize(t, ends, (const uint8_t *)s, (size_t)n);
    Py_END_ALLOW_THREADS;
    PyObject *res = PyList_New((Py_ssize_t)k);
    for (size_t i = 0, start = 0; res && i < k; start = ends[i++]) {
        PyObject *piece = PyUnicode_DecodeUTF8(s + start, (Py_ssize_t)(ends[i] - start),
                                               "surrogatepass");
        if (!piece) Py_CLEAR(res);
        else PyList_SET_ITEM(res, (Py_ssize_t)i, piece);
    }
    free(ends);
    Py_XDECREF(keep);
    return res;
}

/* bpe_trainer_new(specials: list[bytes]) -> trainer handle. */
static PyObject *py_bpe_trainer_new(PyObject *self, PyObject *args) {
    PyObject *olist;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &olist)) return NULL;
    Py_ssize_t k = PyList_GET_SIZE(olist);
    if (k > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "special_tokens: too many");
        return NULL;
    }
    const uint8_t **str = calloc((size_t)k + 1, sizeof(*str));
    size_t *len = calloc((size_t)k + 1, sizeof(size_t));
    if (!str || !len) {
        free(str);
        free(len);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *b = PyList_GET_ITEM(olist, i);
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) == 0) {
            free(str);
            free(len);
            PyErr_Format(PyExc_TypeError, "special_tokens[%zd]: expected non-empty bytes", i);
            return NULL;
        }
        str[i] = (const uint8_t *)PyBytes_AS_STRING(b);
        len[i] = (size_t)PyBytes_GET_SIZE(b);
    }
    gl_bpe_trainer *tr = gl_bpe_trainer_new((int)k, str, len);
    free(str);
    free(len);
    if (!tr) return PyErr_NoMemory();
    PyObject *cap = PyCapsule_New(tr, BPE_TRAINER_CAPSULE, bpe_trainer_capsule_free);
    if (!cap) gl_bpe_trainer_free(tr);
    return cap;
}

static gl_bpe_trainer *bpe_trainer_arg(PyObject *o) {
    if (!PyCapsule_IsValid(o, BPE_TRAINER_CAPSULE)) {
        PyErr_Format(PyExc_TypeError, "trainer: expected a handle from bpe_trainer_new, got %s",
                     Py_TYPE(o)->tp_name);
        return NULL;
    }
    return (gl_bpe_trainer *)PyCapsule_GetPointer(o, BPE_TRAINER_CAPSULE);
}

/* bpe_trainer_feed(trainer, text): counts the pieces of text. Not thread-safe per trainer. */
static PyObject *py_bpe_trainer_feed(PyObject *self, PyObject *args) {
    PyObject *cap, *text;
    if (!PyArg_ParseTuple(args, "OO", &cap, &text)) return NULL;
    gl_bpe_trainer *tr = bpe_trainer_arg(cap);
    if (!tr) return NULL;
    Py_ssize_t n;
    PyObject *keep;
    const char *s = str_utf8(text, "text", &n, &keep);
    if (!s) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS;
    rc = gl_bpe_trainer_feed(tr, (const uint8_t *)s, (size_t)n);
    Py_END_ALLOW_THREADS;
    Py_XDECREF(keep);
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* bpe_trainer_train(trainer, vocab_size) -> tokenizer handle. */
static PyObject *py_bpe_trainer_train(PyObject *self, PyObject *args) {
    PyObject *cap;
    int vocab_size;
    if (!PyArg_ParseTuple(args, "Oi", &cap, &vocab_size)) return NULL;
    gl_bpe_trainer *tr = bpe_trainer_arg(cap);
    if (!tr) return NULL;
    char err[256] = "";
    gl_bpe *t;
    Py_BEGIN_ALLOW_THREADS;
    t = gl_bpe_trainer_train(tr, vocab_size, err, sizeof(err));
    Py_END_ALLOW_THREADS;
    return bpe_wrap(t, err);
}

/* ==== module ============================================================================ */

static PyMethodDef core_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_VARARGS, "set_num_threads(n): OpenMP threads."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"sgemm", py_sgemm, METH_VARARGS,
     "sgemm(transA, transB, A, B, C, alpha=1, beta=0): C = alpha op(A) op(B) + beta C."},
    {"gemm_isa", py_gemm_isa, METH_NOARGS, "gemm_isa() -> the SIMD path gl_sgemm uses."},
    {"gemm_set_isa", py_gemm_set_isa, METH_VARARGS, "gemm_set_isa(name): force a SIMD path."},
    {"gemm_bf16_kernel", py_gemm_bf16_kernel, METH_NOARGS,
     "gemm_bf16_kernel() -> the kernel of the bfloat16 products: 'amx', 'avx512bf16', 'none'."},
    {"gemm_set_bf16_kernel", py_gemm_set_bf16_kernel, METH_VARARGS,
     "gemm_set_bf16_kernel(name): force 'amx' or 'avx512bf16' ('auto': the best)."},
    {"gemm_precision", py_gemm_precision, METH_NOARGS,
     "gemm_precision() -> 'float32' or 'bfloat16': what the blocked products run in."},
    {"gemm_set_precision", py_gemm_set_precision, METH_VARARGS,
     "gemm_set_precision(name): 'float32' or 'bfloat16' (AVX512-BF16 CPUs)."},
    /* -- layers -- */
    {"embedding_forward", py_embedding_forward, METH_VARARGS,
     "embedding_forward(idx, wte, wpe) -> out: out[b,t] = wte[idx[b,t]] + wpe[t].\n"
     "idx (B,T) int32 in [0,V); wte (V,C), wpe (maxT,C) float32, T <= maxT; out (B,T,C)."},
    {"embedding_backward", py_embedding_backward, METH_VARARGS,
     "embedding_backward(dwte, dwpe, dout, idx) -> None: ACCUMULATES (+=) into dwte (V,C)\n"
     "(rows idx[b,t] get dout[b,t]) and dwpe (maxT,C) (row t gets sum_b dout[b,t])."},
    {"layernorm_forward", py_layernorm_forward, METH_VARARGS,
     "layernorm_forward(x, w, b) -> (out, mean, rstd): LayerNorm over the last axis, eps 1e-5,\n"
     "biased variance. x (...,C); w, b (C,); out like x; mean, rstd x.shape[:-1]."},
    {"residual_layernorm_forward", py_residual_layernorm_forward, METH_VARARGS,
     "residual_layernorm_forward(a, x, w, b) -> (res, out, mean, rstd): res = a + x, then\n"
     "layernorm_forward(res, w, b), in one pass (a block's residual sum and the layernorm\n"
     "after it). a, x (...,C); w, b (C,); res, out like a; mean, rstd a.shape[:-1]."},
    {"layernorm_backward", py_layernorm_backward, METH_VARARGS,
     "layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, accumulate=True) -> None:\n"
     "ACCUMULATES (+=) the gradients into dx (like x), dw, db (C,); mean, rstd from\n"
     "layernorm_forward. accumulate=False writes dw, db instead (dx still accumulates)."},
    {"matmul_forward", py_matmul_forward, METH_VARARGS,
     "matmul_forward(x, w, b=None) -> out = x @ w + b. x (...,C); w (C,OC) (Conv1D layout,\n"
     "input first); b (OC,) or None; out (...,OC)."},
    {"matmul_backward", py_matmul_backward, METH_VARARGS,
     "matmul_backward(dx, dw, db, dout, x, w, accumulate=True) -> None: ACCUMULATES\n"
     "dx += dout @ w.T (dx may be None), dw += x.T @ dout, db += dout summed over rows (db may\n"
     "be None); accumulate=False writes dw and db instead (dx still accumulates)."},
    {"attention_forward", py_attention_forward, METH_VARARGS,
     "attention_forward(qkv, n_head) -> (out, lse): causal multi-head self-attention.\n"
     "qkv (B,T,3C) rows [q|k|v], C % n_head == 0; out (B,T,C); lse (B,n_head,T) the\n"
     "log-sum-exp of each softmax row, which the backward pass uses."},
    {"attention_backward", py_attention_backward, METH_VARARGS,
     "attention_backward(dqkv, dout, qkv, out, lse, n_head, accumulate=True) -> None:\n"
     "ACCUMULATES (+=) the gradient of attention_forward into dqkv (B,T,3C); dout, out (B,T,C);\n"
     "lse (B,n_head,T). accumulate=False overwrites dqkv (it is not read)."},
    {"gelu_forward", py_gelu_forward, METH_VARARGS,
     "gelu_forward(x) -> 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), any shape."},
    {"gelu_backward", py_gelu_backward, METH_VARARGS,
     "gelu_backward(dx, x, dout, accumulate=True) -> None: ACCUMULATES dx += gelu'(x) * dout; "
     "accumulate=False overwrites dx = gelu'(x) * dout (dx is not read)."},
    {"residual_forward", py_residual_forward, METH_VARARGS,
     "residual_forward(a, b) -> a + b (same shapes)."},
    {"residual_backward", py_residual_backward, METH_VARARGS,
     "residual_backward(da, db, dout) -> None: ACCUMULATES da += dout, db += dout."},
    {"scalar_head_forward", py_scalar_head_forward, METH_VARARGS,
     "scalar_head_forward(x, w, b) -> out = x @ w + b[0]. x (...,C); w (C,); b (1,);\n"
     "out x.shape[:-1]. The head of the reward and value models."},
    {"scalar_head_backward", py_scalar_head_backward, METH_VARARGS,
     "scalar_head_backward(dx, dw, db, dout, x, w) -> None: ACCUMULATES dx += dout[...,None]*w\n"
     "(dx may be None), dw += sum dout*x over rows, db += sum dout."},

    /* -- model -- */

    /* -- losses -- */
    {"crossentropy_forward", py_crossentropy_forward, METH_VARARGS,
     "crossentropy_forward(losses|None, logits, targets, mask|None) -> mean loss."},
    {"crossentropy_backward", py_crossentropy_backward, METH_VARARGS,
     "crossentropy_backward(dlogits, logits, targets, mask|None, dloss): dlogits += grad."},
    {"crossentropy_forward_backward", py_crossentropy_forward_backward, METH_VARARGS,
     "crossentropy_forward_backward(losses|None, logits, targets, mask|None, dloss) -> mean "
     "loss; the gradient overwrites logits."},
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
    {"adamw_update_many", py_adamw_update_many, METH_VARARGS,
     "adamw_update_many(ps, ms, vs, gs, weight_decays, grad_scale, lr, beta1, beta2, eps, t):\n"
     "adamw_update on every tensor of the lists in one parallel region, each g first scaled\n"
     "in place by grad_scale (gradient clipping fused into the pass; 1.0: g is only read)."},
    {"sumsq", py_sumsq, METH_VARARGS, "sumsq(x) -> sum of squares (float64 accumulation)."},
    {"sumsq_many", py_sumsq_many, METH_VARARGS,
     "sumsq_many(xs) -> sum over the list of sumsq(x), in list order, in one parallel region."},
    {"scale", py_scale, METH_VARARGS, "scale(x, s): x *= s in place."},
    {"lr_cosine", py_lr_cosine, METH_VARARGS,
     "lr_cosine(step, warmup, total, lr_max, lr_min) -> learning rate."},

    /* -- tokenizer -- */
    {"bpe_new", py_bpe_new, METH_VARARGS,
     "bpe_new(blob, off, special, merges) -> tokenizer handle (see gl_bpe_new)."},
    {"bpe_encode", py_bpe_encode, METH_VARARGS,
     "bpe_encode(bpe, text, allowed_ids_or_None, as_array=False) -> list[int] | int32 array"},
    {"bpe_encode_batch", py_bpe_encode_batch, METH_VARARGS,
     "bpe_encode_batch(bpe, texts, allowed_ids_or_None) -> list[list[int]] (OpenMP)"},
    {"bpe_decode", py_bpe_decode, METH_VARARGS, "bpe_decode(bpe, ids_int32) -> bytes"},
    {"bpe_info", py_bpe_info, METH_VARARGS,
     "bpe_info(bpe) -> (token bytes, special ids, merges int32 (M, 2))"},
    {"bpe_token_id", py_bpe_token_id, METH_VARARGS, "bpe_token_id(bpe, bytes) -> id or -1"},
    {"bpe_pretokenize", py_bpe_pretokenize, METH_VARARGS,
     "bpe_pretokenize(bpe, text) -> list[str] (GPT-2 pattern)"},
    {"bpe_trainer_new", py_bpe_trainer_new, METH_VARARGS,
     "bpe_trainer_new(specials: list[bytes]) -> trainer handle"},
    {"bpe_trainer_feed", py_bpe_trainer_feed, METH_VARARGS, "bpe_trainer_feed(trainer, text)"},
    {"bpe_trainer_train", py_bpe_trainer_train, METH_VARARGS,
     "bpe_trainer_train(trainer, vocab_size) -> tokenizer handle"},

    {NULL, NULL, 0, NULL}};

static struct PyModuleDef core_module = {PyModuleDef_HEAD_INIT, "gptlab._core",
                                         "gptlab's C core (see csrc/).", -1, core_methods};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    /* -- types -- */
    if (PyType_Ready(&ModelType) < 0 || PyModule_AddObjectRef(m, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(m);
        return NULL;
    }

    return m;
}
