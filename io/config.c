// config: libconfig parsing + validation against cfg_schema (io/config_schema.c).
#include "io/config.h"
#include "io/strbuf.h"

#include <libconfig.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nn/pl.h"

typedef struct {
    int set;            // has a value (given or defaulted)
    char origin[320];   // "default", "file.cfg:12", "--set"
    int64_t i;
    double f;
    int b;
    char *s;            // strings
    double *list;       // lists
    int nlist;
} cfg_val;

struct pl_cfg {
    char path[1024];
    cfg_val *vals;      // (cfg_schema_len)
    char *text;         // cached cfg_text
    int64_t unknown;    // unknown keys seen while loading (the first CFG_UNKNOWN_LOGGED are logged)
};

// libconfig checks every new setting against its siblings while parsing (quadratic: a file of
// 91,000 unknown keys took 82 s). The schema has a few hundred keys, so a file with more
// assignments than this is refused before libconfig parses it.
#define CFG_MAX_ASSIGNMENTS 5000
#define CFG_UNKNOWN_LOGGED 20

// Upper bound of the settings in a config text: its '=' and ':' characters.
static int64_t count_assignments(const char *t, size_t n) {
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) k += t[i] == '=' || t[i] == ':';
    return k;
}

static int key_index(const char *key) {
    for (int i = 0; i < cfg_schema_len; i++)
        if (strcmp(cfg_schema[i].key, key) == 0) return i;
    return -1;
}

// Levenshtein distance, for "did you mean" hints.
static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 127 || lb > 127) return 1000;
    int d[128][128];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int x = d[i - 1][j] + 1, y = d[i][j - 1] + 1;
            d[i][j] = PL_MIN(c, PL_MIN(x, y));
        }
    return d[la][lb];
}

static const char *nearest_key(const char *key) {
    int best = -1, bd = 1 << 30;
    for (int i = 0; i < cfg_schema_len; i++) {
        int dd = edit_distance(key, cfg_schema[i].key);
        if (dd < bd) { bd = dd; best = i; }
    }
    return best >= 0 ? cfg_schema[best].key : "";
}

static const char *type_name(enum cfg_type t) {
    switch (t) {
    case CFG_INT: return "an integer";
    case CFG_FLOAT: return "a number";
    case CFG_BOOL: return "true or false";
    case CFG_STRING: return "a string";
    case CFG_FLOATS: return "a list of numbers";
    case CFG_INTS: return "a list of integers";
    }
    return "?";
}

static void val_clear(cfg_val *v) {
    free(v->s);
    free(v->list);
    memset(v, 0, sizeof *v);
}

static void range_text(char *out, size_t cap, const cfg_key *k) {
    if (k->type == CFG_STRING && k->choices) snprintf(out, cap, "one of %s", k->choices);
    else if (k->type == CFG_BOOL || k->type == CFG_STRING) snprintf(out, cap, "%s", type_name(k->type));
    else snprintf(out, cap, "%s in [%.10g, %.10g]", type_name(k->type), k->min, k->max);
}

static int check_number(const cfg_key *k, const char *where, double x, const char *shown) {
    if (!(x >= k->min && x <= k->max)) {
        char r[160];
        range_text(r, sizeof r, k);
        return pl_fail(PL_ERANGE, "%s: %s = %s (must be %s)", where, k->key, shown, r);
    }
    return 0;
}

static int check_choice(const cfg_key *k, const char *where, const char *s) {
    if (!k->choices) return 0;
    const char *p = k->choices;
    size_t n = strlen(s);
    while (*p) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 0;
        if (!e) break;
        p = e + 1;
    }
    return pl_fail(PL_EINVAL, "%s: %s = \"%s\" (must be one of %s)", where, k->key, s, k->choices);
}

