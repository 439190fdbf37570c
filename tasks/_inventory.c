/* Pass 1's one loop over a header (tasks/inventory.py, _top_facts and _collect_uids) in C.
 *
 * Why: pass 1 reads every header of an archive, and once the walker is compiled
 * (_walker.c) this loop is most of what is left of a header's CPU: ~0.23 us per element in
 * Python, a third of pass 1's time on a CT slice.  It decides nothing the Python loop does
 * not: the text fields of a row, the UIDs at any depth, and which of them the profile
 * replaces, asking the same registry (tasks.uids.registered) and handing private values of
 * unknown VR back to the same Python function.  An element whose slots are not plain ints
 * makes it give up (None) so the Python loop runs instead.  Tests compare both loops' rows
 * on every test file and on generated archives.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_slots.h"

#define UNDEFINED 0xFFFFFFFFLL

/* set once by setup(): slot offsets, the two marker names, the every-UID marker, the
 * private-UID helper */
static PyTypeObject *element_type, *item_type;
static Py_ssize_t off_tag, off_vr, off_value_start, off_length, off_items, off_elements;
static PyObject *other_ids_name, *refusal_name, *every_instance, *private_uid;

/* outcomes of a step: go on, give the loop back to Python, or a Python error */
enum { OK = 0, GIVE_UP = 1, PY_ERROR = 2 };

typedef struct {
    const char *body;
    Py_ssize_t size;
    PyObject *replaced, *definitions, *registered, *every, *mapped;
    int instances;
} Facts;

/* whether a VR slot is the two letters ``a`` ``b`` */
static inline int vr_is(PyObject *vr, char a, char b) {
    if (!PyUnicode_CheckExact(vr) || PyUnicode_GET_LENGTH(vr) != 2 ||
        PyUnicode_KIND(vr) != PyUnicode_1BYTE_KIND)
        return 0;
    const Py_UCS1 *p = PyUnicode_1BYTE_DATA(vr);
    return p[0] == a && p[1] == b;
}

static inline int nul_or_space(char c) { return c == '\0' || c == ' '; }

/* one UID (``value[a:b]``, stripped and not empty) into ``every``, and into ``mapped`` when
 * the profile replaces it: ``listed`` (a U-action tag), or ``unlisted`` and not registered */
static int add_uid(Facts *f, const char *uid_bytes, Py_ssize_t n, int listed, int unlisted) {
    PyObject *uid = PyUnicode_DecodeASCII(uid_bytes, n, "replace");
    if (uid == NULL) return PY_ERROR;
    int map = listed, status = PY_ERROR;
    if (PySet_Add(f->every, uid)) goto done;
    if (!map && unlisted) {
        PyObject *found = PyObject_CallOneArg(f->registered, uid);
        if (found == NULL) goto done;
        map = found == Py_None;
        Py_DECREF(found);
    }
    if (map && PySet_Add(f->mapped, uid)) goto done;
    status = OK;
done:
    Py_DECREF(uid);
    return status;
}

/* the UIDs of one UI value: split at backslashes, NULs and spaces stripped from both ends
 * of each, decoded as ASCII with replacement (what ``_add_uids`` does) */
static int add_uids(Facts *f, const char *value, Py_ssize_t length, int listed, int unlisted) {
    for (Py_ssize_t begin = 0; begin <= length;) {
        Py_ssize_t stop = begin;
        while (stop < length && value[stop] != '\\') stop++;
        Py_ssize_t a = begin, b = stop;
        while (a < b && nul_or_space(value[a])) a++;
        while (b > a && nul_or_space(value[b - 1])) b--;
        if (b > a && add_uid(f, value + a, b - a, listed, unlisted) != OK) return PY_ERROR;
        begin = stop + 1;
    }
    return OK;
}

/* one element's UIDs, or its items' (the UI case and the private UN case of both loops) */
static int element_uids(Facts *f, PyObject *el, long long tag, long long vstart,
                        long long length);

static int collect(Facts *f, PyObject *elements) {
    if (!PyList_CheckExact(elements)) return GIVE_UP;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(elements); i++) {
        PyObject *el = PyList_GET_ITEM(elements, i);
        if (Py_TYPE(el) != element_type) return GIVE_UP;
        long long tag = int_slot(el, off_tag), vstart = int_slot(el, off_value_start),
                  length = int_slot(el, off_length);
        if (tag < 0 || vstart < 0 || length < 0) return GIVE_UP;
        int step = element_uids(f, el, tag, vstart, length);
        if (step != OK) return step;
    }
    return OK;
}

static int element_uids(Facts *f, PyObject *el, long long tag, long long vstart,
                        long long length) {
    PyObject *items = slot(el, off_items);
    if (items == NULL) return GIVE_UP;
    if (items != Py_None) {
        if (!PyList_CheckExact(items)) return GIVE_UP;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            if (Py_TYPE(item) != item_type) return GIVE_UP;
            PyObject *elements = slot(item, off_elements);
            if (elements == NULL) return GIVE_UP;
            int step = collect(f, elements);
            if (step != OK) return step;
        }
        return OK;
    }
    PyObject *vr = slot(el, off_vr);
    if (vr == NULL) return GIVE_UP;
    if (!vr_is(vr, 'U', 'I') || length == 0 || length == UNDEFINED) {
        if (f->instances && (tag & 0x10000) && length > 0 && length <= 64 &&
            vr_is(vr, 'U', 'N')) {
            if (vstart + length > f->size) return GIVE_UP;
            PyObject *value = PyBytes_FromStringAndSize(f->body + vstart, length);
            if (value == NULL) return PY_ERROR;
            PyObject *done = PyObject_CallFunctionObjArgs(private_uid, value, f->mapped, NULL);
            Py_DECREF(value);
            if (done == NULL) return PY_ERROR;
            Py_DECREF(done);
        }
        return OK;
    }
    if (vstart + length > f->size) return GIVE_UP;
    PyObject *tag_obj = slot(el, off_tag);
    int listed = PySet_Contains(f->replaced, tag_obj);
    if (listed < 0) return PY_ERROR;
    int unlisted = 0;
    if (f->instances && !listed) {
        int definition = PyDict_Contains(f->definitions, tag_obj);
        if (definition < 0) return PY_ERROR;
        unlisted = !definition;
    }
    return add_uids(f, f->body + vstart, (Py_ssize_t)length, listed, unlisted);
}

