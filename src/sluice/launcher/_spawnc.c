/* The compiled spawn engine's Python binding: orders in as plain bytes, ends out as tuples.

Why: the pure-Python engine (tasks.py) does the same work, but every syscall of a task's start and end (mkdir,
two opens, the spawn, waitid, waitpid, the eventfd) lets go of the GIL and takes it back, and each take-back
waits for the launcher's busy main thread. Here a task's thread (spawnc_core.c) never touches Python: spawn()
copies the order into one malloc'd block under the GIL, and poll() hands back the ends.

Python API (sluice.launcher.cengine wraps it):
    Engine(efd, devnull, started_events)
    spawn(id, exes, argv, cwd, envp, stdout, stderr, make_cwd, standby=False) -> handle
        exes: tuple of bytes (candidate paths); argv, envp: lists of bytes/str; cwd/stdout/stderr: bytes,
        str or None (None: inherit cwd / /dev/null); stderr that `is` stdout shares one file; standby: start
        it when the next task ends, on that task's thread (the end's event names it)
    cancel(handle, id) -> bool            (a standby task taken back before it started: True)
    signal(handle, id, sig) -> None       (no effect once the task has ended)
    poll() -> list of (handle, id, kind, code, pid, t, next_handle, next_id)
        kind 0 exit (code = rc, negative for a signal), 1 error (code = errno; pid = stage), 2 started;
        next_handle: the standby task started in this end's place (-1: none)
    threads -> int;  close() -> None      (after every task has ended: stops and joins the threads)
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "spawnc.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    core_t core;
    int closed;
} Engine;

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

static PyObject *Engine_spawn(Engine *e, PyObject *args) {
    long long id;
    PyObject *exes, *argv, *envp, *cwd, *out, *err;
    int make_cwd, standby = 0;
    if (!PyArg_ParseTuple(args, "LOOOOOOp|p", &id, &exes, &argv, &cwd, &envp, &out, &err, &make_cwd, &standby))
        return NULL;
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
    int slot = core_submit(&e->core, id, o, standby);
    if (slot < 0) return PyErr_NoMemory();
    return PyLong_FromLong(slot);
}

static PyObject *Engine_cancel(Engine *e, PyObject *args) {
    int slot;
    long long id;
    if (!PyArg_ParseTuple(args, "iL", &slot, &id)) return NULL;
    return PyBool_FromLong(core_cancel(&e->core, slot, id));
}

static PyObject *Engine_signal(Engine *e, PyObject *args) {
    int slot, sig;
    long long id;
    if (!PyArg_ParseTuple(args, "iLi", &slot, &id, &sig)) return NULL;
    core_signal(&e->core, slot, id, sig);
    Py_RETURN_NONE;
}

static PyObject *Engine_poll(Engine *e, PyObject *Py_UNUSED(ignored)) {
    ptrdiff_t count;
    event_t *evs = core_take(&e->core, &count);
    PyObject *list = PyList_New(count);
    for (ptrdiff_t i = 0; list && i < count; i++) {
        event_t *v = &evs[i];
        PyObject *tup = Py_BuildValue("(iLiiidiL)", v->slot, v->id, v->kind, v->code, (int)v->pid, v->t,
                                      v->next_slot, v->next_id);
        if (!tup) { Py_CLEAR(list); break; }
        PyList_SET_ITEM(list, i, tup);
    }
    free(evs);
    return list;
}

static PyObject *Engine_close(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (e->closed) Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    core_stop(&e->core);
    Py_END_ALLOW_THREADS
    e->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *Engine_threads(Engine *e, void *Py_UNUSED(closure)) {
    pthread_mutex_lock(&e->core.mu);
    int n = e->core.threads;
    pthread_mutex_unlock(&e->core.mu);
    return PyLong_FromLong(n);
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"efd", "devnull", "started_events", NULL};
    int efd, devnull, started = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|p", names, &efd, &devnull, &started)) return -1;
    e->core.efd = efd;
    e->core.devnull = devnull;
    e->core.started = started;
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e) core_init(&e->core, -1, -1, 0);
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    if (!e->closed && e->core.threads) {  /* never free what running threads use: stop them first */
        Py_BEGIN_ALLOW_THREADS
        core_stop(&e->core);
        Py_END_ALLOW_THREADS
    }
    core_free(&e->core);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef Engine_methods[] = {
    {"spawn", (PyCFunction)Engine_spawn, METH_VARARGS, "Queue one task's start; returns its handle."},
    {"cancel", (PyCFunction)Engine_cancel, METH_VARARGS, "Take back a standby task that has not started."},
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
