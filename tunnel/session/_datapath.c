/* tunnel.session._datapath: the batched transport data plane in C (optional; sans-IO).
 *
 * The same API as its pure-Python twin, tunnel/session/datapath_pure.py; tunnel/session/datapath.py
 * chooses one at import. Nothing here does I/O: it turns payloads into datagrams and datagrams
 * into payloads, with the ChaCha20-Poly1305 or AES-256-GCM of OpenSSL's libcrypto (no cipher is
 * written here): each key uses the transport cipher its handshake negotiated
 * (tunnel/session/params.py; 1 = ChaCha20-Poly1305, 2 = AES-256-GCM).
 *
 * Why it exists: through `cryptography`, every seal or open costs about 1 us of call overhead on
 * top of the cipher, plus the Python of slicing headers and checking the replay window. Here one
 * call seals a whole GSO run or opens a whole GRO buffer, with one EVP context per key, created
 * once (issue 13, PERF.md).
 *
 * Large AES-256-GCM payloads (LARGE_PAYLOAD bytes and more: loopback's path MTU) go through
 * `cryptography`'s AESGCM instead (`LARGE_AEAD`), with its `encrypt_into` / `decrypt_into`. The
 * OpenSSL inside its wheels is newer than a distribution's libcrypto and has the VAES/AVX-512
 * code for GCM: on this project's machine a 65,000-byte payload seals in 8.6 us and opens in
 * 9.5 us that way, against 14.7 and 15.6 us through Debian 12's OpenSSL 3.0. Small payloads stay
 * on EVP, whose call costs less (1,400 bytes: 0.86 against 1.28 us to seal). ChaCha20-Poly1305
 * is as fast in both, so it always stays on EVP. Either way the bytes are the same.
 *
 * Transport data (tunnel/session/wire.py; WireGuard's layout), 32 B + payload:
 *
 *   | 0 type=4 | 1-3 zero | 4 receiver index (u32) | 8 counter (u64 LE) | 16 AEAD(payload) |
 *
 *   AEAD = ChaCha20-Poly1305 or AES-256-GCM (key, nonce = 4 zero bytes || counter LE, no
 *   associated data), 16-byte tag: the same layout for both ciphers.
 *
 * ReplayWindow is RFC 6479 exactly as tunnel/session/replay.py: a ring of 128 64-bit blocks,
 * window (128 - 1) * 64 = 8128 counters.
 *
 * Verdicts of open_batch, per segment (the same numbers in the twin):
 *   0 OK             plaintext authenticated and new
 *   1 NOT_TRANSPORT  type byte is not 4 (or empty): the raw segment, for the caller to route
 *   2 MALFORMED      shorter than 32 B, longer than 65,507 B, or reserved bytes not zero
 *   3 UNKNOWN_INDEX  no key under that receiver index
 *   4 STALE          the key expired (now >= expires)
 *   5 BAD_TAG        forged or damaged
 *   6 REPLAY         authentic, but a replay, too old, or at the key's counter limit (lower
 *                    for AES-256-GCM keys: tunnel/session/constants.py)
 * A dropped segment leaves every window untouched: the window is updated only after the tag.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <openssl/evp.h>

#define HEADER_SIZE 16
#define TAG_SIZE 16
#define OVERHEAD (HEADER_SIZE + TAG_SIZE)
#define MAX_DATAGRAM 65507
#define KEY_SIZE 32
#define MESSAGE_TRANSPORT 4

#define BLOCK_BITS_LOG 6
#define BLOCK_BITS (1 << BLOCK_BITS_LOG)
#define RING_BLOCKS 128
#define BLOCK_MASK (RING_BLOCKS - 1)
#define BIT_MASK (BLOCK_BITS - 1)
#define WINDOW_SIZE ((RING_BLOCKS - 1) * BLOCK_BITS)
/* tunnel/session/constants.py REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1 */
#define REJECT_AFTER_MESSAGES (UINT64_MAX - 8192ULL)
/* tunnel/session/params.py: the transport ciphers a handshake may choose */
#define CHACHA20_POLY1305 1
#define AES_256_GCM 2

/* AES-256-GCM payloads from this size on are sealed and opened by cryptography's AESGCM (above).
 * Measured, both ways cost the same at about 7 KB to seal and 9 KB to open; above 12 KiB
 * cryptography's is faster by 25 % and more (16,000 bytes: 3.1 against 4.0 us to seal). */
#define LARGE_PAYLOAD 12288

enum { V_OK, V_NOT_TRANSPORT, V_MALFORMED, V_UNKNOWN_INDEX, V_STALE, V_BAD_TAG, V_REPLAY };

