/* Native word store for llmctl.data.fast_words (optional: without a C compiler the numpy path runs).

   Words(classes) is a store of distinct words: their code points, 64-bit hashes and counts, and an open-addressing
   hash table over them. `classes` is the class of every code point (bytes, fast_words' WORD_* values).

   unit(text, slots, starts, insert=True) -> number of tokens, or -1 / -2
       Splits `text` (a str, read in place) under the vectorised rule of fast_words — a token is a maximal run of
       WORD_CHAR code points, or one WORD_SINGLE code point; WORD_SPACE separates — and writes every token's slot
       (the index of its word in the store; -1 for a word not stored when `insert` is false) and start. New words
       are stored (`insert`). Every token is checked code point by code point against the word of its hash.
       -1: a WORD_COMPLEX code point occurs (take the numpy path; words of the tokens before it may have been stored,
       uncounted); -2: a token and a stored word share a hash but differ (a hash collision: fast_words gives up on
       hashing).
   tokens(points, starts, ends, hashes, slots, insert=True) -> 0 or -2
       The same lookup for tokens already split (uint32 code points, int64 bounds, uint64 hashes): the numpy path.
   count(slots)        counts[slot] += 1 for every slot (int64).
   export()            (hashes, code points, starts, lengths, counts) of the stored words, as bytes (uint64, uint32,
                       int64, int64, int64), in slot order.
   ranked(min_count=1) the slots (int64, as bytes) of the words counted at least `min_count` times, by descending
                       count, ties by word (code point by code point: Python's str order) — the vocabulary rule of
                       tokenizers.tokenizer_from_counts.
   absorb(other)       add the words and counts of another store: the slot here of every slot there (int64, as
                       bytes), or None if a word there has the hash of another word here (a collision).
   len(words)          the number of words stored.

   remap(source, target, table, counts, wide) -> tokens, or -1
       Every int32 id of the file `source` as table[id] (int64 table) in the file `target` (uint32 if `wide`, else
       uint16), counting counts[table[id]] += 1: the token files of preprocess's single word pass get their final
       ids (-1: an id outside the table or a value outside counts — the target is then incomplete).

   The hash of code points p[a:b] is sum(p[a + k] * BASE**k) modulo 2**64, as fast_words.scan._hashes computes it (the
   numpy path and this store must agree: a word hashed both ways gets one slot). The GIL is released while a text
   is split and looked up. Calls that can change a store hold its lock; lookups (`insert` false) take none, so
   several threads can look up in one store at once — which nobody may insert into meanwhile (fast_words' encoder
   stores are filled once, then only looked up).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORD_SPACE 0
#define WORD_CHAR 1
#define WORD_SINGLE 2
#define HASH_BASE 0x100000001B3ULL
#define EMPTY UINT64_MAX
#define BYTES (1ULL << 63)
#define MAX_SLOT 0xFFFFFFFEULL
#define MAX_LENGTH 0x7FFFFFFFULL

enum { COMPLEX = -1, COLLISION = -2, NOMEM = -3 };

typedef struct {
    PyObject_HEAD
    PyObject *classes_obj;
    const uint8_t *classes;
    Py_ssize_t n_classes;
    /* the table: `cap` (a power of 2) entries of four uint64 so that one probe touches one cache line — hash;
       slot | length << 32 | BYTES (EMPTY: a free entry); start of the word's code points; and for a word of at
       most 8 code points all below 256 (BYTES set) those code points packed little-endian, so that most tokens
       of 1-byte strs are checked with one comparison. Kept at most half full. */
    uint64_t *table;
    size_t cap;
    uint64_t *hashes;
    int64_t *starts, *lengths, *counts;
    size_t n, room;
    uint32_t *points;
    size_t used, points_room;
    PyThread_type_lock lock;
} Words;

/* ------------------------------------------------------------------ storage (called with the lock held) */

static int grow(void **p, size_t room, size_t item) {
    void *q = realloc(*p, room * item);
    if (!q) return NOMEM;
    *p = q;
    return 0;
}

