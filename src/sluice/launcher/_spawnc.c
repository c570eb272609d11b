/* The compiled spawn engine: task threads that start a task, wait for it and report its end, without the GIL.

Why: the pure-Python engine (tasks.py) does the same work, but every syscall of a task's start and end (mkdir,
two opens, the spawn, waitid, waitpid, the eventfd) lets go of the GIL and takes it back, and each take-back
waits for the launcher's busy main thread: that hand-over cost more launcher CPU per /bin/true job than the
rest of the control plane. Here a task's thread never touches Python: the caller's spawn() copies the order
into one malloc'd block under the GIL, and poll() hands back the ends as tuples.

Semantics are those of tasks.Worker: each task leads its own session (POSIX_SPAWN_SETSID); stdin is
/dev/null; stdout/stderr are opened (O_TRUNC) right before the spawn; the executable candidates are tried as
execvpe would (the first error that is not ENOENT/ENOTDIR is the one reported); a signal reaches a task only
while it is unreaped (its thread marks it ended under the engine's lock before waitpid), one sent before the
task had a pid is delivered when it gets one, and a signalled task's leftovers get a KILL before the reap.

Python API (sluice.launcher.cengine wraps it):
    Engine(efd, devnull, started_events)
    spawn(id, exes, argv, cwd, envp, stdout, stderr, make_cwd) -> handle
        exes: tuple of bytes (candidate paths); argv, envp: lists of bytes/str; cwd/stdout/stderr: bytes,
        str or None (None: inherit cwd / /dev/null); stderr that `is` stdout shares one file
    signal(handle, id, sig) -> None       (no effect once the task has ended)
    poll() -> list of (handle, id, kind, code, pid, t)
        kind 0 exit (code = rc, negative for a signal), 1 error (code = errno; pid = stage), 2 started
    threads -> int;  close() -> None      (after every task has ended: stops and joins the threads)
*/
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef POSIX_SPAWN_SETSID
#error "the compiled spawn engine needs POSIX_SPAWN_SETSID (glibc 2.26 or newer); the Python engine is used instead"
#endif

enum { K_EXIT = 0, K_ERROR = 1, K_STARTED = 2 };
enum { S_MKDIR = 1, S_STDOUT = 2, S_STDERR = 3, S_EXEC = 4, S_THREAD = 5 };

typedef struct {
    long long id;
    pid_t pid;
    int ended, signalled, early_sig;
} task_t;

typedef struct order {
    struct order *next;
    task_t *task;  /* set under the engine's lock: slots[] may move (realloc), a task's struct never does */
    int slot;
    char **exes, **argv, **envp;
    char *cwd, *out, *err;
    int share, make_cwd;
} order_t;

typedef struct {
    int slot, kind, code;
    long long id;
    pid_t pid;
    double t;
} event_t;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    order_t *head, *tail;
    task_t **slots;
    int nslots, *free_slots, nfree;
    event_t *events;
    Py_ssize_t nevents, cap_events;
    int efd, devnull, started, threads, busy, stopping, closed;
    pthread_t *tids;
    int cap_tids;
} Engine;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Under e->mu. Returns 0, or -1 when out of memory (the event is lost only if malloc fails). */
static int push_event(Engine *e, int slot, long long id, int kind, int code, pid_t pid) {
    if (e->nevents == e->cap_events) {
        Py_ssize_t cap = e->cap_events ? 2 * e->cap_events : 256;
        event_t *ev = realloc(e->events, cap * sizeof(event_t));
        if (!ev) return -1;
        e->events = ev;
        e->cap_events = cap;
    }
    event_t *ev = &e->events[e->nevents++];
    ev->slot = slot; ev->id = id; ev->kind = kind; ev->code = code; ev->pid = pid; ev->t = now();
    return 0;
}

static void wake(Engine *e) {
    uint64_t one = 1;
    ssize_t r;
    do { r = write(e->efd, &one, sizeof one); } while (r < 0 && errno == EINTR);
}

static void report(Engine *e, int slot, long long id, int kind, int code, pid_t pid) {
    pthread_mutex_lock(&e->mu);
    push_event(e, slot, id, kind, code, pid);
    pthread_mutex_unlock(&e->mu);
    wake(e);
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

static void run(Engine *e, order_t *o) {
    task_t *t = o->task;
    long long id = t->id;
    int out = e->devnull, err = e->devnull, rc = 0, stage = 0;
    pid_t pid = 0;
    if (o->make_cwd && o->cwd && (rc = mkdir_p(o->cwd))) { stage = S_MKDIR; goto fail; }
    if (o->out && (out = open_out(o->out)) < 0) { rc = errno; out = e->devnull; stage = S_STDOUT; goto fail; }
    if (o->share) err = out;
    else if (o->err && (err = open_out(o->err)) < 0) { rc = errno; err = e->devnull; stage = S_STDERR; goto fail; }

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dflt;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, e->devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
    posix_spawn_file_actions_adddup2(&fa, err, 2);
    if (o->cwd) posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);  /* as close_fds=True: nothing of the launcher leaks */
#endif
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);  /* Python ignores these; a task gets the defaults (restore_signals) */
    sigaddset(&dflt, SIGXFSZ);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    int saved = 0;
    rc = ENOENT;
    for (char **exe = o->exes; *exe; exe++) {
        rc = posix_spawn(&pid, *exe, &fa, &at, o->argv, o->envp);
        if (rc == 0) break;
        if (rc != ENOENT && rc != ENOTDIR && !saved) saved = rc;
    }
    if (rc && saved) rc = saved;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc) stage = S_EXEC;
