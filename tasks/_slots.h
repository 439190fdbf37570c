/* What the compiled modules (_walker.c, _editloops.c, _inventory.c) need to read and write
 * the slots of the Python classes they are set up with (tasks.dicomio.Element and Item,
 * tasks.profile.Decision): a slot's byte offset in the object, found once, and a slot's
 * value read by it. */
#ifndef ANONPIPE_SLOTS_H
#define ANONPIPE_SLOTS_H

#include <Python.h>
#include <structmember.h>

/* the byte offset of a slot of ``cls`` named ``name`` (a member descriptor of a slots class) */
static int slot_offset(PyObject *cls, const char *name, Py_ssize_t *offset) {
    PyObject *descr = PyObject_GetAttrString(cls, name);
    if (descr == NULL) return -1;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s is not an object slot", name);
        Py_DECREF(descr);
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return 0;
}

/* a slot's value (borrowed), NULL when the slot was never set */
static inline PyObject *slot(PyObject *obj, Py_ssize_t offset) {
    return *(PyObject **)((char *)obj + offset);
}

/* the int value of an Element's int slot; -1 (no exception) when it is not a plain int */
static inline long long int_slot(PyObject *el, Py_ssize_t offset) {
    PyObject *v = slot(el, offset);
    if (v == NULL || !PyLong_CheckExact(v)) return -1;
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(v, &overflow);
    return overflow || value < 0 ? -1 : value;
}

#endif