static int reserve_words(Words *w, size_t need) {
    if (need <= w->room) return 0;
    size_t room = w->room * 2 > need ? w->room * 2 : need;
    if (grow((void **)&w->hashes, room, 8) || grow((void **)&w->starts, room, 8) || grow((void **)&w->lengths, room, 8)
        || grow((void **)&w->counts, room, 8))
        return NOMEM;
    w->room = room;
    return 0;
}

static int reserve_points(Words *w, size_t need) {
    if (need <= w->points_room) return 0;
    size_t room = w->points_room * 2 > need ? w->points_room * 2 : need;
    if (grow((void **)&w->points, room, 4)) return NOMEM;
    w->points_room = room;
    return 0;
}

static inline uint64_t *probe(uint64_t *table, size_t cap, uint64_t h) {
    uint64_t mask = (uint64_t)cap - 1, at = (h ^ (h >> 29)) & mask;
    uint64_t *e = table + 4 * at;
    while (e[1] != EMPTY && e[0] != h) {
        at = (at + 1) & mask;
        e = table + 4 * at;
    }
    return e;
}

static void fill(uint64_t *e, uint64_t h, size_t slot, uint64_t start, uint64_t len, const uint32_t *p) {
    uint64_t packed = 0, bytes = len <= 8 ? BYTES : 0;
    for (uint64_t k = 0; k < len && bytes; k++) {
        if (p[k] > 255) bytes = 0;
        packed |= (uint64_t)p[k] << (8 * k);
    }
    e[0] = h;
    e[1] = (uint64_t)slot | len << 32 | bytes;
    e[2] = start;
    e[3] = bytes ? packed : 0;
}

static int rehash(Words *w, size_t cap) {
    uint64_t *table = malloc(cap * 32);
    if (!table) return NOMEM;
    memset(table, 0xff, cap * 32);
    for (size_t s = 0; s < w->n; s++)
        fill(probe(table, cap, w->hashes[s]), w->hashes[s], s, (uint64_t)w->starts[s], (uint64_t)w->lengths[s],
             w->points + w->starts[s]);
    free(w->table);
    w->table = table;
    w->cap = cap;
    return 0;
}

static inline uint32_t point(int kind, const void *data, Py_ssize_t i) {
    return kind == 1 ? ((const uint8_t *)data)[i] : kind == 2 ? ((const uint16_t *)data)[i] : ((const uint32_t *)data)[i];
}

/* Whether the stored word of entry `e` (its length is `len`) is data[a:a + len] (`n` code units in data). */
static inline int same(const Words *w, const uint64_t *e, int kind, const void *data, Py_ssize_t n, Py_ssize_t a,
                       Py_ssize_t len) {
    if (kind == 1 && len <= 8) {
        if (!(e[1] & BYTES)) return 0;
        const uint8_t *d = (const uint8_t *)data + a;
        uint64_t v = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (a + 8 <= n) {
            memcpy(&v, d, 8);
            if (len < 8) v &= (1ULL << (8 * len)) - 1;
            return v == e[3];
        }
#endif
        for (Py_ssize_t k = 0; k < len; k++) v |= (uint64_t)d[k] << (8 * k);
        return v == e[3];
    }
    const uint32_t *p = w->points + e[2];
    if (kind == 4) return memcmp((const uint32_t *)data + a, p, (size_t)len * 4) == 0;
    for (Py_ssize_t k = 0; k < len; k++)
        if (point(kind, data, a + k) != p[k]) return 0;
    return 1;
}

/* The slot of the word data[a:a + len] (hash h; `n` code units in data), stored first if new and `insert` (else
   -1). */