fail:
    if (out != e->devnull) close(out);
    if (err != e->devnull && err != out) close(err);
    if (rc) {
        report(e, o->slot, id, K_ERROR, rc, stage);
        return;
    }
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
    report(e, o->slot, id, K_EXIT, code, pid);
}

static void *serve(void *arg) {
    Engine *e = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* the launcher's signals are for its Python thread */
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->head && !e->stopping) pthread_cond_wait(&e->cv, &e->mu);
        order_t *o = e->head;
        if (!o) break;
        e->head = o->next;
        if (!e->head) e->tail = NULL;
        pthread_mutex_unlock(&e->mu);
        run(e, o);
        free(o);
        pthread_mutex_lock(&e->mu);
        e->busy--;
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ------------------------------------------------------------------ building an order under the GIL */

static PyObject *as_bytes(PyObject *o) {  /* new reference to bytes, or NULL with an exception */
    if (PyBytes_Check(o)) { Py_INCREF(o); return o; }
    if (PyUnicode_Check(o)) return PyUnicode_EncodeFSDefault(o);
    PyErr_Format(PyExc_TypeError, "expected str or bytes, not %.100s", Py_TYPE(o)->tp_name);
    return NULL;
}

/* Sizes of the strings of a list (or tuple); fills `items` with new bytes references. */
static Py_ssize_t measure(PyObject *seq, PyObject ***items, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(seq, "expected a list of strings");
    if (!fast) return -1;
    *n = PySequence_Fast_GET_SIZE(fast);
    *items = PyMem_Calloc(*n ? *n : 1, sizeof(PyObject *));
    if (!*items) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *b = as_bytes(PySequence_Fast_GET_ITEM(fast, i));
        if (!b) { Py_DECREF(fast); return -1; }
        (*items)[i] = b;
        if ((Py_ssize_t)strlen(PyBytes_AS_STRING(b)) != PyBytes_GET_SIZE(b)) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "embedded null byte");
            return -1;
        }
        size += PyBytes_GET_SIZE(b) + 1;
    }
    Py_DECREF(fast);
    return size;
}

static void release(PyObject **items, Py_ssize_t n) {
    if (!items) return;
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
    PyMem_Free(items);
}

static char *put(char **cursor, PyObject *b) {
    char *s = *cursor;
    memcpy(s, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b) + 1);
    *cursor += PyBytes_GET_SIZE(b) + 1;
    return s;
}

static char **put_list(char **cursor, char ***ptrs, PyObject **items, Py_ssize_t n) {
    char **start = *ptrs;
    for (Py_ssize_t i = 0; i < n; i++) (*ptrs)[i] = put(cursor, items[i]);
    (*ptrs)[n] = NULL;
    *ptrs += n + 1;
    return start;
}