// Parses a textual value (defaults and --set) into v, validated.
static int parse_text(cfg_val *v, const cfg_key *k, const char *text, const char *where) {
    cfg_val nv = {0};
    char *end = NULL;
    int rc = 0;
    while (*text == ' ') text++;
    switch (k->type) {
    case CFG_INT: {
        long long x = strtoll(text, &end, 10);
        while (end && *end == ' ') end++;
        if (!*text || !end || *end) return pl_fail(PL_EINVAL, "%s: %s = '%s' (must be %s)", where, k->key, text, type_name(k->type));
        if ((rc = check_number(k, where, (double)x, text))) return rc;
        nv.i = x;
        nv.f = (double)x;
        break;
    }
    case CFG_FLOAT: {
        double x = strtod(text, &end);
        while (end && *end == ' ') end++;
        if (!*text || !end || *end || !isfinite(x)) return pl_fail(PL_EINVAL, "%s: %s = '%s' (must be %s)", where, k->key, text, type_name(k->type));
        if ((rc = check_number(k, where, x, text))) return rc;
        nv.f = x;
        break;
    }
    case CFG_BOOL:
        if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "yes")) nv.b = 1;
        else if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "no")) nv.b = 0;
        else return pl_fail(PL_EINVAL, "%s: %s = '%s' (must be true or false)", where, k->key, text);
        break;
    case CFG_STRING: {
        size_t n = strlen(text);
        char *s = pl_malloc(n + 1, "config string");
        if (!s) return PL_ENOMEM;
        if (n >= 2 && text[0] == '"' && text[n - 1] == '"') {
            memcpy(s, text + 1, n - 2);
            s[n - 2] = 0;
        } else memcpy(s, text, n + 1);
        if ((rc = check_choice(k, where, s))) { free(s); return rc; }
        nv.s = s;
        break;
    }
    case CFG_FLOATS:
    case CFG_INTS: {
        // "[1, 2, 3]" or "1,2,3" or "[]"
        char *buf = pl_strdup(text);
        if (!buf) return PL_ENOMEM;
        char *p = buf;
        size_t n = strlen(p);
        if (n && p[0] == '[') { p++; n--; }
        if (n && p[n - 1] == ']') p[--n] = 0;
        int cap = 8;
        nv.list = pl_malloc(sizeof(double) * (size_t)cap, "config list");
        if (!nv.list) { free(buf); return PL_ENOMEM; }
        char *save = NULL;
        for (char *tok = strtok_r(p, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ') tok++;
            if (!*tok) continue;
            double x = strtod(tok, &end);
            while (end && *end == ' ') end++;
            if (*end || !isfinite(x) || (k->type == CFG_INTS && x != floor(x))) {
                rc = pl_fail(PL_EINVAL, "%s: %s element '%s' (must be %s)", where, k->key, tok, type_name(k->type));
                break;
            }
            if ((rc = check_number(k, where, x, tok))) break;
            if (nv.nlist == cap) {
                cap *= 2;
                double *nl = pl_realloc(nv.list, sizeof(double) * (size_t)cap, "config list");
                if (!nl) { rc = PL_ENOMEM; break; }
                nv.list = nl;
            }
            nv.list[nv.nlist++] = x;
        }
        free(buf);
        if (rc) { free(nv.list); return rc; }
        break;
    }
    }
    nv.set = 1;
    snprintf(nv.origin, sizeof nv.origin, "%s", where);
    val_clear(v);
    *v = nv;
    return 0;
}

static int list_from_setting(cfg_val *nv, const cfg_key *k, config_setting_t *s, const char *where) {
    int n = config_setting_length(s);
    nv->list = pl_malloc(sizeof(double) * (size_t)(n > 0 ? n : 1), "config list");
    if (!nv->list) return PL_ENOMEM;
    for (int j = 0; j < n; j++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)j);
        int t = config_setting_type(e);
        double x;
        if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) x = (double)config_setting_get_int64(e);
        else if (t == CONFIG_TYPE_FLOAT && k->type == CFG_FLOATS) x = config_setting_get_float(e);
        else return pl_fail(PL_EINVAL, "%s: %s element %d (must be %s)", where, k->key, j, type_name(k->type));
        char shown[64];
        snprintf(shown, sizeof shown, "%.10g", x);
        int rc = check_number(k, where, x, shown);
        if (rc) return rc;
        nv->list[nv->nlist++] = x;
    }
    return 0;
}

