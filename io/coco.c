// coco: COCO instances JSON -> typed arrays. Before cJSON sees the text, every
// "segmentation" value is blanked: polygons/RLE are ~90% of instances_train2017.json's nodes
// and nothing downstream uses them, so this keeps the cJSON tree small (a few hundred MB for
// train instead of several GB).
#include "io/coco.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/archive.h"
#include "io/fileio.h"
#include "nn/pl.h"

// Replaces the value of every "segmentation" key (an array or object) with "0" + spaces.
// A plain scanner: tracks strings (with escapes) and bracket depth inside the value.
static void blank_segmentations(char *t, size_t len) {
    static const char key[] = "\"segmentation\"";
    const size_t klen = sizeof key - 1;
    size_t i = 0;
    while (i < len) {
        char c = t[i];
        if (c != '"') {
            i++;
            continue;
        }
        // A string starts at i: is it the key?
        int is_key = (len - i >= klen && memcmp(t + i, key, klen) == 0);
        size_t j = i + 1;
        while (j < len && t[j] != '"') j += (t[j] == '\\') ? 2 : 1;
        j++;   // past the closing quote
        if (!is_key || j != i + klen) {
            i = j;
            continue;
        }
        size_t k = j;
        while (k < len && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n' || t[k] == '\r')) k++;
        if (k >= len || t[k] != ':') {
            i = j;
            continue;
        }
        k++;
        while (k < len && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n' || t[k] == '\r')) k++;
        if (k >= len || (t[k] != '[' && t[k] != '{')) {
            i = k;
            continue;
        }
        size_t v0 = k;
        int depth = 0;
        while (k < len) {
            char d = t[k];
            if (d == '"') {
                k++;
                while (k < len && t[k] != '"') k += (t[k] == '\\') ? 2 : 1;
                k++;
                continue;
            }
            if (d == '[' || d == '{') depth++;
            else if (d == ']' || d == '}') {
                depth--;
                if (depth == 0) {
                    k++;
                    break;
                }
            }
            k++;
        }
        if (depth != 0 || k > len) return;   // unbalanced: leave it for cJSON to report
        t[v0] = '0';
        memset(t + v0 + 1, ' ', k - v0 - 1);
        i = k;
    }
}

typedef struct {
    coco_bad *v;
    int64_t n, cap;
} bad_list;

static int bad_add(bad_list *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_add(bad_list *b, const char *fmt, ...) {
    if (b->n == b->cap) {
        int64_t nc = b->cap ? b->cap * 2 : 16;
        coco_bad *nv = pl_realloc(b->v, sizeof(coco_bad) * (size_t)nc, "coco bad list");
        if (!nv) return PL_ENOMEM;
        b->v = nv;
        b->cap = nc;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->v[b->n++].msg, sizeof b->v[0].msg, fmt, ap);
    va_end(ap);
    return 0;
}

static int get_num(const cJSON *o, const char *k, double *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) return 0;
    *v = x->valuedouble;
    return 1;
}

// Integer-valued number within +-2^53.
static int get_i64(const cJSON *o, const char *k, int64_t *v) {
    double d;
    if (!get_num(o, k, &d) || d != floor(d) || fabs(d) > 9007199254740992.0) return 0;
    *v = (int64_t)d;
    return 1;
}

static int cmp_image(const void *a, const void *b) {
    int64_t x = ((const coco_image *)a)->id, y = ((const coco_image *)b)->id;
    return (x > y) - (x < y);
}

static int cmp_cat(const void *a, const void *b) {
    int x = ((const coco_category *)a)->id, y = ((const coco_category *)b)->id;
    return (x > y) - (x < y);
}

static int cmp_ann(const void *a, const void *b) {
    const coco_ann *x = a, *y = b;
    if (x->image != y->image) return (x->image > y->image) - (x->image < y->image);
    return (x->id > y->id) - (x->id < y->id);
}

int64_t coco_image_index(const coco_set *s, int64_t image_id) {
    int64_t lo = 0, hi = s->nimages - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int64_t id = s->images[mid].id;
        if (id == image_id) return mid;
        if (id < image_id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int coco_label_of(const coco_set *s, int category_id) {
    int lo = 0, hi = s->ncats - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->cats[mid].id == category_id) return mid;
        if (s->cats[mid].id < category_id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void coco_free(coco_set *s) {
    if (!s) return;
    free(s->images);
    free(s->anns);
    free(s->ann_off);
    free(s->cats);
    free(s->bad);
    memset(s, 0, sizeof *s);
}

static const cJSON *top_array(const cJSON *root, const char *k, const char *label, int *rc) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, k);
    if (!cJSON_IsArray(a)) *rc = pl_fail(PL_EFORMAT, "%s: top-level \"%s\" array missing or not an array", label, k);
    return a;
}

static int parse_tree(coco_set *s, const cJSON *root, const char *label, bad_list *bad) {
    int rc = 0;
    if (!cJSON_IsObject(root)) return pl_fail(PL_EFORMAT, "%s: top level is not a JSON object", label);
    const cJSON *ji = top_array(root, "images", label, &rc);
    if (rc) return rc;
    const cJSON *ja = top_array(root, "annotations", label, &rc);
    if (rc) return rc;
    const cJSON *jc = top_array(root, "categories", label, &rc);
    if (rc) return rc;
    int64_t ni = cJSON_GetArraySize(ji), na = cJSON_GetArraySize(ja), nc = cJSON_GetArraySize(jc);

    // Categories, sorted by id: label = rank of the id.
    s->cats = pl_calloc((size_t)(nc > 0 ? nc : 1), sizeof(coco_category), "coco categories");
    if (!s->cats) return PL_ENOMEM;
    int64_t idx = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, jc) {
        int64_t id;
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!get_i64(it, "id", &id) || id < 0 || id > 1000000 || !cJSON_IsString(nm)) {
            if (bad_add(bad, "%s: category %lld: missing or invalid id/name, skipped", label, (long long)idx))
                return PL_ENOMEM;
            idx++;
            continue;
        }
        coco_category *c = &s->cats[s->ncats++];
        c->id = (int)id;
        snprintf(c->name, sizeof c->name, "%s", nm->valuestring);
        idx++;
    }
    qsort(s->cats, (size_t)s->ncats, sizeof *s->cats, cmp_cat);
    for (int i = 1; i < s->ncats; i++)
        if (s->cats[i].id == s->cats[i - 1].id)
            return pl_fail(PL_EFORMAT, "%s: category id %d appears twice ('%s' and '%s')", label, s->cats[i].id,
                           s->cats[i - 1].name, s->cats[i].name);

    // Images, sorted by id.
    s->images = pl_calloc((size_t)(ni > 0 ? ni : 1), sizeof(coco_image), "coco images");
    if (!s->images) return PL_ENOMEM;
    idx = 0;
    cJSON_ArrayForEach(it, ji) {
        coco_image im;
        int64_t w = 0, h = 0;
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(it, "file_name");
        if (!get_i64(it, "id", &im.id) || !cJSON_IsString(fn) || !get_i64(it, "width", &w) ||
            !get_i64(it, "height", &h) || w <= 0 || h <= 0 || w > 1000000 || h > 1000000 ||
            strlen(fn->valuestring) >= sizeof im.file_name || !fn->valuestring[0]) {
            if (bad_add(bad, "%s: image %lld: missing or invalid id/file_name/width/height, skipped", label,
                        (long long)idx))
                return PL_ENOMEM;
            idx++;
            continue;
        }
        strcpy(im.file_name, fn->valuestring);
        im.width = (int)w;
        im.height = (int)h;
        s->images[s->nimages++] = im;
        idx++;
    }
    qsort(s->images, (size_t)s->nimages, sizeof *s->images, cmp_image);
    for (int64_t i = 1; i < s->nimages; i++)
        if (s->images[i].id == s->images[i - 1].id)
            return pl_fail(PL_EFORMAT, "%s: image id %lld appears twice (%s, %s)", label, (long long)s->images[i].id,
                           s->images[i - 1].file_name, s->images[i].file_name);

    // Annotations.
    s->anns = pl_calloc((size_t)(na > 0 ? na : 1), sizeof(coco_ann), "coco annotations");
    if (!s->anns) return PL_ENOMEM;
    idx = 0;
    cJSON_ArrayForEach(it, ja) {
        coco_ann a;
        memset(&a, 0, sizeof a);
        int64_t cid = -1, crowd = 0;
        int ok_id = get_i64(it, "id", &a.id);
        char idtxt[32];
        if (ok_id) snprintf(idtxt, sizeof idtxt, "%lld", (long long)a.id);
        else snprintf(idtxt, sizeof idtxt, "?");
#define ABAD(...)                                                                                      \
    do {                                                                                               \
        char why_[192];                                                                                \
        snprintf(why_, sizeof why_, __VA_ARGS__);                                                      \
        if (bad_add(bad, "%s: annotation %s (index %lld): %s, skipped", label, idtxt, (long long)idx, why_)) \
            return PL_ENOMEM;                                                                          \
        goto next;                                                                                     \
    } while (0)
        if (!ok_id) ABAD("missing or non-integer id");
        if (!get_i64(it, "image_id", &a.image_id)) ABAD("missing or non-integer image_id");
        if (!get_i64(it, "category_id", &cid)) ABAD("missing or non-integer category_id");
        a.category_id = (int)cid;
        a.image = coco_image_index(s, a.image_id);
        if (a.image < 0) ABAD("image_id %lld not among the images", (long long)a.image_id);
        a.label = cid >= 0 && cid <= 1000000 ? coco_label_of(s, (int)cid) : -1;
        if (a.label < 0) ABAD("category_id %lld not among the categories", (long long)cid);
        const cJSON *bb = cJSON_GetObjectItemCaseSensitive(it, "bbox");
        int nb = cJSON_IsArray(bb) ? cJSON_GetArraySize(bb) : -1;
        if (nb != 4) ABAD("bbox is not an array of 4 numbers (%d elements)", nb);
        for (int k = 0; k < 4; k++) {
            const cJSON *x = cJSON_GetArrayItem(bb, k);
            if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) ABAD("bbox element %d is not a number", k);
            a.bbox[k] = x->valuedouble;
        }
        if (a.bbox[2] < 0 || a.bbox[3] < 0) ABAD("bbox [%g, %g, %g, %g] has a negative size", a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]);
        if (!get_num(it, "area", &a.area)) a.area = a.bbox[2] * a.bbox[3];
        if (cJSON_GetObjectItemCaseSensitive(it, "iscrowd") && (!get_i64(it, "iscrowd", &crowd) || crowd < 0 || crowd > 1))
            ABAD("iscrowd is not 0 or 1");
        a.iscrowd = (int)crowd;
        s->anns[s->nanns++] = a;
    next:
        idx++;
#undef ABAD
    }
    qsort(s->anns, (size_t)s->nanns, sizeof *s->anns, cmp_ann);
    s->ann_off = pl_calloc((size_t)s->nimages + 1, sizeof(int64_t), "coco annotation offsets");
    if (!s->ann_off) return PL_ENOMEM;
    for (int64_t i = 0; i < s->nanns; i++) s->ann_off[s->anns[i].image + 1]++;
    for (int64_t i = 0; i < s->nimages; i++) s->ann_off[i + 1] += s->ann_off[i];
    return 0;
}

