/*
 * A TopicStream routing NATS-style subjects: three publisher threads
 * send order events for regions and kinds; wildcard subscribers pick
 * what they care about. Prints what each subscriber counted and the
 * topic table.
 */
#include <evstream.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#define PER_PUBLISHER 1000

static const char *regions[] = {"eu", "us", "ap"};

static void *publisher(void *arg)
{
    evs_stream *s = arg;
    static atomic_int next_region;
    const char *region = regions[atomic_fetch_add(&next_region, 1) % 3];
    char subject[64];
    for (int i = 0; i < PER_PUBLISHER; i++) {
        const char *kind = i % 4 == 0 ? "cancelled" : "created";
        snprintf(subject, sizeof(subject), "orders.%s.%s", region, kind);
        evs_event *ev;
        if (evs_event_create(&ev, EVS_TYPE_MESSAGE, subject, &i, sizeof(i)) != 0)
            break;
        int rc = evs_stream_publish(s, ev);
        evs_event_unref(ev);
        if (rc != 0) {
            fprintf(stderr, "publish: %s\n", evs_strerror(rc));
            break;
        }
    }
    return NULL;
}

static int count(const evs_event *ev, void *user)
{
    (void)ev;
    atomic_fetch_add((atomic_int *)user, 1);
    return 0;
}

static int print_topic(const char *subject, const evs_topic_stats *st, void *user)
{
    (void)user;
    printf("topic %-22s published=%llu exact subscribers=%llu\n", subject,
           (unsigned long long)st->published, (unsigned long long)st->subscribers);
    return 0;
}

int main(void)
{
    evs_stream_opts o = {.topics = true};
    evs_stream *s;
    int rc = evs_stream_create(&s, &o);
    if (rc != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return 1;
    }
    static const char *patterns[] = {"orders.>", "orders.eu.*", "orders.*.cancelled",
                                     "orders.us.created", "shipping.>"};
    atomic_int counts[5] = {0};
    for (int i = 0; i < 5; i++) {
        evs_sub *sub;
        if ((rc = evs_subscribe(&sub, s, patterns[i], count, NULL, &counts[i], NULL)) != 0) {
            fprintf(stderr, "subscribe %s: %s\n", patterns[i], evs_strerror(rc));
            evs_stream_destroy(s);
            return 1;
        }
    }
    /* A pattern that breaks the subject rules is refused. */
    evs_sub *bad;
    printf("subscribe \"orders.>.eu\": %s\n",
           evs_errname(evs_subscribe(&bad, s, "orders.>.eu", count, NULL, &counts[0], NULL)));

    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, publisher, s);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    evs_stream_close(s, EVS_FOREVER, NULL);

    for (int i = 0; i < 5; i++)
        printf("%-20s received %d\n", patterns[i], atomic_load(&counts[i]));
    evs_stream_topics(s, print_topic, NULL);
    evs_stream_destroy(s);
    return 0;
}
