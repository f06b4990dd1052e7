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