static PyObject *receive_name; /* interned "receive": the table's values carry their Opener there */
/* cryptography's AESGCM class and InvalidTag, or NULL where cryptography lacks the `_into`
 * methods (before 45): then every payload goes through EVP. */
static PyObject *aesgcm_class, *invalid_tag;

/* --- ReplayWindow -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint64_t last;
    uint64_t ring[RING_BLOCKS];
} WindowObject;

/* Record `counter` if the window allows it (the caller has checked the limit). */
static int window_update(WindowObject *w, uint64_t counter) {
    uint64_t last = w->last;
    if (counter > last) {
        uint64_t block = counter >> BLOCK_BITS_LOG, current = last >> BLOCK_BITS_LOG;
        if (block != current) { /* most packets stay in the top block: nothing to clear */
            if (block - current >= RING_BLOCKS) {
                memset(w->ring, 0, sizeof w->ring);
            } else {
                for (uint64_t i = current + 1; i <= block; i++) w->ring[i & BLOCK_MASK] = 0;
            }
        }
        w->last = counter;
    } else if (last - counter > WINDOW_SIZE) {
        return 0;
    }
    uint64_t index = (counter >> BLOCK_BITS_LOG) & BLOCK_MASK;
    uint64_t bit = 1ULL << (counter & BIT_MASK);
    if (w->ring[index] & bit) return 0;
    w->ring[index] |= bit;
    return 1;
}

static int window_accept(WindowObject *w, uint64_t counter, uint64_t limit) {
    return counter < limit && window_update(w, counter);
}

/* A Python int as a counter; 0 with *ok = 0 for negatives and ints of more than 64 bits. */
static uint64_t as_counter(PyObject *value, int *ok) {
    *ok = 1;
    uint64_t result = PyLong_AsUnsignedLongLong(value);
    if (result == (uint64_t)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return 0;
        PyErr_Clear();
        *ok = 0;
    }
    return result;
}

static PyObject *window_accept_method(WindowObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"counter", "limit", NULL};
    PyObject *counter_obj, *limit_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|O!:accept", names, &PyLong_Type,
                                     &counter_obj, &PyLong_Type, &limit_obj))
        return NULL;
    int ok;
    uint64_t counter = as_counter(counter_obj, &ok);
    if (PyErr_Occurred()) return NULL;
    if (!ok) Py_RETURN_FALSE; /* negative or beyond any u64: never a counter on the wire */
    if (limit_obj == NULL) return PyBool_FromLong(window_accept(self, counter, REJECT_AFTER_MESSAGES));
    int above = PyObject_RichCompareBool(counter_obj, limit_obj, Py_GE);
    if (above < 0) return NULL;
    if (above) Py_RETURN_FALSE;
    /* counter < limit is settled: the window alone decides */
    return PyBool_FromLong(window_update(self, counter));
}

static PyObject *window_state(WindowObject *self, PyObject *unused) {
    (void)unused;
    PyObject *ring = PyTuple_New(RING_BLOCKS);
    if (ring == NULL) return NULL;
    for (int i = 0; i < RING_BLOCKS; i++) {
        PyObject *block = PyLong_FromUnsignedLongLong(self->ring[i]);
        if (block == NULL) {
            Py_DECREF(ring);
            return NULL;
        }
        PyTuple_SET_ITEM(ring, i, block);
    }
    return Py_BuildValue("(KN)", (unsigned long long)self->last, ring);
}

static PyMethodDef window_methods[] = {
    {"accept", (PyCFunction)(void (*)(void))window_accept_method, METH_VARARGS | METH_KEYWORDS,
     "accept(counter, limit=REJECT_AFTER_MESSAGES) -> bool: record counter; False if it is a "
     "replay, too old, or at/over limit."},
    {"state", (PyCFunction)window_state, METH_NOARGS,
     "state() -> (top, ring): everything the window holds (for tests)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *window_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!_PyArg_NoPositional("ReplayWindow", args) || !_PyArg_NoKeywords("ReplayWindow", kwargs))
        return NULL;
    WindowObject *self = (WindowObject *)type->tp_alloc(type, 0); /* zeroed: last 0, ring empty */
    return (PyObject *)self;
}

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunnel.session._datapath.ReplayWindow",
    .tp_doc = "Which counters of one receiving key have been seen (RFC 6479, 8128 counters).",
    .tp_basicsize = sizeof(WindowObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = window_new,
    .tp_methods = window_methods,
};

/* --- keys ---------------------------------------------------------------------------------- */

/* The one EVP context of a key in one direction (the Sealer's and the Opener's), or NULL with
 * a Python error set. Both ciphers take a 12-byte IV by default in OpenSSL, which is the nonce
 * of the layout. */
static EVP_CIPHER_CTX *new_context(const unsigned char *key, int encrypt, int cipher) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    const EVP_CIPHER *kind = cipher == AES_256_GCM ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
    if (ctx == NULL || EVP_CipherInit_ex(ctx, kind, NULL, key, NULL, encrypt) != 1) {
        EVP_CIPHER_CTX_free(ctx); /* NULL is a no-op */
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "libcrypto refused a transport cipher context");
        return NULL;
    }
    return ctx;
}

