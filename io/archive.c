// archive: libarchive-backed streaming reader (zip, tar, any compression filter) and writer
// (zip deflate/store, tar ustar/pax) to a file (tmp + rename) or to memory.
// Error messages always name the archive (path or label) and the entry being read, or the
// last good entry when the header of the next one cannot be read.
#include "io/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/pl.h"

// Fixed modification time for written entries so `mp3d synth` output is byte-reproducible
// (2020-01-01T00:00:00Z; zip stores DOS dates, which cannot go before 1980). libarchive writes
// a zip's DOS date in local time, so zips are identical only under the same TZ; tars always.
static const time_t ARC_FIXED_MTIME = 1577836800;
static const size_t ARC_READ_BLOCK = 1 << 16;
// An entry's declared size is not trusted for the first allocation (a corrupt or hostile header
// may declare gigabytes); larger entries grow by doubling and are checked against it at the end.
static const int64_t ARC_MAX_PREALLOC = (int64_t)64 << 20;

struct arc_reader {
    struct archive *a;
    char label[1024];
    char name[1024];   // current entry ("" before the first)
    int64_t size;      // current entry size, -1 unknown
    int have_entry;
    int unsafe;        // entries skipped for an unsafe name
};

int arc_name_ok(const char *name) {
    if (!name || !*name) return 0;
    if (name[0] == '/' || name[0] == '\\') return 0;
    // Reject ".." as any path component, and backslashes that some zips use as separators.
    const char *p = name;
    while (*p) {
        const char *q = p;
        while (*q && *q != '/') q++;
        size_t n = (size_t)(q - p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        for (const char *c = p; c < q; c++)
            if (*c == '\\') return 0;
        p = *q ? q + 1 : q;
    }
    return 1;
}

static int reader_new(arc_reader **out, const char *label) {
    *out = NULL;
    arc_reader *r = pl_calloc(1, sizeof *r, "archive reader");
    if (!r) return PL_ENOMEM;
    snprintf(r->label, sizeof r->label, "%s", label ? label : "(memory)");
    r->size = -1;
    r->a = archive_read_new();
    if (!r->a) {
        free(r);
        return pl_fail(PL_ENOMEM, "%s: archive_read_new failed", label);
    }
    archive_read_support_filter_all(r->a);
    archive_read_support_format_zip(r->a);
    archive_read_support_format_tar(r->a);
    *out = r;
    return 0;
}

int arc_open_file(arc_reader **out, const char *path) {
    *out = NULL;
    if (access(path, R_OK) != 0) {
        int e = errno;
        return pl_fail(e == ENOENT ? PL_ENOTFOUND : PL_EIO, "archive %s: cannot open: %s", path,
                       strerror(e));
    }
    arc_reader *r;
    int rc = reader_new(&r, path);
    if (rc) return rc;
    if (archive_read_open_filename(r->a, path, 10240) != ARCHIVE_OK) {
        rc = pl_fail(PL_EFORMAT, "archive %s: cannot open as zip or tar: %s", path,
                     archive_error_string(r->a) ? archive_error_string(r->a) : "unknown format");
        arc_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int arc_open_memory(arc_reader **out, const void *buf, size_t len, const char *label) {
    *out = NULL;
    arc_reader *r;
    int rc = reader_new(&r, label);
    if (rc) return rc;
    if (archive_read_open_memory(r->a, buf, len) != ARCHIVE_OK) {
        rc = pl_fail(PL_EFORMAT, "archive %s: cannot open as zip or tar (%zu bytes): %s", r->label, len,
                     archive_error_string(r->a) ? archive_error_string(r->a) : "unknown format");
        arc_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

const char *arc_label(const arc_reader *r) { return r ? r->label : ""; }
int arc_unsafe_skipped(const arc_reader *r) { return r ? r->unsafe : 0; }

int arc_next(arc_reader *r, const char **name, int64_t *size) {
    *name = NULL;
    *size = -1;
    for (;;) {
        struct archive_entry *e = NULL;
        int st = archive_read_next_header(r->a, &e);
        if (st == ARCHIVE_EOF) {
            r->have_entry = 0;
            return 0;
        }
        if (st < ARCHIVE_WARN) {
            const char *why = archive_error_string(r->a);
            if (r->name[0])
                return pl_fail(PL_ECORRUPT,
                               "archive %s: truncated or corrupt after entry '%s' (reading the next "
                               "header): %s",
                               r->label, r->name, why ? why : "unknown error");
            return pl_fail(PL_ECORRUPT, "archive %s: truncated or corrupt at the first entry: %s",
                           r->label, why ? why : "unknown error");
        }
        const char *nm = archive_entry_pathname(e);
        if (!nm) nm = "";
        snprintf(r->name, sizeof r->name, "%s", nm);
        if (archive_entry_filetype(e) != AE_IFREG) continue;   // folders, links, devices
        if (!arc_name_ok(nm)) {
            // Skipped, not fatal: one hostile name must not drop every later entry of the archive
            // (and be reported as something else by the caller).
            r->unsafe++;
            LOG_WARN("archive %s: entry '%s' skipped: unsafe name (empty, absolute or containing '..')", r->label, nm);
            continue;
        }
        r->size = archive_entry_size_is_set(e) ? (int64_t)archive_entry_size(e) : -1;
        r->have_entry = 1;
        *name = r->name;
        *size = r->size;
        return 1;
    }
}

int arc_read_entry(arc_reader *r, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    if (!r->have_entry)
        return pl_fail(PL_EINVAL, "archive %s: arc_read_entry called without a current entry", r->label);
    r->have_entry = 0;   // the data can be read once
    size_t cap = r->size >= 0 ? (size_t)PL_MIN(r->size, ARC_MAX_PREALLOC) + 1 : ARC_READ_BLOCK;
    uint8_t *b = pl_malloc(cap, "archive entry");
    if (!b) return PL_ENOMEM;
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            uint8_t *nb = pl_realloc(b, cap * 2, "archive entry");
            if (!nb) {
                free(b);
                return PL_ENOMEM;
            }
            b = nb;
            cap *= 2;
        }
        la_ssize_t got = archive_read_data(r->a, b + n, cap - n);
        if (got < 0) {
            const char *why = archive_error_string(r->a);
            free(b);
            return pl_fail(PL_ECORRUPT, "archive %s: entry '%s': truncated or corrupt data after %zu bytes: %s",
                           r->label, r->name, n, why ? why : "unknown error");
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    if (r->size >= 0 && (int64_t)n != r->size) {
        free(b);
        return pl_fail(PL_ECORRUPT, "archive %s: entry '%s': truncated: read %zu of %lld bytes", r->label,
                       r->name, n, (long long)r->size);
    }
    *buf = b;
    *len = n;
    return 0;
}

void arc_close(arc_reader *r) {
    if (!r) return;
    if (r->a) archive_read_free(r->a);
    free(r);
}

// ---- writer -------------------------------------------------------------------------------

struct arc_writer {
    struct archive *a;
    char path[4096], tmp[4096];   // file mode
    int memory;
    uint8_t *buf;                 // memory mode: (len) bytes written so far
    size_t len, cap;
    int oom;
};

static la_ssize_t mem_write_cb(struct archive *a, void *ud, const void *data, size_t n) {
    (void)a;
    arc_writer *w = ud;
    if (w->len + n > w->cap) {
        size_t nc = w->cap ? w->cap : 65536;
        while (nc < w->len + n) nc *= 2;
        uint8_t *nb = realloc(w->buf, nc);
        if (!nb) {
            w->oom = 1;
            archive_set_error(a, ENOMEM, "out of memory growing an in-memory archive to %zu bytes", nc);
            return -1;
        }
        w->buf = nb;
        w->cap = nc;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
    return (la_ssize_t)n;
}

static int writer_new(arc_writer **out, enum arc_format fmt, const char *what) {
    *out = NULL;
    arc_writer *w = pl_calloc(1, sizeof *w, "archive writer");
    if (!w) return PL_ENOMEM;
    w->a = archive_write_new();
    if (!w->a) {
        free(w);
        return pl_fail(PL_ENOMEM, "%s: archive_write_new failed", what);
    }
    int st;
    switch (fmt) {
    case ARC_ZIP:
        st = archive_write_set_format_zip(w->a);
        if (st == ARCHIVE_OK) st = archive_write_zip_set_compression_deflate(w->a);
        break;
    case ARC_ZIP_STORE:
        st = archive_write_set_format_zip(w->a);
        if (st == ARCHIVE_OK) st = archive_write_zip_set_compression_store(w->a);
        break;
    case ARC_TAR:
        // ustar headers when names fit, pax extended headers only when they do not.
        st = archive_write_set_format_pax_restricted(w->a);
        break;
    default:
        archive_write_free(w->a);
        free(w);
        return pl_fail(PL_EINVAL, "%s: unknown archive format %d", what, (int)fmt);
    }
    if (st != ARCHIVE_OK) {
        int rc = pl_fail(PL_EUNSUPPORTED, "%s: cannot set archive format: %s", what,
                         archive_error_string(w->a));
        archive_write_free(w->a);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int arc_writer_open(arc_writer **out, const char *path, enum arc_format fmt) {
    *out = NULL;
    arc_writer *w;
    int rc = writer_new(&w, fmt, path);
    if (rc) return rc;
    int n1 = snprintf(w->path, sizeof w->path, "%s", path);
    int n2 = snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    if (n1 < 0 || n2 < 0 || (size_t)n2 >= sizeof w->tmp) {
        archive_write_free(w->a);
        free(w);
        return pl_fail(PL_ERANGE, "%s: path too long", path);
    }
    if (archive_write_open_filename(w->a, w->tmp) != ARCHIVE_OK) {
        rc = pl_fail(PL_EIO, "archive %s: cannot create %s: %s", path, w->tmp, archive_error_string(w->a));
        archive_write_free(w->a);
        unlink(w->tmp);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int arc_writer_open_memory(arc_writer **out, enum arc_format fmt) {
    *out = NULL;
    arc_writer *w;
    int rc = writer_new(&w, fmt, "(memory archive)");
    if (rc) return rc;
    w->memory = 1;
    snprintf(w->path, sizeof w->path, "(memory archive)");
    if (archive_write_open2(w->a, w, NULL, mem_write_cb, NULL, NULL) != ARCHIVE_OK) {
        rc = pl_fail(PL_EIO, "(memory archive): cannot open: %s", archive_error_string(w->a));
        archive_write_free(w->a);
        free(w->buf);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int arc_writer_add(arc_writer *w, const char *name, const void *data, size_t len) {
    if (!arc_name_ok(name))
        return pl_fail(PL_EINVAL, "archive %s: refusing to add entry '%s' (empty, absolute or '..')",
                       w->path, name ? name : "(null)");
    struct archive_entry *e = archive_entry_new();
    if (!e) return pl_fail(PL_ENOMEM, "archive %s: archive_entry_new failed", w->path);
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_mtime(e, ARC_FIXED_MTIME, 0);
    int rc = 0;
    if (archive_write_header(w->a, e) != ARCHIVE_OK) {
        rc = pl_fail(PL_EIO, "archive %s: entry '%s': cannot write header: %s", w->path, name,
                     archive_error_string(w->a));
        goto done;
    }
    const uint8_t *p = data;
    size_t done_bytes = 0;
    while (done_bytes < len) {
        la_ssize_t n = archive_write_data(w->a, p + done_bytes, len - done_bytes);
        if (n <= 0) {
            rc = pl_fail(w->oom ? PL_ENOMEM : PL_EIO, "archive %s: entry '%s': write failed after %zu of %zu bytes: %s",
                         w->path, name, done_bytes, len, archive_error_string(w->a));
            goto done;
        }
        done_bytes += (size_t)n;
    }
    if (archive_write_finish_entry(w->a) != ARCHIVE_OK)
        rc = pl_fail(PL_EIO, "archive %s: entry '%s': cannot finish: %s", w->path, name,
                     archive_error_string(w->a));
done:
    archive_entry_free(e);
    return rc;
}

int arc_writer_close(arc_writer *w) {
    if (!w) return 0;
    int rc = 0;
    if (w->memory) {
        arc_writer_abort(w);
        return pl_fail(PL_EINVAL, "arc_writer_close called on an in-memory writer; use arc_writer_close_memory");
    }
    if (archive_write_close(w->a) != ARCHIVE_OK) {
        rc = pl_fail(PL_EIO, "archive %s: cannot finish %s: %s", w->path, w->tmp, archive_error_string(w->a));
        unlink(w->tmp);
    } else if (rename(w->tmp, w->path) != 0) {
        int e = errno;
        rc = pl_fail(PL_EIO, "archive %s: cannot rename %s into place: %s", w->path, w->tmp, strerror(e));
        unlink(w->tmp);
    }
    archive_write_free(w->a);
    free(w);
    return rc;
}

void arc_writer_abort(arc_writer *w) {
    if (!w) return;
    archive_write_free(w->a);   // closes the file
    if (!w->memory) unlink(w->tmp);
    free(w->buf);
    free(w);
}

int arc_writer_close_memory(arc_writer *w, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!w) return pl_fail(PL_EINVAL, "arc_writer_close_memory: NULL writer");
    if (!w->memory) {
        arc_writer_abort(w);
        return pl_fail(PL_EINVAL, "arc_writer_close_memory called on a file writer");
    }
    int rc = 0;
    if (archive_write_close(w->a) != ARCHIVE_OK) {
        rc = pl_fail(w->oom ? PL_ENOMEM : PL_EIO, "(memory archive): cannot finish: %s",
                     archive_error_string(w->a));
        free(w->buf);
    } else {
        *out = w->buf;
        *len = w->len;
    }
    archive_write_free(w->a);
    free(w);
    return rc;
}
