/* The element walker of tasks/dicomio.py (_Parser) in C: the same Element and Item trees,
 * built straight into their slots.
 *
 * Why: walking a header is a byte loop that costs Python ~0.3 us per element, about a fifth
 * of the CPU of de-identifying a small file.  This walker follows _Parser step for step;
 * wherever _Parser would raise (a damaged file, nesting too deep, private elements out of
 * order inside a run) it gives up and returns None, and the caller walks the buffer again
 * with _Parser, which raises the exact error.  So it only ever has to get well-formed files
 * right, and tests compare both walkers' trees on every test file and on fuzzed bytes.
 *
 * The PS3.5 encoding rules are those of _Parser: Chapter 7 (element headers, items,
 * delimiters), Annex A.4 (encapsulated fragments), CP-246 (sequences in UN values).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_slots.h"
#include <string.h>

#define ITEM 0xFFFEE000u
#define ITEM_END 0xFFFEE00Du
#define SEQ_END 0xFFFEE0DDu
#define UNDEFINED 0xFFFFFFFFu
#define PIXEL_DATA 0x7FE00010u

/* outcomes of a walk step: go on, or a reason _Parser would have raised */
enum { OK = 0, BAD = 1, TOO_DEEP = 2, GIVE_UP = 3, PY_ERROR = 4 };

/* set once by setup(): the classes, their slot offsets, the CP-246 encoding, the VR lookup */
static PyTypeObject *element_type, *item_type;
static Py_ssize_t el_off[8];   /* tag vr start value_start length end items item_enc */
static Py_ssize_t it_off[5];   /* start value_start length end elements */
static PyObject *implicit_le, *dictionary_vr;
static PyObject *vr_str[26 * 26];  /* explicit VR -> its str, interned */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t size;
    int stop_at_pixels, private_runs, max_depth;
    int stopped, at_pixels;
} Walk;

typedef struct {
    PyObject *obj;  /* the Encoding object */
    int little, implicit;
} Enc;

static const char *LONG_VRS[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN",
                                 "UR", "UT", "UV", NULL};
static const char *SHORT_VRS[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS",
                                  "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL",
                                  "US", NULL};
/* 0: unknown VR, 1: short header, 2: long header (4-byte length) */
static unsigned char vr_kind[26 * 26];

static inline int vr_index(const unsigned char *p) {
    if (p[0] < 'A' || p[0] > 'Z' || p[1] < 'A' || p[1] > 'Z') return -1;
    return (p[0] - 'A') * 26 + (p[1] - 'A');
}

static inline unsigned u16(const unsigned char *p, int little) {
    return little ? (unsigned)p[0] | ((unsigned)p[1] << 8) : ((unsigned)p[0] << 8) | p[1];
}