static int key_argument(Py_buffer *key, int cipher) {
    if (key->len != KEY_SIZE) {
        PyErr_SetString(PyExc_ValueError, "a transport key is 32 bytes");
        return 0;
    }
    if (cipher != CHACHA20_POLY1305 && cipher != AES_256_GCM) {
        PyErr_SetString(PyExc_ValueError, "unknown transport cipher");
        return 0;
    }
    return 1;
}

/* The bound `method` ("encrypt_into" or "decrypt_into") of cryptography's AESGCM for `key`, or
 * NULL with no error where large payloads stay on EVP (not AES-256-GCM, or no such method). */
static PyObject *large_method(const Py_buffer *key, int cipher, const char *method) {
    if (cipher != AES_256_GCM || aesgcm_class == NULL) return NULL;
    PyObject *aead = PyObject_CallFunction(aesgcm_class, "y#", key->buf, key->len);
    if (aead == NULL) return NULL;
    PyObject *bound = PyObject_GetAttrString(aead, method);
    Py_DECREF(aead);
    return bound;
}

/* `method(nonce, source, None, target)`: one AESGCM `encrypt_into` or `decrypt_into` over
 * memory of ours, under the nonce of the counter at `counter_le` (4 zero bytes, the counter LE).
 * The bytes it wrote, or -1 with an error set. */
static Py_ssize_t call_into(PyObject *method, const unsigned char *counter_le, const void *source,
                            Py_ssize_t source_len, void *target, Py_ssize_t target_len) {
    unsigned char nonce[12] = {0};
    memcpy(nonce + 4, counter_le, 8);
    PyObject *nonce_obj = PyBytes_FromStringAndSize((const char *)nonce, 12);
    PyObject *source_obj = PyMemoryView_FromMemory((char *)source, source_len, PyBUF_READ);
    PyObject *target_obj = PyMemoryView_FromMemory(target, target_len, PyBUF_WRITE);
    PyObject *written = NULL;
    if (nonce_obj != NULL && source_obj != NULL && target_obj != NULL)
        written = PyObject_CallFunctionObjArgs(method, nonce_obj, source_obj, Py_None, target_obj,
                                               NULL);
    Py_XDECREF(nonce_obj);
    Py_XDECREF(source_obj);
    Py_XDECREF(target_obj);
    Py_ssize_t count = written == NULL ? -1 : PyLong_AsSsize_t(written);
    Py_XDECREF(written);
    return count;
}

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    PyObject *seal_large;   /* AESGCM(key).encrypt_into, or NULL: LARGE_PAYLOAD and up */
    unsigned char *joined;  /* a large payload's parts joined (MAX_DATAGRAM bytes), or NULL */
    unsigned char header[8]; /* type 4, 3 zero bytes, the peer's receiver index */
} SealerObject;

static PyObject *sealer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"key", "header", "cipher", NULL};
    Py_buffer key, header;
    int cipher;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*i:Sealer", names, &key, &header,
                                     &cipher))
        return NULL;
    SealerObject *self = NULL;
    if (!key_argument(&key, cipher)) goto done;
    if (header.len != 8) {
        PyErr_SetString(PyExc_ValueError, "a transport header is 8 bytes");
        goto done;
    }
    self = (SealerObject *)type->tp_alloc(type, 0);
    if (self == NULL) goto done;
    memcpy(self->header, header.buf, 8);
    self->ctx = new_context(key.buf, 1, cipher);
    if (self->ctx == NULL) {
        Py_CLEAR(self);
        goto done;
    }
    self->seal_large = large_method(&key, cipher, "encrypt_into");
    if (self->seal_large == NULL && PyErr_Occurred()) Py_CLEAR(self);
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&header);
    return (PyObject *)self;
}

