/*
 * Error codes: evs_strerror and evs_errname, both generated from the one
 * EVS_ERRORS table in evstream.h. Pure: string literals only, so both are
 * safe from any thread and never allocate.
 */
#include "evstream.h"

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
