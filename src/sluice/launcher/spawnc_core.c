/* The compiled spawn engine's task threads: each starts a task, waits for it and reports its end.

Semantics are those of tasks.ThreadEngine (the reference): each task leads its own session (setsid);
stdin is /dev/null; stdout/stderr are opened (O_TRUNC) right before the spawn; no descriptor of the launcher
is inherited; SIGPIPE and SIGXFSZ are back to their defaults; the executable candidates are tried as execvpe
would (the first error that is not ENOENT/ENOTDIR is the one reported); a signal reaches a task only while it
is unreaped (its thread marks it ended under the lock before waitpid), one sent before the task had a pid is
delivered when it gets one, and a signalled task's leftovers get a KILL before the reap.

Threads are made on demand, one per task running or starting, and reused (as the Python engine's): the thread
woken by its task's exit runs on the core that task just left and starts the next task there.

A standby order waits for the next task to end: the thread that reaps that task takes it, under the same lock
as the end's event (which names it as the end's successor), and starts it at once. The launcher's loop, busy
with the database or waiting for the GIL, is then off the path from one short task to the next: its
hand-over took ~0.27 ms a task on average, a fifth of a /bin/true task's turn on a slot.
*/
#include "spawnc.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Under e->mu. Returns 0, or -1 when out of memory (the event is lost only if malloc fails). */
static int push_event(core_t *e, int slot, long long id, int kind, int code, pid_t pid) {
    if (e->nevents == e->cap_events) {
        ptrdiff_t cap = e->cap_events ? 2 * e->cap_events : 256;
        event_t *ev = realloc(e->events, cap * sizeof(event_t));
        if (!ev) return -1;
        e->events = ev;
        e->cap_events = cap;
    }
    event_t *ev = &e->events[e->nevents++];
    ev->slot = slot; ev->id = id; ev->kind = kind; ev->code = code; ev->pid = pid; ev->t = now();
    ev->next_slot = -1; ev->next_id = 0;
    return 0;
}

static void wake(core_t *e) {
    uint64_t one = 1;
    ssize_t r;
    do { r = write(e->efd, &one, sizeof one); } while (r < 0 && errno == EINTR);
}

/* A task's end (its exit, or its failure to start): the event, and the standby order that this thread starts
   next, if one waits. Both under one lock, so the loop never sees the end without its successor. */
static order_t *finish(core_t *e, int slot, long long id, int kind, int code, pid_t pid) {
    pthread_mutex_lock(&e->mu);
    order_t *next = NULL;
    if (push_event(e, slot, id, kind, code, pid) == 0 && e->sb_head) {
        next = e->sb_head;
        e->sb_head = next->next;
        if (!e->sb_head) e->sb_tail = NULL;
        next->next = NULL;
        event_t *ev = &e->events[e->nevents - 1];
        ev->next_slot = next->slot;
        ev->next_id = next->task->id;
    }
    pthread_mutex_unlock(&e->mu);
    wake(e);
    return next;
}

static int mkdir_p(char *path) {
    if (mkdir(path, 0777) == 0 || errno == EEXIST) return 0;
    if (errno != ENOENT) return errno;
    char *slash = strrchr(path, '/');
    if (!slash || slash == path) return ENOENT;
    *slash = '\0';
    int rc = mkdir_p(path);
    *slash = '/';
    if (rc) return rc;
    return (mkdir(path, 0777) == 0 || errno == EEXIST) ? 0 : errno;
}

static int open_out(const char *path) {
    int fd;
    do { fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); } while (fd < 0 && errno == EINTR);
    return fd;
}

static void signal_group(pid_t pid, int sig) {
    if (pid > 0) killpg(pid, sig);  /* ESRCH/EPERM: nothing left to signal */
}

/* vfork + exec, as CPython's _posixsubprocess does: the child borrows this thread's memory and stack until it
   execs, so the start costs no page-table copy and no stack mmap/munmap (posix_spawn's clone stack cost an
   munmap, and a TLB shoot-down across the launcher's threads, per task). Until exec the child calls only
   async-signal-safe functions and writes nothing but the two volatile ints. On failure returns 0 with
   *rc = errno and *stage set (the child, which exited 255, reaped). */
