/*
 * SpanRecords: ended spans on their way from the span-end path (main thread)
 * to the watch thread, in two bounded native stores.
 *
 *  - The queue of records not yet published: the watch thread takes them in
 *    batches, already summed per span name (what the metrics need), plus the
 *    whole records that sinks, summary events or the span size threshold
 *    want.
 *  - The recently ended spans that a sample or a large-allocation event
 *    names, by group id (name, trace id, span id), for the watch thread that
 *    drains those after the span ended. A ring of the last `recent` such
 *    spans with an open-addressing index; the oldest is forgotten when a new
 *    one comes. Spans nothing names are not kept: remembering every span
 *    cost more per span (cache misses) than the rest of the span end.
 *
 * Both hold only strings and ints (never GC-tracked objects); the queue
 * holds a span's ids and times as C integers (record_ints.h). As Python
 * tuples in a deque and a dict, the same bookkeeping made young collections
 * run every few hundred spans and cost the watch thread more than the
 * metrics it fed.
 */
#include "spans.h"

#include <stdlib.h>
#include <string.h>

#include "span_record.h"

typedef struct {
    uint64_t gid;
    PyObject *name, *trace_id, *span_id; /* strong references, or NULL */
} recent_entry;

typedef struct {
    PyObject_HEAD
    span_record *ring;
    Py_ssize_t capacity;
    Py_ssize_t head; /* oldest */
    Py_ssize_t len;
    unsigned long long dropped;
    recent_entry *recent;
    uint32_t recent_cap, recent_len, recent_next; /* next: slot to write (oldest when full) */
    uint32_t *index;                              /* recent slot + 1; 0: empty */
    uint32_t index_mask;
    uint64_t rng; /* xorshift64* state for the span-size sample */
    /* take()'s batch, kept between calls: a batch of 4096 records is 512 KiB,
       which malloc maps afresh (and faults in page by page) each time. */
    span_record *batch;
    Py_ssize_t batch_cap;
    int batch_busy; /* a take() running now uses it: another one mallocs its own */
    int wake_due;   /* the queue just reached WAKE_AT records (records_wake_due) */
} SpanRecords;

/* A queue this long asks for the watch thread (records_wake_due): 8,192
   records are 1.05 MiB. Left to its timer (up to half a second), the
   watch thread found the suite's `spans` loop 20,000 records behind: 2.7
   MiB of the ring written for the first time, about 700 page faults a run
   (the ring's pages stay with the process once touched). Woken at this
   length it keeps writing the first 1 MiB (take() restarts the queue at
   the front): about 410 faults. Each wake is a watch tick, and each tick
   hands the GIL back and forth with the program some five to ten times
   (its cffi calls release it): waking at 2,048 records took about 130
   faults but 115 of those hand-offs a loop, at 8,192 about 55. */
#define WAKE_AT 8192

static void clear_record(span_record *r)
{
    Py_CLEAR(r->name);
    record_ints_clear(&r->ints);
}

/* ------------------------------------------------ recently ended spans */

static inline uint32_t home_of(const SpanRecords *self, uint64_t gid)
{
    return (uint32_t)((gid * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & self->index_mask;
}

/* Index position holding recent slot `slot`, or UINT32_MAX. */
static uint32_t index_find(const SpanRecords *self, uint64_t gid)
{
    for (uint32_t i = home_of(self, gid);; i = (i + 1) & self->index_mask) {
        uint32_t v = self->index[i];
        if (v == 0)
            return UINT32_MAX;
        if (self->recent[v - 1].gid == gid)
            return i;
    }
}

/* Linear probing with backward-shift deletion: no tombstones to clean up. */
static void index_delete_at(SpanRecords *self, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & self->index_mask;
        uint32_t v = self->index[j];
        if (v == 0)
            break;
        uint32_t k = home_of(self, self->recent[v - 1].gid);
        /* Move j's entry into the hole at i unless its home lies in (i, j]. */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            self->index[i] = v;
            i = j;
        }
    }
    self->index[i] = 0;
}

static void entry_clear(recent_entry *e)
{
    Py_CLEAR(e->name);
    Py_CLEAR(e->trace_id);
    Py_CLEAR(e->span_id);
}

static void recent_forget_slot(SpanRecords *self, uint32_t slot)
{
    recent_entry *e = &self->recent[slot];
    uint32_t at = index_find(self, e->gid);
    if (at != UINT32_MAX && self->index[at] == slot + 1)
        index_delete_at(self, at);
    entry_clear(e);
}