static int find_or_add(Words *w, int kind, const void *data, Py_ssize_t n, Py_ssize_t a, Py_ssize_t len, uint64_t h,
                       int insert, int64_t *slot) {
    uint64_t *e = probe(w->table, w->cap, h);
    if (e[1] != EMPTY) {
        if (((e[1] >> 32) & MAX_LENGTH) != (uint64_t)len || !same(w, e, kind, data, n, a, len)) return COLLISION;
        *slot = (int64_t)(e[1] & 0xFFFFFFFFULL);
        return 0;
    }
    if (!insert) {
        *slot = -1;
        return 0;
    }
    if (w->n >= MAX_SLOT || (uint64_t)len > MAX_LENGTH) return COLLISION;  /* beyond the entry's fields: two passes */
    if (2 * (w->n + 1) > w->cap) {
        if (rehash(w, w->cap * 2)) return NOMEM;
        e = probe(w->table, w->cap, h);
    }
    if (reserve_words(w, w->n + 1) || reserve_points(w, w->used + (size_t)len)) return NOMEM;
    uint32_t *p = w->points + w->used;
    for (Py_ssize_t k = 0; k < len; k++) p[k] = point(kind, data, a + k);
    size_t s = w->n++;
    w->hashes[s] = h;
    w->starts[s] = (int64_t)w->used;
    w->lengths[s] = len;
    w->counts[s] = 0;
    w->used += (size_t)len;
    fill(e, h, s, (uint64_t)w->starts[s], (uint64_t)len, p);
    *slot = (int64_t)s;
    return 0;
}

/* Token bounds and hashes of data[*pos:n] (code units of type T), at most `room` tokens (the last one whole);
   *pos moves past them. The number of tokens, or COMPLEX. */
#define SPLIT(NAME, T)                                                                                             \
    static Py_ssize_t NAME(const uint8_t *classes, uint64_t n_classes, const T *data, Py_ssize_t n,             \
                           Py_ssize_t *pos, Py_ssize_t room, int64_t *starts, int64_t *ends, uint64_t *hashes) { \
        Py_ssize_t tokens = 0, i = *pos;                                                                          \
        while (i < n && tokens < room) {                                                                          \
            uint32_t p = data[i];                                                                                 \
            uint8_t c = (uint64_t)p < n_classes ? classes[p] : WORD_SINGLE;                                       \
            if (c == WORD_SPACE) {                                                                                \
                i++;                                                                                              \
                continue;                                                                                         \
            }                                                                                                     \
            if (c == WORD_SINGLE) {                                                                               \
                starts[tokens] = i;                                                                               \
                ends[tokens] = i + 1;                                                                             \
                hashes[tokens++] = p;                                                                             \
                i++;                                                                                              \
                continue;                                                                                         \
            }                                                                                                     \
            if (c != WORD_CHAR) return COMPLEX;                                                                   \
            Py_ssize_t a = i;                                                                                     \
            uint64_t h = 0, power = 1;                                                                            \
            while (i < n) {                                                                                       \
                p = data[i];                                                                                      \
                if (((uint64_t)p < n_classes ? classes[p] : WORD_SINGLE) != WORD_CHAR) break;                     \
                h += (uint64_t)p * power;                                                                         \
                power *= HASH_BASE;                                                                               \
                i++;                                                                                              \
            }                                                                                                     \
            starts[tokens] = a;                                                                                   \
            ends[tokens] = i;                                                                                     \
            hashes[tokens++] = h;                                                                                 \
        }                                                                                                         \
        *pos = i;                                                                                                 \
        return tokens;                                                                                            \
    }
SPLIT(split_1, uint8_t)
SPLIT(split_2, uint16_t)
SPLIT(split_4, uint32_t)

static Py_ssize_t split(const Words *w, int kind, const void *data, Py_ssize_t n, Py_ssize_t *pos, Py_ssize_t room,
                        int64_t *starts, int64_t *ends, uint64_t *hashes) {
    uint64_t n_classes = (uint64_t)w->n_classes;
    if (kind == 1) return split_1(w->classes, n_classes, data, n, pos, room, starts, ends, hashes);
    if (kind == 2) return split_2(w->classes, n_classes, data, n, pos, room, starts, ends, hashes);
    return split_4(w->classes, n_classes, data, n, pos, room, starts, ends, hashes);
}

/* Slots of tokens [0, n) (bounds in starts/ends, hashes), prefetching the table entries a few tokens ahead: the
   table is larger than the CPU caches for large vocabularies, and the probes are random. */
#define AHEAD 8
static int find_all(Words *w, int kind, const void *data, Py_ssize_t n_data, Py_ssize_t n, const int64_t *starts,
                    const int64_t *ends, const uint64_t *hashes, int insert, int64_t *slots) {
    for (Py_ssize_t t = 0; t < n; t++) {
        if (t + AHEAD < n) {
            uint64_t h = hashes[t + AHEAD];
            __builtin_prefetch(w->table + 4 * ((h ^ (h >> 29)) & ((uint64_t)w->cap - 1)));
        }
        int r = find_or_add(w, kind, data, n_data, starts[t], ends[t] - starts[t], hashes[t], insert, slots + t);
        if (r < 0) return r;
    }
    return 0;
}

