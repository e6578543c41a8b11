// pickle: restricted unpickler (see pickle.h). Opcode semantics follow CPython's
// Lib/pickletools.py; only what torch.save (protocol 2, and 3..5 for newer writers) emits for
// state dicts and mmcv checkpoints is accepted.
#include "io/pickle.h"

#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"

static const pk_limits k_default_limits = {1000, 10000000, (int64_t)1 << 30};
enum { PK_MAX_STACK = 1 << 22, PK_MAX_MEMO = 1 << 24 };

static const char *const k_dtype_names[PK_NDTYPES] = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8"};
static const int k_dtype_sizes[PK_NDTYPES] = {4, 2, 2, 8, 8, 4, 1};
const char *pk_dtype_name(enum pk_dtype d) { return (unsigned)d < PK_NDTYPES ? k_dtype_names[d] : "?"; }
int pk_dtype_size(enum pk_dtype d) { return (unsigned)d < PK_NDTYPES ? k_dtype_sizes[d] : 0; }

// torch.<X>Storage class names -> dtype
static const struct { const char *name; enum pk_dtype d; } k_storages[] = {
    {"torch.FloatStorage", PK_F32}, {"torch.HalfStorage", PK_F16}, {"torch.BFloat16Storage", PK_BF16},
    {"torch.DoubleStorage", PK_F64}, {"torch.LongStorage", PK_I64}, {"torch.IntStorage", PK_I32},
    {"torch.ByteStorage", PK_U8},
};
// Callables and classes a state-dict pickle may name; nothing else is ever resolved.
static const char *const k_callables[] = {
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "_codecs.encode",
};

const char *pk_type_name(enum pk_type t) {
    static const char *n[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict",
                              "global", "storage", "tensor", "bigint"};
    return (unsigned)t < sizeof n / sizeof n[0] ? n[t] : "?";
}

// ------------------------------------------------------------------------------------- arena
struct pk_arena {
    pk_obj **o;
    int64_t n, cap;
};

int pk_arena_create(pk_arena **a) {
    *a = pl_calloc(1, sizeof **a, "pickle arena");
    return *a ? 0 : PL_ENOMEM;
}

void pk_arena_destroy(pk_arena *a) {
    if (!a) return;
    for (int64_t i = 0; i < a->n; i++) {
        free(a->o[i]->s);
        free(a->o[i]->items);
        free(a->o[i]);
    }
    free(a->o);
    free(a);
}

int64_t pk_arena_size(const pk_arena *a) { return a->n; }
pk_obj *pk_arena_at(const pk_arena *a, int64_t i) { return a->o[i]; }

static pk_obj *pk_new(pk_arena *a, enum pk_type t) {
    if (a->n == a->cap) {
        int64_t cap = a->cap ? a->cap * 2 : 256;
        pk_obj **o = pl_realloc(a->o, sizeof *o * (size_t)cap, "pickle objects");
        if (!o) return NULL;
        a->o = o;
        a->cap = cap;
    }
    pk_obj *x = pl_calloc(1, sizeof *x, "pickle object");
    if (!x) return NULL;
    x->t = t;
    a->o[a->n++] = x;
    return x;
}

static int pk_push_item(pk_obj *c, pk_obj *v) {
    if (c->n == c->cap) {
        int64_t cap = c->cap ? c->cap * 2 : 8;
        pk_obj **it = pl_realloc(c->items, sizeof *it * (size_t)cap, "pickle container");
        if (!it) return PL_ENOMEM;
        c->items = it;
        c->cap = cap;
    }
    c->items[c->n++] = v;
    return 0;
}

pk_obj *pk_dict_get(const pk_obj *d, const char *key) {
    if (!d || d->t != PK_DICT) return NULL;
    for (int64_t i = 0; i + 1 < d->n; i += 2)
        if (d->items[i]->t == PK_STR && !strcmp(d->items[i]->s, key)) return d->items[i + 1];
    return NULL;
}

