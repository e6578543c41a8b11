// pth: torch.save files (zip and legacy) -> named float32 tensors, and state dict -> zip. The
// layouts are those of torch/serialization.py (_save / _legacy_save of PyTorch 1.13).
#include "io/pth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/archive.h"
#include "io/fileio.h"
#include "nn/pl.h"

// Legacy format: the first pickle is this integer (torch/serialization.py MAGIC_NUMBER), the
// second the protocol version 1001.
static const uint8_t k_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
static const int64_t k_legacy_protocol = 1001;
static const int64_t k_max_numel = (int64_t)1 << 34;   // elements of one tensor (64 GiB of float32)

typedef struct {
    char key[64];
    enum pk_dtype dtype;
    const uint8_t *p;   // raw bytes (into a file buffer or an owned entry)
    uint8_t *own;
    size_t bytes;
    int uses;
} storage;

typedef struct {
    storage *s;
    int n, cap;
} storages;

static storage *st_find(storages *ss, const char *key) {
    for (int i = 0; i < ss->n; i++)
        if (!strcmp(ss->s[i].key, key)) return &ss->s[i];
    return NULL;
}

static storage *st_add(storages *ss, const char *key, enum pk_dtype d) {
    storage *f = st_find(ss, key);
    if (f) return f;
    if (ss->n == ss->cap) {
        int cap = ss->cap ? ss->cap * 2 : 64;
        storage *s = pl_realloc(ss->s, sizeof *s * (size_t)cap, "storage table");
        if (!s) return NULL;
        ss->s = s;
        ss->cap = cap;
    }
    storage *s = &ss->s[ss->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    s->dtype = d;
    return s;
}

static void st_free(storages *ss) {
    for (int i = 0; i < ss->n; i++) free(ss->s[i].own);
    free(ss->s);
}

void pth_state_free(pth_state *s) {
    for (int i = 0; i < s->n; i++) free(s->t[i].data);
    free(s->t);
    memset(s, 0, sizeof *s);
}

// ---------------------------------------------------------------------- the state dict's tensors
static const char *type_of(const pk_obj *o) { return pk_type_name(o->t); }

// Picks the state dict out of the top-level object; lists the (name, tensor) pairs.
static int find_state_dict(const pk_obj *root, const char *path, const pk_obj **sd, const char **where) {
    if (!root || root->t != PK_DICT)
        return pl_fail(PL_EFORMAT, "%s: the top-level object is a %s, expected a dict (a state dict or {'state_dict': ...})", path,
                       root ? type_of(root) : "nothing");
    *sd = root;
    *where = "";
    static const char *const keys[] = {"state_dict", "model", "model_state_dict", "net"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const pk_obj *v = pk_dict_get(root, keys[i]);
        if (v && v->t == PK_DICT) {
            *sd = v;
            *where = keys[i];
            return 0;
        }
    }
    return 0;
}

static float h2f(uint16_t h) {
    int s = (h >> 15) & 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexpf((float)(m + 1024), e - 25);
    return s ? -v : v;
}

static float elem(const uint8_t *p, enum pk_dtype d) {
    switch (d) {
    case PK_F32: { float f; memcpy(&f, p, 4); return f; }
    case PK_F16: return h2f((uint16_t)(p[0] | p[1] << 8));
    case PK_BF16: { uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16; float f; memcpy(&f, &u, 4); return f; }
    case PK_F64: { double x; memcpy(&x, p, 8); return (float)x; }
    case PK_I64: { int64_t x; memcpy(&x, p, 8); return (float)x; }
    case PK_I32: { int32_t x; memcpy(&x, p, 4); return (float)x; }
    case PK_U8: return (float)p[0];
    default: return 0;
    }
}

// Copies one tensor (offset, strides) out of its storage as contiguous float32.
static int materialise(pth_tensor *out, const pk_obj *t, storage *st, const char *path) {
    const pk_obj *so = t->storage;
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] && numel > k_max_numel / t->shape[d])
            return pl_fail(PL_ERANGE, "%s: tensor '%s' declares more than %lld elements", path, out->name, (long long)k_max_numel);
        numel *= t->shape[d];
    }
    const int es = pk_dtype_size(so->dtype);
    const int64_t have = (int64_t)(st->bytes / (size_t)es);   // elements the storage bytes hold
    if (so->view_offset + so->numel > have)
        return pl_fail(PL_EFORMAT, "%s: storage '%s' holds %lld %s elements, its id declares %lld (offset %lld): truncated or corrupt",
                       path, st->key, (long long)have, pk_dtype_name(so->dtype), (long long)so->numel, (long long)so->view_offset);
    // Last element the view touches; must lie inside the declared storage.
    int64_t last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) { last = -1; break; }
        if (t->stride[d] > k_max_numel) return pl_fail(PL_ERANGE, "%s: tensor '%s' stride %lld", path, out->name, (long long)t->stride[d]);
        last += (t->shape[d] - 1) * t->stride[d];
    }
    if (last >= so->numel)
        return pl_fail(PL_EFORMAT, "%s: tensor '%s' (%lld elements, offset %lld) reaches element %lld of storage '%s', which has %lld: the storage is shorter than its tensor",
                       path, out->name, (long long)numel, (long long)t->offset, (long long)last, st->key, (long long)so->numel);
    out->ndim = t->ndim;
    int contiguous = 1;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        out->shape[d] = t->shape[d];
        if (t->shape[d] != 1 && t->stride[d] != expect) contiguous = 0;
        expect *= t->shape[d];
    }
    out->dtype = so->dtype;
    out->view = t->offset != 0 || so->view_offset != 0 || !contiguous;
    out->data = pl_malloc(sizeof(float) * (size_t)(numel ? numel : 1), out->name);
    if (!out->data) return PL_ENOMEM;
    const uint8_t *base = st->p + (size_t)so->view_offset * (size_t)es;
    int64_t idx[PK_MAX_DIMS] = {0};
    for (int64_t i = 0; i < numel; i++) {
        int64_t off = t->offset;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
        out->data[i] = elem(base + (size_t)off * (size_t)es, so->dtype);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return 0;
}