/* Split data[0:n] and find (or store, `insert`) every token's word, a block of tokens at a time: the number of
   tokens, or COMPLEX / COLLISION / NOMEM. */
#define BLOCK 512
static Py_ssize_t split_and_find(Words *w, int kind, const void *data, Py_ssize_t n, int insert, int64_t *slots,
                                 int64_t *starts) {
    int64_t ends[BLOCK];
    uint64_t hashes[BLOCK];
    Py_ssize_t pos = 0, tokens = 0;
    while (pos < n) {
        Py_ssize_t got = split(w, kind, data, n, &pos, BLOCK, starts + tokens, ends, hashes);
        if (got < 0) return got;
        int r = find_all(w, kind, data, n, got, starts + tokens, ends, hashes, insert, slots + tokens);
        if (r < 0) return r;
        tokens += got;
    }
    return tokens;
}

/* ------------------------------------------------------------------ buffers */

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get(PyObject *obj, Buf *b, Py_ssize_t itemsize, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0) {
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

static Py_ssize_t count_of(Buf *b) { return b->view.len / b->view.itemsize; }

static PyObject *failed(Py_ssize_t result) {
    if (result == NOMEM) return PyErr_NoMemory();
    return PyLong_FromSsize_t(result);
}

/* ------------------------------------------------------------------ remap */

/* remap(source, target, table, counts, wide) -> tokens, or -1 if an id is outside the table or a value outside the
   counts: every int32 id of the file `source` becomes table[id] in the file `target` (uint32 if `wide`, else
   uint16), and counts[table[id]] += 1. The whole file is done without the GIL (a thread doing it does not wait
   for the interpreter between blocks). */
#define REMAP_BLOCK (1 << 18)
static PyObject *remap(PyObject *self, PyObject *args) {
    PyObject *source = NULL, *target = NULL, *o[2];
    int wide;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "O&O&OOp", PyUnicode_FSConverter, &source, PyUnicode_FSConverter, &target, &o[0],
                          &o[1], &wide))
        goto fail;
    if (get(o[0], &b[0], 8, 0, "table") < 0 || get(o[1], &b[1], 8, 1, "counts") < 0) goto fail;
    const int64_t *table = b[0].view.buf;
    int64_t *counts = b[1].view.buf;
    int64_t n_table = count_of(&b[0]), n_counts = count_of(&b[1]), limit = wide ? UINT32_MAX : UINT16_MAX;
    const char *source_path = PyBytes_AS_STRING(source), *target_path = PyBytes_AS_STRING(target);
    int64_t tokens = 0;
    int error = 0, bad = 0;
    const char *failed_path = NULL;
    Py_BEGIN_ALLOW_THREADS
    int32_t *ids = malloc(REMAP_BLOCK * 4);
    void *out = malloc(REMAP_BLOCK * 4);
    FILE *in = fopen(source_path, "rb");
    FILE *dst = in ? fopen(target_path, "wb") : NULL;
    if (!ids || !out) {
        error = ENOMEM;
    } else if (!in || !dst) {
        error = errno;
        failed_path = in ? target_path : source_path;
    } else {
        size_t n;
        while (!bad && (n = fread(ids, 4, REMAP_BLOCK, in)) > 0) {
            for (size_t i = 0; i < n; i++) {
                int32_t id = ids[i];
                int64_t v = id >= 0 && id < n_table ? table[id] : -1;
                if (v < 0 || v >= n_counts || v > limit) {
                    bad = 1;
                    break;
                }
                counts[v]++;
                if (wide)
                    ((uint32_t *)out)[i] = (uint32_t)v;
                else
                    ((uint16_t *)out)[i] = (uint16_t)v;
            }
            if (!bad && fwrite(out, wide ? 4 : 2, n, dst) != n) {
                error = errno;
                failed_path = target_path;
                break;
            }
            tokens += (int64_t)n;
        }
        if (!error && ferror(in)) {
            error = errno ? errno : EIO;
            failed_path = source_path;
        }
    }
    if (dst && fclose(dst) != 0 && !error) {
        error = errno;
        failed_path = target_path;
    }
    if (in) fclose(in);
    free(ids);
    free(out);
    Py_END_ALLOW_THREADS
    if (error) {
        errno = error;
        if (failed_path)
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, failed_path);
        else
            PyErr_NoMemory();
        goto fail;
    }
    release(b, 2);
    Py_DECREF(source);
    Py_DECREF(target);
    return PyLong_FromLongLong(bad ? -1 : tokens);