static int from_setting(cfg_val *v, const cfg_key *k, config_setting_t *s, const char *where) {
    cfg_val nv = {0};
    int t = config_setting_type(s);
    int rc = 0;
    char shown[64];
    switch (k->type) {
    case CFG_INT:
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) goto wrong_type;
        nv.i = config_setting_get_int64(s);
        nv.f = (double)nv.i;
        snprintf(shown, sizeof shown, "%lld", (long long)nv.i);
        if ((rc = check_number(k, where, (double)nv.i, shown))) return rc;
        break;
    case CFG_FLOAT:
        if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) nv.f = (double)config_setting_get_int64(s);
        else if (t == CONFIG_TYPE_FLOAT) nv.f = config_setting_get_float(s);
        else goto wrong_type;
        snprintf(shown, sizeof shown, "%.10g", nv.f);
        if ((rc = check_number(k, where, nv.f, shown))) return rc;
        break;
    case CFG_BOOL:
        if (t != CONFIG_TYPE_BOOL) goto wrong_type;
        nv.b = config_setting_get_bool(s);
        break;
    case CFG_STRING:
        if (t != CONFIG_TYPE_STRING) goto wrong_type;
        if ((rc = check_choice(k, where, config_setting_get_string(s)))) return rc;
        nv.s = pl_strdup(config_setting_get_string(s));
        if (!nv.s) return PL_ENOMEM;
        break;
    case CFG_FLOATS:
    case CFG_INTS:
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) goto wrong_type;
        if ((rc = list_from_setting(&nv, k, s, where))) { free(nv.list); return rc; }
        break;
    }
    nv.set = 1;
    snprintf(nv.origin, sizeof nv.origin, "%s", where);
    val_clear(v);
    *v = nv;
    return 0;
wrong_type:;
    const char *got = t == CONFIG_TYPE_STRING ? "a string"
                    : t == CONFIG_TYPE_BOOL ? "a boolean"
                    : t == CONFIG_TYPE_FLOAT ? "a float"
                    : (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) ? "an integer"
                    : t == CONFIG_TYPE_GROUP ? "a group" : "a list";
    if (t == CONFIG_TYPE_STRING)
        return pl_fail(PL_EINVAL, "%s: %s = \"%s\" is %s (must be %s)", where, k->key, config_setting_get_string(s), got, type_name(k->type));
    return pl_fail(PL_EINVAL, "%s: %s is %s (must be %s)", where, k->key, got, type_name(k->type));
}

// Walks the libconfig tree; known keys are validated and stored, unknown ones warned about.
static int walk(pl_cfg *c, config_setting_t *grp, const char *prefix, const char *file) {
    int n = config_setting_length(grp);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        char key[256];
        if (prefix[0]) snprintf(key, sizeof key, "%s.%s", prefix, name ? name : "?");
        else snprintf(key, sizeof key, "%s", name ? name : "?");
        char where[320];
        snprintf(where, sizeof where, "%s:%d", file, config_setting_source_line(s));
        int ki = key_index(key);
        if (ki < 0 && !strcmp(key, "pipeline.stages")) continue;  // read by cfg_pipeline_read
        if (ki < 0 && config_setting_type(s) == CONFIG_TYPE_GROUP) {
            int rc = walk(c, s, key, file);
            if (rc) return rc;
            continue;
        }
        if (ki < 0) {
            if (c->unknown++ < CFG_UNKNOWN_LOGGED)
                LOG_WARN("%s: unknown key '%s' ignored (did you mean '%s'?)", where, key, nearest_key(key));
            continue;
        }
        int rc = from_setting(&c->vals[ki], &cfg_schema[ki], s, where);
        if (rc) return rc;
    }
    return 0;
}

int cfg_set(pl_cfg *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return pl_fail(PL_EINVAL, "--set '%s': expected key=value", assignment);
    char key[256];
    size_t kl = (size_t)(eq - assignment);
    if (kl >= sizeof key) return pl_fail(PL_EINVAL, "--set '%s': key too long", assignment);
    memcpy(key, assignment, kl);
    key[kl] = 0;
    int ki = key_index(key);
    if (ki < 0)
        return pl_fail(PL_EINVAL, "--set %s: unknown key '%s' (did you mean '%s'?)", assignment, key, nearest_key(key));
    free(c->text);
    c->text = NULL;
    char where[300];
    snprintf(where, sizeof where, "--set %s", key);
    return parse_text(&c->vals[ki], &cfg_schema[ki], eq + 1, where);
}

