// include/shoal/shoal.hpp — the whole public C++ API in one include.
//
// Each header below is one concept and may be included on its own; this one is for programs that
// would rather not choose. Anything outside include/shoal/ (and shoal/detail/) is private.
#pragma once

#include "shoal/error.hpp"    // Errc, Status, Result<T>, the exception classes
#include "shoal/system.hpp"   // memory headroom, runtime and named directories
#include "shoal/handle.hpp"   // the printable token that names a shared object
#include "shoal/session.hpp"  // the session: broker path, pins, listing and clean-up
#include "shoal/segment.hpp"  // anonymous and named shared-memory segments
#include "shoal/sync.hpp"     // locks, semaphores, events, conditions, barriers, values
#include "shoal/heap.hpp"     // growable objects with an allocator of blocks inside
#include "shoal/codec.hpp"    // key hashes and numeric equality shared by every table
#include "shoal/array.hpp"    // shoal::Array: numpy-compatible shared arrays
#include "shoal/frozen.hpp"   // frozen images: read-only trees of Python-like values
#include "shoal/dict.hpp"     // shoal::Dict: a dict every process reads and writes in place
#include "shoal/queue.hpp"    // shoal::Queue: a queue of byte messages between processes