fail:
    release(b, 2);
    Py_XDECREF(source);
    Py_XDECREF(target);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"remap", remap, METH_VARARGS,
     "remap(source, target, table, counts, wide) -> tokens: int32 ids -> table[id], counted (-1: out of range)"},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ the type */

static int Words_init(Words *w, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"classes", NULL};
    PyObject *classes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "S", kwlist, &classes)) return -1;
    if (w->lock) {
        PyErr_SetString(PyExc_RuntimeError, "Words is already initialised");
        return -1;
    }
    Py_INCREF(classes);
    w->classes_obj = classes;
    w->classes = (const uint8_t *)PyBytes_AS_STRING(classes);
    w->n_classes = PyBytes_GET_SIZE(classes);
    w->lock = PyThread_allocate_lock();
    if (!w->lock || rehash(w, 1 << 12) || reserve_words(w, 1 << 12) || reserve_points(w, 1 << 16)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Words_dealloc(Words *w) {
    Py_XDECREF(w->classes_obj);
    free(w->table);
    free(w->hashes);
    free(w->starts);
    free(w->lengths);
    free(w->counts);
    free(w->points);
    if (w->lock) PyThread_free_lock(w->lock);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

/* Take a store's lock without holding the GIL: a thread never waits for a lock while holding the GIL, so that
   one holding a lock can always get the GIL back (no deadlock). */
static void lock(Words *w) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(w->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
}

static int ready(Words *w) {
    if (!w->lock) PyErr_SetString(PyExc_RuntimeError, "Words is not initialised");
    return w->lock != NULL;
}

static PyObject *Words_unit(Words *w, PyObject *args) {
    PyObject *text, *o[2];
    int insert = 1;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (!ready(w) || !PyArg_ParseTuple(args, "UOO|p", &text, &o[0], &o[1], &insert)) return NULL;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) return NULL;
#endif
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (get(o[0], &b[0], 8, 1, "slots") < 0 || get(o[1], &b[1], 8, 1, "starts") < 0) {
        release(b, 2);
        return NULL;
    }
    if (count_of(&b[0]) < n || count_of(&b[1]) < n) {
        release(b, 2);
        PyErr_SetString(PyExc_ValueError, "unit: slots and starts need room for len(text) tokens");
        return NULL;
    }
    int64_t *slots = b[0].view.buf, *starts = b[1].view.buf;
    Py_ssize_t result;
    Py_BEGIN_ALLOW_THREADS
    if (insert) PyThread_acquire_lock(w->lock, WAIT_LOCK);
    result = split_and_find(w, kind, data, n, insert, slots, starts);
    if (insert) PyThread_release_lock(w->lock);
    Py_END_ALLOW_THREADS
    release(b, 2);
    return failed(result);
}

static PyObject *Words_tokens(Words *w, PyObject *args) {
    PyObject *o[5];
    int insert = 1;
    Buf b[5];
    memset(b, 0, sizeof b);
    if (!ready(w) || !PyArg_ParseTuple(args, "OOOOO|p", &o[0], &o[1], &o[2], &o[3], &o[4], &insert)) return NULL;
    static const Py_ssize_t sizes[5] = {4, 8, 8, 8, 8};
    static const char *names[5] = {"points", "starts", "ends", "hashes", "slots"};
    for (int i = 0; i < 5; i++)
        if (get(o[i], &b[i], sizes[i], i == 4, names[i]) < 0) {
            release(b, 5);
            return NULL;
        }
    const uint32_t *points = b[0].view.buf;
    const int64_t *starts = b[1].view.buf, *ends = b[2].view.buf;
    const uint64_t *hashes = b[3].view.buf;
    int64_t *slots = b[4].view.buf;
    Py_ssize_t n = count_of(&b[3]), n_points = count_of(&b[0]);
    int bad = count_of(&b[1]) < n || count_of(&b[2]) < n || count_of(&b[4]) < n;
    for (Py_ssize_t t = 0; t < n && !bad; t++)
        bad = starts[t] < 0 || ends[t] < starts[t] || ends[t] > n_points;
    if (bad) {
        release(b, 5);
        PyErr_SetString(PyExc_ValueError, "tokens: inconsistent buffer sizes or token bounds");
        return NULL;
    }
    Py_ssize_t result = 0;
    Py_BEGIN_ALLOW_THREADS
    if (insert) PyThread_acquire_lock(w->lock, WAIT_LOCK);
    result = find_all(w, 4, points, n_points, n, starts, ends, hashes, insert, slots);
    if (insert) PyThread_release_lock(w->lock);
    Py_END_ALLOW_THREADS
    release(b, 5);
    return failed(result);
}

static PyObject *Words_count(Words *w, PyObject *arg) {
    Buf b;
    memset(&b, 0, sizeof b);
    if (!ready(w) || get(arg, &b, 8, 0, "slots") < 0) {
        if (b.held) PyBuffer_Release(&b.view);
        return NULL;
    }
    const int64_t *slots = b.view.buf;
    Py_ssize_t n = count_of(&b);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(w->lock, WAIT_LOCK);
    for (Py_ssize_t t = 0; t < n; t++) {
        if (slots[t] < 0 || (size_t)slots[t] >= w->n) {
            bad = 1;
            break;
        }
        w->counts[slots[t]]++;
    }
    PyThread_release_lock(w->lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b.view);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "count: a slot out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Words_export(Words *w, PyObject *unused) {
    if (!ready(w)) return NULL;
    lock(w);
    PyObject *out = Py_BuildValue("(y#y#y#y#y#)", (const char *)w->hashes, (Py_ssize_t)(w->n * 8),
                                  (const char *)w->points, (Py_ssize_t)(w->used * 4), (const char *)w->starts,
                                  (Py_ssize_t)(w->n * 8), (const char *)w->lengths, (Py_ssize_t)(w->n * 8),
                                  (const char *)w->counts, (Py_ssize_t)(w->n * 8));
    PyThread_release_lock(w->lock);
    return out;
}

typedef struct {
    int64_t count, slot;
    uint64_t head; /* the first two code points (0: none; no word holds U+0000), in str order as a number */
} Ranked;

/* Whether x ranks before y: a higher count, or an equal count and a smaller word (code point by code point, a
   prefix first: Python's str order). */
static inline int before(const Words *w, const Ranked *x, const Ranked *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->head != y->head) return x->head < y->head;
    const uint32_t *a = w->points + w->starts[x->slot], *b = w->points + w->starts[y->slot];
    int64_t la = w->lengths[x->slot], lb = w->lengths[y->slot], m = la < lb ? la : lb;
    for (int64_t k = 0; k < m; k++)
        if (a[k] != b[k]) return a[k] < b[k];
    return la < lb;
}