static pid_t start_child(order_t *o, int devnull, int out, int err, int batch, int *rc, int *stage) {
    volatile int cerr = 0, cstage = 0;
    pid_t pid = vfork();  /* the worker thread blocks every signal: none can run a handler in the child */
    if (pid == 0) {
        if (setsid() < 0) { cerr = errno; cstage = S_EXEC; _exit(255); }
        if (batch) {  /* the task gets the launcher's policy, as the Python engine's tasks do */
            struct sched_param zero = {0};
            sched_setscheduler(0, SCHED_OTHER, &zero);
        }
        int fds[3] = {devnull, out, err};
        for (int i = 0; i < 3; i++) {
            if (fds[i] == i) {  /* already in place: only keep it open across exec */
                int fl = fcntl(i, F_GETFD);
                if (fl >= 0) fcntl(i, F_SETFD, fl & ~FD_CLOEXEC);
            } else if (dup2(fds[i], i) < 0) { cerr = errno; cstage = S_EXEC; _exit(255); }
        }
        if (o->cwd && chdir(o->cwd) < 0) { cerr = errno; cstage = S_MKDIR; _exit(255); }
#ifdef SYS_close_range
        syscall(SYS_close_range, 3U, ~0U, 0U);  /* as close_fds=True: nothing of the launcher leaks */
#endif
        signal(SIGPIPE, SIG_DFL);  /* Python ignores these; a task gets the defaults (restore_signals) */
        signal(SIGXFSZ, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int saved = 0, last = ENOENT;
        for (char **exe = o->exes; *exe; exe++) {
            execve(*exe, o->argv, o->envp);
            last = errno;
            if (last != ENOENT && last != ENOTDIR && !saved) saved = last;
        }
        cerr = saved ? saved : last;
        cstage = S_EXEC;
        _exit(255);
    }
    if (pid < 0) { *rc = errno; *stage = S_EXEC; return 0; }
    if (cerr) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *rc = cerr;
        *stage = cstage;
        return 0;
    }
    return pid;
}