// ------------------------------------------------------------------------------------ loader
typedef struct {
    const uint8_t *buf;
    size_t len, pos, op_pos;
    uint8_t op;
    const char *label;
    pk_limits lim;
    pk_arena *a;
    int64_t base_objects;
    pk_obj **stack;
    int64_t sp, scap;
    int64_t *marks;
    int64_t nmarks, mcap;
    pk_obj **memo;
    int64_t mlen, mset;
    int err;   // the error behind a NULL object (push reports it)
} pk_ctx;

// Names from CPython's pickletools, for error messages.
static const char *op_name(uint8_t op) {
    static const struct { uint8_t op; const char *name; } t[] = {
        {0x80, "PROTO"}, {0x95, "FRAME"}, {'.', "STOP"}, {'(', "MARK"}, {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"},
        {'N', "NONE"}, {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"}, {'J', "BININT"}, {'K', "BININT1"}, {'M', "BININT2"},
        {0x8a, "LONG1"}, {0x8b, "LONG4"}, {'G', "BINFLOAT"}, {'X', "BINUNICODE"}, {0x8c, "SHORT_BINUNICODE"},
        {0x8d, "BINUNICODE8"}, {'T', "BINSTRING"}, {'U', "SHORT_BINSTRING"}, {'B', "BINBYTES"}, {'C', "SHORT_BINBYTES"},
        {0x8e, "BINBYTES8"}, {')', "EMPTY_TUPLE"}, {']', "EMPTY_LIST"}, {'}', "EMPTY_DICT"}, {'t', "TUPLE"}, {'l', "LIST"},
        {'d', "DICT"}, {0x85, "TUPLE1"}, {0x86, "TUPLE2"}, {0x87, "TUPLE3"}, {'a', "APPEND"}, {'e', "APPENDS"},
        {'s', "SETITEM"}, {'u', "SETITEMS"}, {'q', "BINPUT"}, {'r', "LONG_BINPUT"}, {0x94, "MEMOIZE"}, {'h', "BINGET"},
        {'j', "LONG_BINGET"}, {'c', "GLOBAL"}, {0x93, "STACK_GLOBAL"}, {'R', "REDUCE"}, {'b', "BUILD"}, {'Q', "BINPERSID"},
        {0x81, "NEWOBJ"}, {0x92, "NEWOBJ_EX"}, {'i', "INST"}, {'o', "OBJ"}, {'P', "PERSID"}, {0x82, "EXT1"},
        {0x90, "ADDITEMS"}, {0x8f, "EMPTY_SET"}, {0x91, "FROZENSET"}, {0x96, "BYTEARRAY8"}, {0x97, "NEXT_BUFFER"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].op == op) return t[i].name;
    return "unknown";
}

static int bad(pk_ctx *c, const char *what) {
    return pl_fail(PL_EFORMAT, "%s: byte %zu: opcode 0x%02x %s: %s (corrupt or truncated pickle)", c->label, c->op_pos, c->op,
                   op_name(c->op), what);
}

static int need(pk_ctx *c, uint64_t n) {
    if (n > c->len - c->pos)
        return pl_fail(PL_EFORMAT, "%s: byte %zu: opcode 0x%02x %s: needs %llu more bytes, %zu left (truncated file or a bogus declared size)",
                       c->label, c->op_pos, c->op, op_name(c->op), (unsigned long long)n, c->len - c->pos);
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static pk_obj *mk(pk_ctx *c, enum pk_type t) {
    if (c->a->n - c->base_objects >= c->lim.max_objects) {
        c->err = pl_fail(PL_ERANGE, "%s: byte %zu: more than %lld objects (limit)", c->label, c->op_pos, (long long)c->lim.max_objects);
        return NULL;
    }
    pk_obj *o = pk_new(c->a, t);
    if (!o) c->err = pl_fail(PL_ENOMEM, "%s: out of memory", c->label);
    return o;
}

static int push(pk_ctx *c, pk_obj *o) {
    if (!o) return c->err ? c->err : PL_ENOMEM;
    if (c->sp == c->scap) {
        if (c->scap >= PK_MAX_STACK)
            return pl_fail(PL_ERANGE, "%s: byte %zu: stack deeper than %d entries (limit)", c->label, c->op_pos, PK_MAX_STACK);
        int64_t cap = c->scap ? c->scap * 2 : 64;
        pk_obj **s = pl_realloc(c->stack, sizeof *s * (size_t)cap, "pickle stack");
        if (!s) return PL_ENOMEM;
        c->stack = s;
        c->scap = cap;
    }
    c->stack[c->sp++] = o;
    return 0;
}

static pk_obj *pop(pk_ctx *c) {
    int64_t floor = c->nmarks ? c->marks[c->nmarks - 1] : 0;
    if (c->sp <= floor) return NULL;
    return c->stack[--c->sp];
}

static pk_obj *top(pk_ctx *c) {
    int64_t floor = c->nmarks ? c->marks[c->nmarks - 1] : 0;
    return c->sp > floor ? c->stack[c->sp - 1] : NULL;
}

// Items since the last MARK: *first = index into the stack, returns the count (or -1).
static int64_t pop_mark(pk_ctx *c, int64_t *first) {
    if (!c->nmarks) return -1;
    *first = c->marks[--c->nmarks];
    return c->sp - *first;
}

// Container nesting depth is kept in obj->i for tuples/lists/dicts (a recursion bomb is refused
// as soon as it is built, before anyone walks it).
static int nest(pk_ctx *c, pk_obj *container, const pk_obj *item) {
    int64_t d = (item->t == PK_TUPLE || item->t == PK_LIST || item->t == PK_DICT) ? item->i + 1 : 1;
    if (d > container->i) container->i = d;
    if (container->i > c->lim.max_depth)
        return pl_fail(PL_ERANGE, "%s: byte %zu: containers nested deeper than %d (limit; a recursion bomb?)", c->label,
                       c->op_pos, c->lim.max_depth);
    return 0;
}

static int add_item(pk_ctx *c, pk_obj *container, pk_obj *item) {
    int rc = nest(c, container, item);
    return rc ? rc : pk_push_item(container, item);
}

static pk_obj *mk_text(pk_ctx *c, enum pk_type t, uint64_t n) {
    if ((c->err = need(c, n))) return NULL;
    if (n > (uint64_t)c->lim.max_bytes) {
        c->err = pl_fail(PL_ERANGE, "%s: byte %zu: a %llu-byte value (limit %lld)", c->label, c->op_pos, (unsigned long long)n,
                (long long)c->lim.max_bytes);
        return NULL;
    }
    pk_obj *o = mk(c, t);
    if (!o) return NULL;
    o->s = pl_malloc((size_t)n + 1, "pickle string");
    if (!o->s) { c->err = PL_ENOMEM; return NULL; }
    memcpy(o->s, c->buf + c->pos, (size_t)n);
    o->s[n] = 0;
    o->len = (size_t)n;
    c->pos += (size_t)n;
    return o;
}

static int is_int(const pk_obj *o) { return o && (o->t == PK_INT || o->t == PK_BOOL); }

static int int_tuple(pk_ctx *c, const pk_obj *t, int64_t *v, int *n, const char *what) {
    if (!t || t->t != PK_TUPLE) return bad(c, what);
    if (t->n > PK_MAX_DIMS)
        return pl_fail(PL_EUNSUPPORTED, "%s: byte %zu: a tensor of %lld dims (at most %d)", c->label, c->op_pos, (long long)t->n, PK_MAX_DIMS);
    for (int64_t i = 0; i < t->n; i++) {
        if (t->items[i]->t != PK_INT || t->items[i]->i < 0) return bad(c, what);
        v[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return 0;
}

static int do_global(pk_ctx *c, const char *module, const char *name) {
    char full[256];
    if (snprintf(full, sizeof full, "%s.%s", module, name) >= (int)sizeof full) return bad(c, "global name too long");
    int ok = 0;
    for (size_t i = 0; i < sizeof k_callables / sizeof k_callables[0]; i++) ok |= !strcmp(full, k_callables[i]);
    for (size_t i = 0; i < sizeof k_storages / sizeof k_storages[0]; i++) ok |= !strcmp(full, k_storages[i].name);
    if (!ok)
        return pl_fail(PL_EUNSUPPORTED, "%s: byte %zu: the pickle refers to global '%s', which a state dict never needs: refused (a checkpoint is untrusted input and is never executed)",
                       c->label, c->op_pos, full);
    pk_obj *g = mk(c, PK_GLOBAL);
    if (!g) return c->err;
    g->s = strdup(full);
    if (!g->s) return PL_ENOMEM;
    g->len = strlen(full);
    return push(c, g);
}

static int do_reduce(pk_ctx *c) {
    pk_obj *args = pop(c), *fn = pop(c);
    if (!args || !fn || args->t != PK_TUPLE || fn->t != PK_GLOBAL) return bad(c, "REDUCE needs a global and an argument tuple");
    if (!strcmp(fn->s, "collections.OrderedDict")) {
        if (args->n) return bad(c, "OrderedDict() with arguments");
        return push(c, mk(c, PK_DICT));
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2")) {
        if (args->n < 4 || args->items[0]->t != PK_STORAGE || !is_int(args->items[1]))
            return bad(c, "_rebuild_tensor_v2(storage, offset, size, stride, ...) expected");
        pk_obj *t = mk(c, PK_TENSOR);
        if (!t) return c->err;
        t->storage = args->items[0];
        t->offset = args->items[1]->i;
        int ns = 0, nst = 0, rc;
        if ((rc = int_tuple(c, args->items[2], t->shape, &ns, "tensor size must be a tuple of ints >= 0"))) return rc;
        if ((rc = int_tuple(c, args->items[3], t->stride, &nst, "tensor stride must be a tuple of ints >= 0"))) return rc;
        if (ns != nst || t->offset < 0) return bad(c, "tensor size/stride lengths differ or negative offset");
        t->ndim = ns;
        return push(c, t);
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_parameter") || !strcmp(fn->s, "torch._utils._rebuild_parameter_with_state")) {
        if (args->n < 1 || args->items[0]->t != PK_TENSOR) return bad(c, "_rebuild_parameter(tensor, ...) expected");
        return push(c, args->items[0]);
    }
    if (!strcmp(fn->s, "_codecs.encode")) {   // protocol-2 bytes: _codecs.encode(str, 'latin1')
        if (args->n != 2 || args->items[0]->t != PK_STR || args->items[1]->t != PK_STR ||
            (strcmp(args->items[1]->s, "latin1") && strcmp(args->items[1]->s, "latin-1")))
            return bad(c, "_codecs.encode(str, 'latin1') expected");
        pk_obj *b = mk(c, PK_BYTES);
        if (!b) return c->err;
        const pk_obj *s = args->items[0];   // UTF-8 of code points < 256 -> bytes
        b->s = pl_malloc(s->len + 1, "bytes");
        if (!b->s) return PL_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < s->len; i++) {
            uint8_t ch = (uint8_t)s->s[i];
            if (ch < 0x80) b->s[k++] = (char)ch;
            else if ((ch & 0xfe) == 0xc2 && i + 1 < s->len) { b->s[k++] = (char)(((ch & 3) << 6) | ((uint8_t)s->s[i + 1] & 0x3f)); i++; }
            else return bad(c, "_codecs.encode: not latin-1 text");
        }
        b->s[k] = 0;
        b->len = k;
        return push(c, b);
    }
    return pl_fail(PL_EUNSUPPORTED, "%s: byte %zu: '%s' cannot be called (only tensor/dict rebuilders are)", c->label, c->op_pos, fn->s);
}

static int do_persid(pk_ctx *c) {
    pk_obj *pid = pop(c);
    if (!pid || pid->t != PK_TUPLE || pid->n < 5 || pid->items[0]->t != PK_STR || strcmp(pid->items[0]->s, "storage"))
        return bad(c, "persistent id must be ('storage', type, key, location, numel, ...)");
    pk_obj *ty = pid->items[1], *key = pid->items[2], *num = pid->items[4];
    if (ty->t != PK_GLOBAL || (key->t != PK_STR && key->t != PK_INT) || num->t != PK_INT || num->i < 0)
        return bad(c, "persistent id must be ('storage', type, key, location, numel, ...)");
    pk_obj *s = mk(c, PK_STORAGE);
    if (!s) return c->err;
    int found = 0;
    for (size_t i = 0; i < sizeof k_storages / sizeof k_storages[0]; i++)
        if (!strcmp(ty->s, k_storages[i].name)) { s->dtype = k_storages[i].d; found = 1; }
    if (!found) return pl_fail(PL_EUNSUPPORTED, "%s: byte %zu: storage type '%s' is not a tensor storage", c->label, c->op_pos, ty->s);
    if (key->t == PK_STR) {
        if (key->len >= sizeof s->key) return bad(c, "storage key too long");
        memcpy(s->key, key->s, key->len + 1);
    } else {
        snprintf(s->key, sizeof s->key, "%lld", (long long)key->i);
    }
    s->numel = num->i;
    // Legacy format: a 6th item (view_key, offset, size) makes this a view of another storage.
    if (pid->n >= 6 && pid->items[5]->t == PK_TUPLE) {
        pk_obj *v = pid->items[5];
        if (v->n != 3 || v->items[0]->t != PK_STR || v->items[1]->t != PK_INT || v->items[2]->t != PK_INT ||
            v->items[1]->i < 0 || v->items[2]->i < 0 || v->items[0]->len >= sizeof s->key)
            return bad(c, "storage view metadata must be (key, offset, size)");
        memcpy(s->key, v->items[0]->s, v->items[0]->len + 1);
        s->view_offset = v->items[1]->i;
        s->numel = v->items[2]->i;
    }
    return push(c, s);
}

static int memo_put(pk_ctx *c, uint64_t idx) {
    pk_obj *o = top(c);
    if (!o) return bad(c, "memo store from an empty stack");
    if (idx >= PK_MAX_MEMO) return pl_fail(PL_ERANGE, "%s: byte %zu: memo index %llu (limit %d)", c->label, c->op_pos, (unsigned long long)idx, PK_MAX_MEMO);
    if ((int64_t)idx >= c->mlen) {
        int64_t n = PL_MAX((int64_t)idx + 1, c->mlen * 2);
        pk_obj **m = pl_realloc(c->memo, sizeof *m * (size_t)n, "pickle memo");
        if (!m) return PL_ENOMEM;
        memset(m + c->mlen, 0, sizeof *m * (size_t)(n - c->mlen));
        c->memo = m;
        c->mlen = n;
    }
    if (!c->memo[idx]) c->mset++;
    c->memo[idx] = o;
    return 0;
}

static int memo_get(pk_ctx *c, uint64_t idx) {
    if ((int64_t)idx >= c->mlen || !c->memo[idx]) return bad(c, "memo index not set");
    return push(c, c->memo[idx]);
}

static int run(pk_ctx *c, pk_obj **out) {
    int rc = 0;
    while (!rc) {
        c->op_pos = c->pos;
        c->op = 0;
        if (c->pos >= c->len)
            return pl_fail(PL_EFORMAT, "%s: byte %zu: the pickle ends without STOP (truncated)", c->label, c->pos);
        uint8_t op = c->op = c->buf[c->pos++];
        switch (op) {
        case 0x80:   // PROTO
            if ((rc = need(c, 1))) break;
            if (c->buf[c->pos] < 2 || c->buf[c->pos] > 5) rc = bad(c, "pickle protocol outside 2..5");
            c->pos++;
            break;
        case 0x95:   // FRAME: a length hint only
            if (!(rc = need(c, 8))) c->pos += 8;
            break;
        case '.': {  // STOP
            pk_obj *o = pop(c);
            if (!o || c->nmarks) return bad(c, "STOP with an empty stack or an open MARK");
            *out = o;
            return 0;
        }
        case '(':
            if (c->nmarks >= c->lim.max_depth) {
                rc = pl_fail(PL_ERANGE, "%s: byte %zu: more than %d open MARKs (limit; a recursion bomb?)", c->label, c->op_pos, c->lim.max_depth);
                break;
            }
            if (c->nmarks == c->mcap) {
                int64_t cap = c->mcap ? c->mcap * 2 : 16;
                int64_t *m = pl_realloc(c->marks, sizeof *m * (size_t)cap, "pickle marks");
                if (!m) { rc = PL_ENOMEM; break; }
                c->marks = m;
                c->mcap = cap;
            }
            c->marks[c->nmarks++] = c->sp;
            break;
        case '0': if (!pop(c)) rc = bad(c, "POP from an empty stack"); break;
        case '1': { int64_t f; if (pop_mark(c, &f) < 0) rc = bad(c, "POP_MARK without MARK"); else c->sp = f; break; }
        case '2': { pk_obj *o = top(c); rc = o ? push(c, o) : bad(c, "DUP of an empty stack"); break; }
        case 'N': rc = push(c, mk(c, PK_NONE)); break;
        case 0x88: case 0x89: { pk_obj *o = mk(c, PK_BOOL); if (o) o->i = op == 0x88; rc = push(c, o); break; }
        case 'J': case 'K': case 'M': {
            int n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if ((rc = need(c, (uint64_t)n))) break;
            uint64_t v = rd_le(c->buf + c->pos, n);
            c->pos += (size_t)n;
            pk_obj *o = mk(c, PK_INT);
            if (o) o->i = op == 'J' ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
            rc = push(c, o);
            break;
        }
        case 0x8a: case 0x8b: {   // LONG1 / LONG4: little-endian two's complement
            int w = op == 0x8a ? 1 : 4;
            if ((rc = need(c, (uint64_t)w))) break;
            uint64_t n = rd_le(c->buf + c->pos, w);
            c->pos += (size_t)w;
            if (n <= 8) {
                if ((rc = need(c, n))) break;
                uint64_t v = n ? rd_le(c->buf + c->pos, (int)n) : 0;
                if (n && n < 8 && (c->buf[c->pos + n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n);
                c->pos += (size_t)n;
                pk_obj *o = mk(c, PK_INT);
                if (o) o->i = (int64_t)v;
                rc = push(c, o);
            } else {
                rc = push(c, mk_text(c, PK_BIGINT, n));
            }
            break;
        }
        case 'G': {
            if ((rc = need(c, 8))) break;
            uint64_t v = 0;
            for (int i = 0; i < 8; i++) v = (v << 8) | c->buf[c->pos + (size_t)i];   // big-endian
            c->pos += 8;
            pk_obj *o = mk(c, PK_FLOAT);
            if (o) memcpy(&o->f, &v, 8);
            rc = push(c, o);
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: {
            int w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            if ((rc = need(c, (uint64_t)w))) break;
            uint64_t n = rd_le(c->buf + c->pos, w);
            c->pos += (size_t)w;
            rc = push(c, mk_text(c, (op == 'B' || op == 'C' || op == 0x8e) ? PK_BYTES : PK_STR, n));
            break;
        }
        case ')': rc = push(c, mk(c, PK_TUPLE)); break;
        case ']': rc = push(c, mk(c, PK_LIST)); break;
        case '}': rc = push(c, mk(c, PK_DICT)); break;
        case 't': case 'l': case 'd': {
            int64_t f, n = pop_mark(c, &f);
            if (n < 0) { rc = bad(c, "TUPLE/LIST/DICT without MARK"); break; }
            if (op == 'd' && n % 2) { rc = bad(c, "DICT with an odd number of items"); break; }
            pk_obj *o = mk(c, op == 't' ? PK_TUPLE : op == 'l' ? PK_LIST : PK_DICT);
            if (!o) { rc = c->err; break; }
            for (int64_t i = 0; i < n && !rc; i++) rc = add_item(c, o, c->stack[f + i]);
            c->sp = f;
            if (!rc) rc = push(c, o);
            break;
        }
        case 0x85: case 0x86: case 0x87: {
            int n = op - 0x84;
            pk_obj *it[3] = {0};
            for (int i = n - 1; i >= 0; i--) it[i] = pop(c);
            pk_obj *o = mk(c, PK_TUPLE);
            if (!o) { rc = c->err; break; }
            for (int i = 0; i < n && !rc; i++) rc = it[i] ? add_item(c, o, it[i]) : bad(c, "TUPLEn with too few items");
            if (!rc) rc = push(c, o);
            break;
        }
        case 'a': {
            pk_obj *v = pop(c), *l = top(c);
            rc = (v && l && l->t == PK_LIST) ? add_item(c, l, v) : bad(c, "APPEND needs a list");
            break;
        }
        case 's': {
            pk_obj *v = pop(c), *k = pop(c), *d = top(c);
            if (!v || !k || !d || d->t != PK_DICT) { rc = bad(c, "SETITEM needs a dict"); break; }
            if (!(rc = add_item(c, d, k))) rc = add_item(c, d, v);
            break;
        }
        case 'e': case 'u': {
            int64_t f, n = pop_mark(c, &f);
            int64_t floor = c->nmarks ? c->marks[c->nmarks - 1] : 0;
            pk_obj *o = n >= 0 && f > floor ? c->stack[f - 1] : NULL;
            if (!o || o->t != (op == 'e' ? PK_LIST : PK_DICT) || (op == 'u' && n % 2)) {
                rc = bad(c, op == 'e' ? "APPENDS needs MARK and a list" : "SETITEMS needs MARK, a dict and key/value pairs");
                break;
            }
            for (int64_t i = 0; i < n && !rc; i++) rc = add_item(c, o, c->stack[f + i]);
            c->sp = f;
            break;
        }
        case 'q': case 'r': {
            int w = op == 'q' ? 1 : 4;
            if ((rc = need(c, (uint64_t)w))) break;
            uint64_t i = rd_le(c->buf + c->pos, w);
            c->pos += (size_t)w;
            rc = memo_put(c, i);
            break;
        }
        case 0x94: rc = memo_put(c, (uint64_t)c->mset); break;   // MEMOIZE: index = entries so far
        case 'h': case 'j': {
            int w = op == 'h' ? 1 : 4;
            if ((rc = need(c, (uint64_t)w))) break;
            uint64_t i = rd_le(c->buf + c->pos, w);
            c->pos += (size_t)w;
            rc = memo_get(c, i);
            break;
        }
        case 'c': {   // GLOBAL "module\nname\n"
            const char *s = (const char *)c->buf + c->pos;
            size_t left = c->len - c->pos;
            const char *n1 = memchr(s, '\n', PL_MIN(left, (size_t)256));
            const char *n2 = n1 ? memchr(n1 + 1, '\n', PL_MIN(left - (size_t)(n1 + 1 - s), (size_t)256)) : NULL;
            if (!n2) { rc = bad(c, "GLOBAL without module\\nname\\n"); break; }
            char mod[256], nm[256];
            memcpy(mod, s, (size_t)(n1 - s));
            mod[n1 - s] = 0;
            memcpy(nm, n1 + 1, (size_t)(n2 - n1 - 1));
            nm[n2 - n1 - 1] = 0;
            c->pos += (size_t)(n2 + 1 - s);
            rc = do_global(c, mod, nm);
            break;
        }
        case 0x93: {  // STACK_GLOBAL
            pk_obj *nm = pop(c), *mod = pop(c);
            if (!nm || !mod || nm->t != PK_STR || mod->t != PK_STR) { rc = bad(c, "STACK_GLOBAL needs two strings"); break; }
            rc = do_global(c, mod->s, nm->s);
            break;
        }
        case 'R': rc = do_reduce(c); break;
        case 'b': {   // BUILD: state of an OrderedDict (_metadata) or a tensor: kept out of the tree
            pk_obj *st = pop(c), *o = top(c);
            if (!st || !o || (o->t != PK_DICT && o->t != PK_TENSOR)) rc = bad(c, "BUILD on something other than a dict or tensor");
            break;
        }
        case 'Q': rc = do_persid(c); break;
        default:
            return pl_fail(PL_EUNSUPPORTED, "%s: byte %zu: opcode 0x%02x %s is not accepted in a state-dict pickle (corrupt file, or an object mp3d will not rebuild)",
                           c->label, c->op_pos, op, op_name(op));
        }
    }
    return rc;
}

int pk_load(pk_obj **out, size_t *used, pk_arena *a, const uint8_t *buf, size_t len, const char *label,
            const pk_limits *limits) {
    *out = NULL;
    pk_ctx c = {0};
    c.buf = buf;
    c.len = len;
    c.label = label ? label : "pickle";
    c.lim = limits ? *limits : k_default_limits;
    c.a = a;
    c.base_objects = a->n;
    int rc = run(&c, out);
    if (!rc && used) *used = c.pos;
    if (rc) *out = NULL;
    free(c.stack);
    free(c.marks);
    free(c.memo);
    return rc;
}

// ------------------------------------------------------------------------------------- writer
static void pk_grow(pk_buf *b, size_t n) {
    if (b->err || b->n + n <= b->cap) return;
    size_t cap = PL_MAX(b->cap * 2, b->n + n + 256);
    uint8_t *p = realloc(b->p, cap);
    if (!p) { b->err = PL_ENOMEM; return; }
    b->p = p;
    b->cap = cap;
}

void pk_buf_free(pk_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void pk_put_raw(pk_buf *b, const void *p, size_t n) {
    pk_grow(b, n);
    if (b->err) return;
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void pk_put_op(pk_buf *b, uint8_t op) { pk_put_raw(b, &op, 1); }

void pk_put_int(pk_buf *b, int64_t v) {
    uint8_t w[9];
    if (v >= INT32_MIN && v <= INT32_MAX) {
        uint32_t u = (uint32_t)(int32_t)v;
        w[0] = 'J';
        for (int i = 0; i < 4; i++) w[1 + i] = (uint8_t)(u >> (8 * i));
        pk_put_raw(b, w, 5);
        return;
    }
    uint64_t u = (uint64_t)v;
    w[0] = 0x8a;
    w[1] = 8;
    pk_put_raw(b, w, 2);
    for (int i = 0; i < 8; i++) w[i] = (uint8_t)(u >> (8 * i));
    pk_put_raw(b, w, 8);
}

void pk_put_str(pk_buf *b, const char *s) {
    size_t n = strlen(s);
    uint8_t w[5] = {'X', (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    pk_put_raw(b, w, 5);
    pk_put_raw(b, s, n);
}

void pk_put_global(pk_buf *b, const char *module, const char *name) {
    pk_put_op(b, 'c');
    pk_put_raw(b, module, strlen(module));
    pk_put_op(b, '\n');
    pk_put_raw(b, name, strlen(name));
    pk_put_op(b, '\n');
}