static PyObject *Words_ranked(Words *w, PyObject *args) {
    long long min_count = 1;
    if (!ready(w) || !PyArg_ParseTuple(args, "|L", &min_count)) return NULL;
    lock(w);
    size_t n = 0;
    Ranked *order = malloc((w->n + 1) * sizeof(Ranked)), *tmp = malloc((w->n + 1) * sizeof(Ranked));
    int64_t *slots = malloc((w->n + 1) * 8);
    if (order && tmp && slots) {
        Py_BEGIN_ALLOW_THREADS
        for (size_t s = 0; s < w->n; s++)
            if (w->counts[s] >= min_count) {
                const uint32_t *p = w->points + w->starts[s];
                order[n].count = w->counts[s];
                order[n].head = (uint64_t)p[0] << 32 | (w->lengths[s] > 1 ? p[1] : 0);
                order[n++].slot = (int64_t)s;
            }
        /* bottom-up merge sort (stable, n log n) */
        Ranked *src = order, *dst = tmp;
        for (size_t width = 1; width < n; width *= 2) {
            for (size_t lo = 0; lo < n; lo += 2 * width) {
                size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
                size_t i = lo, j = mid, k = lo;
                while (i < mid && j < hi) dst[k++] = before(w, src + j, src + i) ? src[j++] : src[i++];
                while (i < mid) dst[k++] = src[i++];
                while (j < hi) dst[k++] = src[j++];
            }
            Ranked *swap = src;
            src = dst;
            dst = swap;
        }
        for (size_t k = 0; k < n; k++) slots[k] = src[k].slot;
        Py_END_ALLOW_THREADS
    }
    PyThread_release_lock(w->lock);
    PyObject *out = order && tmp && slots ? PyBytes_FromStringAndSize((const char *)slots, (Py_ssize_t)(n * 8))
                                          : PyErr_NoMemory();
    free(order);
    free(tmp);
    free(slots);
    return out;
}