static int collect(pth_state *s, const pk_obj *sd, storages *ss, const char *path) {
    int nt = 0;
    for (int64_t i = 0; i + 1 < sd->n; i += 2) nt += sd->items[i]->t == PK_STR && sd->items[i + 1]->t == PK_TENSOR;
    if (!nt) {
        char keys[256] = "";
        size_t len = 0;
        for (int64_t i = 0; i + 1 < sd->n && len < 200; i += 2)
            if (sd->items[i]->t == PK_STR) len += (size_t)snprintf(keys + len, sizeof keys - len, "%s%s", len ? ", " : "", sd->items[i]->s);
        return pl_fail(PL_EFORMAT, "%s: no tensors found in the %s (keys: %s)", path, s->where[0] ? s->where : "top-level dict",
                       len ? keys : "none");
    }
    s->t = pl_calloc((size_t)nt, sizeof *s->t, "state dict");
    if (!s->t) return PL_ENOMEM;
    for (int64_t i = 0; i + 1 < sd->n; i += 2) {
        const pk_obj *k = sd->items[i], *v = sd->items[i + 1];
        if (k->t != PK_STR || v->t != PK_TENSOR) { s->skipped++; continue; }
        if (k->len >= PTH_NAME_MAX) return pl_fail(PL_EFORMAT, "%s: state-dict key of %zu bytes", path, k->len);
        storage *st = st_find(ss, v->storage->key);
        if (!st || !st->p)
            return pl_fail(PL_EFORMAT, "%s: tensor '%s': its storage '%s' is missing from the file (truncated?)", path, k->s, v->storage->key);
        pth_tensor *o = &s->t[s->n++];
        memcpy(o->name, k->s, k->len + 1);
        int rc = materialise(o, v, st, path);
        if (rc) return rc;
        st->uses++;
        s->count[o->dtype]++;
    }
    // A storage several tensors share makes each of them a view.
    for (int i = 0; i < s->n; i++) {
        for (int64_t j = 0; j + 1 < sd->n; j += 2)
            if (sd->items[j]->t == PK_STR && sd->items[j + 1]->t == PK_TENSOR && !strcmp(sd->items[j]->s, s->t[i].name)) {
                storage *st = st_find(ss, sd->items[j + 1]->storage->key);
                if (st && st->uses > 1) s->t[i].view = 1;
            }
    }
    // DDP's "module." prefix on every name.
    int all = s->n > 0;
    for (int i = 0; i < s->n; i++) all &= !strncmp(s->t[i].name, "module.", 7);
    if (all) {
        for (int i = 0; i < s->n; i++) memmove(s->t[i].name, s->t[i].name + 7, strlen(s->t[i].name + 7) + 1);
        s->stripped_module = 1;
    }
    return 0;
}

