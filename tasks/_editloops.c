/* The two per-element loops around an edit plan, in C: the de-identification walk's sorting
 * of one data set's elements (tasks/deidentify.py, _Deidentifier.walk) and the render's
 * runs of untouched elements (tasks/edit.py, render_parts).
 *
 * Why: once the parser is compiled (_walker.c), these loops are most of what is left per
 * element: ~0.4 us for each element of each file in Python, a quarter of the CPU of a
 * small file.  Neither loop decides anything here.  sort() settles only the outcomes the
 * Python loop reaches from a decision it already cached (kept; removed at the top level; a
 * top-level value whose result the run's memo holds) and hands every other element back,
 * in order, for the Python loop to visit as before: the profile's rules, the Action codes,
 * the items of sequences and every error stay in Python.  render() copies the Python loop
 * step for step and calls back for any element on the path to an edit below it, and gives
 * up (None) on a data set with group length elements.  Tests compare both ways' plans and
 * rendered bytes on every test file, with every profile option.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_slots.h"

#define NO_INSERT 0x100000000LL

/* set once by setup() and setup_sort(): the classes, their slot offsets, the actions, the
 * limits */
static PyTypeObject *element_type, *decision_type;
static Py_ssize_t off_tag, off_vr, off_start, off_end, off_items, off_action;
static PyObject *keep_action, *remove_action, *clean_action, *empty_bytes;
static Py_ssize_t memo_element_max, big_slice;

/* whether ``items`` is a non-empty list: what `if el.items:` tests; -1 on an error */
static inline int has_items(PyObject *items) {
    if (items == Py_None) return 0;
    if (PyList_CheckExact(items)) return PyList_GET_SIZE(items) > 0;
    return PyObject_IsTrue(items);
}

PyDoc_STRVAR(sort_doc,
"sort(elements, cached, key_base, private, kinds, top, memo, buf, payload, replace)\n"
"-> (visit, privates)\n\n"
"One data set's elements, sorted for _Deidentifier.walk: the outcomes reached from a\n"
"cached decision are applied (kept: nothing; removed or memo hit at the top level:\n"
"payload and replace set); private elements (when ``private``) go to ``privates``;\n"
"every other element is in ``visit``, in order, for the Python loop.");

static PyObject *sort(PyObject *self, PyObject *args) {
    PyObject *elements, *cached, *kinds, *memo, *buf, *payload, *replace;
    unsigned long long key_base;  /* a parent tag << 32 */
    int private, top;
    if (!PyArg_ParseTuple(args, "O!O!KpO!pOOO!O!", &PyList_Type, &elements, &PyDict_Type,
                          &cached, &key_base, &private, &PyDict_Type, &kinds, &top, &memo,
                          &buf, &PyDict_Type, &payload, &PyDict_Type, &replace))
        return NULL;
    if (element_type == NULL || decision_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tasks._editloops.setup_sort() not called");
        return NULL;
    }
    if (memo != Py_None && !PyDict_CheckExact(memo)) {
        PyErr_SetString(PyExc_TypeError, "memo must be a dict or None");
        return NULL;
    }
    if (!PyDict_CheckExact(cached) || !PyDict_CheckExact(kinds) || !PyDict_CheckExact(payload) ||
        !PyDict_CheckExact(replace))  /* a mapping of another kind: every element in Python */
        return Py_BuildValue("(NO)", PyList_GetSlice(elements, 0, PyList_GET_SIZE(elements)),
                             Py_None);
    /* the memo is keyed by the element's bytes: sliced here from a bytes buffer only */
    int use_memo = top && memo != Py_None && PyBytes_CheckExact(buf);
    PyObject *visit = PyList_New(0), *privates = NULL;
    if (visit == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(elements);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *el = PyList_GET_ITEM(elements, i);
        PyObject *tag_obj, *start_obj, *items, *decision, *key, *action;
        long long tag;
        if (!Py_IS_TYPE(el, element_type)) goto visit_it;
        tag_obj = slot(el, off_tag);
        start_obj = slot(el, off_start);
        items = slot(el, off_items);
        tag = int_slot(el, off_tag);
        if (tag < 0 || start_obj == NULL || items == NULL) goto visit_it;
        if ((tag & 0x10000) && private) {
            if (privates == NULL && (privates = PyList_New(0)) == NULL) goto error;
            if (PyList_Append(privates, el)) goto error;
            continue;
        }
        if (key_base == 0) {
            decision = PyDict_GetItemWithError(cached, tag_obj);
        } else {
            key = PyLong_FromUnsignedLongLong(key_base | (unsigned long long)tag);
            if (key == NULL) goto error;
            decision = PyDict_GetItemWithError(cached, key);
            Py_DECREF(key);
        }
        if (decision == NULL) {
            if (PyErr_Occurred()) goto error;
            goto visit_it;  /* not decided yet: the resolver decides, in Python */
        }
        if (decision == Py_None) {
            PyObject *vr = slot(el, off_vr);
            if (vr == NULL) goto visit_it;
            PyObject *kind = PyDict_GetItemWithError(kinds, vr);
            if (kind == NULL && PyErr_Occurred()) goto error;
            if (kind != NULL && kind != Py_None) goto visit_it;  /* a rule past the table */
            action = keep_action;
        } else {
            if (!Py_IS_TYPE(decision, decision_type)) goto visit_it;
            action = slot(decision, off_action);
            if (action == NULL) goto visit_it;
        }
        if (action == keep_action) {
            int walk_items = has_items(items);
            if (walk_items < 0) goto error;
            if (walk_items) goto visit_it;  /* its items are walked, in Python */
            continue;
        }
        if (action == remove_action) {
            if (!top) goto visit_it;
            if (PyDict_SetItem(payload, tag_obj, el) ||
                PyDict_SetItem(replace, start_obj, empty_bytes))
                goto error;
            continue;
        }
        if (use_memo && items == Py_None && action != clean_action) {
            long long start = int_slot(el, off_start), end = int_slot(el, off_end);
            if (start < 0 || end < start || end - start > memo_element_max ||
                end > PyBytes_GET_SIZE(buf))
                goto visit_it;
            PyObject *raw = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + start,
                                                      (Py_ssize_t)(end - start));
            if (raw == NULL) goto error;
            PyObject *new = PyDict_GetItemWithError(memo, raw);
            Py_DECREF(raw);
            if (new == NULL) {
                if (PyErr_Occurred()) goto error;
                goto visit_it;  /* not in the memo: computed (and memoized) in Python */
            }
            if (new != Py_None && (PyDict_SetItem(payload, tag_obj, el) ||
                                   PyDict_SetItem(replace, start_obj, new)))
                goto error;
            continue;
        }
    visit_it:
        if (PyList_Append(visit, el)) goto error;
    }
    return Py_BuildValue("(NN)", visit, privates ? privates : Py_NewRef(Py_None));