static inline uint32_t u32(const unsigned char *p, int little) {
    if (little)
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
               ((uint32_t)p[3] << 24);
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline int all_nul(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static inline int starts_with_item(const Walk *w, Py_ssize_t pos) {
    if (pos + 4 > w->size) return 0;
    const unsigned char *p = w->buf + pos;
    return (p[0] == 0xfe && p[1] == 0xff && p[2] == 0x00 && p[3] == 0xe0) ||
           (p[0] == 0xff && p[1] == 0xfe && p[2] == 0xe0 && p[3] == 0x00);
}

/* store a new reference into a fresh object's slot */
static inline void put(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    *(PyObject **)((char *)obj + offset) = value;
}

/* The ints of the slots, made once per process: a header's offsets and lengths (below
 * SMALL_INTS) from a table filled as they are first met, other values (tags, mostly) from
 * a direct-mapped cache.  Why: five new ints per element were half of a walk's time, and
 * the files of an archive repeat the same tags at the same offsets.  Ints are immutable,
 * so sharing one object between elements changes nothing Python can see. */
#define SMALL_INTS 65536
#define LARGE_INTS 4096  /* a power of two */
static PyObject *small_ints[SMALL_INTS];
static struct {
    long long value;
    PyObject *obj;
} large_ints[LARGE_INTS];

static PyObject *new_int(long long value) {
    PyObject **spot;
    if (value >= 0 && value < SMALL_INTS) {
        spot = &small_ints[value];
    } else {
        unsigned index = (unsigned)(((unsigned long long)value * 0x9E3779B97F4A7C15ull) >> 52);
        if (large_ints[index].obj != NULL && large_ints[index].value == value) {
            Py_INCREF(large_ints[index].obj);
            return large_ints[index].obj;
        }
        PyObject *made = PyLong_FromLongLong(value);
        if (made == NULL) return NULL;
        Py_XSETREF(large_ints[index].obj, made);
        large_ints[index].value = value;
        Py_INCREF(made);
        return made;
    }
    if (*spot == NULL) {
        *spot = PyLong_FromLongLong(value);
        if (*spot == NULL) return NULL;
    }
    Py_INCREF(*spot);
    return *spot;
}

static inline int put_int(PyObject *obj, Py_ssize_t offset, long long value) {
    PyObject *v = new_int(value);
    if (v == NULL) return -1;
    put(obj, offset, v);
    return 0;
}

static PyObject *new_element(uint32_t tag, PyObject *vr, Py_ssize_t start, Py_ssize_t vstart,
                             long long length, Py_ssize_t end) {
    PyObject *el = element_type->tp_alloc(element_type, 0);
    if (el == NULL) return NULL;
    Py_INCREF(vr);
    put(el, el_off[1], vr);
    Py_INCREF(Py_None);
    put(el, el_off[6], Py_None);
    Py_INCREF(Py_None);
    put(el, el_off[7], Py_None);
    if (put_int(el, el_off[0], tag) || put_int(el, el_off[2], start) ||
        put_int(el, el_off[3], vstart) || put_int(el, el_off[4], length) ||
        put_int(el, el_off[5], end)) {
        Py_DECREF(el);
        return NULL;
    }
    return el;
}

/* replace an element's slot (items, item_enc, end) */
static inline void set_slot(PyObject *el, Py_ssize_t offset, PyObject *value) {
    PyObject *old = slot(el, offset);
    put(el, offset, value);
    Py_XDECREF(old);
}

static int dataset(Walk *w, Py_ssize_t pos, Py_ssize_t end, int end_given, const Enc *enc,
                   int depth, int until_item_end, PyObject *out, Py_ssize_t *after);

static int item(Walk *w, Py_ssize_t pos, uint32_t length, const Enc *enc, int depth,
                Py_ssize_t bound, PyObject *items, Py_ssize_t *item_end) {
    Py_ssize_t vstart = pos + 8, end;
    PyObject *elements = PyList_New(0);
    if (elements == NULL) return PY_ERROR;
    int rc;
    if (length == UNDEFINED) {
        rc = dataset(w, vstart, 0, 0, enc, depth + 1, 1, elements, &end);
    } else {
        end = vstart + (Py_ssize_t)length;
        if (end > bound) {
            Py_DECREF(elements);
            return BAD;
        }
        Py_ssize_t ignored;
        rc = dataset(w, vstart, end, 1, enc, depth + 1, 0, elements, &ignored);
    }
    if (rc != OK) {
        Py_DECREF(elements);
        return rc;
    }
    PyObject *it = item_type->tp_alloc(item_type, 0);
    if (it == NULL) {
        Py_DECREF(elements);
        return PY_ERROR;
    }
    put(it, it_off[4], elements);
    if (put_int(it, it_off[0], pos) || put_int(it, it_off[1], vstart) ||
        put_int(it, it_off[2], length) || put_int(it, it_off[3], end)) {
        Py_DECREF(it);
        return PY_ERROR;
    }
    rc = PyList_Append(items, it);
    Py_DECREF(it);
    *item_end = end;
    return rc ? PY_ERROR : OK;
}

/* the items of a defined-length sequence value [pos, end) */
static int items_defined(Walk *w, Py_ssize_t pos, Py_ssize_t end, const Enc *enc, int depth,
                         PyObject *items) {
    while (pos < end) {
        if (pos + 8 > end) return BAD;
        const unsigned char *p = w->buf + pos;
        uint32_t tag = ((uint32_t)u16(p, enc->little) << 16) | u16(p + 2, enc->little);
        uint32_t length = u32(p + 4, enc->little);
        if (tag == SEQ_END) {
            pos += 8;
            continue;
        }
        if (tag != ITEM) return BAD;
        int rc = item(w, pos, length, enc, depth, end, items, &pos);
        if (rc != OK) return rc;
    }
    return pos == end ? OK : BAD;
}

static int items_undefined(Walk *w, Py_ssize_t pos, const Enc *enc, int depth, PyObject *items,
                           Py_ssize_t *after) {
    for (;;) {
        if (pos + 8 > w->size) return BAD;
        const unsigned char *p = w->buf + pos;
        uint32_t tag = ((uint32_t)u16(p, enc->little) << 16) | u16(p + 2, enc->little);
        uint32_t length = u32(p + 4, enc->little);
        if (tag == SEQ_END) {
            *after = pos + 8;
            return OK;
        }
        if (tag != ITEM) return BAD;
        int rc = item(w, pos, length, enc, depth, w->size, items, &pos);
        if (rc != OK) return rc;
    }
}

/* encapsulated pixel data fragments up to the sequence delimiter */
static int fragments(const Walk *w, Py_ssize_t pos, const Enc *enc, Py_ssize_t *after) {
    for (;;) {
        if (pos + 8 > w->size) return BAD;
        const unsigned char *p = w->buf + pos;
        uint32_t tag = ((uint32_t)u16(p, enc->little) << 16) | u16(p + 2, enc->little);
        uint32_t length = u32(p + 4, enc->little);
        if (tag == SEQ_END) {
            *after = pos + 8;
            return OK;
        }
        if (tag != ITEM || length == UNDEFINED) return BAD;
        pos += 8 + (Py_ssize_t)length;
        if (pos > w->size) return BAD;
    }
}

/* past plain private elements (explicit VR LE, defined lengths, no SQ/UI/UN, ascending) */
static Py_ssize_t skip_private(const Walk *w, Py_ssize_t pos, Py_ssize_t limit, uint32_t *last) {
    while (pos + 12 <= limit) {
        const unsigned char *p = w->buf + pos;
        unsigned group = u16(p, 1), elem = u16(p + 2, 1);
        if (!(group & 1)) break;
        int index = vr_index(p + 4);
        if (index < 0 || !vr_kind[index]) break;
        if ((p[4] == 'S' && p[5] == 'Q') || (p[4] == 'U' && (p[5] == 'I' || p[5] == 'N')))
            break;
        uint32_t length;
        Py_ssize_t end;
        if (vr_kind[index] == 2) {
            length = u32(p + 8, 1);
            end = pos + 12 + (Py_ssize_t)length;
        } else {
            length = u16(p + 6, 1);
            end = pos + 8 + (Py_ssize_t)length;
        }
        uint32_t tag = ((uint32_t)group << 16) | elem;
        if (tag <= *last || length == UNDEFINED || end > limit || tag >= 0xFFFE0000u) break;
        *last = tag;
        pos = end;
    }
    return pos;
}

static int append_run(PyObject *out, uint32_t tag, Py_ssize_t start, Py_ssize_t end) {
    PyObject *el = new_element(tag, vr_str[vr_index((const unsigned char *)"UN")], start, start,
                               end - start, end);
    if (el == NULL) return PY_ERROR;
    int rc = PyList_Append(out, el);
    Py_DECREF(el);
    return rc ? PY_ERROR : OK;
}

/* the VR of an implicit element as two letters ("??" when not two ASCII letters) */
static void vr_letters(PyObject *vr, char *two) {
    two[0] = two[1] = '?';
    if (PyUnicode_GET_LENGTH(vr) == 2 && PyUnicode_KIND(vr) == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *d = PyUnicode_1BYTE_DATA(vr);
        two[0] = (char)d[0];
        two[1] = (char)d[1];
    }
}

static int dataset(Walk *w, Py_ssize_t pos, Py_ssize_t end, int end_given, const Enc *enc,
                   int depth, int until_item_end, PyObject *out, Py_ssize_t *after) {
    if (depth > w->max_depth) return TOO_DEEP;
    const unsigned char *buf = w->buf;
    Py_ssize_t limit = end_given ? end : w->size;
    if (limit > w->size) return BAD;
    int little = enc->little, implicit = enc->implicit;
    int stop = w->stop_at_pixels && depth == 0;
    int runs = w->private_runs && depth == 0 && !implicit && little;
    Py_ssize_t run_start = -1;
    uint32_t run_tag = 0, run_last = 0;
    int rc;
    while (pos < limit) {
        if (pos + 8 > limit) {
            if (until_item_end && !end_given) return BAD;
            if (depth == 0 && all_nul(buf + pos, limit - pos)) break;
            return BAD;
        }
        const unsigned char *p = buf + pos;
        uint32_t tag = ((uint32_t)u16(p, little) << 16) | u16(p + 2, little);
        if (tag >= 0xFFFE0000u) {
            if (tag == ITEM_END && until_item_end) {
                *after = pos + 8;
                return OK;
            }
            return BAD;
        }
        if (stop && tag >= PIXEL_DATA) {
            w->stopped = w->at_pixels = 1;
            if (run_start >= 0) {
                if (tag <= run_last) return GIVE_UP;
                if ((rc = append_run(out, run_tag, run_start, pos)) != OK) return rc;
            }
            *after = pos;
            return OK;
        }
        uint32_t length;
        Py_ssize_t vstart;
        PyObject *vr;  /* borrowed, or owned when implicit */
        char two[2];
        if (implicit) {
            length = u32(p + 4, little);
            PyObject *tag_obj = new_int(tag);
            if (tag_obj == NULL) return PY_ERROR;
            vr = PyObject_CallOneArg(dictionary_vr, tag_obj);
            Py_DECREF(tag_obj);
            if (vr == NULL) return PY_ERROR;
            if (!PyUnicode_Check(vr)) {
                Py_DECREF(vr);
                return GIVE_UP;
            }
            vr_letters(vr, two);
            vstart = pos + 8;
        } else {
            int index = vr_index(p + 4);
            if (index < 0 || !vr_kind[index]) {
                if (tag == 0 && depth == 0 && all_nul(p, limit - pos)) break;
                return BAD;
            }
            vr = vr_str[index];
            two[0] = (char)p[4];
            two[1] = (char)p[5];
            if (vr_kind[index] == 2) {
                if (pos + 12 > limit) return BAD;
                length = u32(p + 8, little);
                vstart = pos + 12;
            } else {
                length = u16(p + 6, little);
                vstart = pos + 8;
            }
        }
        int is_sq = two[0] == 'S' && two[1] == 'Q';
        int is_un = two[0] == 'U' && two[1] == 'N';
        int is_ui = two[0] == 'U' && two[1] == 'I';
        if (runs) {  /* explicit VR only: vr is borrowed */
            if ((tag & 0x10000) && length != UNDEFINED && !is_sq && !is_ui &&
                vstart + (Py_ssize_t)length <= limit && (!is_un || !starts_with_item(w, vstart))) {
                if (run_start < 0) {
                    run_start = pos;
                    run_tag = tag;
                } else if (tag <= run_last) {
                    return GIVE_UP;
                }
                run_last = tag;
                pos = skip_private(w, vstart + (Py_ssize_t)length, limit, &run_last);
                continue;
            }
            if (run_start >= 0) {
                if (tag <= run_last) return GIVE_UP;
                if ((rc = append_run(out, run_tag, run_start, pos)) != OK) return rc;
                run_start = -1;
            }
        }
        PyObject *el;
        Py_ssize_t el_end = 0;  /* set wherever rc comes back OK */
        if (length == UNDEFINED) {
            el = new_element(tag, vr, pos, vstart, length, 0);
            if (implicit) Py_DECREF(vr);
            if (el == NULL) return PY_ERROR;
            if (tag == PIXEL_DATA || (two[0] == 'O' && (two[1] == 'B' || two[1] == 'W'))) {
                rc = fragments(w, vstart, enc, &el_end);
            } else if (is_un || is_sq) {
                Enc sub_enc = *enc;
                if (is_un) {
                    sub_enc.obj = implicit_le;
                    sub_enc.little = 1;
                    sub_enc.implicit = 1;
                }
                PyObject *items = PyList_New(0);
                if (items == NULL) {
                    Py_DECREF(el);
                    return PY_ERROR;
                }
                rc = items_undefined(w, vstart, &sub_enc, depth, items, &el_end);
                set_slot(el, el_off[6], items);
                Py_INCREF(sub_enc.obj);
                set_slot(el, el_off[7], sub_enc.obj);
            } else {
                rc = BAD;  /* undefined length on a non-sequence element */
            }
            if (rc == OK) {
                PyObject *e = new_int(el_end);
                if (e == NULL) rc = PY_ERROR;
                else set_slot(el, el_off[5], e);
            }
            if (rc != OK) {
                Py_DECREF(el);
                return rc;
            }
        } else {
            el_end = vstart + (Py_ssize_t)length;
            if (el_end > limit) {
                if (implicit) Py_DECREF(vr);
                if (w->stop_at_pixels && el_end > w->size && !end_given) {
                    w->stopped = 1;
                    *after = pos;
                    return OK;
                }
                return BAD;
            }
            el = new_element(tag, vr, pos, vstart, length, el_end);
            if (implicit) Py_DECREF(vr);
            if (el == NULL) return PY_ERROR;
            if (is_sq) {
                PyObject *items = PyList_New(0);
                if (items == NULL) {
                    Py_DECREF(el);
                    return PY_ERROR;
                }
                rc = items_defined(w, vstart, el_end, enc, depth, items);
                set_slot(el, el_off[6], items);
                Py_INCREF(enc->obj);
                set_slot(el, el_off[7], enc->obj);
                if (rc != OK) {
                    Py_DECREF(el);
                    return rc;
                }
            } else if (is_un && length >= 8 && tag != PIXEL_DATA && starts_with_item(w, vstart)) {
                /* CP-246: a UN value starting with an item may hide a sequence (PHI inside) */
                Enc sub_enc = *enc;
                if (!implicit) {
                    sub_enc.obj = implicit_le;
                    sub_enc.little = 1;
                    sub_enc.implicit = 1;
                }
                PyObject *items = PyList_New(0);
                if (items == NULL) {
                    Py_DECREF(el);
                    return PY_ERROR;
                }
                rc = items_defined(w, vstart, el_end, &sub_enc, depth, items);
                if (rc == OK) {
                    set_slot(el, el_off[6], items);
                    Py_INCREF(sub_enc.obj);
                    set_slot(el, el_off[7], sub_enc.obj);
                } else {
                    Py_DECREF(items);
                    if (rc != BAD) {  /* nested too deep, or a Python error: not "no sequence" */
                        Py_DECREF(el);
                        return rc;
                    }
                }
            }
        }
        rc = PyList_Append(out, el);
        Py_DECREF(el);
        if (rc) return PY_ERROR;
        pos = el_end;
    }
    if (run_start >= 0 && (rc = append_run(out, run_tag, run_start, pos)) != OK) return rc;
    if (until_item_end && !end_given) return BAD;
    *after = pos;
    return OK;
}

PyDoc_STRVAR(walk_doc,
"walk(buf, enc, little, implicit, stop_at_pixels, private_runs, max_depth, start=0)\n"
"-> (elements, stopped, at_pixels), or None where _Parser would raise: the data set\n"
"from ``start`` to the end of ``buf`` (offsets index ``buf``).");

static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *enc_obj;
    int little, implicit, stop_at_pixels, private_runs, max_depth;
    Py_ssize_t start = 0;
    if (element_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tasks._walker.setup() not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*Oppppi|n", &view, &enc_obj, &little, &implicit,
                          &stop_at_pixels, &private_runs, &max_depth, &start))
        return NULL;
    if (start < 0 || start > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "start is outside the buffer");
        return NULL;
    }
    Walk w = {view.buf, view.len, stop_at_pixels, private_runs, max_depth, 0, 0};
    Enc enc = {enc_obj, little, implicit};
    PyObject *elements = PyList_New(0);
    if (elements == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t after;
    int rc = dataset(&w, start, view.len, 1, &enc, 0, 0, elements, &after);
    PyBuffer_Release(&view);
    if (rc != OK) {
        Py_DECREF(elements);
        if (rc == PY_ERROR) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NOO)", elements, w.stopped ? Py_True : Py_False,
                         w.at_pixels ? Py_True : Py_False);
}