static void sealer_dealloc(SealerObject *self) {
    EVP_CIPHER_CTX_free(self->ctx);
    Py_XDECREF(self->seal_large);
    PyMem_Free(self->joined);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A payload is a buffer, or a list of buffers: its parts, sealed as their concatenation without
 * joining them first (the channel builds a packet as its header, frames and views of the stream's
 * bytes; the join was the one copy a frame's data still took, issue 13). `Parts` holds the views
 * of the payloads of one call. */
typedef struct {
    Py_buffer *views;
    Py_ssize_t count, capacity;
} Parts;

static void parts_release(Parts *parts) {
    for (Py_ssize_t i = 0; i < parts->count; i++) PyBuffer_Release(&parts->views[i]);
    PyMem_Free(parts->views);
}

static int parts_add(Parts *parts, PyObject *obj) {
    if (parts->count == parts->capacity) {
        Py_ssize_t capacity = parts->capacity ? 2 * parts->capacity : 16;
        Py_buffer *grown = PyMem_Realloc(parts->views, (size_t)capacity * sizeof(Py_buffer));
        if (grown == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        parts->views = grown;
        parts->capacity = capacity;
    }
    if (PyObject_GetBuffer(obj, &parts->views[parts->count], PyBUF_SIMPLE) < 0) return 0;
    parts->count++;
    return 1;
}

/* Add the views of `payload`'s parts; its length, or -1 with an exception set. */
static Py_ssize_t parts_add_payload(Parts *parts, PyObject *payload) {
    Py_ssize_t len = 0;
    if (PyList_Check(payload)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(payload); i++) {
            if (!parts_add(parts, PyList_GET_ITEM(payload, i))) return -1;
            len += parts->views[parts->count - 1].len;
        }
    } else {
        if (!parts_add(parts, payload)) return -1;
        len = parts->views[parts->count - 1].len;
    }
    if (len > MAX_DATAGRAM - OVERHEAD) {
        PyErr_SetString(PyExc_ValueError, "payload longer than a datagram carries");
        return -1;
    }
    return len;
}

/* Parts shorter than this are gathered into one buffer before they are encrypted: a packet's
 * headers come as several parts of a few bytes each, and one EVP call per part would cost more
 * than the copy of those few bytes (a frame's data is the one large part). */
#define SMALL_PART 256

/* The most bytes of small parts that `seal_large` writes in front of a large last part. */
#define LEAD_MAX 512

/* Where the `count - 1` small parts before a large last part can be written just in front of
 * it (`lead` bytes in all): the start of those bytes, or NULL. Only in memory we know to be
 * writable and ours to borrow: a writable memoryview of a bytearray that holds at least `lead`
 * bytes before the part (the bridges read TCP into such areas, with room at the front; a frame's
 * data is a view of one), and none of the small parts taken from those very bytes (two frames
 * of one area). `cryptography` releases the GIL for the call, so another thread could run while
 * those bytes hold the headers: none reads a read area (they are the event loop's alone; the
 * node's other threads resolve names and probe the NAT), and the bytearray cannot be resized
 * while the view exports it. */
static unsigned char *room_before(const Py_buffer *parts, Py_ssize_t count, Py_ssize_t lead) {
    const Py_buffer *last = &parts[count - 1];
    PyObject *view = last->obj;
    if (lead > LEAD_MAX || last->readonly || view == NULL || !PyMemoryView_Check(view))
        return NULL;
    PyObject *base = PyMemoryView_GET_BASE(view);
    if (base == NULL || !PyByteArray_CheckExact(base)) return NULL;
    unsigned char *start = (unsigned char *)PyByteArray_AS_STRING(base);
    unsigned char *at = (unsigned char *)last->buf;
    if (at - start < lead || at + last->len > start + PyByteArray_GET_SIZE(base)) return NULL;
    unsigned char *front = at - lead;
    for (Py_ssize_t i = 0; i < count - 1; i++) {
        const unsigned char *part = parts[i].buf;
        if (part < at && part + parts[i].len > front) return NULL;
    }
    return front;
}

/* Seal a large payload (header and counter already at `out`) with cryptography's AESGCM, which
 * takes one contiguous plaintext. A packet of a frame's data is a few small parts (the packet's
 * and the frame's headers) and the data: those go just in front of the data for the call, over
 * bytes of the same buffer that are put back right after, since those bytes are the stream's
 * (an earlier frame's data, kept until acknowledged). Otherwise the parts are joined first (one
 * copy, 3 us at 64 KiB: 8 % of a bulk sender's CPU at 65,000-byte datagrams). */
static int seal_large(SealerObject *self, const Py_buffer *parts, Py_ssize_t count,
                      Py_ssize_t len, unsigned char *out) {
    const void *plain = parts[0].buf;
    size_t lead = (size_t)(len - parts[count - 1].len);
    unsigned char *front = count > 1 ? room_before(parts, count, (Py_ssize_t)lead) : NULL;
    if (front != NULL) {
        unsigned char kept[LEAD_MAX];
        memcpy(kept, front, lead);
        unsigned char *at = front;
        for (Py_ssize_t i = 0; i < count - 1; i++) {
            memcpy(at, parts[i].buf, (size_t)parts[i].len);
            at += parts[i].len;
        }
        Py_ssize_t sealed = call_into(self->seal_large, out + 8, front, len, out + HEADER_SIZE,
                                      len + TAG_SIZE);
        memcpy(front, kept, lead);
        return sealed == len + TAG_SIZE;
    }
    if (count > 1) {
        if (self->joined == NULL && (self->joined = PyMem_Malloc(MAX_DATAGRAM)) == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        unsigned char *at = self->joined;
        for (Py_ssize_t i = 0; i < count; i++) {
            memcpy(at, parts[i].buf, (size_t)parts[i].len);
            at += parts[i].len;
        }
        plain = self->joined;
    }
    return call_into(self->seal_large, out + 8, plain, len, out + HEADER_SIZE, len + TAG_SIZE) ==
           len + TAG_SIZE;
}

/* Write the datagram of the payload made of `count` parts (`len` bytes in all) under `counter`
 * at `out` (len + OVERHEAD bytes). */
static int seal_into(SealerObject *self, const Py_buffer *parts, Py_ssize_t count,
                     Py_ssize_t len, uint64_t counter, unsigned char *out) {
    unsigned char nonce[12] = {0};
    memcpy(out, self->header, 8);
    for (int i = 0; i < 8; i++) out[8 + i] = nonce[4 + i] = (unsigned char)(counter >> (8 * i));
    if (self->seal_large != NULL && len >= LARGE_PAYLOAD)
        return seal_large(self, parts, count, len, out);
    if (EVP_EncryptInit_ex(self->ctx, NULL, NULL, NULL, nonce) != 1) return 0;
    unsigned char *at = out + HEADER_SIZE;
    unsigned char gathered[2 * SMALL_PART];
    int held = 0, written = 0;
    for (Py_ssize_t i = 0; i <= count; i++) {
        Py_ssize_t size = i < count ? parts[i].len : 0;
        if (i < count && size < SMALL_PART && held + size <= (int)sizeof(gathered)) {
            memcpy(gathered + held, parts[i].buf, (size_t)size);
            held += (int)size;
            continue;
        }
        if (held > 0) {  /* the small parts before this one (or the last ones) */
            if (EVP_EncryptUpdate(self->ctx, at, &written, gathered, held) != 1) return 0;
            at += written;
            held = 0;
        }
        if (i == count) break;
        if (size < SMALL_PART) {  /* did not fit beside the others: it starts the next gathering */
            memcpy(gathered, parts[i].buf, (size_t)size);
            held = (int)size;
        } else {
            if (EVP_EncryptUpdate(self->ctx, at, &written, parts[i].buf, (int)size) != 1)
                return 0;
            at += written;
        }
    }
    int final = 0;
    if (EVP_EncryptFinal_ex(self->ctx, at, &final) != 1) return 0;
    if (at + final != out + HEADER_SIZE + len) return 0;
    return EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_GET_TAG, TAG_SIZE,
                               out + HEADER_SIZE + len) == 1;
}

static PyObject *sealer_seal(SealerObject *self, PyObject *args) {
    PyObject *payload, *counter_obj;
    if (!PyArg_ParseTuple(args, "OO!:seal", &payload, &PyLong_Type, &counter_obj)) return NULL;
    int ok;
    uint64_t counter = as_counter(counter_obj, &ok);
    if (PyErr_Occurred()) return NULL;
    if (!ok || counter == UINT64_MAX) {
        PyErr_SetString(PyExc_ValueError, "counter out of range");
        return NULL;
    }
    Parts parts = {NULL, 0, 0};
    PyObject *result = NULL;
    Py_ssize_t len = parts_add_payload(&parts, payload);
    if (len < 0) goto done;
    result = PyBytes_FromStringAndSize(NULL, len + OVERHEAD);
    if (result == NULL) goto done;
    if (!seal_into(self, parts.views, parts.count, len, counter,
                   (unsigned char *)PyBytes_AS_STRING(result))) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
    }
done:
    parts_release(&parts);
    return result;
}

static PyObject *sealer_seal_batch(SealerObject *self, PyObject *args) {
    PyObject *payloads, *counter_obj;
    if (!PyArg_ParseTuple(args, "OO!:seal_batch", &payloads, &PyLong_Type, &counter_obj))
        return NULL;
    int ok;
    uint64_t counter = as_counter(counter_obj, &ok);
    if (PyErr_Occurred()) return NULL;
    PyObject *seq = PySequence_Fast(payloads, "seal_batch takes a sequence of payloads");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *result = NULL;
    Parts parts = {NULL, 0, 0};
    /* per payload: its first part and its length */
    Py_ssize_t *spans = PyMem_Calloc(2 * (size_t)(n ? n : 1), sizeof(Py_ssize_t));
    Py_ssize_t total = 0;
    if (spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (!ok || counter > UINT64_MAX - (uint64_t)n) {
        PyErr_SetString(PyExc_ValueError, "counter out of range");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        spans[2 * i] = parts.count;
        Py_ssize_t len = parts_add_payload(&parts, items[i]);
        if (len < 0) goto done;
        spans[2 * i + 1] = len;
        total += len + OVERHEAD;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t first = spans[2 * i], len = spans[2 * i + 1];
        Py_ssize_t next = i + 1 < n ? spans[2 * i + 2] : parts.count;
        if (!seal_into(self, parts.views + first, next - first, len, counter + (uint64_t)i,
                       out)) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
            goto done;
        }
        out += len + OVERHEAD;
    }
done:
    parts_release(&parts);
    PyMem_Free(spans);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef sealer_methods[] = {
    {"seal", (PyCFunction)sealer_seal, METH_VARARGS,
     "seal(payload, counter) -> bytes: the transport datagram of payload under counter; a "
     "payload is a buffer or a list of buffers (its parts, sealed without joining them)."},
    {"seal_batch", (PyCFunction)sealer_seal_batch, METH_VARARGS,
     "seal_batch(payloads, counter) -> bytes: the datagrams of payloads[i] under counter + i, "
     "back to back (one GSO send when their sizes allow)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SealerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunnel.session._datapath.Sealer",
    .tp_doc = "Sealer(key, header, cipher): the sending half of a keypair, one EVP context made "
              "once.",
    .tp_basicsize = sizeof(SealerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = sealer_new,
    .tp_dealloc = (destructor)sealer_dealloc,
    .tp_methods = sealer_methods,
};

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    PyObject *open_large; /* AESGCM(key).decrypt_into, or NULL: LARGE_PAYLOAD and up */
    WindowObject *replay;
    double expires;
    uint64_t limit; /* counters at or past this are refused (the keypair's reject_counter) */
} OpenerObject;

static PyObject *opener_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"key", "expires", "cipher", "limit", NULL};
    Py_buffer key;
    double expires;
    int cipher;
    PyObject *limit_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*di|O!:Opener", names, &key, &expires,
                                     &cipher, &PyLong_Type, &limit_obj))
        return NULL;
    OpenerObject *self = NULL;
    uint64_t limit = REJECT_AFTER_MESSAGES;
    if (!key_argument(&key, cipher)) goto done;
    if (limit_obj != NULL) {
        int ok;
        limit = as_counter(limit_obj, &ok);
        if (PyErr_Occurred()) goto done;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "limit out of range");
            goto done;
        }
    }
    self = (OpenerObject *)type->tp_alloc(type, 0);
    if (self == NULL) goto done;
    self->expires = expires;
    self->limit = limit;
    self->replay = (WindowObject *)WindowType.tp_alloc(&WindowType, 0);
    self->ctx = self->replay == NULL ? NULL : new_context(key.buf, 0, cipher);
    if (self->ctx == NULL) {
        Py_CLEAR(self);
        goto done;
    }
    self->open_large = large_method(&key, cipher, "decrypt_into");
    if (self->open_large == NULL && PyErr_Occurred()) Py_CLEAR(self);
