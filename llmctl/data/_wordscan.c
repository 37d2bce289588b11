/* Native word scanning for llmctl.data.fast_words (optional: without a C compiler the numpy path runs).

   scan(points, classes, starts, ends, hashes) -> n tokens, or -1 if a complex character occurs
       Token bounds and 64-bit polynomial hashes of a text's code points under the vectorised rule of fast_words:
       a token is a maximal run of WORD_CHAR code points, or one WORD_SINGLE code point; WORD_SPACE separates.
       The hash of points[a:b] is sum(points[a + k] * BASE**k) modulo 2**64, as fast_words._hashes computes it.
   lookup(points, starts, ends, hashes, table, word_points, out) -> missing, or -1
       For every token, the slot of the stored word with its hash (open-addressing `table`, below) after checking
       code point by code point that the token *is* that word (-1 returned on a mismatch: two strings share a
       hash); out[i] = -1 where no word has the hash. Returns how many tokens were missing.
   insert(table, hashes, slots, word_starts, word_lengths) -> None
       Add words to the table; the caller keeps it at most half full (probing needs free entries).

   Buffers are C-contiguous numpy arrays of the documented dtypes (checked by item size).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define WORD_SPACE 0
#define WORD_CHAR 1
#define WORD_SINGLE 2
#define HASH_BASE 0x100000001B3ULL

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get(PyObject *obj, Buf *b, Py_ssize_t itemsize, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        b->held = 0;
        return -1;
    }
    b->held = 1;
    if (b->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes, got %zd", name, itemsize, b->view.itemsize);
        return -1;
    }
    return 0;
}

static void release(Buf *bufs, int n) {
    for (int i = 0; i < n; i++)
        if (bufs[i].held) PyBuffer_Release(&bufs[i].view);
}

static Py_ssize_t count(Buf *b) { return b->view.len / b->view.itemsize; }

static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *o[5];
    Buf b[5];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOO", &o[0], &o[1], &o[2], &o[3], &o[4])) return NULL;
    static const Py_ssize_t sizes[5] = {4, 1, 8, 8, 8};
    static const char *names[5] = {"points", "classes", "starts", "ends", "hashes"};
    for (int i = 0; i < 5; i++)
        if (get(o[i], &b[i], sizes[i], i >= 2, names[i]) < 0) { release(b, 5); return NULL; }
    const uint32_t *points = b[0].view.buf;
    const uint8_t *classes = b[1].view.buf;
    int64_t *starts = b[2].view.buf, *ends = b[3].view.buf;
    uint64_t *hashes = b[4].view.buf;
    Py_ssize_t n = count(&b[0]), n_classes = count(&b[1]), room = count(&b[2]);
    if (count(&b[3]) < room) room = count(&b[3]);
    if (count(&b[4]) < room) room = count(&b[4]);
    Py_ssize_t tokens = 0, i = 0;
    int complex = 0;
    Py_BEGIN_ALLOW_THREADS
    while (i < n) {
        uint32_t p = points[i];
        uint8_t c = p < (uint64_t)n_classes ? classes[p] : WORD_SINGLE;
        if (c == WORD_SPACE) { i++; continue; }
        if (tokens >= room) { complex = 2; break; }
        if (c == WORD_SINGLE) {
            starts[tokens] = i; ends[tokens] = i + 1; hashes[tokens] = p; tokens++; i++;
            continue;
        }
        if (c != WORD_CHAR) { complex = 1; break; }
        Py_ssize_t a = i;
        uint64_t h = 0, power = 1;
        while (i < n) {
            p = points[i];
            if ((p < (uint64_t)n_classes ? classes[p] : WORD_SINGLE) != WORD_CHAR) break;
            h += (uint64_t)p * power;
            power *= HASH_BASE;
            i++;
        }
        starts[tokens] = a; ends[tokens] = i; hashes[tokens] = h; tokens++;
    }
    Py_END_ALLOW_THREADS
    release(b, 5);
    if (complex == 2) { PyErr_SetString(PyExc_ValueError, "scan: output buffers too small"); return NULL; }
    return PyLong_FromSsize_t(complex ? -1 : tokens);
}

/* The hash table: `cap` (a power of 2) entries of four uint64 each — key (the word's hash), slot (EMPTY: a free
   entry), start of the word's code points in word_points, its length — so that one probe touches one cache line. */
#define EMPTY UINT64_MAX