PyDoc_STRVAR(meta_doc,
"meta(buf, pos, shift) -> (elements, end): the group 0002 elements from pos (explicit VR\n"
"little endian), their offsets plus shift; None where _meta_elements would raise.");

static PyObject *meta(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, shift;
    if (element_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tasks._walker.setup() not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nn", &view, &pos, &shift)) return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t size = view.len;
    PyObject *elements = PyList_New(0);
    if (elements == NULL || pos < 0) goto fail;
    while (pos + 8 <= size) {
        const unsigned char *p = buf + pos;
        unsigned group = u16(p, 1), elem = u16(p + 2, 1);
        if (group != 0x0002) break;
        int index = vr_index(p + 4);
        if (index < 0 || !vr_kind[index]) goto refuse;
        uint32_t length;
        Py_ssize_t vstart;
        if (vr_kind[index] == 2) {
            if (pos + 12 > size) goto refuse;
            length = u32(p + 8, 1);
            vstart = pos + 12;
        } else {
            length = u16(p + 6, 1);
            vstart = pos + 8;
        }
        if (length == UNDEFINED || vstart + (Py_ssize_t)length > size) goto refuse;
        PyObject *el = new_element(((uint32_t)group << 16) | elem, vr_str[index], pos + shift,
                                   vstart + shift, length, vstart + (Py_ssize_t)length + shift);
        if (el == NULL) goto fail;
        int rc = PyList_Append(elements, el);
        Py_DECREF(el);
        if (rc) goto fail;
        pos = vstart + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nn)", elements, pos);
refuse:
    Py_DECREF(elements);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(elements);
    PyBuffer_Release(&view);
    return NULL;
}

PyDoc_STRVAR(ascending_tags_doc,
"ascending_tags(elements) -> [tag, ...], or None unless every element's tag is a plain\n"
"int greater than the one before (PS3.5 7.1): the Python check then finds the error.");

static PyObject *ascending_tags(PyObject *self, PyObject *elements) {
    if (element_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tasks._walker.setup() not called");
        return NULL;
    }
    if (!PyList_CheckExact(elements)) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(elements);
    PyObject *tags = PyList_New(n);
    if (tags == NULL) return NULL;
    long long previous = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *el = PyList_GET_ITEM(elements, i);
        long long value = Py_TYPE(el) == element_type ? int_slot(el, el_off[0]) : -1;
        if (value < 0 || value <= previous) {
            Py_DECREF(tags);
            Py_RETURN_NONE;
        }
        previous = value;
        PyObject *tag = slot(el, el_off[0]);
        Py_INCREF(tag);
        PyList_SET_ITEM(tags, i, tag);
    }
    return tags;
}

