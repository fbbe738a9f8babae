/*
 * The end of a span for AllocationSpanProcessor: _on_ending and on_end.
 *
 * The SDK (>= 1.40) ends a span in this order: it freezes the span's
 * attributes, calls _on_ending(span) on every processor, then
 * on_end(readable) on every processor, where `readable` shares the span's
 * attribute mapping. So _on_ending, which runs before any exporter's
 * processor has the span, is where the group is closed and the alloc.*
 * attributes are added: they then reach every exporter, whichever order the
 * processors were registered in. on_end only passes the span on. A span that
 * _on_ending did not end (an SDK without _on_ending, or a caller that only
 * forwards on_end) is ended in on_end, and the wrapped processor gets a copy
 * with the attributes: the shared mapping may already be in another
 * processor's export queue, and is never changed there.
 */
#include "span_path.h"

#include "../api/tracker_api.h"

/* What ending a span did for this processor. */
#define END_NOT_OURS 0   /* not open here: never started here, reclaimed, or ended already */
#define END_NO_FIGURES 1 /* ours, but nothing to report (overflow group, stale id) */
#define END_FIGURES 2    /* *f holds the span's figures */

/* Group id of the open parent of `span`, 0 when none. */
static uint64_t parent_group(SpanPath *self, PyObject *span)
{
    uint64_t pgid = 0;
    /* The span's own entry is out of `open` already: with nothing else open
       here, no parent can be (the span's parent field is not read). */
    if (self->open->used == 0)
        return 0;
    PyObject *parent = span_field(span, SF_PARENT);
    if (parent == NULL || parent == Py_None)
        goto done;
    PyObject *psid = context_id(parent, 1);
    if (psid == NULL)
        goto done;
    uint64_t psid_at;
    int known = sid_key(psid, &psid_at);
    Py_DECREF(psid);
    PyObject *pspan = known == 0 ? si_get(self->open, psid_at) : NULL; /* borrowed */
    if (pspan == NULL)
        goto done;
    PyObject *g = si_get(self->groups, si_identity(pspan)); /* borrowed */
    if (g != NULL)
        pgid = oa_long_u64_mask(g);
done:
    Py_XDECREF(parent);
    if (PyErr_Occurred())
        PyErr_Clear(); /* a parent we cannot read just gets nothing */
    return pgid;
}

/* One fewer processor holds the group of `span`; 1 when this one is the last
   (it releases the group), 0 when another still holds it, -1 on error. */
static int drop_holder(SpanPath *self, PyObject *span)
{
    if (PyDict_GET_SIZE(self->holders) == 0)
        return 1; /* no span is held by two processors */
    PyObject *held = PyDict_GetItemWithError(self->holders, span); /* borrowed */
    if (held == NULL)
        return PyErr_Occurred() ? -1 : 1;
    long more = PyLong_AsLong(held);
    if (more == -1 && PyErr_Occurred())
        return -1;
    if (more <= 1)
        return PyDict_DelItem(self->holders, span) < 0 ? -1 : 0;
    PyObject *count = PyLong_FromLong(more - 1);
    if (count == NULL)
        return -1;
    int rc = PyDict_SetItem(self->holders, span, count);
    Py_DECREF(count);
    return rc < 0 ? -1 : 0;
}

/* End `span`'s group for this processor: close it, read it into *f, queue
   the record; the last processor holding it passes its inclusive bytes to
   the parent and releases it (or keeps it to watch for a leak, live mode).
   END_* or -1 with an error set. */