// Loads from a file (path) or from text (text != NULL; path is then only a label).
static int load_any(pl_cfg **out, const char *path, const char *text, const char *const *sets, int nsets) {
    *out = NULL;
    pl_cfg *c = pl_calloc(1, sizeof *c, "config");
    if (!c) return PL_ENOMEM;
    c->vals = pl_calloc((size_t)cfg_schema_len, sizeof(cfg_val), "config values");
    if (!c->vals) { free(c); return PL_ENOMEM; }
    int rc = 0;
    for (int i = 0; i < cfg_schema_len; i++) {
        if (!cfg_schema[i].def) continue;
        rc = parse_text(&c->vals[i], &cfg_schema[i], cfg_schema[i].def, "default");
        PL_ASSERT(rc == 0); // the schema's own defaults must be valid
    }
    if ((path && path[0]) || text) {
        snprintf(c->path, sizeof c->path, "%s", path ? path : "(text)");
        config_t lc;
        config_init(&lc);
        // @include "x.cfg" resolves against the including file's folder.
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", c->path);
        char *slash = strrchr(dir, '/');
        if (slash && !text) { *slash = 0; config_set_include_dir(&lc, dir); }
        int64_t nassign = -1;
        if (text) {
            nassign = count_assignments(text, strlen(text));
        } else {
            FILE *f = fopen(path, "rb");
            if (f) {
                char buf[65536];
                size_t got;
                nassign = 0;
                while ((got = fread(buf, 1, sizeof buf, f)) > 0) nassign += count_assignments(buf, got);
                fclose(f);
            }
        }
        int ok = 0;
        if (nassign > CFG_MAX_ASSIGNMENTS) {
            rc = pl_fail(PL_EINVAL, "%s: about %lld settings ('=' or ':'), more than %d: not an mp3d config (the schema has %d keys)",
                         c->path, (long long)nassign, CFG_MAX_ASSIGNMENTS, cfg_schema_len);
            config_destroy(&lc);
            cfg_destroy(c);
            return rc;
        }
        ok = text ? config_read_string(&lc, text) : config_read_file(&lc, path);
        if (!ok) {
            if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
                rc = pl_fail(PL_EIO, "%s: cannot read config file", path);
            else
                rc = pl_fail(PL_EFORMAT, "%s:%d: syntax error: %s", config_error_file(&lc) ? config_error_file(&lc) : c->path,
                             config_error_line(&lc), config_error_text(&lc));
        } else {
            rc = walk(c, config_root_setting(&lc), "", c->path);
            if (!rc && c->unknown > CFG_UNKNOWN_LOGGED)
                LOG_WARN("%s: %lld unknown keys ignored in all (the first %d are named above)", c->path, (long long)c->unknown,
                         CFG_UNKNOWN_LOGGED);
        }
        config_destroy(&lc);
        if (rc) { cfg_destroy(c); return rc; }
    }
    for (int i = 0; i < nsets; i++) {
        rc = cfg_set(c, sets[i]);
        if (rc) { cfg_destroy(c); return rc; }
    }
    *out = c;
    return 0;
}

// det.anchors_from names the anchors.cfg snippet `mp3d anchors` wrote (det.anchor_scale and
// det.anchor_ratios): its values replace the config's own, so the resolved config (and so every
// checkpoint's stored copy) holds the anchors actually used and never needs the file again.
// Called by the command right before a stage runs (mp3d run plans every stage before the
// anchors stage has written the file); a checkpoint's stored text already holds the values.
int cfg_resolve_anchors(pl_cfg *c) {
    const char *af = cfg_str(c, "det.anchors_from");
    if (!af[0]) return 0;
    pl_cfg *snip = NULL;
    int rc = load_any(&snip, af, NULL, NULL, 0);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", pl_last_error());
        return pl_fail(rc, "%s: det.anchors_from = \"%s\": %s", c->path[0] ? c->path : "config", af, msg);
    }
    char a[512];
    int n = cfg_list_len(snip, "det.anchor_ratios"), off = 0;
    off = snprintf(a, sizeof a, "det.anchor_ratios=[");
    for (int i = 0; i < n && off < (int)sizeof a - 32; i++)
        off += snprintf(a + off, sizeof a - (size_t)off, "%s%.17g", i ? "," : "", cfg_list_float(snip, "det.anchor_ratios", i));
    snprintf(a + off, sizeof a - (size_t)off, "]");
    char sc[64];
    snprintf(sc, sizeof sc, "det.anchor_scale=%.17g", cfg_float(snip, "det.anchor_scale"));
    cfg_destroy(snip);
    if ((rc = cfg_set(c, sc)) || (rc = cfg_set(c, a)))
        return pl_fail(rc, "%s: det.anchors_from = \"%s\": %s", c->path[0] ? c->path : "config", af, pl_last_error());
    LOG0("config: anchors from %s: %s %s", af, sc, a);
    return 0;
}