static int new_slot(Engine *e, long long id) {  /* under e->mu; -1: out of memory */
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

static PyObject *Engine_spawn(Engine *e, PyObject *args) {
    long long id;
    PyObject *exes, *argv, *envp, *cwd, *out, *err;
    int make_cwd;
    if (!PyArg_ParseTuple(args, "LOOOOOOp", &id, &exes, &argv, &cwd, &envp, &out, &err, &make_cwd)) return NULL;
    if (e->closed) { PyErr_SetString(PyExc_RuntimeError, "engine closed"); return NULL; }
    PyObject **ex = NULL, **av = NULL, **ev = NULL, *one[3] = {NULL, NULL, NULL};
    Py_ssize_t nex = 0, nav = 0, nev = 0, size = 0, s;
    PyObject *paths[3] = {cwd, out, err};
    order_t *o = NULL;
    if ((s = measure(exes, &ex, &nex)) < 0) goto done;
    size += s;
    if ((s = measure(argv, &av, &nav)) < 0) goto done;
    size += s;
    if ((s = measure(envp, &ev, &nev)) < 0) goto done;
    size += s;
    if (!nex || !nav) { PyErr_SetString(PyExc_ValueError, "empty argv"); goto done; }
    for (int i = 0; i < 3; i++) {
        if (paths[i] == Py_None || (i == 2 && err == out)) continue;
        if (!(one[i] = as_bytes(paths[i]))) goto done;
        if ((Py_ssize_t)strlen(PyBytes_AS_STRING(one[i])) != PyBytes_GET_SIZE(one[i])) {
            PyErr_SetString(PyExc_ValueError, "embedded null byte");
            goto done;
        }
        size += PyBytes_GET_SIZE(one[i]) + 1;
    }
    size_t nptr = (size_t)(nex + nav + nev + 3);
    o = malloc(sizeof(order_t) + nptr * sizeof(char *) + (size_t)size);
    if (!o) { PyErr_NoMemory(); goto done; }
    memset(o, 0, sizeof(order_t));
    char **ptrs = (char **)(o + 1);
    char *cursor = (char *)(ptrs + nptr);
    o->exes = put_list(&cursor, &ptrs, ex, nex);
    o->argv = put_list(&cursor, &ptrs, av, nav);
    o->envp = put_list(&cursor, &ptrs, ev, nev);
    o->cwd = one[0] ? put(&cursor, one[0]) : NULL;
    o->out = one[1] ? put(&cursor, one[1]) : NULL;
    o->share = out != Py_None && err == out;
    o->err = one[2] ? put(&cursor, one[2]) : NULL;
    o->make_cwd = make_cwd;
done:
    release(ex, nex);
    release(av, nav);
    release(ev, nev);
    for (int i = 0; i < 3; i++) Py_XDECREF(one[i]);
    if (!o) return NULL;
    int slot, need_thread, rc = 0;
    pthread_mutex_lock(&e->mu);
    slot = o->slot = new_slot(e, id);
    if (slot < 0) { pthread_mutex_unlock(&e->mu); free(o); return PyErr_NoMemory(); }
    o->task = e->slots[slot];
    need_thread = e->busy >= e->threads;
    if (need_thread) {  /* every thread is busy with a running task: one more */
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
        return PyLong_FromLong(slot);
    }
    e->busy++;
    if (e->tail) e->tail->next = o; else e->head = o;
    e->tail = o;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return PyLong_FromLong(slot);
}

static PyObject *Engine_signal(Engine *e, PyObject *args) {
    int slot, sig;
    long long id;
    if (!PyArg_ParseTuple(args, "iLi", &slot, &id, &sig)) return NULL;
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
    Py_RETURN_NONE;
}

static PyObject *Engine_poll(Engine *e, PyObject *Py_UNUSED(ignored)) {
    uint64_t n;
    if (read(e->efd, &n, sizeof n) < 0 && errno != EAGAIN) { /* nonblocking eventfd: EAGAIN when nothing */ }
    pthread_mutex_lock(&e->mu);
    Py_ssize_t count = e->nevents;
    event_t *evs = e->events;
    e->events = NULL;
    e->nevents = e->cap_events = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (evs[i].kind != K_STARTED) {  /* the task's end: its slot is free again */
            int s = evs[i].slot;
            free(e->slots[s]);
            e->slots[s] = NULL;
            e->free_slots[e->nfree++] = s;
        }
    }
    pthread_mutex_unlock(&e->mu);
    PyObject *list = PyList_New(count);
    for (Py_ssize_t i = 0; list && i < count; i++) {
        event_t *v = &evs[i];
        PyObject *tup = Py_BuildValue("(iLiiid)", v->slot, v->id, v->kind, v->code, (int)v->pid, v->t);
        if (!tup) { Py_CLEAR(list); break; }
        PyList_SET_ITEM(list, i, tup);
    }
    free(evs);
    return list;
}

static PyObject *Engine_close(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (e->closed) Py_RETURN_NONE;
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    int n = e->threads;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < n; i++) pthread_join(e->tids[i], NULL);
    Py_END_ALLOW_THREADS
    e->threads = 0;
    e->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *Engine_threads(Engine *e, void *Py_UNUSED(closure)) {
    pthread_mutex_lock(&e->mu);
    int n = e->threads;
    pthread_mutex_unlock(&e->mu);
    return PyLong_FromLong(n);
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"efd", "devnull", "started_events", NULL};
    int started = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|p", names, &e->efd, &e->devnull, &started)) return -1;
    e->started = started;
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (!e) return NULL;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    if (!e->closed && e->threads) {  /* never free what running threads use: stop them first */
        PyObject *r = Engine_close(e, NULL);
        Py_XDECREF(r);
    }
    for (int s = 0; s < e->nslots; s++) free(e->slots[s]);
    for (order_t *o = e->head; o;) { order_t *next = o->next; free(o); o = next; }
    free(e->slots);
    free(e->free_slots);
    free(e->events);
    free(e->tids);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef Engine_methods[] = {
    {"spawn", (PyCFunction)Engine_spawn, METH_VARARGS, "Queue one task's start; returns its handle."},
    {"signal", (PyCFunction)Engine_signal, METH_VARARGS, "Signal a task's process group, if it has not ended."},
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS, "Events since the last call, without blocking."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Stop and join the task threads (every task ended)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"threads", (getter)Engine_threads, NULL, "task threads made so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sluice.launcher._spawnc.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Task threads that start, wait for and report tasks without the GIL.",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_spawnc", "The compiled spawn engine.", -1, NULL};

PyMODINIT_FUNC PyInit__spawnc(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