static void recent_add(SpanRecords *self, uint64_t gid, PyObject *name, PyObject *trace_id,
                       PyObject *span_id)
{
    uint32_t slot = self->recent_next;
    if (self->recent_len == self->recent_cap)
        recent_forget_slot(self, slot); /* the oldest */
    else
        self->recent_len++;
    recent_entry *e = &self->recent[slot];
    e->gid = gid;
    e->name = Py_XNewRef(name);
    e->trace_id = Py_XNewRef(trace_id);
    e->span_id = Py_XNewRef(span_id);
    uint32_t at = index_find(self, gid);
    if (at == UINT32_MAX) {
        at = home_of(self, gid);
        while (self->index[at] != 0)
            at = (at + 1) & self->index_mask;
    }
    self->index[at] = slot + 1; /* a repeated id names its latest span */
    self->recent_next = (slot + 1) % self->recent_cap;
}

static void recent_clear(SpanRecords *self)
{
    for (uint32_t s = 0; s < self->recent_cap; s++)
        entry_clear(&self->recent[s]);
    memset(self->index, 0, ((size_t)self->index_mask + 1) * sizeof(uint32_t));
    self->recent_len = 0;
    self->recent_next = 0;
}

/* ------------------------------------------------------------- the queue */

void records_add(PyObject *records, uint64_t gid, const oa_span_figures *f, PyObject *name,
                 PyObject *trace_id, PyObject *span_id, PyObject *start, PyObject *end)
{
    SpanRecords *self = (SpanRecords *)records;
    /* Only spans a sample or an event names are looked up after they end. */
    if (f->noted)
        recent_add(self, gid, name, trace_id, span_id);
    if (self->len == self->capacity) {
        self->dropped++;
        return;
    }
    span_record *r = &self->ring[(self->head + self->len) % self->capacity];
    r->gid = gid;
    r->f = *f;
    r->name = Py_XNewRef(name);
    record_ints_set(&r->ints, trace_id, span_id, start, end);
    if (++self->len == WAKE_AT)
        self->wake_due = 1;
}

int records_wake_due(PyObject *records)
{
    SpanRecords *self = (SpanRecords *)records;
    int due = self->wake_due;
    self->wake_due = 0;
    return due;
}

static void sr_clear_all(SpanRecords *self)
{
    while (self->len > 0) {
        clear_record(&self->ring[self->head]);
        self->head = (self->head + 1) % self->capacity;
        self->len--;
    }
    self->head = 0;
}

static PyObject *sr_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "recent", NULL};
    Py_ssize_t capacity, recent = 32768;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|n:SpanRecords", kwlist, &capacity, &recent))
        return NULL;
    if (capacity < 1 || capacity > 100000000 || recent < 1 || recent > 10000000) {
        PyErr_SetString(PyExc_ValueError,
                        "capacity must be between 1 and 100000000, recent between 1 and 10000000");
        return NULL;
    }
    SpanRecords *self = (SpanRecords *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    uint32_t index_size = 2;
    while (index_size < 2 * (uint32_t)recent)
        index_size <<= 1; /* at most half full */
    /* calloc, not PyMem: this is the tracker's own memory, not the app's. */
    self->ring = calloc((size_t)capacity, sizeof(span_record));
    self->recent = calloc((size_t)recent, sizeof(recent_entry));
    self->index = calloc(index_size, sizeof(uint32_t));
    if (self->ring == NULL || self->recent == NULL || self->index == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->capacity = capacity;
    self->recent_cap = (uint32_t)recent;
    self->index_mask = index_size - 1;
    self->rng = ((uint64_t)(uintptr_t)self * UINT64_C(0x9E3779B97F4A7C15)) | 1;
    return (PyObject *)self;
}

static void sr_dealloc(SpanRecords *self)
{
    if (self->ring != NULL)
        sr_clear_all(self);
    if (self->recent != NULL && self->index != NULL)
        recent_clear(self);
    free(self->ring);
    free(self->recent);
    free(self->index);
    free(self->batch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Room for n taken records: the kept batch, grown to n, unless another take()
   is using it (one that made a Python object, which let this thread in),
   then a block of its own. NULL when out of memory. */
static span_record *batch_for(SpanRecords *self, Py_ssize_t n)
{
    if (self->batch_busy)
        return malloc((size_t)n * sizeof(span_record));
    if (n > self->batch_cap) {
        span_record *grown = realloc(self->batch, (size_t)n * sizeof(span_record));
        if (grown == NULL)
            return NULL;
        self->batch = grown;
        self->batch_cap = n;
    }
    self->batch_busy = 1;
    return self->batch;
}

/* take(max_records, full=False, threshold=0, rate=1.0) -> (sums by name, whole records) */
static PyObject *sr_take(SpanRecords *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_records", "full", "threshold", "rate", NULL};
    Py_ssize_t max;
    int full = 0;
    unsigned long long threshold = 0;
    double rate = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|pKd:take", kwlist, &max, &full, &threshold,
                                     &rate))
        return NULL;
    if (!(rate >= 0.0 && rate <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "rate must be between 0 and 1");
        return NULL;
    }
    Py_ssize_t n = max < self->len ? (max < 0 ? 0 : max) : self->len;
    span_record *taken = NULL;
    if (n > 0) {
        /* Moved out of the ring before any Python object is made: making one
           can run a collection, finalizers and other threads, which may end
           spans (adding here) or take records too. */
        taken = batch_for(self, n);
        if (taken == NULL)
            return PyErr_NoMemory();
        for (Py_ssize_t i = 0; i < n; i++) {
            taken[i] = self->ring[self->head];
            memset(&self->ring[self->head], 0, sizeof(span_record));
            self->head = (self->head + 1) % self->capacity;
            self->len--;
        }
        /* Drained: the next record goes to the ring's start, so a queue the
           watch thread keeps up with stays in the same few cache lines and
           pages instead of walking all of its capacity (12.8 MiB for the
           processor's), faulting each page in on the first round. */
        if (self->len == 0)
            self->head = 0;
    }
    PyObject *result = NULL, *sums = sums_by_name(taken, n, rate, &self->rng), *whole = PyList_New(0);
    for (Py_ssize_t i = 0; i < n && sums != NULL && whole != NULL; i++) {
        if (!full && (threshold == 0 || taken[i].f.alloc_bytes < threshold))
            continue;
        PyObject *t = record_tuple(&taken[i]);
        if (t == NULL || PyList_Append(whole, t) < 0)
            Py_CLEAR(whole);
        Py_XDECREF(t);
    }
    if (sums != NULL && whole != NULL)
        result = PyTuple_Pack(2, sums, whole);
    Py_XDECREF(sums);
    Py_XDECREF(whole);
    for (Py_ssize_t i = 0; i < n; i++)
        clear_record(&taken[i]);
    if (taken == self->batch)
        self->batch_busy = 0;
    else
        free(taken);
    return result;
}

static PyObject *sr_lookup(SpanRecords *self, PyObject *arg)
{
    uint64_t gid = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred())
        return NULL;
    uint32_t at = index_find(self, gid);
    if (at == UINT32_MAX)
        Py_RETURN_NONE;
    const recent_entry *e = &self->recent[self->index[at] - 1];
    PyObject *items[3] = {
        str_or_empty(e->name),
        or_zero(e->trace_id),
        or_zero(e->span_id),
    };
    return tuple_of(items, 3);
}