int cfg_load(pl_cfg **out, const char *path, const char *const *sets, int nsets) {
    return load_any(out, path, NULL, sets, nsets);
}

int cfg_load_text(pl_cfg **out, const char *text, const char *label, const char *const *sets, int nsets) {
    return load_any(out, label, text, sets, nsets);
}

void cfg_destroy(pl_cfg *c) {
    if (!c) return;
    for (int i = 0; i < cfg_schema_len; i++) val_clear(&c->vals[i]);
    free(c->vals);
    free(c->text);
    free(c);
}

// The getters are typed: asking for a key as another type than its schema entry is a bug in the
// caller (cfg_int on a float key used to read 0), so it is refused loudly — the key, both types,
// then abort like any broken invariant. The list getters read both list types (stored as doubles).
static const cfg_val *get(const pl_cfg *c, const char *key, enum cfg_type want, int need) {
    int ki = key_index(key);
    PL_ASSERT(ki >= 0 && "key not in cfg_schema");
    const enum cfg_type have = cfg_schema[ki].type;
    const int lists = (want == CFG_FLOATS || want == CFG_INTS) && (have == CFG_FLOATS || have == CFG_INTS);
    if (have != want && !lists) {
        LOG_ERROR("internal: config key '%s' holds %s (io/config_schema.c) but was read as %s", key,
                  type_name(have), type_name(want));
        PL_ASSERT(have == want && "config getter type matches the schema");
    }
    const cfg_val *v = &c->vals[ki];
    if (need && !v->set) {
        // A stage forgot cfg_require: fail loudly rather than invent a value.
        LOG_ERROR("%s: required key '%s' is not set (%s)", c->path[0] ? c->path : "config", key, cfg_schema[ki].help);
        PL_ASSERT(v->set);
    }
    return v;
}

int cfg_require(const pl_cfg *c, const char *key) {
    int ki = key_index(key);
    if (ki < 0) return pl_fail(PL_EINVAL, "internal: key '%s' is not in the schema", key);
    const cfg_val *v = &c->vals[ki];
    if (!v->set || (cfg_schema[ki].type == CFG_STRING && (!v->s || !v->s[0])))
        return pl_fail(PL_ENOTFOUND, "%s: missing required key '%s' (%s); set it in the file or with --set %s=...",
                       c->path[0] ? c->path : "(no config file)", key, cfg_schema[ki].help, key);
    return 0;
}

int cfg_has(const pl_cfg *c, const char *key) {
    int ki = key_index(key);
    return ki >= 0 && c->vals[ki].set;
}

int64_t cfg_int(const pl_cfg *c, const char *key) { return get(c, key, CFG_INT, 1)->i; }
double cfg_float(const pl_cfg *c, const char *key) { return get(c, key, CFG_FLOAT, 1)->f; }
int cfg_bool(const pl_cfg *c, const char *key) { return get(c, key, CFG_BOOL, 1)->b; }
const char *cfg_str(const pl_cfg *c, const char *key) {
    const cfg_val *v = get(c, key, CFG_STRING, 0);
    return v->s ? v->s : "";
}
int cfg_list_len(const pl_cfg *c, const char *key) { return get(c, key, CFG_FLOATS, 1)->nlist; }
double cfg_list_float(const pl_cfg *c, const char *key, int i) {
    const cfg_val *v = get(c, key, CFG_FLOATS, 1);
    PL_ASSERT(i >= 0 && i < v->nlist);
    return v->list[i];
}
const char *cfg_path(const pl_cfg *c) { return c->path; }

static int cmp_idx(const void *a, const void *b) {
    return strcmp(cfg_schema[*(const int *)a].key, cfg_schema[*(const int *)b].key);
}

// Shortest "%.*g" that reads back to the same double, always with a '.' or exponent so that
// libconfig re-reads it as a float.
static void fmt_float(char *t, size_t cap, double x) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(t, cap, "%.*g", prec, x);
        if (strtod(t, NULL) == x) break;
    }
    if (!strpbrk(t, ".eEn")) strncat(t, ".0", cap - strlen(t) - 1);
}

