// io/pickle on hand-built byte strings: values, memo, containers, a tensor rebuild, the writer
// round trip, and refusals (globals, truncation, bogus sizes, recursion bombs, bad opcodes).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/pickle.h"
#include "nn/pl.h"

static int g_fail = 0;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            g_fail++;                                                      \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

static int load(pk_arena *a, pk_obj **o, const char *bytes, size_t n, size_t *used) {
    return pk_load(o, used, a, (const uint8_t *)bytes, n, "test", NULL);
}
#define LOADS(a, o, lit, used) load(a, o, lit, sizeof(lit) - 1, used)

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);   // interleave with the errors on stderr
    pk_arena *a = NULL;
    PL_ASSERT(pk_arena_create(&a) == 0);
    pk_obj *o = NULL;
    size_t used = 0;

    // {'a': 5, 'b': -2.5, 'c': [1, -1, 300, 70000], 'd': (None, True, False)} (literals split where
    // a hex escape would swallow the next character)
    static const char dict[] =
        "\x80\x02}q\x00(X\x01\x00\x00\x00" "aK\x05X\x01\x00\x00\x00" "bG\xc0\x04\x00\x00\x00\x00\x00\x00"
        "X\x01\x00\x00\x00" "c]q\x01(K\x01J\xff\xff\xff\xffM\x2c\x01J\x70\x11\x01\x00" "e"
        "\x8c\x01" "dN\x88\x89\x87u.";
    int rc = LOADS(a, &o, dict, &used);
    CHECK(rc == 0 && o && o->t == PK_DICT && o->n == 8, "dict rc=%d", rc);
    if (!rc) {
        CHECK(used == sizeof dict - 1, "used %zu of %zu", used, sizeof dict - 1);
        pk_obj *v = pk_dict_get(o, "a");
        CHECK(v && v->t == PK_INT && v->i == 5, "a");
        v = pk_dict_get(o, "b");
        CHECK(v && v->t == PK_FLOAT && v->f == -2.5, "b = %g", v ? v->f : 0);
        v = pk_dict_get(o, "c");
        CHECK(v && v->t == PK_LIST && v->n == 4 && v->items[1]->i == -1 && v->items[2]->i == 300 && v->items[3]->i == 70000, "c");
        v = pk_dict_get(o, "d");
        CHECK(v && v->t == PK_TUPLE && v->n == 3 && v->items[0]->t == PK_NONE && v->items[1]->i == 1 && v->items[2]->i == 0, "d");
    }
    size_t n = 0;
    char buf[256];
    memcpy(buf, dict, sizeof dict - 3);   // the same with a stray value before SETITEMS
    n = sizeof dict - 3;
    memcpy(buf + n, "K\x01u.", 4);
    n += 4;
    rc = load(a, &o, buf, n, &used);
    CHECK(rc == PL_EFORMAT, "odd SETITEMS count must be refused, rc=%d", rc);

    // memo: [x, x] with BINPUT / BINGET, and MEMOIZE (protocol 4) + FRAME
    rc = LOADS(a, &o, "\x80\x02]q\x00(X\x02\x00\x00\x00hiq\x01h\x01" "e.", &used);
    CHECK(rc == 0 && o->t == PK_LIST && o->n == 2 && o->items[0] == o->items[1], "memo rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x02hi\x94h\x00\x86\x94.", &used);
    CHECK(rc == 0 && o->t == PK_TUPLE && o->n == 2 && !strcmp(o->items[1]->s, "hi"), "memoize rc=%d", rc);

    // LONG1: -1 (one byte 0xff), 2^40, and a 10-byte integer (the legacy magic number)
    rc = LOADS(a, &o, "\x80\x02\x8a\x01\xff.", &used);
    CHECK(rc == 0 && o->t == PK_INT && o->i == -1, "long1 -1");
    rc = LOADS(a, &o, "\x80\x02\x8a\x06\x00\x00\x00\x00\x00\x01.", &used);
    CHECK(rc == 0 && o->t == PK_INT && o->i == (int64_t)1 << 40, "long1 2^40");
    rc = LOADS(a, &o, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", &used);
    CHECK(rc == 0 && o->t == PK_BIGINT && o->len == 10, "magic");

    // A tensor: _rebuild_tensor_v2(('storage', HalfStorage, '3', 'cpu', 12), 2, (2, 3), (1, 2), False, OrderedDict())
    static const char ten[] =
        "\x80\x02\x63torch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x00"
        "3X\x03\x00\x00\x00" "cpuK\x0ctQK\x02K\x02K\x03\x86K\x01K\x02\x86\x89\x63\x63ollections\nOrderedDict\n)RtR.";
    rc = LOADS(a, &o, ten, &used);
    CHECK(rc == 0 && o->t == PK_TENSOR, "tensor rc=%d", rc);
    if (!rc) {
        CHECK(o->storage->dtype == PK_F16 && !strcmp(o->storage->key, "3") && o->storage->numel == 12, "storage");
        CHECK(o->offset == 2 && o->ndim == 2 && o->shape[0] == 2 && o->shape[1] == 3 && o->stride[0] == 1 && o->stride[1] == 2, "view");
    }

    // The writer: an OrderedDict of one tensor, read back.
    pk_buf b = {0};
    pk_put_raw(&b, "\x80\x02", 2);
    pk_put_global(&b, "collections", "OrderedDict");
    pk_put_op(&b, ')');
    pk_put_op(&b, 'R');
    pk_put_op(&b, '(');
    pk_put_str(&b, "w");
    pk_put_global(&b, "torch._utils", "_rebuild_tensor_v2");
    pk_put_op(&b, '(');
    pk_put_op(&b, '(');
    pk_put_str(&b, "storage");
    pk_put_global(&b, "torch", "LongStorage");
    pk_put_str(&b, "0");
    pk_put_str(&b, "cpu");
    pk_put_int(&b, (int64_t)5 << 33);
    pk_put_op(&b, 't');
    pk_put_op(&b, 'Q');
    pk_put_int(&b, 0);
    pk_put_op(&b, ')');
    pk_put_op(&b, ')');
    pk_put_op(&b, 0x89);
    pk_put_op(&b, 'N');
    pk_put_op(&b, 't');
    pk_put_op(&b, 'R');
    pk_put_op(&b, 'u');
    pk_put_op(&b, '.');
    rc = pk_load(&o, &used, a, b.p, b.n, "writer", NULL);
    CHECK(rc == 0 && pk_dict_get(o, "w") && pk_dict_get(o, "w")->t == PK_TENSOR &&
              pk_dict_get(o, "w")->storage->numel == (int64_t)5 << 33 && pk_dict_get(o, "w")->storage->dtype == PK_I64,
          "writer round trip rc=%d", rc);
    pk_buf_free(&b);

    // ---- refusals ---------------------------------------------------------------------------
    printf("expected errors follow:\n");
    rc = LOADS(a, &o, "\x80\x02\x63posix\nsystem\nX\x02\x00\x00\x00ls\x85R.", &used);
    CHECK(rc == PL_EUNSUPPORTED, "os.system rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x04\x8c\x08\x62uiltins\x8c\x04\x65val\x93.", &used);
    CHECK(rc == PL_EUNSUPPORTED, "STACK_GLOBAL builtins.eval rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02\x63subprocess\nPopen\n.", &used);
    CHECK(rc == PL_EUNSUPPORTED, "subprocess.Popen rc=%d", rc);
    // an allowed class called with something it does not take
    rc = LOADS(a, &o, "\x80\x02\x63torch\nFloatStorage\n)R.", &used);
    CHECK(rc == PL_EUNSUPPORTED, "calling a storage class rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02\x81.", &used);   // NEWOBJ
    CHECK(rc == PL_EUNSUPPORTED, "NEWOBJ rc=%d", rc);
    rc = load(a, &o, ten, 60, &used);   // truncated in the middle
    CHECK(rc == PL_EFORMAT, "truncated rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02X\xff\xff\xff\x7f" "abc.", &used);
    CHECK(rc == PL_EFORMAT, "bogus BINUNICODE size rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02\x8d\x00\x00\x00\x00\x00\x00\x00\x10" "abc.", &used);
    CHECK(rc == PL_EFORMAT, "bogus BINUNICODE8 size rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02h\x07.", &used);
    CHECK(rc == PL_EFORMAT, "unset memo rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02u.", &used);
    CHECK(rc == PL_EFORMAT, "SETITEMS without dict rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02.", &used);
    CHECK(rc == PL_EFORMAT, "STOP on empty stack rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x09N.", &used);
    CHECK(rc == PL_EFORMAT, "protocol 9 rc=%d", rc);
    rc = LOADS(a, &o, "\x80\x02N", &used);
    CHECK(rc == PL_EFORMAT, "no STOP rc=%d", rc);
    // recursion bombs
    static char bomb[300000];
    n = 0;
    bomb[n++] = (char)0x80;
    bomb[n++] = 2;
    for (int i = 0; i < 100000; i++) bomb[n++] = '(';
    bomb[n++] = 'N';
    bomb[n++] = '.';
    rc = load(a, &o, bomb, n, &used);
    CHECK(rc == PL_ERANGE, "MARK bomb rc=%d", rc);
    n = 2;
    for (int i = 0; i < 5000; i++) bomb[n++] = ']';
    for (int i = 0; i < 4999; i++) bomb[n++] = 'a';
    bomb[n++] = '.';
    rc = load(a, &o, bomb, n, &used);
    CHECK(rc == PL_ERANGE, "nested-list bomb rc=%d", rc);
    pk_limits lim = {1000, 100, 1 << 20};
    n = 2;
    bomb[n++] = ']';
    for (int i = 0; i < 1000; i++) { bomb[n++] = 'N'; bomb[n++] = 'a'; }
    bomb[n++] = '.';
    rc = pk_load(&o, &used, a, (const uint8_t *)bomb, n, "limits", &lim);
    CHECK(rc == PL_ERANGE, "object limit rc=%d", rc);
    printf("(end of expected errors)\n");

    // Mutations of a valid state-dict pickle: every truncation and 20000 random byte edits are
    // either loaded or refused with an error; none may crash (run under ASan/UBSan in CI).
    pl_quiet_begin();
    pk_buf v = {0};
    pk_put_raw(&v, "\x80\x02", 2);
    pk_put_global(&v, "collections", "OrderedDict");
    pk_put_op(&v, ')');
    pk_put_op(&v, 'R');
    pk_put_op(&v, '(');
    for (int k = 0; k < 3; k++) {
        char nm[16], key[8];
        snprintf(nm, sizeof nm, "layer%d.weight", k);
        snprintf(key, sizeof key, "%d", k);
        pk_put_str(&v, nm);
        pk_put_global(&v, "torch._utils", "_rebuild_tensor_v2");
        pk_put_op(&v, '(');
        pk_put_op(&v, '(');
        pk_put_str(&v, "storage");
        pk_put_global(&v, "torch", "FloatStorage");
        pk_put_str(&v, key);
        pk_put_str(&v, "cpu");
        pk_put_int(&v, 24);
        pk_put_op(&v, 't');
        pk_put_op(&v, 'Q');
        pk_put_int(&v, k);
        pk_put_op(&v, '(');
        pk_put_int(&v, 2);
        pk_put_int(&v, 3);
        pk_put_int(&v, 4);
        pk_put_op(&v, 't');
        pk_put_op(&v, '(');
        pk_put_int(&v, 12);
        pk_put_int(&v, 4);
        pk_put_int(&v, 1);
        pk_put_op(&v, 't');
        pk_put_op(&v, 0x89);
        pk_put_op(&v, 'N');
        pk_put_op(&v, 't');
        pk_put_op(&v, 'R');
        pk_put_op(&v, 'q');
        pk_put_op(&v, (uint8_t)k);
    }
    pk_put_op(&v, 'u');
    pk_put_op(&v, '.');
    rc = pk_load(&o, &used, a, v.p, v.n, "valid", NULL);
    CHECK(rc == 0 && o->t == PK_DICT && o->n == 6, "valid state dict rc=%d", rc);
    int ok_trunc = 0;
    for (size_t cut = 0; cut < v.n; cut++) ok_trunc += pk_load(&o, &used, a, v.p, cut, "cut", NULL) < 0;
    CHECK(ok_trunc == (int)v.n, "every truncation refused: %d of %zu", ok_trunc, v.n);
    uint8_t *m = pl_malloc(v.n, "mutant");
    pl_rng rng;
    pl_rng_seed(&rng, 17);
    int accepted = 0, refused = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(m, v.p, v.n);
        int edits = 1 + (int)(pl_rng_u64(&rng) % 4);
        for (int e = 0; e < edits; e++) m[pl_rng_u64(&rng) % v.n] = (uint8_t)pl_rng_u64(&rng);
        pk_arena *fa = NULL;
        PL_ASSERT(pk_arena_create(&fa) == 0);
        rc = pk_load(&o, &used, fa, m, v.n, "mutant", NULL);
        if (rc == 0) accepted++;
        else refused++;
        pk_arena_destroy(fa);
    }
    free(m);
    pl_quiet_end();
    printf("fuzz: truncations refused %d/%zu, mutants accepted %d refused %d, no crash\n", ok_trunc, v.n, accepted, refused);
    pk_buf_free(&v);

    pk_arena_destroy(a);
    printf("test_io_pickle: %d failed\n", g_fail);
    return g_fail ? 1 : 0;
}