done:
    PyBuffer_Release(&key);
    return (PyObject *)self;
}

static void opener_dealloc(OpenerObject *self) {
    EVP_CIPHER_CTX_free(self->ctx);
    Py_XDECREF(self->open_large);
    Py_XDECREF(self->replay);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* open_into for a large payload, through cryptography's AESGCM. */
static int open_large(OpenerObject *self, const unsigned char *data, Py_ssize_t len,
                      unsigned char *out) {
    if (call_into(self->open_large, data + 8, data + HEADER_SIZE, len - HEADER_SIZE, out,
                  len - OVERHEAD) >= 0)
        return 1;
    if (!PyErr_ExceptionMatches(invalid_tag)) return -1;
    PyErr_Clear(); /* forged or damaged: a verdict, not an error */
    return 0;
}

/* Decrypt and authenticate one datagram of at least OVERHEAD bytes into `out`: 1 authentic,
 * 0 forged or damaged, -1 an error set. */
static int open_into(OpenerObject *self, const unsigned char *data, Py_ssize_t len,
                     unsigned char *out) {
    if (self->open_large != NULL && len - OVERHEAD >= LARGE_PAYLOAD)
        return open_large(self, data, len, out);
    unsigned char nonce[12] = {0};
    memcpy(nonce + 4, data + 8, 8);
    Py_ssize_t plain = len - OVERHEAD;
    int written = 0, final = 0;
    if (EVP_DecryptInit_ex(self->ctx, NULL, NULL, NULL, nonce) != 1) return 0;
    if (plain > 0 &&
        EVP_DecryptUpdate(self->ctx, out, &written, data + HEADER_SIZE, (int)plain) != 1)
        return 0;
    if (EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_SET_TAG, TAG_SIZE,
                            (void *)(data + len - TAG_SIZE)) != 1)
        return 0;
    return EVP_DecryptFinal_ex(self->ctx, out + written, &final) == 1;
}