// Parses text in a buffer it takes over (len + 1 bytes, modified, freed here).
static int coco_parse_owned(coco_set *s, char *t, size_t len, const char *label) {
    t[len] = 0;
    blank_segmentations(t, len);
    cJSON *root = cJSON_ParseWithLength(t, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = (e && e >= t && e <= t + len) ? (size_t)(e - t) : 0;
        int line = 1;
        for (size_t i = 0; i < off; i++) line += t[i] == '\n';
        char near[40];
        snprintf(near, sizeof near, "%.30s", t + off);
        for (char *p = near; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
        free(t);
        return pl_fail(PL_EFORMAT, "%s: invalid JSON at line %d (byte %zu) near '%s'", label, line, off, near);
    }
    bad_list bad = {0};
    int rc = parse_tree(s, root, label, &bad);
    cJSON_Delete(root);
    free(t);
    s->bad = bad.v;
    s->nbad = bad.n;
    if (rc) coco_free(s);
    return rc;
}

int coco_parse(coco_set *s, const char *json, size_t len, const char *label) {
    char *t = pl_malloc(len + 1, "coco json copy");
    if (!t) return PL_ENOMEM;
    memcpy(t, json, len);
    memset(s, 0, sizeof *s);
    return coco_parse_owned(s, t, len, label);
}

// Reads `len` bytes into a buffer with room for the terminating NUL, then parses in place.
static int parse_owned_bytes(coco_set *s, uint8_t *buf, size_t len, const char *label) {
    char *t = pl_realloc(buf, len + 1, "coco json");
    if (!t) {
        free(buf);
        return PL_ENOMEM;
    }
    return coco_parse_owned(s, t, len, label);
}

int coco_read_file(coco_set *s, const char *path) {
    memset(s, 0, sizeof *s);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    return parse_owned_bytes(s, buf, len, path);
}

int coco_load(coco_set *s, const char *root, const char *split) {
    memset(s, 0, sizeof *s);
    char zip[4096], entry[256], dirpath[4096], label[4400];
    int n = snprintf(entry, sizeof entry, "annotations/instances_%s2017.json", split);
    if (n < 0 || (size_t)n >= sizeof entry) return pl_fail(PL_ERANGE, "coco: split name '%s' too long", split);
    int rc = pl_path_join(zip, sizeof zip, root, "annotations_trainval2017.zip");
    if (!rc) rc = pl_path_join(dirpath, sizeof dirpath, root, entry);
    if (rc) return rc;
    if (pl_path_exists(zip)) {
        arc_reader *r = NULL;
        rc = arc_open_file(&r, zip);
        if (rc) return rc;
        const char *name;
        int64_t size;
        while ((rc = arc_next(r, &name, &size)) == 1) {
            if (strcmp(name, entry) != 0) continue;
            uint8_t *buf = NULL;
            size_t len = 0;
            rc = arc_read_entry(r, &buf, &len);
            if (rc) break;
            snprintf(label, sizeof label, "%s:%s", zip, entry);
            arc_close(r);
            rc = parse_owned_bytes(s, buf, len, label);
            return rc;
        }
        arc_close(r);
        if (rc < 0) return rc;
        return pl_fail(PL_ENOTFOUND, "%s: no entry %s in the archive", zip, entry);
    }
    if (pl_path_exists(dirpath)) return coco_read_file(s, dirpath);
    return pl_fail(PL_ENOTFOUND, "coco: neither %s nor %s exists (input.root = %s)", zip, dirpath, root);
}
