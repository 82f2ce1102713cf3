/*
 * The limits on what events may hold (evs_limits_set/get; SPEC.md,
 * "Limits"): one process-wide struct that every check reads.
 *
 * Each field is read and written with relaxed atomic loads and stores
 * (evs_load/evs_store), so a check costs one plain load and setting the
 * limits while other threads work is safe: no value is ever torn, and a
 * call in progress applies the old or the new value of each field. No
 * ordering between fields is promised (they are independent checks).
 * The defaults are the compile-time EVS_MAX_* values; the ceilings keep
 * every limit inside what the code can hold (msgpack's 32-bit lengths,
 * the scanner's fixed-size stack).
 */
#include "evs_internal.h"

evs_limits evs__limits = {
    .max_topic = EVS_MAX_TOPIC,
    .max_type_name = EVS_MAX_TYPE_NAME,
    .max_data = EVS_MAX_DATA,
    .max_meta = EVS_MAX_META,
    .max_depth = EVS_MAX_DEPTH,
};

/* `v` with 0 meaning `def`; false when it is over `ceiling`. */
static bool pick(size_t v, size_t def, size_t ceiling, size_t *out)
{
    *out = v == 0 ? def : v;
    return *out <= ceiling;
}

int evs_limits_set(const evs_limits *l)
{
    evs_limits d = {0};
    if (l != NULL)
        d = *l;
    size_t topic, name, data, meta, depth;
    if (!pick(d.max_topic, EVS_MAX_TOPIC, EVS_LIMITS_TOPIC_CEILING, &topic) ||
        !pick(d.max_type_name, EVS_MAX_TYPE_NAME, EVS_LIMITS_TYPE_NAME_CEILING, &name) ||
        !pick(d.max_data, EVS_MAX_DATA, EVS_LIMITS_DATA_CEILING, &data) ||
        !pick(d.max_meta, EVS_MAX_META, EVS_LIMITS_DATA_CEILING, &meta) ||
        !pick(d.max_depth, EVS_MAX_DEPTH, EVS_LIMITS_DEPTH_CEILING, &depth))
        return EVS_EINVAL;
    evs_store(&evs__limits.max_topic, topic);
    evs_store(&evs__limits.max_type_name, name);
    evs_store(&evs__limits.max_data, data);
    evs_store(&evs__limits.max_meta, meta);
    evs_store(&evs__limits.max_depth, (unsigned)depth);
    return 0;
}

int evs_limits_get(evs_limits *out)
{
    if (out == NULL)
        return EVS_EINVAL;
    out->max_topic = evs__max_topic();
    out->max_type_name = evs__max_type_name();
    out->max_data = evs__max_data();
    out->max_meta = evs__max_meta();
    out->max_depth = evs__max_depth();
    return 0;
}
