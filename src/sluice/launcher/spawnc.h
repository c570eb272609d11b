/* The compiled spawn engine's core (spawnc_core.c), shared with its Python binding (_spawnc.c). No Python here:
   the task threads never take the GIL. */
#ifndef SLUICE_SPAWNC_H
#define SLUICE_SPAWNC_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

enum { K_EXIT = 0, K_ERROR = 1, K_STARTED = 2 };                                   /* event kinds */
enum { S_MKDIR = 1, S_STDOUT = 2, S_STDERR = 3, S_EXEC = 4, S_THREAD = 5 };       /* where a start failed */

typedef struct {
    long long id;
    pid_t pid;
    int ended, signalled, early_sig;
} task_t;

typedef struct order {  /* one malloc'd block: the struct, then the pointer arrays, then the strings */
    struct order *next;
    task_t *task;  /* set under the lock: slots[] may move (realloc), a task's struct never does */
    int slot;
    char **exes, **argv, **envp;  /* NULL-terminated */
    char *cwd, *out, *err;        /* NULL: inherit the cwd / /dev/null */
    int share, make_cwd;          /* share: stderr goes to stdout's file */
} order_t;

typedef struct {
    int slot, kind, code;  /* code: rc (exit), errno (error); pid holds the stage of an error */
    long long id;
    pid_t pid;
    double t;
    int next_slot;         /* an end's successor: the standby task its thread starts next (-1: none) */
    long long next_id;
} event_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    order_t *head, *tail;
    order_t *sb_head, *sb_tail;  /* standby orders: each starts on the thread of the next task to end */
    task_t **slots;
    int nslots, *free_slots, nfree;
    event_t *events;
    ptrdiff_t nevents, cap_events;
    int efd, devnull, started, threads, busy, stopping;
    pthread_t *tids;
    int cap_tids;
} core_t;

void core_init(core_t *c, int efd, int devnull, int started);
/* Queue a task (the order is the core's from here on); returns its slot, or -1 when out of memory.
   standby: start it on the thread of the next task to end (or fail to start), as that end's successor. */
int core_submit(core_t *c, long long id, order_t *o, int standby);
/* Take back a standby task not yet started: 1 (it never will), 0 (it has started or is not standing by). */
int core_cancel(core_t *c, int slot, long long id);
void core_signal(core_t *c, int slot, long long id, int sig);
/* Every event since the last call (the caller frees the array); frees the slots of ended tasks. */
event_t *core_take(core_t *c, ptrdiff_t *n);
void core_stop(core_t *c);  /* blocks until every thread has finished its task and quit */
void core_free(core_t *c);

#endif
