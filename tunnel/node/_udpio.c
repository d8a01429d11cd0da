/* tunnel.node._udpio: read many UDP datagrams in one system call (optional; the shell's I/O).
 *
 * The same API as its pure-Python twin, tunnel/node/udpio_pure.py; tunnel/node/udpio.py chooses
 * one at import. `recv_batch(sock, count)` reads up to `count` datagrams (or GRO super-datagrams)
 * with one recvmmsg(MSG_DONTWAIT) and returns [(data, (host, port), segment size or 0), ...].
 *
 * Why: Python's socket has no recvmmsg, so a drain is one recvmsg per datagram and ends with an
 * exception (BlockingIOError, about 3.5 us; PERF.md, issue 13). Here an empty socket returns an
 * empty list and a short list says the socket is drained: no exception per drain. An error with
 * nothing read (an ICMP error of an earlier send) raises OSError, as recvmsg would.
 *
 * `fresh_buffer(size)` is a bytearray that is not zeroed first, for the bridges' TCP reads.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 32
#define DATAGRAM_SPACE 65536 /* the largest UDP payload, and what GRO coalesces into */
#define SOL_UDP_LEVEL 17
#define UDP_GRO_OPTION 104

/* Large datagrams (GRO buffers, path-MTU datagrams) are read straight into bytes objects of
 * DATAGRAM_SPACE that are then shrunk to size and handed over, so they are never copied; a
 * small one is copied out and its buffer kept for the next call. */
#define COPY_BELOW 4096
static PyObject *pool[MAX_BATCH];

/* A (host, port) tuple like socket.recvmsg's first two fields. */
static PyObject *address(const struct sockaddr_storage *storage) {
    char host[INET6_ADDRSTRLEN];
    int port;
    if (storage->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)storage;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
        port = ntohs(in4->sin_port);
    } else if (storage->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)storage;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    } else {
        return Py_BuildValue("(si)", "", 0);
    }
    return Py_BuildValue("(si)", host, port);
}

/* The last sender's address and its tuple, kept across calls: most datagrams come from one
 * peer, and a ping-pong reads one a call, so formatting it every time (inet_ntop's sprintf, a
 * str, an int, a tuple: about 1 % of a tunnel process's time in ping-pong) was mostly waste.
 * Tuples are immutable: handing out the same one is safe. Callers hold the GIL. */
static struct sockaddr_storage cached_storage;
static socklen_t cached_length;
static PyObject *cached_address; /* a strong reference, or NULL */

static PyObject *address_of(const struct sockaddr_storage *storage, socklen_t length) {
    if (cached_address != NULL && length == cached_length &&
        memcmp(storage, &cached_storage, length) == 0)
        return Py_NewRef(cached_address);
    PyObject *addr = address(storage);
    if (addr == NULL) return NULL;
    memcpy(&cached_storage, storage, length);
    cached_length = length;
    Py_XSETREF(cached_address, Py_NewRef(addr));
    return addr;
}

static int gro_segment(struct msghdr *header) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(header); c != NULL; c = CMSG_NXTHDR(header, c)) {
        if (c->cmsg_level == SOL_UDP_LEVEL && c->cmsg_type == UDP_GRO_OPTION) {
            int segment;
            memcpy(&segment, CMSG_DATA(c), sizeof segment);
            return segment;
        }
    }
    return 0;
}

static PyObject *recv_batch(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *sock;
    int count;
    if (!PyArg_ParseTuple(args, "Oi:recv_batch", &sock, &count)) return NULL;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0) return NULL;
    if (count > MAX_BATCH) count = MAX_BATCH;
    if (count < 1) return PyList_New(0);
    for (int i = 0; i < count; i++) {
        if (pool[i] == NULL && (pool[i] = PyBytes_FromStringAndSize(NULL, DATAGRAM_SPACE)) == NULL)
            return NULL;
    }
    struct mmsghdr messages[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    struct sockaddr_storage addresses[MAX_BATCH];
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } controls[MAX_BATCH];
    memset(messages, 0, sizeof(struct mmsghdr) * (size_t)count);
    for (int i = 0; i < count; i++) {
        vectors[i].iov_base = PyBytes_AS_STRING(pool[i]);
        vectors[i].iov_len = DATAGRAM_SPACE;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &addresses[i];
        messages[i].msg_hdr.msg_namelen = sizeof addresses[i];
        messages[i].msg_hdr.msg_control = controls[i].space;
        messages[i].msg_hdr.msg_controllen = sizeof controls[i].space;
    }
    int got;
    do {
        got = recvmmsg(fd, messages, (unsigned int)count, MSG_DONTWAIT, NULL);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *result = PyList_New(got);
    if (result == NULL) return NULL;
    for (int i = 0; i < got; i++) {
        struct msghdr *header = &messages[i].msg_hdr;
        PyObject *addr = address_of(&addresses[i], header->msg_namelen);
        Py_ssize_t size = (Py_ssize_t)messages[i].msg_len;
        PyObject *data;
        if (size < COPY_BELOW) {
            data = PyBytes_FromStringAndSize(PyBytes_AS_STRING(pool[i]), size);
        } else {
            data = pool[i]; /* handed over; refilled at the next call */
            pool[i] = NULL;
            if (_PyBytes_Resize(&data, size) < 0) data = NULL;
        }
        PyObject *item = NULL;
        if (addr != NULL && data != NULL)
            item = Py_BuildValue("(NNi)", data, addr, gro_segment(header));
        else {
            Py_XDECREF(addr);
            Py_XDECREF(data);
        }
        if (item == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, i, item);
    }
    return result;
}

/* fresh_buffer(size) -> a bytearray of `size` bytes left as malloc gave them, for a read that
 * writes it before anything reads it (the bridges' TCP reads): bytearray(size) would first zero
 * the bytes the read then overwrites. */
static PyObject *fresh_buffer(PyObject *module, PyObject *arg) {
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffer size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

static PyMethodDef module_methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS,
     "recv_batch(sock, count) -> [(data, (host, port), segment), ...]: up to count datagrams "
     "(at most 32) in one recvmmsg without blocking; [] when there is none."},
    {"fresh_buffer", fresh_buffer, METH_O,
     "fresh_buffer(size) -> bytearray of size bytes, not zeroed: write before reading it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tunnel.node._udpio",
    "Many UDP datagrams in one system call (see tunnel/node/udpio.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__udpio(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddIntConstant(module, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
