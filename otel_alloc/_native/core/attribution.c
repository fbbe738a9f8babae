/*
 * The attribution context variable and the thread's current group
 * (see attribution.h).
 */
#include "attribution.h"

#include "../accounting/counters.h"
#include "../accounting/groups.h"
#include "../api/tracker_api.h"
#include "tls.h"

_Static_assert(OA_LIVE_SAMPLED < OA_EPOCH_KINDS, "an epoch carries every OA_LIVE_* kind");

PyObject *g_group_var;

PyObject *oa_group_var(void)
{
    if (g_group_var == NULL) {
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL)
            return NULL;
        /* The default 0 is "no group". Reset only by oa_reset_group_var
           (attribution.h); Python code only sets it. */
        g_group_var = PyContextVar_New("otel_alloc.group", zero);
        Py_DECREF(zero);
    }
    return g_group_var;
}

/* Point a valid attribution cache at `group`, set in the context the cache
   is keyed on: 1 when it now answers for it, 0 when it must be dropped.
   Only the group and its table-entry bits change; the context, epoch,
   threshold and record stay what they were. A span's start and end each
   set the variable, and resolving in full after each cost a span about 300
   instructions and a few dozen instruction-cache misses (callgrind, the
   suite's spans loop). The epoch is read before the group's state, as the
   full resolution does: a release after that read bumps it past the cache's.
   cffi calls this with the GIL released, so that order is what makes it
   right, not the GIL. */
static int cache_takes_group(uint64_t group)
{
    uint64_t kind;
    if (!oa_attr_cache_at(atomic_load_explicit(&g_attr_epoch, memory_order_acquire), &kind))
        return 0;
    if (tls.attr_group == NULL)
        return 1; /* counting is off: no group is charged, whichever id is set */
    oa_group *groups = group_table();
    uint32_t slot = (uint32_t)(group & OA_SLOT_MASK);
    oa_group *g;
    if (group == OA_GROUP_NONE || group == OA_GROUP_OVERFLOW) {
        g = &groups[group];
    } else {
        /* Unknown or stale ids are counted as such by the full resolution. */
        if (slot < OA_FIRST_USER_SLOT || slot >= table_slots(groups))
            return 0;
        g = &groups[slot];
        if (!group_is_open(g, group))
            return 0;
    }
    tls.attr_group = g;
    tls.attr_meta_hi = kind == OA_LIVE_EXACT ? group_meta_hi(groups, g) : 0;
    return 1;
}

void oa_set_thread_group(uint64_t group)
{
    /* The attribution cache answers for the group id it resolved, which is
       tls.gid while the cache is valid: a set that leaves the id as it was
       (a context with the same span, OpenTelemetry's suppress-instrumentation
       attach around an export) leaves the answer right. Anything else the
       cache depends on changes the context it is keyed on or the epoch. */
    if (group == tls.gid)
        return;
    tls.gid = group;
    if (!cache_takes_group(group))
        tls.attr_epoch = 0; /* resolved in full at the next allocation */
}

int oa_reset_group_var(PyObject *token)
{
    PyObject *var = oa_group_var();
    if (var == NULL)
        return -1;
    /* A counter: a finalizer run by a collection inside the reset may
       reset again. */
    tls.resolve_hold++;
    int rc = PyContextVar_Reset(var, token);
    tls.resolve_hold--;
    PyObject *val = NULL;
    if (rc < 0 || PyContextVar_Get(var, NULL, &val) < 0) {
        tls.attr_epoch = 0; /* the cache may not vouch for what happened */
        return -1;
    }
    oa_set_thread_group(oa_gid_of_value(val));
    Py_XDECREF(val);
    return 0;
}

uint64_t oa_thread_group(void)
{
    return tls.gid;
}