PyDoc_STRVAR(top_facts_doc,
"top_facts(elements, body, field_of, replaced, definitions, registered, row, every, mapped)\n"
"-> (others, flagged) or None\n\n"
"tasks.inventory._top_facts over ``elements`` (a header's top level): the row's text\n"
"fields, every UID into ``every`` and those the profile replaces into ``mapped``\n"
"(``replaced``: a frozenset of tags; ``definitions``: a dict keyed by tag).  None when\n"
"an argument or an element is not as the walkers make them: the Python loop then runs.");

static PyObject *top_facts(PyObject *self, PyObject *args) {
    PyObject *elements, *body_obj, *field_of, *row;
    Facts f;
    if (!PyArg_ParseTuple(args, "OOO!OO!OO!O!O!", &elements, &body_obj, &PyDict_Type,
                          &field_of, &f.replaced, &PyDict_Type, &f.definitions, &f.registered,
                          &PyDict_Type, &row, &PySet_Type, &f.every, &PySet_Type, &f.mapped))
        return NULL;
    /* a body or a list of another type (a memoryview, a set of tags): the Python loop */
    if (!PyList_CheckExact(elements) || !PyBytes_CheckExact(body_obj) ||
        !PyFrozenSet_CheckExact(f.replaced))
        Py_RETURN_NONE;
    if (other_ids_name == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tasks._inventory.setup() was not called");
        return NULL;
    }
    f.body = PyBytes_AS_STRING(body_obj);
    f.size = PyBytes_GET_SIZE(body_obj);
    f.instances = PySet_Contains(f.replaced, every_instance);
    if (f.instances < 0) return NULL;
    int others = 0, flagged = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(elements); i++) {
        PyObject *el = PyList_GET_ITEM(elements, i);
        if (Py_TYPE(el) != element_type) Py_RETURN_NONE;
        long long tag = int_slot(el, off_tag), vstart = int_slot(el, off_value_start),
                  length = int_slot(el, off_length);
        if (tag < 0 || vstart < 0 || length < 0) Py_RETURN_NONE;
        PyObject *name = PyDict_GetItemWithError(field_of, slot(el, off_tag));
        if (name == NULL && PyErr_Occurred()) return NULL;
        if (name == other_ids_name) {
            others = 1;
        } else if (name == refusal_name) {
            flagged = 1;
        } else if (name != NULL && length != UNDEFINED) {
            if (vstart + length > f.size) Py_RETURN_NONE;
            const char *text = f.body + vstart;
            Py_ssize_t n = (Py_ssize_t)length;
            while (n > 0 && nul_or_space(text[n - 1])) n--;
            if (n > 0) {
                PyObject *value = PyUnicode_DecodeLatin1(text, n, NULL);
                if (value == NULL) return NULL;
                int failed = PyDict_SetItem(row, name, value);
                Py_DECREF(value);
                if (failed) return NULL;
            }
        }
        int step = element_uids(&f, el, tag, vstart, length);
        if (step == PY_ERROR) return NULL;
        if (step == GIVE_UP) Py_RETURN_NONE;
    }
    return Py_BuildValue("(OO)", others ? Py_True : Py_False, flagged ? Py_True : Py_False);
}

PyDoc_STRVAR(setup_doc,
"setup(Element, Item, other_ids_name, refusal_name, every_instance_uid, private_uid)\n\n"
"The classes whose slots top_facts() reads, the two field names that are flags, not text,\n"
"the entry of a set of replaced tags that says every unregistered UID is replaced too,\n"
"and the function a private value of unknown VR is handed to.");

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *el_cls, *it_cls, *others, *refusal, *instances, *private_fn;
    if (!PyArg_ParseTuple(args, "O!O!OOOO", &PyType_Type, &el_cls, &PyType_Type, &it_cls,
                          &others, &refusal, &instances, &private_fn))
        return NULL;
    if (slot_offset(el_cls, "tag", &off_tag) || slot_offset(el_cls, "vr", &off_vr) ||
        slot_offset(el_cls, "value_start", &off_value_start) ||
        slot_offset(el_cls, "length", &off_length) ||
        slot_offset(el_cls, "items", &off_items) ||
        slot_offset(it_cls, "elements", &off_elements))
        return NULL;
    Py_INCREF(el_cls);
    Py_INCREF(it_cls);
    Py_INCREF(others);
    Py_INCREF(refusal);
    Py_INCREF(instances);
    Py_INCREF(private_fn);
    Py_XSETREF(element_type, (PyTypeObject *)el_cls);
    Py_XSETREF(item_type, (PyTypeObject *)it_cls);
    Py_XSETREF(other_ids_name, others);
    Py_XSETREF(refusal_name, refusal);
    Py_XSETREF(every_instance, instances);
    Py_XSETREF(private_uid, private_fn);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"top_facts", top_facts, METH_VARARGS, top_facts_doc},
    {"setup", setup, METH_VARARGS, setup_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tasks._inventory",
    "Pass 1's loop over a header, of tasks.inventory, in C (see _inventory.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__inventory(void) { return PyModule_Create(&module); }