PyDoc_STRVAR(setup_doc, "setup(Element, Item, implicit_le_encoding, dictionary_vr)");

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *el_cls, *it_cls, *implicit, *lookup;
    if (!PyArg_ParseTuple(args, "O!O!OO", &PyType_Type, &el_cls, &PyType_Type, &it_cls,
                          &implicit, &lookup))
        return NULL;
    static const char *el_names[] = {"tag", "vr", "start", "value_start", "length", "end",
                                     "items", "item_enc"};
    static const char *it_names[] = {"start", "value_start", "length", "end", "elements"};
    for (int i = 0; i < 8; i++)
        if (slot_offset(el_cls, el_names[i], &el_off[i])) return NULL;
    for (int i = 0; i < 5; i++)
        if (slot_offset(it_cls, it_names[i], &it_off[i])) return NULL;
    Py_INCREF(el_cls);
    Py_INCREF(it_cls);
    Py_INCREF(implicit);
    Py_INCREF(lookup);
    Py_XSETREF(element_type, (PyTypeObject *)el_cls);
    Py_XSETREF(item_type, (PyTypeObject *)it_cls);
    Py_XSETREF(implicit_le, implicit);
    Py_XSETREF(dictionary_vr, lookup);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, walk_doc},
    {"meta", meta, METH_VARARGS, meta_doc},
    {"ascending_tags", ascending_tags, METH_O, ascending_tags_doc},
    {"setup", setup, METH_VARARGS, setup_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tasks._walker",
    "The DICOM element walker of tasks.dicomio in C (see _walker.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__walker(void) {
    for (int kind = 1; kind <= 2; kind++) {
        const char **names = kind == 2 ? LONG_VRS : SHORT_VRS;
        for (int i = 0; names[i]; i++) {
            int index = vr_index((const unsigned char *)names[i]);
            vr_kind[index] = (unsigned char)kind;
            if (vr_str[index] == NULL) {
                vr_str[index] = PyUnicode_InternFromString(names[i]);
                if (vr_str[index] == NULL) return NULL;
            }
        }
    }
    return PyModule_Create(&module);
}