static void sb_value(strbuf *b, const cfg_key *k, const cfg_val *v) {
    switch (k->type) {
    case CFG_INT: sb_printf(b, "%lld", (long long)v->i); break;
    case CFG_FLOAT: {
        // Always a float literal so the text re-reads as a float.
        char t[64];
        fmt_float(t, sizeof t, v->f);
        sb_printf(b, "%s", t);
        break;
    }
    case CFG_BOOL: sb_printf(b, "%s", v->b ? "true" : "false"); break;
    case CFG_STRING:
        sb_printf(b, "\"");
        for (const char *p = v->s ? v->s : ""; *p; p++) {
            if (*p == '"' || *p == '\\') sb_printf(b, "\\%c", *p);
            else sb_printf(b, "%c", *p);
        }
        sb_printf(b, "\"");
        break;
    case CFG_FLOATS:
    case CFG_INTS:
        sb_printf(b, "[");
        for (int j = 0; j < v->nlist; j++) {
            if (k->type == CFG_INTS) sb_printf(b, "%s%lld", j ? ", " : "", (long long)v->list[j]);
            else {
                char t[64];
                fmt_float(t, sizeof t, v->list[j]);
                sb_printf(b, "%s%s", j ? ", " : "", t);
            }
        }
        sb_printf(b, "]");
        break;
    }
}

const char *cfg_text(const pl_cfg *c) {
    if (c->text) return c->text;
    int *idx = pl_malloc(sizeof(int) * (size_t)cfg_schema_len, "config index");
    if (!idx) return "";
    int n = 0;
    for (int i = 0; i < cfg_schema_len; i++)
        if (c->vals[i].set) idx[n++] = i;
    qsort(idx, (size_t)n, sizeof(int), cmp_idx);
    strbuf b = {0};
    sb_printf(&b, "# resolved mp3d config%s%s\n", c->path[0] ? " from " : "", c->path);
    char section[128] = "";
    for (int j = 0; j < n; j++) {
        const cfg_key *k = &cfg_schema[idx[j]];
        const char *dot = strchr(k->key, '.');
        size_t sl = dot ? (size_t)(dot - k->key) : 0;
        if (strlen(section) != sl || strncmp(section, k->key, sl) != 0) {
            if (section[0]) sb_printf(&b, "};\n");
            snprintf(section, sizeof section, "%.*s", (int)sl, k->key);
            sb_printf(&b, "%s = {\n", section);
        }
        sb_printf(&b, "  %s = ", dot ? dot + 1 : k->key);
        sb_value(&b, k, &c->vals[idx[j]]);
        sb_printf(&b, ";\n");
    }
    if (section[0]) sb_printf(&b, "};\n");
    free(idx);
    ((pl_cfg *)c)->text = b.p;
    return b.p ? b.p : "";
}

uint64_t cfg_hash(const pl_cfg *c, const char *prefixes) {
    uint64_t h = PL_FNV_INIT;
    for (int i = 0; i < cfg_schema_len; i++) {
        const cfg_key *k = &cfg_schema[i];
        if (!c->vals[i].set) continue;
        int match = !prefixes || !*prefixes;   // no prefixes: every key
        const char *p = prefixes;
        while (p && *p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len && strncmp(k->key, p, len) == 0) match = 1;
            p = e ? e + 1 : NULL;
        }
        if (!match) continue;
        strbuf b = {0};
        sb_printf(&b, "%s=", k->key);
        sb_value(&b, k, &c->vals[i]);
        if (b.p) h = pl_fnv1a(b.p, b.n, h);
        free(b.p);
    }
    return h;
}

void cfg_log(const pl_cfg *c) {
    // One line per section: "config| train: batch=256 lr=0.1 ..." (the full text is what
    // every output stores; this is the same content, compact for logs).
    const char *t = cfg_text(c);
    char line[8192];
    size_t n = 0;
    for (const char *p = t; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len && p[0] != '#') {
            if (p[len - 1] == '{') {            // "train = {"
                n = (size_t)snprintf(line, sizeof line, "config| %.*s:", (int)(len - 4), p);
            } else if (p[0] == '}') {
                LOG0("%s", line);
                n = 0;
            } else if (n < sizeof line) {      // "  lr = 0.1;"
                const char *q = p;
                while (*q == ' ') q++;
                const char *eq = strstr(q, " = ");
                if (eq) n += (size_t)snprintf(line + n, sizeof line - n, " %.*s=%.*s", (int)(eq - q), q,
                                             (int)(len - (size_t)(eq + 3 - p) - 1), eq + 3);
            }
        }
        p = e ? e + 1 : p + len;
    }
}