static PyObject *lookup(PyObject *self, PyObject *args) {
    PyObject *o[7];
    Buf b[7];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6])) return NULL;
    static const Py_ssize_t sizes[7] = {4, 8, 8, 8, 8, 4, 8};
    static const char *names[7] = {"points", "starts", "ends", "hashes", "table", "word_points", "out"};
    for (int i = 0; i < 7; i++)
        if (get(o[i], &b[i], sizes[i], i == 6, names[i]) < 0) { release(b, 7); return NULL; }
    const uint32_t *points = b[0].view.buf, *word_points = b[5].view.buf;
    const int64_t *starts = b[1].view.buf, *ends = b[2].view.buf;
    const uint64_t *hashes = b[3].view.buf, *table = b[4].view.buf;
    int64_t *out = b[6].view.buf;
    Py_ssize_t n = count(&b[3]), cap = count(&b[4]) / 4, n_word_points = count(&b[5]);
    if (cap == 0 || (cap & (cap - 1)) || count(&b[4]) != 4 * cap || count(&b[6]) < n || count(&b[1]) < n
        || count(&b[2]) < n) {
        release(b, 7);
        PyErr_SetString(PyExc_ValueError, "lookup: inconsistent buffer sizes (table capacity must be a power of 2)");
        return NULL;
    }
    Py_ssize_t missing = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    uint64_t mask = (uint64_t)cap - 1;
    for (Py_ssize_t t = 0; t < n && !bad; t++) {
        uint64_t h = hashes[t], at = (h ^ (h >> 29)) & mask;
        const uint64_t *e = table + 4 * at;
        while (e[1] != EMPTY && e[0] != h) {
            at = (at + 1) & mask;
            e = table + 4 * at;
        }
        if (e[1] == EMPTY) { out[t] = -1; missing++; continue; }
        out[t] = (int64_t)e[1];
        uint64_t a = (uint64_t)starts[t], len = (uint64_t)(ends[t] - starts[t]);
        if (e[3] != len || e[2] + len > (uint64_t)n_word_points
            || memcmp(points + a, word_points + e[2], (size_t)len * 4) != 0)
            bad = 1;
    }
    Py_END_ALLOW_THREADS
    release(b, 7);
    return PyLong_FromSsize_t(bad ? -1 : missing);
}

static PyObject *insert(PyObject *self, PyObject *args) {
    PyObject *o[5];
    Buf b[5];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOO", &o[0], &o[1], &o[2], &o[3], &o[4])) return NULL;
    static const char *names[5] = {"table", "hashes", "slots", "word_starts", "word_lengths"};
    for (int i = 0; i < 5; i++)
        if (get(o[i], &b[i], 8, i == 0, names[i]) < 0) { release(b, 5); return NULL; }
    uint64_t *table = b[0].view.buf;
    const uint64_t *hashes = b[1].view.buf;
    const int64_t *slots = b[2].view.buf, *word_starts = b[3].view.buf, *word_lengths = b[4].view.buf;
    Py_ssize_t cap = count(&b[0]) / 4, n = count(&b[1]);
    if (cap == 0 || (cap & (cap - 1)) || count(&b[0]) != 4 * cap || count(&b[2]) < n || count(&b[3]) < n
        || count(&b[4]) < n) {
        release(b, 5);
        PyErr_SetString(PyExc_ValueError, "insert: inconsistent buffer sizes (table capacity must be a power of 2)");
        return NULL;
    }
    uint64_t mask = (uint64_t)cap - 1;
    for (Py_ssize_t t = 0; t < n; t++) {
        uint64_t h = hashes[t], at = (h ^ (h >> 29)) & mask;
        while (table[4 * at + 1] != EMPTY && table[4 * at] != h) at = (at + 1) & mask;
        uint64_t *e = table + 4 * at;
        e[0] = h;
        e[1] = (uint64_t)slots[t];
        e[2] = (uint64_t)word_starts[t];
        e[3] = (uint64_t)word_lengths[t];
    }
    release(b, 5);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Token bounds and hashes of code points (-1: a complex character occurs)."},
    {"lookup", lookup, METH_VARARGS, "Slots of tokens in a hash table, checked code point by code point."},
    {"insert", insert, METH_VARARGS, "Add (hash, slot) pairs to a hash table."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wordscan", "Native word scanning for fast_words.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__wordscan(void) { return PyModule_Create(&module); }
