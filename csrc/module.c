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
    /* -- layers -- */

    /* -- model -- */

    /* -- losses -- */

    /* -- optim -- */

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

    return m;
}