static PyObject *sr_clear(SpanRecords *self, PyObject *Py_UNUSED(ignored))
{
    sr_clear_all(self);
    recent_clear(self);
    Py_RETURN_NONE;
}

static Py_ssize_t sr_len(SpanRecords *self)
{
    return self->len;
}

static PyObject *sr_get_dropped(SpanRecords *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->dropped);
}

static PyObject *sr_get_capacity(SpanRecords *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->capacity);
}

static PyObject *sr_get_wake_at(SpanRecords *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    return PyLong_FromLong(WAKE_AT);
}

static PyObject *sr_get_recent(SpanRecords *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->recent_len);
}

static PyMethodDef sr_methods[] = {
    {"take", (PyCFunction)(void (*)(void))sr_take, METH_VARARGS | METH_KEYWORDS,
     "take(max_records, full=False, threshold=0, rate=1.0): remove up to max_records\n"
     "records, oldest first. Returns (sums, records): per span name (name, bytes,\n"
     "count, trace_id, span_id, sizes, native_bytes), bytes and count over every\n"
     "span, sizes {bytes: spans} over the spans kept with probability rate (the\n"
     "largest first, whose ids are given; else the largest span's ids); and the\n"
     "whole records, all of them when full is set, else those of at least\n"
     "threshold bytes (none for 0)."},
    {"lookup", (PyCFunction)sr_lookup, METH_O,
     "(name, trace_id, span_id) of a recently ended span's group id, or None."},
    {"clear", (PyCFunction)sr_clear, METH_NOARGS,
     "Drop every queued record and forget the recently ended spans."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sr_getset[] = {
    {"dropped", (getter)sr_get_dropped, NULL, "Records not queued because the queue was full.",
     NULL},
    {"capacity", (getter)sr_get_capacity, NULL, "Most records queued at once.", NULL},
    {"recent", (getter)sr_get_recent, NULL, "Recently ended spans remembered.", NULL},
    {"wake_at", (getter)sr_get_wake_at, NULL,
     "Queue length at which the span path wakes the watch thread.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods sr_as_sequence = {
    .sq_length = (lenfunc)sr_len,
};

PyTypeObject SpanRecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_alloc.otel._spanpath.SpanRecords",
    .tp_doc = "Ended spans: the bounded queue of records to publish, and the recently\n"
              "ended spans by group id (strings and ints only).",
    .tp_basicsize = sizeof(SpanRecords),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = sr_new,
    .tp_dealloc = (destructor)sr_dealloc,
    .tp_methods = sr_methods,
    .tp_getset = sr_getset,
    .tp_as_sequence = &sr_as_sequence,
};