// Storage ids the state dict's tensors use, with their dtypes.
static int wanted_storages(storages *ss, const pk_obj *sd) {
    for (int64_t i = 0; i + 1 < sd->n; i += 2) {
        const pk_obj *v = sd->items[i + 1];
        if (v->t != PK_TENSOR) continue;
        storage *st = st_add(ss, v->storage->key, v->storage->dtype);
        if (!st) return PL_ENOMEM;
        st->dtype = v->storage->dtype;
    }
    return 0;
}

// ------------------------------------------------------------------------------------ zip
static int read_zip(pth_state *s, const char *path) {
    arc_reader *r = NULL;
    pk_arena *a = NULL;
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    char prefix[256] = "";
    storages ss = {0};
    const char *name;
    int64_t size;
    int rc = arc_open_file(&r, path);
    while (!rc && (rc = arc_next(r, &name, &size)) == 1) {
        const char *slash = strchr(name, '/');
        rc = 0;
        if (slash && !strcmp(slash, "/data.pkl")) {
            if (pkl) { rc = pl_fail(PL_EFORMAT, "%s: two data.pkl entries (%s/ and %s)", path, prefix, name); break; }
            if ((size_t)(slash - name) >= sizeof prefix) { rc = pl_fail(PL_EFORMAT, "%s: entry name too long", path); break; }
            memcpy(prefix, name, (size_t)(slash - name));
            prefix[slash - name] = 0;
            rc = arc_read_entry(r, &pkl, &pkl_len);
        }
    }
    arc_close(r);
    r = NULL;
    if (rc < 0) goto done;
    rc = 0;
    if (!pkl) { rc = pl_fail(PL_EFORMAT, "%s: a zip without <folder>/data.pkl: not a torch.save file", path); goto done; }
    char label[4400];
    snprintf(label, sizeof label, "%s:%s/data.pkl", path, prefix);
    pk_obj *root = NULL;
    const pk_obj *sd = NULL;
    const char *where = "";
    if ((rc = pk_arena_create(&a))) goto done;
    if ((rc = pk_load(&root, NULL, a, pkl, pkl_len, label, NULL))) goto done;
    if ((rc = find_state_dict(root, path, &sd, &where))) goto done;
    snprintf(s->where, sizeof s->where, "%s", where);
    if ((rc = wanted_storages(&ss, sd))) goto done;
    // Second pass: only the storages the state dict uses (an optimizer's are skipped).
    size_t plen = strlen(prefix);
    rc = arc_open_file(&r, path);
    while (!rc && (rc = arc_next(r, &name, &size)) == 1) {
        rc = 0;
        if (strncmp(name, prefix, plen) || strncmp(name + plen, "/data/", 6)) continue;
        storage *st = st_find(&ss, name + plen + 6);
        if (!st || st->own) continue;
        if ((rc = arc_read_entry(r, &st->own, &st->bytes))) break;
        st->p = st->own;
    }
    if (rc < 0) goto done;
    rc = collect(s, sd, &ss, path);
done:
    arc_close(r);
    st_free(&ss);
    pk_arena_destroy(a);
    free(pkl);
    return rc;
}

