/* libinjection over many texts in one call (bastion/stages/input/crs/injection.py: `hits_sqli`, `hits_xss`).

A CRS rule with @detectSQLi or @detectXSS runs libinjection on every value it reads (942100 and 941100 read
~15 values on a clean GET); through ctypes each call costs ~5.7 k instructions besides libinjection's own
~2.3 k. Here one call takes the whole list of texts and calls libinjection's C entry points, whose addresses
the Python side takes from the wheel's extension module with ctypes (`bind`): this file links against
nothing. Each text is the UTF-8 form of a str (what `str.encode()` gives), whole length, NUL bytes included:
exactly what `injection.detect_sqli(text.encode())` / `detect_xss` pass. `hits_sqli` / `hits_xss` return the
indices of every text libinjection calls injection (an empty list when none is): the engine then visits only the
values those texts belong to; or None when a text has no UTF-8 form (a lone surrogate: the caller then takes the
per-value path, which behaves as before). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*sqli_fn)(const char *, size_t, char *);
typedef int (*xss_fn)(const char *, size_t);

static sqli_fn sqli_entry = NULL;
static xss_fn xss_entry = NULL;

static PyObject *bind(PyObject *self, PyObject *args) {
    unsigned long long sqli, xss;
    if (!PyArg_ParseTuple(args, "KK", &sqli, &xss)) {
        return NULL;
    }
    if (!sqli || !xss) {
        PyErr_SetString(PyExc_ValueError, "bind: null entry point");
        return NULL;
    }
    sqli_entry = (sqli_fn)(uintptr_t)sqli;
    xss_entry = (xss_fn)(uintptr_t)xss;
    Py_RETURN_NONE;
}

/* every hit's index, or None when a text has no UTF-8 form; kind 0: libinjection_sqli on every text, kind 1:
   libinjection_xss on every non-empty text */
static PyObject *all(PyObject *texts, int kind) {
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "expected a list of str");
        return NULL;
    }
    if (sqli_entry == NULL || xss_entry == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libinjection entry points not bound");
        return NULL;
    }
    char fingerprint[8];
    PyObject *found = PyList_New(0);
    if (found == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(texts);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(texts, i);
        if (!PyUnicode_Check(item)) {
            Py_DECREF(found);
            PyErr_SetString(PyExc_TypeError, "expected a list of str");
            return NULL;
        }
        Py_ssize_t size;
        const char *data = PyUnicode_AsUTF8AndSize(item, &size);
        if (data == NULL) {
            PyErr_Clear();
            Py_DECREF(found);
            Py_RETURN_NONE;
        }
        int hit;
        if (kind == 0) {
            hit = sqli_entry(data, (size_t)size, fingerprint);
        } else {
            hit = size > 0 && xss_entry(data, (size_t)size);
        }
        if (hit) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(found, index) < 0) {
                Py_XDECREF(index);
                Py_DECREF(found);
                return NULL;
            }
            Py_DECREF(index);
        }
    }
    return found;
}

static PyObject *hits_sqli(PyObject *self, PyObject *texts) { return all(texts, 0); }
static PyObject *hits_xss(PyObject *self, PyObject *texts) { return all(texts, 1); }

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(sqli_address, xss_address): libinjection's C entry points"},
    {"hits_sqli", hits_sqli, METH_O, "indices of every text libinjection calls SQLi, or None"},
    {"hits_xss", hits_xss, METH_O, "indices of every non-empty text libinjection calls XSS, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_injection_any", NULL, -1, methods};

PyMODINIT_FUNC PyInit__injection_any(void) { return PyModule_Create(&module); }