static PyMemberDef opener_members[] = {
    {"replay", T_OBJECT_EX, offsetof(OpenerObject, replay), READONLY,
     "the replay window of this key (shared with every open_batch)"},
    {"expires", T_DOUBLE, offsetof(OpenerObject, expires), READONLY,
     "from this `now` on, nothing is accepted under this key"},
    {"limit", T_ULONGLONG, offsetof(OpenerObject, limit), READONLY,
     "counters at or past this are refused (the keypair's reject_counter)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject OpenerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunnel.session._datapath.Opener",
    .tp_doc = "Opener(key, expires, cipher, limit=REJECT_AFTER_MESSAGES): the receiving half of "
              "a keypair, its replay window and its counter limit.",
    .tp_basicsize = sizeof(OpenerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = opener_new,
    .tp_dealloc = (destructor)opener_dealloc,
    .tp_members = opener_members,
};

/* --- open_batch ---------------------------------------------------------------------------- */

static PyObject *verdict(int code, PyObject *owner, PyObject *payload) {
    if (payload == NULL) return NULL;
    PyObject *item = PyTuple_New(3);
    if (item == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    PyTuple_SET_ITEM(item, 0, PyLong_FromLong(code));
    Py_INCREF(owner);
    PyTuple_SET_ITEM(item, 1, owner);
    PyTuple_SET_ITEM(item, 2, payload);
    return item;
}

static PyObject *empty_bytes;

/* The receiver a segment's index names, kept across the segments of one batch: a GRO buffer's
 * segments nearly always share it, so the bytes key, the dict lookup and the attribute read are
 * paid once a batch, not once a segment. Nothing in a batch runs Python code that could change
 * the table (`receive` is a plain attribute), and the references keep both alive meanwhile. */
typedef struct {
    unsigned char index[4];
    PyObject *owner;  /* new reference, or NULL: nothing cached */
    PyObject *opener; /* new reference to an Opener, with `owner` */
} Route;

static void route_clear(Route *route) {
    Py_CLEAR(route->owner);
    Py_CLEAR(route->opener);
}

/* Fill `route` for `index`: 1 found, 0 no such index (route cleared), -1 error set. */
static int route_find(Route *route, PyObject *table, const unsigned char *index) {
    if (route->owner != NULL && memcmp(route->index, index, 4) == 0) return 1;
    route_clear(route);
    PyObject *key = PyBytes_FromStringAndSize((const char *)index, 4);
    if (key == NULL) return -1;
    PyObject *owner = PyDict_GetItemWithError(table, key); /* borrowed */
    Py_DECREF(key);
    if (owner == NULL) return PyErr_Occurred() ? -1 : 0;
    PyObject *opener = PyObject_GetAttr(owner, receive_name);
    if (opener == NULL) return -1;
    if (!PyObject_TypeCheck(opener, &OpenerType)) {
        Py_DECREF(opener);
        PyErr_SetString(PyExc_TypeError, "a table value's `receive` must be an Opener");
        return -1;
    }
    memcpy(route->index, index, 4);
    route->owner = Py_NewRef(owner);
    route->opener = opener;
    return 1;
}

/* The verdict of one segment, as a (verdict, owner, payload) tuple. */
static PyObject *open_segment(PyObject *table, Route *route, const unsigned char *data,
                              Py_ssize_t len, double now) {
    if (len == 0 || data[0] != MESSAGE_TRANSPORT)
        return verdict(V_NOT_TRANSPORT, Py_None, PyBytes_FromStringAndSize((const char *)data, len));
    if (len < OVERHEAD || len > MAX_DATAGRAM || data[1] || data[2] || data[3])
        return verdict(V_MALFORMED, Py_None, Py_NewRef(empty_bytes));
    int found = route_find(route, table, data + 4);
    if (found < 0) return NULL;
    if (found == 0) return verdict(V_UNKNOWN_INDEX, Py_None, Py_NewRef(empty_bytes));
    PyObject *owner = route->owner;
    OpenerObject *key = (OpenerObject *)route->opener;
    if (now >= key->expires) return verdict(V_STALE, owner, Py_NewRef(empty_bytes));
    PyObject *plain = PyBytes_FromStringAndSize(NULL, len - OVERHEAD);
    if (plain == NULL) return NULL;
    int authentic = open_into(key, data, len, (unsigned char *)PyBytes_AS_STRING(plain));
    if (authentic <= 0) {
        Py_DECREF(plain);
        return authentic < 0 ? NULL : verdict(V_BAD_TAG, owner, Py_NewRef(empty_bytes));
    }
    uint64_t counter = 0;
    for (int i = 7; i >= 0; i--) counter = (counter << 8) | data[8 + i];
    if (!window_accept(key->replay, counter, key->limit)) {
        Py_DECREF(plain);
        return verdict(V_REPLAY, owner, Py_NewRef(empty_bytes));
    }
    return verdict(V_OK, owner, plain);
}

static PyObject *open_batch(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *table;
    Py_buffer data;
    Py_ssize_t segment;
    double now;
    if (!PyArg_ParseTuple(args, "O!y*nd:open_batch", &PyDict_Type, &table, &data, &segment, &now))
        return NULL;
    const unsigned char *bytes = data.buf;
    Py_ssize_t total = data.len;
    if (segment <= 0 || segment > total) segment = total;
    Py_ssize_t count = segment ? (total + segment - 1) / segment : 1;
    Route route = {{0}, NULL, NULL};
    PyObject *results = PyList_New(count);
    if (results == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t offset = i * segment;
        Py_ssize_t len = total - offset < segment ? total - offset : segment;
        PyObject *item = open_segment(table, &route, bytes + offset, len, now);
        if (item == NULL) {
            Py_CLEAR(results);
            goto done;
        }
        PyList_SET_ITEM(results, i, item);
    }
done:
    route_clear(&route);
    PyBuffer_Release(&data);
    return results;
}

static PyMethodDef module_methods[] = {
    {"open_batch", open_batch, METH_VARARGS,
     "open_batch(table, data, segment, now) -> [(verdict, owner, payload), ...]: split data into "
     "segments of `segment` bytes (the last may be shorter; 0: one datagram), then per segment "
     "look its receiver index up in `table` (index -> object whose `receive` is an Opener), "
     "check expiry, open and check the replay window."},
    {NULL, NULL, 0, NULL},
};

/* Set aesgcm_class and invalid_tag where cryptography has AESGCM.encrypt_into (45 and later);
 * 0 only for an error other than an older cryptography. */
static int find_aesgcm(void) {
    PyObject *aead = PyImport_ImportModule("cryptography.hazmat.primitives.ciphers.aead");
    PyObject *exceptions = PyImport_ImportModule("cryptography.exceptions");
    if (aead != NULL && exceptions != NULL) {
        aesgcm_class = PyObject_GetAttrString(aead, "AESGCM");
        invalid_tag = PyObject_GetAttrString(exceptions, "InvalidTag");
    }
    Py_XDECREF(aead);
    Py_XDECREF(exceptions);
    if (aesgcm_class == NULL || invalid_tag == NULL ||
        !PyObject_HasAttrString(aesgcm_class, "encrypt_into")) {
        Py_CLEAR(aesgcm_class);
        Py_CLEAR(invalid_tag);
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_ImportError) &&
            !PyErr_ExceptionMatches(PyExc_AttributeError))
            return 0;
        PyErr_Clear();
    }
    return 1;
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tunnel.session._datapath",
    "The batched transport data plane in C (see tunnel/session/datapath.py).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__datapath(void) {
    if (PyType_Ready(&WindowType) < 0 || PyType_Ready(&SealerType) < 0 ||
        PyType_Ready(&OpenerType) < 0)
        return NULL;
    receive_name = PyUnicode_InternFromString("receive");
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (receive_name == NULL || empty_bytes == NULL || !find_aesgcm()) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "ReplayWindow", (PyObject *)&WindowType) < 0 ||
        PyModule_AddObjectRef(module, "Sealer", (PyObject *)&SealerType) < 0 ||
        PyModule_AddObjectRef(module, "Opener", (PyObject *)&OpenerType) < 0 ||
        PyModule_AddIntConstant(module, "WINDOW_SIZE", WINDOW_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "CHACHA20_POLY1305", CHACHA20_POLY1305) < 0 ||
        PyModule_AddIntConstant(module, "AES_256_GCM", AES_256_GCM) < 0 ||
        PyModule_AddIntConstant(module, "LARGE_PAYLOAD", LARGE_PAYLOAD) < 0 ||
        PyModule_AddObjectRef(module, "LARGE_AEAD", aesgcm_class ? Py_True : Py_False) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