error:
    Py_DECREF(visit);
    Py_XDECREF(privates);
    return NULL;
}

/* buf[start:end], or a view of it from big_slice bytes on (tasks.edit._slice) */
static int append_slice(PyObject *chunks, PyObject *buf, Py_ssize_t start, Py_ssize_t end) {
    PyObject *piece;
    if (end - start < big_slice) {
        piece = PySequence_GetSlice(buf, start, end);
    } else {
        PyObject *view = PyMemoryView_FromObject(buf);
        if (view == NULL) return -1;
        piece = PySequence_GetSlice(view, start, end);
        Py_DECREF(view);
    }
    if (piece == NULL) return -1;
    int failed = PyList_Append(chunks, piece);
    Py_DECREF(piece);
    return failed;
}

/* the tag of inserts[k] (a (tag, bytes) tuple), or -1 with an exception */
static long long insert_tag(PyObject *inserts, Py_ssize_t k) {
    PyObject *pair = PyList_GET_ITEM(inserts, k);
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "inserts must be (tag, bytes) pairs");
        return -1;
    }
    return PyLong_AsLongLong(PyTuple_GET_ITEM(pair, 0));
}

PyDoc_STRVAR(render_doc,
"render(buf, elements, replace, dirty, inserts, render_element, plan, enc) -> list | None\n\n"
"tasks.edit.render_parts for a data set without group length elements (None for one\n"
"with them): untouched runs as slices, replacements and inserts in place, and\n"
"render_element(buf, el, plan, enc) for an element with an edit below it.");

