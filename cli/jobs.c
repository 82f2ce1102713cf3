/*
 * Work the hub's HTTP thread must not do itself: a few threads that run
 * jobs (a publish, which may wait for room in the stream; opening a
 * resumed event stream, which flushes the stream, copies its history
 * and pushes the replay) while libmicrohttpd's thread serves everyone
 * else. The request's connection is suspended while its job runs, and
 * the job resumes it as its last act (the job's own code does that);
 * libmicrohttpd then calls the access handler again, which answers.
 *
 * A job is embedded in the request state that submits it, so a queue
 * costs nothing to allocate and cannot fail; there is at most one job
 * per connection, so the queue is bounded by the connection cap.
 *
 * Threads and locks: `lock` guards the queue and `stopping`; a leaf. No
 * job runs under it.
 */
#include "hub.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_THREADS 16

struct evs_hub_jobs {
    pthread_mutex_t lock;
    pthread_cond_t cond;            /* signalled when a job is queued or on stop */
    struct evs_hub_job *head, *tail; /* FIFO */
    bool stopping;                  /* no more submits; threads leave once empty */
    unsigned nthreads;
    pthread_t threads[MAX_THREADS];
};

static void *worker(void *arg)
{
    evs_hub_jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    for (;;) {
        while (j->head == NULL && !j->stopping)
            pthread_cond_wait(&j->cond, &j->lock);
        struct evs_hub_job *job = j->head;
        if (job == NULL)
            break; /* stopping and drained */
        j->head = job->next;
        if (j->head == NULL)
            j->tail = NULL;
        pthread_mutex_unlock(&j->lock);
        job->fn(job); /* may free the job's owner: not touched after */
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int evs_hub_jobs_create(evs_hub_jobs **out, unsigned nthreads)
{
    *out = NULL;
    if (nthreads == 0 || nthreads > MAX_THREADS)
        return EVS_EINVAL;
    evs_hub_jobs *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return EVS_ENOMEM;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cond, NULL);
    for (; j->nthreads < nthreads; j->nthreads++)
        if (pthread_create(&j->threads[j->nthreads], NULL, worker, j) != 0)
            break;
    if (j->nthreads < nthreads) {
        evs_hub_jobs_destroy(j);
        return EVS_ESYSTEM;
    }
    *out = j;
    return 0;
}

bool evs_hub_jobs_submit(evs_hub_jobs *j, struct evs_hub_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&j->lock);
    bool ok = !j->stopping;
    if (ok) {
        if (j->tail != NULL)
            j->tail->next = job;
        else
            j->head = job;
        j->tail = job;
        pthread_cond_signal(&j->cond);
    }
    pthread_mutex_unlock(&j->lock);
    return ok;
}

void evs_hub_jobs_stop(evs_hub_jobs *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->lock);
    bool join = !j->stopping;
    j->stopping = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);
    if (join)
        for (unsigned i = 0; i < j->nthreads; i++)
            pthread_join(j->threads[i], NULL);
}

void evs_hub_jobs_destroy(evs_hub_jobs *j)
{
    if (j == NULL)
        return;
    evs_hub_jobs_stop(j);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
