/*
 * The tracker's Python-facing interface (binding.h) for C files: binding.h is
 * also read by cffi's cdef parser, so it has no include guard or includes of
 * its own; C code includes it through this header.
 */
#ifndef OA_TRACKER_API_H
#define OA_TRACKER_API_H

#include <stdint.h>

#include "binding.h"

#endif