// --------------------------------------------------------------------------------- legacy
static int read_legacy(pth_state *s, const char *path) {
    uint8_t *buf = NULL;
    size_t len = 0, pos = 0, used = 0;
    pk_arena *a = NULL;
    storages ss = {0};
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    char label[4200];
    pk_obj *magic = NULL, *proto = NULL, *info = NULL, *root = NULL, *keys = NULL;
    if ((rc = pk_arena_create(&a))) goto done;
    snprintf(label, sizeof label, "%s (legacy format, magic number)", path);
    if (len < 2 || buf[0] != 0x80 || pk_load(&magic, &used, a, buf, len, label, NULL) || magic->t != PK_BIGINT ||
        magic->len != sizeof k_magic || memcmp(magic->s, k_magic, sizeof k_magic)) {
        rc = pl_fail(PL_EFORMAT, "%s: neither a zip (torch.save since 1.6) nor the legacy format (its magic number is missing): not a PyTorch checkpoint?", path);
        goto done;
    }
    pos = used;
    snprintf(label, sizeof label, "%s (legacy format, protocol version at byte %zu)", path, pos);
    if ((rc = pk_load(&proto, &used, a, buf + pos, len - pos, label, NULL))) goto done;
    if (proto->t != PK_INT || proto->i != k_legacy_protocol) {
        rc = pl_fail(PL_EUNSUPPORTED, "%s: legacy protocol version %lld (mp3d reads %lld)", path, proto->t == PK_INT ? (long long)proto->i : -1LL,
                     (long long)k_legacy_protocol);
        goto done;
    }
    pos += used;
    snprintf(label, sizeof label, "%s (legacy format, sys info at byte %zu)", path, pos);
    if ((rc = pk_load(&info, &used, a, buf + pos, len - pos, label, NULL))) goto done;
    const pk_obj *le = pk_dict_get(info, "little_endian");
    if (!le || le->t != PK_BOOL || !le->i) { rc = pl_fail(PL_EUNSUPPORTED, "%s: written on a big-endian machine (not supported)", path); goto done; }
    pos += used;
    snprintf(label, sizeof label, "%s (legacy format, object pickle at byte %zu)", path, pos);
    if ((rc = pk_load(&root, &used, a, buf + pos, len - pos, label, NULL))) goto done;
    pos += used;
    snprintf(label, sizeof label, "%s (legacy format, storage keys at byte %zu)", path, pos);
    if ((rc = pk_load(&keys, &used, a, buf + pos, len - pos, label, NULL))) goto done;
    pos += used;
    if (keys->t != PK_LIST) { rc = pl_fail(PL_EFORMAT, "%s: the storage key list is a %s", path, type_of(keys)); goto done; }
    // Element sizes of every storage the object pickle names (the optimizer's too: they sit in
    // the same sequence and must be skipped over).
    for (int64_t i = 0; i < pk_arena_size(a); i++) {
        const pk_obj *o = pk_arena_at(a, i);
        if (o->t == PK_STORAGE && !st_add(&ss, o->key, o->dtype)) { rc = PL_ENOMEM; goto done; }
    }
    for (int64_t k = 0; k < keys->n; k++) {
        const pk_obj *key = keys->items[k];
        storage *st = key->t == PK_STR ? st_find(&ss, key->s) : NULL;
        if (!st) { rc = pl_fail(PL_EFORMAT, "%s: storage key #%lld is not named by any tensor", path, (long long)k); goto done; }
        if (len - pos < 8) { rc = pl_fail(PL_EFORMAT, "%s: byte %zu: storage '%s': its element count is cut off (truncated file)", path, pos, st->key); goto done; }
        int64_t cnt;
        memcpy(&cnt, buf + pos, 8);
        pos += 8;
        uint64_t es = (uint64_t)pk_dtype_size(st->dtype);
        if (cnt < 0 || (uint64_t)cnt > (len - pos) / es) {
            rc = pl_fail(PL_EFORMAT, "%s: byte %zu: storage '%s' declares %lld %s elements, %zu bytes remain (truncated or corrupt)", path, pos - 8,
                         st->key, (long long)cnt, pk_dtype_name(st->dtype), len - pos);
            goto done;
        }
        st->p = buf + pos;
        st->bytes = (size_t)((uint64_t)cnt * es);
        pos += st->bytes;
    }
    const pk_obj *sd = NULL;
    const char *where = "";
    if ((rc = find_state_dict(root, path, &sd, &where))) goto done;
    snprintf(s->where, sizeof s->where, "%s", where);
    rc = collect(s, sd, &ss, path);
done:
    st_free(&ss);
    pk_arena_destroy(a);
    free(buf);
    return rc;
}

int pth_read(pth_state *s, const char *path) {
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f) return pl_fail(PL_ENOTFOUND, "%s: cannot open", path);
    uint8_t head[4] = {0};
    size_t got = fread(head, 1, 4, f);
    fclose(f);
    int rc;
    if (got == 4 && !memcmp(head, "PK\x03\x04", 4)) {
        snprintf(s->format, sizeof s->format, "zip");
        rc = read_zip(s, path);
    } else {
        snprintf(s->format, sizeof s->format, "legacy");
        rc = read_legacy(s, path);
    }
    if (rc) pth_state_free(s);
    return rc;
}

