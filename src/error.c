/*
 * Error codes: evs_strerror and evs_errname, both generated from the one
 * EVS_ERRORS table in evstream.h. Pure: string literals only, so both are
 * safe from any thread and never allocate. evs_last_error reads a
 * thread-local sentence that some failing calls leave (never allocated).
 */
#include <stdarg.h>
#include <stdio.h>

#include "evs_internal.h"

/* The calling thread's last message; "" until a call leaves one. */
static _Thread_local char last_error[256];

const char *evs_last_error(void) { return last_error; }

void evs__set_last_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

const char *evs_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define X(name, value, msg) case value: return msg;
        EVS_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *evs_errname(int code)
{
    switch (code) {
    case 0:
        return "EVS_OK";
#define X(name, value, msg) case value: return "EVS_" #name;
        EVS_ERRORS(X)
#undef X
    default:
        return "EVS_EUNKNOWN";
    }
}