/* Start the order's task, wait for it, report its end; returns the standby order to run next (or NULL). */
static order_t *run(core_t *e, order_t *o, int batch) {
    task_t *t = o->task;
    long long id = t->id;
    int out = e->devnull, err = e->devnull, rc = 0, stage = 0;
    pid_t pid = 0;
    if (o->make_cwd && o->cwd && (rc = mkdir_p(o->cwd))) { stage = S_MKDIR; goto fail; }
    if (o->out && (out = open_out(o->out)) < 0) { rc = errno; out = e->devnull; stage = S_STDOUT; goto fail; }
    if (o->share) err = out;
    else if (o->err && (err = open_out(o->err)) < 0) { rc = errno; err = e->devnull; stage = S_STDERR; goto fail; }

    pid = start_child(o, e->devnull, out, err, batch, &rc, &stage);
fail:
    if (out != e->devnull) close(out);
    if (err != e->devnull && err != out) close(err);
    if (rc) return finish(e, o->slot, id, K_ERROR, rc, stage);
    pthread_mutex_lock(&e->mu);
    t->pid = pid;
    int early = t->early_sig;
    if (e->started) push_event(e, o->slot, id, K_STARTED, 0, pid);
    pthread_mutex_unlock(&e->mu);
    if (e->started) wake(e);
    if (early) signal_group(pid, early);  /* killed (or timed out) while it was being started */
    siginfo_t si;
    while (waitid(P_PID, pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&e->mu);
    t->ended = 1;  /* from here on its pid may be reused once reaped: never signal it again */
    int leftovers = t->signalled;
    pthread_mutex_unlock(&e->mu);
    if (leftovers) signal_group(pid, SIGKILL);  /* what a killed task left in its group goes too */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : status;
    return finish(e, o->slot, id, K_EXIT, code, pid);
}

static void *serve(void *arg) {
    core_t *e = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* the launcher's signals are for its Python thread */
    /* SCHED_BATCH: a task thread woken by the loop's order no longer preempts the loop, which held the GIL
       while it waited for its core back (~20 us a job); the thread runs when the loop sleeps or on a free
       core. 4-6% less launcher CPU a job (bench/README.md). A task goes back to SCHED_OTHER before exec. */
    struct sched_param zero = {0};
    int batch = sched_getscheduler(0) == SCHED_OTHER && sched_setscheduler(0, SCHED_BATCH, &zero) == 0;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->head && !e->stopping) pthread_cond_wait(&e->cv, &e->mu);
        order_t *o = e->head;
        if (!o) break;
        e->head = o->next;
        if (!e->head) e->tail = NULL;
        pthread_mutex_unlock(&e->mu);
        while (o) {  /* a task, then the standby orders its ends handed over */
            order_t *next = run(e, o, batch);
            free(o);
            o = next;
        }
        pthread_mutex_lock(&e->mu);
        e->busy--;
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static int new_slot(core_t *e, long long id) {  /* under e->mu; -1: out of memory */
    task_t *t = calloc(1, sizeof(task_t));
    if (!t) return -1;
    t->id = id;
    if (e->nfree) {
        int s = e->free_slots[--e->nfree];
        e->slots[s] = t;
        return s;
    }
    int cap = e->nslots ? 2 * e->nslots : 64;
    task_t **slots = realloc(e->slots, cap * sizeof(task_t *));
    int *fr = slots ? realloc(e->free_slots, cap * sizeof(int)) : NULL;
    if (slots) e->slots = slots;
    if (!slots || !fr) { free(t); return -1; }
    e->free_slots = fr;
    for (int s = e->nslots; s < cap; s++) e->slots[s] = NULL;
    for (int s = cap - 1; s > e->nslots; s--) e->free_slots[e->nfree++] = s;
    int s = e->nslots;
    e->nslots = cap;
    e->slots[s] = t;
    return s;
}


int core_submit(core_t *e, long long id, order_t *o, int standby) {
    pthread_mutex_lock(&e->mu);
    int slot = o->slot = new_slot(e, id);
    if (slot < 0) { pthread_mutex_unlock(&e->mu); free(o); return -1; }
    o->task = e->slots[slot];
    o->next = NULL;
    if (standby) {  /* no thread of its own: the next task to end hands over its thread */
        if (e->sb_tail) e->sb_tail->next = o; else e->sb_head = o;
        e->sb_tail = o;
        pthread_mutex_unlock(&e->mu);
        return slot;
    }
    int rc = 0;
    if (e->busy >= e->threads) {  /* every thread is busy with a running task: one more */
        if (e->threads == e->cap_tids) {
            int cap = e->cap_tids ? 2 * e->cap_tids : 16;
            pthread_t *tids = realloc(e->tids, cap * sizeof(pthread_t));
            if (!tids) rc = ENOMEM; else { e->tids = tids; e->cap_tids = cap; }
        }
        if (!rc) rc = pthread_create(&e->tids[e->threads], NULL, serve, e);
        if (!rc) e->threads++;
    }
    if (rc) {  /* out of threads (ulimit -u, memory): this task's error, not the caller's */
        push_event(e, slot, id, K_ERROR, rc, S_THREAD);
        pthread_mutex_unlock(&e->mu);
        free(o);
        wake(e);
        return slot;
    }
    e->busy++;
    if (e->tail) e->tail->next = o; else e->head = o;
    e->tail = o;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return slot;
}

int core_cancel(core_t *e, int slot, long long id) {
    pthread_mutex_lock(&e->mu);
    order_t *prev = NULL, *o = e->sb_head;
    while (o && !(o->slot == slot && o->task->id == id)) { prev = o; o = o->next; }
    if (o) {
        if (prev) prev->next = o->next; else e->sb_head = o->next;
        if (e->sb_tail == o) e->sb_tail = prev;
        free(e->slots[slot]);
        e->slots[slot] = NULL;
        e->free_slots[e->nfree++] = slot;
        free(o);
    }
    pthread_mutex_unlock(&e->mu);
    return o != NULL;
}

void core_signal(core_t *e, int slot, long long id, int sig) {
    pid_t pid = 0;
    pthread_mutex_lock(&e->mu);
    task_t *t = (slot >= 0 && slot < e->nslots) ? e->slots[slot] : NULL;
    if (t && t->id == id && !t->ended) {
        t->signalled = 1;
        if (t->pid) pid = t->pid;
        else if (t->early_sig != SIGKILL) t->early_sig = sig;
    }
    pthread_mutex_unlock(&e->mu);
    if (pid) signal_group(pid, sig);
}

event_t *core_take(core_t *e, ptrdiff_t *n) {
    pthread_mutex_lock(&e->mu);  /* the eventfd is the caller's to reset (LocalSpawner.poll_events) */
    event_t *evs = e->events;
    *n = e->nevents;
    e->events = NULL;
    e->nevents = e->cap_events = 0;
    for (ptrdiff_t i = 0; i < *n; i++) {
        if (evs[i].kind != K_STARTED) {  /* the task's end: its slot is free again */
            int s = evs[i].slot;
            free(e->slots[s]);
            e->slots[s] = NULL;
            e->free_slots[e->nfree++] = s;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return evs;
}

void core_init(core_t *e, int efd, int devnull, int started) {
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->efd = efd;
    e->devnull = devnull;
    e->started = started;
}

void core_stop(core_t *e) {
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_broadcast(&e->cv);
    int n = e->threads;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n; i++) pthread_join(e->tids[i], NULL);
    e->threads = 0;
}

void core_free(core_t *e) {
    for (int s = 0; s < e->nslots; s++) free(e->slots[s]);
    for (order_t *o = e->head; o;) { order_t *next = o->next; free(o); o = next; }
    for (order_t *o = e->sb_head; o;) { order_t *next = o->next; free(o); o = next; }
    free(e->slots);
    free(e->free_slots);
    free(e->events);
    free(e->tids);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
}