static PyObject *render(PyObject *self, PyObject *args) {
    PyObject *buf, *elements, *replace, *dirty, *inserts, *render_element, *plan, *enc;
    if (!PyArg_ParseTuple(args, "OO!O!O!O!OOO", &buf, &PyList_Type, &elements, &PyDict_Type,
                          &replace, &PySet_Type, &dirty, &PyList_Type, &inserts,
                          &render_element, &plan, &enc))
        return NULL;
    if (element_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tasks._editloops.setup() not called");
        return NULL;
    }
    if (!PyDict_CheckExact(replace) || !PySet_CheckExact(dirty)) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(elements);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *el = PyList_GET_ITEM(elements, i);
        long long tag = Py_IS_TYPE(el, element_type) ? int_slot(el, off_tag) : -1;
        if (tag < 0 || slot(el, off_start) == NULL || int_slot(el, off_end) < 0)
            Py_RETURN_NONE;  /* not a plain element: the Python loop */
        if (!(tag & 0xFFFF)) Py_RETURN_NONE;  /* group lengths to recompute: Python */
    }
    PyObject *chunks = PyList_New(0);
    if (chunks == NULL) return NULL;
    Py_ssize_t run_start = -1, run_end = -1, k = 0, count = PyList_GET_SIZE(inserts);
    long long next_insert = count ? insert_tag(inserts, 0) : NO_INSERT;
    if (next_insert < 0 && PyErr_Occurred()) goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *el = PyList_GET_ITEM(elements, i);
        PyObject *start_obj = slot(el, off_start);
        long long tag = int_slot(el, off_tag);
        int replaced = PyDict_Contains(replace, start_obj);
        if (replaced < 0) goto error;
        int below = replaced ? 0 : PySet_Contains(dirty, start_obj);
        if (below < 0) goto error;
        if (!replaced && !below && next_insert > tag) {
            if (run_start < 0) run_start = PyLong_AsSsize_t(start_obj);
            run_end = (Py_ssize_t)int_slot(el, off_end);
            if (run_start < 0) goto error;
            continue;
        }
        if (run_start >= 0) {
            if (append_slice(chunks, buf, run_start, run_end)) goto error;
            run_start = -1;
        }
        if (next_insert <= tag) {
            long long at;
            while (k < count) {
                if ((at = insert_tag(inserts, k)) < 0 && PyErr_Occurred()) goto error;
                if (at >= tag) break;
                if (PyList_Append(chunks, PyTuple_GET_ITEM(PyList_GET_ITEM(inserts, k), 1)))
                    goto error;
                k++;
            }
            int instead = 0;
            if (k < count) {
                if ((at = insert_tag(inserts, k)) < 0 && PyErr_Occurred()) goto error;
                instead = at == tag;
            }
            if (instead) {
                if (PyList_Append(chunks, PyTuple_GET_ITEM(PyList_GET_ITEM(inserts, k), 1)))
                    goto error;
                k++;
            }
            next_insert = k < count ? insert_tag(inserts, k) : NO_INSERT;
            if (next_insert < 0 && PyErr_Occurred()) goto error;
            if (instead) continue;
        }
        PyObject *replacement = PyDict_GetItemWithError(replace, start_obj);
        if (replacement == NULL && PyErr_Occurred()) goto error;
        if (replacement != NULL && replacement != Py_None) {
            Py_INCREF(replacement);  /* a piece object's truth may run Python code */
            int nonempty = PyObject_IsTrue(replacement);
            int failed = nonempty < 0 || (nonempty && PyList_Append(chunks, replacement));
            Py_DECREF(replacement);
            if (failed) goto error;
            continue;
        }
        PyObject *piece = PyObject_CallFunctionObjArgs(render_element, buf, el, plan, enc,
                                                       NULL);
        if (piece == NULL) goto error;
        int failed = PyList_Append(chunks, piece);
        Py_DECREF(piece);
        if (failed) goto error;
    }
    if (run_start >= 0 && append_slice(chunks, buf, run_start, run_end)) goto error;
    for (; k < count; k++) {
        if (insert_tag(inserts, k) < 0 && PyErr_Occurred()) goto error;
        if (PyList_Append(chunks, PyTuple_GET_ITEM(PyList_GET_ITEM(inserts, k), 1)))
            goto error;
    }
    return chunks;
error:
    Py_DECREF(chunks);
    return NULL;
}

PyDoc_STRVAR(setup_doc, "setup(Element, big_slice): what render() needs");

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *el_cls;
    Py_ssize_t big;
    if (!PyArg_ParseTuple(args, "O!n", &PyType_Type, &el_cls, &big)) return NULL;
    if (slot_offset(el_cls, "tag", &off_tag) || slot_offset(el_cls, "vr", &off_vr) ||
        slot_offset(el_cls, "start", &off_start) || slot_offset(el_cls, "end", &off_end) ||
        slot_offset(el_cls, "items", &off_items))
        return NULL;
    if (empty_bytes == NULL && (empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL)
        return NULL;
    Py_XSETREF(element_type, (PyTypeObject *)Py_NewRef(el_cls));
    big_slice = big;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(setup_sort_doc,
"setup_sort(Decision, keep, remove, clean, memo_element_max): what sort() needs more");

static PyObject *setup_sort(PyObject *self, PyObject *args) {
    PyObject *dec_cls, *keep, *remove, *clean;
    Py_ssize_t memo_max;
    if (!PyArg_ParseTuple(args, "O!OOOn", &PyType_Type, &dec_cls, &keep, &remove, &clean,
                          &memo_max))
        return NULL;
    if (slot_offset(dec_cls, "action", &off_action)) return NULL;
    Py_XSETREF(decision_type, (PyTypeObject *)Py_NewRef(dec_cls));
    Py_XSETREF(keep_action, Py_NewRef(keep));
    Py_XSETREF(remove_action, Py_NewRef(remove));
    Py_XSETREF(clean_action, Py_NewRef(clean));
    memo_element_max = memo_max;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"sort", sort, METH_VARARGS, sort_doc},
    {"render", render, METH_VARARGS, render_doc},
    {"setup", setup, METH_VARARGS, setup_doc},
    {"setup_sort", setup_sort, METH_VARARGS, setup_sort_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tasks._editloops",
    "The element loops of the de-identification walk and the render in C (see _editloops.c).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__editloops(void) { return PyModule_Create(&module); }