int cfg_overrides(const pl_cfg *c, char ***out) {
    *out = NULL;
    int n = 0;
    for (int i = 0; i < cfg_schema_len; i++)
        if (c->vals[i].set && !strncmp(c->vals[i].origin, "--set", 5)) n++;
    if (!n) return 0;
    char **v = pl_calloc((size_t)n, sizeof(char *), "overrides");
    if (!v) return 0;
    int j = 0;
    for (int i = 0; i < cfg_schema_len; i++) {
        if (!c->vals[i].set || strncmp(c->vals[i].origin, "--set", 5)) continue;
        strbuf b = {0};
        sb_printf(&b, "%s=", cfg_schema[i].key);
        if (cfg_schema[i].type == CFG_STRING) sb_printf(&b, "%s", c->vals[i].s ? c->vals[i].s : "");
        else sb_value(&b, &cfg_schema[i], &c->vals[i]);
        v[j++] = b.p;
    }
    *out = v;
    return j;
}

static int read_strings(config_setting_t *grp, const char *name, char ***out, int *n, const char *where) {
    *out = NULL;
    *n = 0;
    config_setting_t *s = config_setting_get_member(grp, name);
    if (!s) return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
        return pl_fail(PL_EINVAL, "%s:%d: '%s' must be a list of strings", where, config_setting_source_line(s), name);
    int len = config_setting_length(s);
    *out = pl_calloc((size_t)(len ? len : 1), sizeof(char *), "pipeline strings");
    if (!*out) return PL_ENOMEM;
    for (int i = 0; i < len; i++) {
        const char *v = config_setting_get_string_elem(s, i);
        if (!v) return pl_fail(PL_EINVAL, "%s:%d: '%s' element %d is not a string", where, config_setting_source_line(s), name, i);
        (*out)[(*n)++] = pl_strdup(v);
    }
    return 0;
}

void cfg_pipeline_free(cfg_stage *st, int n) {
    if (!st) return;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < st[i].nsets; j++) free(st[i].sets[j]);
        for (int j = 0; j < st[i].nafter; j++) free(st[i].after[j]);
        free(st[i].sets);
        free(st[i].after);
    }
    free(st);
}