static PyTypeObject WordsType;

static PyObject *Words_absorb(Words *w, PyObject *arg) {
    if (!ready(w)) return NULL;
    if (!PyObject_TypeCheck(arg, &WordsType) || arg == (PyObject *)w || !((Words *)arg)->lock) {
        PyErr_SetString(PyExc_TypeError, "absorb: expected another initialised Words");
        return NULL;
    }
    Words *o = (Words *)arg;
    int r = 0;
    PyObject *out = NULL;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(w->lock, WAIT_LOCK);
    PyThread_acquire_lock(o->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
    int64_t *map = malloc((o->n + 1) * 8);
    if (!map) {
        r = NOMEM;
    } else {
        Py_BEGIN_ALLOW_THREADS
        for (size_t s = 0; s < o->n && r == 0; s++) {
            int64_t slot;
            r = find_or_add(w, 4, o->points, (Py_ssize_t)o->used, o->starts[s], o->lengths[s], o->hashes[s], 1, &slot);
            if (r == 0) {
                w->counts[slot] += o->counts[s];
                map[s] = slot;
            }
        }
        Py_END_ALLOW_THREADS
        if (r == 0) out = PyBytes_FromStringAndSize((const char *)map, (Py_ssize_t)(o->n * 8));
    }
    PyThread_release_lock(o->lock);
    PyThread_release_lock(w->lock);
    free(map);
    if (r == NOMEM) return PyErr_NoMemory();
    if (r < 0) Py_RETURN_NONE;
    return out;
}

static Py_ssize_t Words_len(Words *w) { return (Py_ssize_t)w->n; }

static PyMethodDef Words_methods[] = {
    {"unit", (PyCFunction)Words_unit, METH_VARARGS,
     "unit(text, slots, starts, insert=True) -> tokens (-1: complex character, -2: hash collision)"},
    {"tokens", (PyCFunction)Words_tokens, METH_VARARGS,
     "tokens(points, starts, ends, hashes, slots, insert=True) -> 0 (-2: hash collision)"},
    {"count", (PyCFunction)Words_count, METH_O, "count(slots): add one to the count of every slot"},
    {"export", (PyCFunction)Words_export, METH_NOARGS, "(hashes, points, starts, lengths, counts) as bytes"},
    {"absorb", (PyCFunction)Words_absorb, METH_O,
     "absorb(other) -> int64 slots (bytes): add another store's words and counts; the slot here of each of its "
     "slots (None: a hash collision)"},
    {"ranked", (PyCFunction)Words_ranked, METH_VARARGS,
     "ranked(min_count=1) -> int64 slots (bytes) of the words counted min_count times or more, by descending count, "
     "ties by word"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Words_sequence = {.sq_length = (lenfunc)Words_len};

static PyTypeObject WordsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "llmctl.data._wordscan.Words",
    .tp_doc = "A store of distinct words with a hash table, counts and a native splitter.",
    .tp_basicsize = sizeof(Words),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Words_init,
    .tp_dealloc = (destructor)Words_dealloc,
    .tp_methods = Words_methods,
    .tp_as_sequence = &Words_sequence,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wordscan", "Native word store for fast_words.", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__wordscan(void) {
    if (PyType_Ready(&WordsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&WordsType);
    if (PyModule_AddObject(m, "Words", (PyObject *)&WordsType) < 0) {
        Py_DECREF(&WordsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