// ------------------------------------------------------------------------------------ writing
int pth_write(const char *path, const pth_out *t, int n) {
    // Folder name inside the zip: the file's stem, as torch.save does.
    char stem[128] = "archive";
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t k = 0;
    for (; b[k] && b[k] != '.' && k + 1 < sizeof stem; k++)
        stem[k] = (b[k] >= 'a' && b[k] <= 'z') || (b[k] >= 'A' && b[k] <= 'Z') || (b[k] >= '0' && b[k] <= '9') || b[k] == '_' || b[k] == '-' ? b[k] : '_';
    if (k) stem[k] = 0;
    pk_buf pb = {0};
    pk_put_raw(&pb, "\x80\x02", 2);
    pk_put_global(&pb, "collections", "OrderedDict");
    pk_put_op(&pb, ')');
    pk_put_op(&pb, 'R');
    pk_put_op(&pb, '(');
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        char key[32];
        snprintf(key, sizeof key, "%d", i);
        pk_put_str(&pb, t[i].name);
        pk_put_global(&pb, "torch._utils", "_rebuild_tensor_v2");
        pk_put_op(&pb, '(');
        pk_put_op(&pb, '(');   // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
        pk_put_str(&pb, "storage");
        pk_put_global(&pb, "torch", t[i].as_int64 ? "LongStorage" : "FloatStorage");
        pk_put_str(&pb, key);
        pk_put_str(&pb, "cpu");
        pk_put_int(&pb, numel);
        pk_put_op(&pb, 't');
        pk_put_op(&pb, 'Q');
        pk_put_int(&pb, 0);   // storage offset
        pk_put_op(&pb, '(');
        for (int d = 0; d < t[i].ndim; d++) pk_put_int(&pb, t[i].shape[d]);
        pk_put_op(&pb, 't');
        pk_put_op(&pb, '(');
        int64_t stride = 1, st[PK_MAX_DIMS];
        for (int d = t[i].ndim - 1; d >= 0; d--) { st[d] = stride; stride *= t[i].shape[d]; }
        for (int d = 0; d < t[i].ndim; d++) pk_put_int(&pb, st[d]);
        pk_put_op(&pb, 't');
        pk_put_op(&pb, 0x89);   // requires_grad False
        pk_put_global(&pb, "collections", "OrderedDict");
        pk_put_op(&pb, ')');
        pk_put_op(&pb, 'R');   // backward hooks
        pk_put_op(&pb, 't');
        pk_put_op(&pb, 'R');
    }
    pk_put_op(&pb, 'u');
    pk_put_op(&pb, '.');
    if (pb.err) { pk_buf_free(&pb); return pl_fail(PL_ENOMEM, "%s: out of memory building the pickle", path); }
    arc_writer *w = NULL;
    char name[256];
    int rc = arc_writer_open(&w, path, ARC_ZIP_STORE);
    snprintf(name, sizeof name, "%s/data.pkl", stem);
    if (!rc) rc = arc_writer_add(w, name, pb.p, pb.n);
    for (int i = 0; i < n && !rc; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        size_t bytes = (size_t)numel * (t[i].as_int64 ? 8 : 4);
        uint8_t *raw = pl_malloc(bytes ? bytes : 1, "storage bytes");
        if (!raw) { rc = PL_ENOMEM; break; }
        if (t[i].as_int64)
            for (int64_t j = 0; j < numel; j++) { int64_t v = (int64_t)llround(t[i].data[j]); memcpy(raw + 8 * j, &v, 8); }
        else
            memcpy(raw, t[i].data, bytes);
        snprintf(name, sizeof name, "%s/data/%d", stem, i);
        rc = arc_writer_add(w, name, raw, bytes);
        free(raw);
    }
    snprintf(name, sizeof name, "%s/version", stem);
    if (!rc) rc = arc_writer_add(w, name, "3\n", 2);
    pk_buf_free(&pb);
    if (rc) {
        arc_writer_abort(w);
        return rc;
    }
    return arc_writer_close(w);
}