int cfg_pipeline_read(const char *path, cfg_stage **stages, int *n) {
    *stages = NULL;
    *n = 0;
    config_t lc;
    config_init(&lc);
    int rc = 0;
    cfg_stage *st = NULL;
    int ns = 0, len = 0;
    if (!config_read_file(&lc, path)) {
        rc = pl_fail(PL_EFORMAT, "%s:%d: %s", path, config_error_line(&lc), config_error_text(&lc));
        goto done;
    }
    config_setting_t *list = config_lookup(&lc, "pipeline.stages");
    if (!list || config_setting_type(list) != CONFIG_TYPE_LIST) {
        rc = pl_fail(PL_ENOTFOUND, "%s: missing required key 'pipeline.stages' (a list of stage groups: ( { name = ...; command = ...; }, ... ))", path);
        goto done;
    }
    len = config_setting_length(list);
    st = pl_calloc((size_t)(len ? len : 1), sizeof *st, "pipeline stages");
    if (!st) { rc = PL_ENOMEM; goto done; }
    for (int i = 0; i < len; i++, ns++) {
        config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        int line = config_setting_source_line(g);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            rc = pl_fail(PL_EINVAL, "%s:%d: pipeline.stages element %d must be a group { name = ...; command = ...; }", path, line, i);
            goto done;
        }
        const char *name = NULL, *cmd = NULL, *conf = NULL, *follow = NULL;
        config_setting_lookup_string(g, "name", &name);
        config_setting_lookup_string(g, "command", &cmd);
        config_setting_lookup_string(g, "config", &conf);
        config_setting_lookup_string(g, "follow", &follow);
        if (!name || !cmd) {
            rc = pl_fail(PL_ENOTFOUND, "%s:%d: pipeline.stages element %d needs name and command", path, line, i);
            goto done;
        }
        if (strlen(name) >= sizeof st[i].name || strlen(cmd) >= sizeof st[i].command ||
            (follow && strlen(follow) >= sizeof st[i].follow)) {
            rc = pl_fail(PL_EINVAL, "%s:%d: stage '%s': name, command or follow too long", path, line, name);
            goto done;
        }
        // The name becomes file names (pipeline.dir/.mp3d/<name>.done, logs, job names): a plain
        // file name, so '../../x' cannot put a marker outside pipeline.dir.
        int name_ok = name[0] != 0 && name[0] != '.';
        for (const char *c = name; *c && name_ok; c++)
            name_ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                      *c == '-' || *c == '.';
        if (!name_ok) {
            rc = pl_fail(PL_EINVAL, "%s:%d: stage name '%s' must be letters, digits, '_', '-' or '.' and not start with '.' "
                         "(it names the stage's files under pipeline.dir/.mp3d/)", path, line, name);
            goto done;
        }
        for (int m = 0; m < config_setting_length(g); m++) {
            const char *key = config_setting_name(config_setting_get_elem(g, (unsigned)m));
            static const char *const known[] = {"name", "command", "config", "set", "after", "follow", "ranks"};
            int k = 0;
            while (k < 7 && strcmp(key, known[k])) k++;
            if (k == 7)
                LOG_WARN("%s:%d: stage '%s': unknown key '%s' ignored (stage keys: name, command, config, set, after, follow, ranks)",
                         path, line, name, key);
        }
        snprintf(st[i].name, sizeof st[i].name, "%s", name);
        snprintf(st[i].command, sizeof st[i].command, "%s", cmd);
        st[i].line = line;
        st[i].after_given = config_setting_get_member(g, "after") != NULL;
        if (follow) snprintf(st[i].follow, sizeof st[i].follow, "%s", follow);
        if (conf && conf[0]) {
            if (conf[0] == '/') snprintf(st[i].config, sizeof st[i].config, "%s", conf);
            else {
                const char *slash = strrchr(path, '/');
                if (slash) snprintf(st[i].config, sizeof st[i].config, "%.*s/%s", (int)(slash - path), path, conf);
                else snprintf(st[i].config, sizeof st[i].config, "%s", conf);
            }
        }
        int ranks = 0;
        config_setting_lookup_int(g, "ranks", &ranks);
        if (ranks < 0) {
            rc = pl_fail(PL_ERANGE, "%s:%d: stage '%s': ranks = %d (must be >= 0; 0 = all ranks)", path, line, name, ranks);
            goto done;
        }
        st[i].ranks = ranks;
        if ((rc = read_strings(g, "set", &st[i].sets, &st[i].nsets, path))) goto done;
        if ((rc = read_strings(g, "after", &st[i].after, &st[i].nafter, path))) goto done;
        for (int j = 0; j < i; j++)
            if (!strcmp(st[j].name, st[i].name)) {
                rc = pl_fail(PL_EINVAL, "%s:%d: stage name '%s' used twice", path, line, name);
                goto done;
            }
        for (int a = 0; a < st[i].nafter; a++) {
            int found = 0;
            for (int j = 0; j < i; j++) found |= !strcmp(st[j].name, st[i].after[a]);
            if (!found) {
                rc = pl_fail(PL_EINVAL, "%s:%d: stage '%s': after = '%s' names no earlier stage", path, line, name, st[i].after[a]);
                goto done;
            }
        }
        if (st[i].follow[0]) {
            int found = 0;
            for (int j = 0; j < i; j++) found |= !strcmp(st[j].name, st[i].follow);
            if (!found) {
                rc = pl_fail(PL_EINVAL, "%s:%d: stage '%s': follow = '%s' names no earlier stage", path, line, name, st[i].follow);
                goto done;
            }
            for (int a = 0; a < st[i].nafter; a++)
                if (!strcmp(st[i].after[a], st[i].follow)) {
                    rc = pl_fail(PL_EINVAL, "%s:%d: stage '%s': after lists '%s', the stage it follows (a follow stage runs beside "
                                 "it, not after it)", path, line, name, st[i].follow);
                    goto done;
                }
        }
    }
done:
    config_destroy(&lc);
    if (rc) { cfg_pipeline_free(st, ns + 1 > len ? len : ns + 1); return rc; }
    *stages = st;
    *n = ns;
    return 0;
}