static int end_group(SpanPath *self, PyObject *span, oa_span_figures *f)
{
    int result = -1;
    PyObject *ctx = NULL, *sid = NULL, *started = NULL, *gid_obj = NULL, *joined = NULL;
    /* Nothing open here: the span is not ours (the common case in on_end,
       after _on_ending ended it), and its context need not be read. */
    if (self->open->used == 0)
        return END_NOT_OURS;
    ctx = span_field(span, SF_CONTEXT);
    if (ctx == NULL)
        goto done;
    result = END_NOT_OURS;
    if (ctx == Py_None)
        goto done;
    result = -1;
    if ((sid = context_id(ctx, 1)) == NULL)
        goto done;
    uint64_t sid_at;
    if (sid_key(sid, &sid_at) < 0)
        goto done;
    started = si_pop(self->open, sid_at);
    if (started == NULL) {
        result = END_NOT_OURS;
        goto done;
    }
    joined = dict_pop(self->joined, sid);
    if (joined == NULL && PyErr_Occurred())
        goto done;
    int last = drop_holder(self, started);
    if (last < 0)
        goto done;
    gid_obj = last ? si_pop(self->groups, si_identity(started))
                   : Py_XNewRef(si_get(self->groups, si_identity(started)));
    if (gid_obj == NULL) {
        result = END_NOT_OURS; /* reclaimed as stale */
        goto done;
    }
    uint64_t gid = oa_long_u64_mask(gid_obj);
    if (gid == OA_GROUP_OVERFLOW) {
        if (joined == NULL)
            self->overflow_open--; /* this processor put it there */
        result = END_NO_FIGURES;  /* charged to the overflow group; counted natively */
        goto done;
    }
    uint64_t pgid = last ? parent_group(self, span) : 0;
    /* Closes the group first: from here on, work done while the ended span
       is still current (ours, the SDK's, the exporter's) is charged to no
       group. Queues the record before the span leaves by_gid (see
       SpanWatch.span_of). */
    int rc = span_end_core(self->records, gid, pgid, last, last ? self->keep_from : -1, span,
                           ctx, f);
    Py_XDECREF(si_pop(self->by_gid, gid));
    result = END_NO_FIGURES;
    if (rc != 0)
        goto done;
    /* Large-allocation events are waiting, or the queue is long. */
    if (f->events_pending || records_wake_due(self->records)) {
        PyObject *r = PyObject_CallNoArgs(self->wake);
        if (r == NULL) {
            result = -1;
            goto done;
        }
        Py_DECREF(r);
    }
    if (last && !f->released) {
        /* Live mode: the span still holds enough to be watched for a leak. */
        PyObject *figures = figures_tuple(f, 0);
        PyObject *r = NULL;
        if (figures != NULL) {
            PyObject *args[4] = {span, ctx, gid_obj, figures};
            r = PyObject_Vectorcall(self->live_end, args, 4, NULL);
        }
        Py_XDECREF(figures);
        if (r == NULL) {
            result = -1;
            goto done;
        }
        Py_DECREF(r);
    }
    result = END_FIGURES;
done:
    Py_XDECREF(joined);
    Py_XDECREF(gid_obj);
    Py_XDECREF(started);
    Py_XDECREF(sid);
    Py_XDECREF(ctx);
    return result;
}

PyObject *sp_on_ending(SpanPath *self, PyObject *span)
{
    if (!self->shutdown && g_tracker != NULL) {
        oa_span_figures f;
        int r = end_group(self, span, &f);
        if (r < 0)
            sp_failed(self, "_on_ending");
        else if (r == END_FIGURES && self->attributes &&
                 write_span_attributes(span, &f, self->live, self->attributes,
                                       &self->attributes_dropped) < 0)
            self->attributes_unwritable++;
    }
    if (self->next_on_ending != NULL) {
        PyObject *r = PyObject_CallOneArg(self->next_on_ending, span);
        if (r == NULL)
            sp_failed(self, "wrapped _on_ending");
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

PyObject *sp_on_end(SpanPath *self, PyObject *span)
{
    PyObject *out = NULL;
    if (!self->shutdown && g_tracker != NULL) {
        oa_span_figures f;
        int r = end_group(self, span, &f);
        if (r < 0) {
            sp_failed(self, "on_end");
        } else if (r == END_FIGURES && self->attributes && self->next_on_end != NULL) {
            PyObject *figures = figures_tuple(&f, 0);
            PyObject *live = PyLong_FromLong(self->live);
            PyObject *mask = PyLong_FromLong(self->attributes);
            if (figures != NULL && live != NULL && mask != NULL) {
                PyObject *args[4] = {span, figures, live, mask};
                out = PyObject_Vectorcall(self->with_figures, args, 4, NULL);
            }
            Py_XDECREF(mask);
            Py_XDECREF(live);
            Py_XDECREF(figures);
            if (out == NULL)
                sp_failed(self, "on_end");
        }
    }
    if (self->next_on_end != NULL) {
        PyObject *r = PyObject_CallOneArg(self->next_on_end, out != NULL ? out : span);
        if (r == NULL)
            sp_failed(self, "wrapped on_end");
        Py_XDECREF(r);
    }
    Py_XDECREF(out);
    Py_RETURN_NONE;
}
