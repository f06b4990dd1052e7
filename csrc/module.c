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

/* layernorm_forward(x, w, b) -> (out, mean, rstd). */
static PyObject *py_layernorm_forward(PyObject *self, PyObject *args) {
    PyObject *ox, *ow, *ob;
    if (!PyArg_ParseTuple(args, "OOO", &ox, &ow, &ob)) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *w = arr_check(ow, "w", NPY_FLOAT32, 1, 0);
    if (!w) return NULL;
    PyArrayObject *b = arr_check(ob, "b", NPY_FLOAT32, 1, 0);
    if (!b) return NULL;
    int N, C;
    if (rows_cols(x, "x", &N, &C) || dim_check(w, "w", 0, C) || dim_check(b, "b", 0, C))
        return NULL;
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

/* layernorm_backward(dx, dw, db, dout, x, w, mean, rstd): dx, dw, db accumulate. */
static PyObject *py_layernorm_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *odw, *odb, *od, *ox, *ow, *om, *or;
    if (!PyArg_ParseTuple(args, "OOOOOOOO", &odx, &odw, &odb, &od, &ox, &ow, &om, &or))
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
                          F32(rstd), N, C);
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

/* matmul_backward(dx, dw, db, dout, x, w): dx (or None), dw, db (or None) accumulate. */
static PyObject *py_matmul_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *odw, *odb, *od, *ox, *ow;
    if (!PyArg_ParseTuple(args, "OOOOOO", &odx, &odw, &odb, &od, &ox, &ow)) return NULL;
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
    gl_matmul_backward(dxp, F32(dw), dbp, F32(dout), F32(x), F32(w), N, C, (int)OC);
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

/* attention_backward(dqkv, dout, qkv, out, lse, n_head): dqkv accumulates. */
static PyObject *py_attention_backward(PyObject *self, PyObject *args) {
    PyObject *odq, *od, *oq, *oo, *ol;
    int NH, B, T, C;
    if (!PyArg_ParseTuple(args, "OOOOOi", &odq, &od, &oq, &oo, &ol, &NH)) return NULL;
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
    gl_attention_backward(F32(dqkv), F32(dout), F32(qkv), F32(out), F32(lse), B, T, C, NH);
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

/* gelu_backward(dx, x, dout): dx accumulates. */
static PyObject *py_gelu_backward(PyObject *self, PyObject *args) {
    PyObject *odx, *ox, *od;
    if (!PyArg_ParseTuple(args, "OOO", &odx, &ox, &od)) return NULL;
    PyArrayObject *dx = arr_check(odx, "dx", NPY_FLOAT32, -1, 1);
    if (!dx) return NULL;
    PyArrayObject *x = arr_check(ox, "x", NPY_FLOAT32, -1, 0);
    if (!x) return NULL;
    PyArrayObject *dout = arr_check(od, "dout", NPY_FLOAT32, -1, 0);
    if (!dout) return NULL;
    if (shape_like(dx, "dx", x, "x") || shape_like(dout, "dout", x, "x")) return NULL;
    size_t N = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS;
    gl_gelu_backward(F32(dx), F32(x), F32(dout), N);
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

/* ==== losses ============================================================================ */

/* ==== optim ============================================================================= */

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
    {"embedding_forward", py_embedding_forward, METH_VARARGS,
     "embedding_forward(idx, wte, wpe) -> out: out[b,t] = wte[idx[b,t]] + wpe[t].\n"
     "idx (B,T) int32 in [0,V); wte (V,C), wpe (maxT,C) float32, T <= maxT; out (B,T,C)."},
    {"embedding_backward", py_embedding_backward, METH_VARARGS,
     "embedding_backward(dwte, dwpe, dout, idx) -> None: ACCUMULATES (+=) into dwte (V,C)\n"
     "(rows idx[b,t] get dout[b,t]) and dwpe (maxT,C) (row t gets sum_b dout[b,t])."},
    {"layernorm_forward", py_layernorm_forward, METH_VARARGS,
     "layernorm_forward(x, w, b) -> (out, mean, rstd): LayerNorm over the last axis, eps 1e-5,\n"
     "biased variance. x (...,C); w, b (C,); out like x; mean, rstd x.shape[:-1]."},
    {"layernorm_backward", py_layernorm_backward, METH_VARARGS,
     "layernorm_backward(dx, dw, db, dout, x, w, mean, rstd) -> None: ACCUMULATES (+=) the\n"
     "gradients into dx (like x), dw, db (C,); mean, rstd from layernorm_forward."},
    {"matmul_forward", py_matmul_forward, METH_VARARGS,
     "matmul_forward(x, w, b=None) -> out = x @ w + b. x (...,C); w (C,OC) (Conv1D layout,\n"
     "input first); b (OC,) or None; out (...,OC)."},
    {"matmul_backward", py_matmul_backward, METH_VARARGS,
     "matmul_backward(dx, dw, db, dout, x, w) -> None: ACCUMULATES dx += dout @ w.T (dx may\n"
     "be None), dw += x.T @ dout, db += dout summed over rows (db may be None)."},
    {"attention_forward", py_attention_forward, METH_VARARGS,
     "attention_forward(qkv, n_head) -> (out, lse): causal multi-head self-attention.\n"
     "qkv (B,T,3C) rows [q|k|v], C % n_head == 0; out (B,T,C); lse (B,n_head,T) the\n"
     "log-sum-exp of each softmax row, which the backward pass uses."},
    {"attention_backward", py_attention_backward, METH_VARARGS,
     "attention_backward(dqkv, dout, qkv, out, lse, n_head) -> None: ACCUMULATES (+=) the\n"
     "gradient of attention_forward into dqkv (B,T,3C); dout, out (B,T,C); lse (B,n_head,T)."},
    {"gelu_forward", py_gelu_forward, METH_VARARGS,
     "gelu_forward(x) -> 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), any shape."},
    {"gelu_backward", py_gelu_backward, METH_VARARGS,
     "gelu_backward(dx, x, dout) -> None: ACCUMULATES dx += gelu'(x) * dout."},
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

    /* -- optim -- */

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
