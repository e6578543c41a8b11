// fileio: whole-file reads, atomic writes (path.tmp.PID, fsync, rename, fsync of the folder),
// mkdir -p. Every error names the path and strerror(errno).
#include "io/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "nn/pl.h"

int pl_read_file(const char *path, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        return pl_fail(e == ENOENT ? PL_ENOTFOUND : PL_EIO, "%s: cannot open for reading: %s", path,
                       strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return pl_fail(PL_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return pl_fail(PL_EIO, "%s: is a directory, expected a file", path);
    }
    // Regular files are read by their size; pipes and /proc files grow the buffer as they go.
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 65536;
    uint8_t *b = pl_malloc(cap, "file contents");
    if (!b) {
        close(fd);
        return PL_ENOMEM;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            uint8_t *nb = pl_realloc(b, cap * 2, "file contents");
            if (!nb) {
                free(b);
                close(fd);
                return PL_ENOMEM;
            }
            b = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(b);
            close(fd);
            return pl_fail(PL_EIO, "%s: read failed after %zu bytes: %s", path, n, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 0;
}

static int fsync_parent_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return 0;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY);
    if (fd < 0) return 0;   // best effort: some file systems do not allow opening folders
    (void)fsync(fd);
    close(fd);
    return 0;
}

int pl_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) return pl_fail(PL_ERANGE, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        return pl_fail(PL_EIO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(e));
    }
    const uint8_t *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return pl_fail(PL_EIO, "%s: write failed after %zu of %zu bytes: %s", path, done, len,
                           strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return pl_fail(PL_EIO, "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return pl_fail(PL_EIO, "%s: close failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return pl_fail(PL_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    return fsync_parent_dir(path);
}

int pl_mkdir_p(const char *path) {
    if (!path || !*path) return pl_fail(PL_EINVAL, "mkdir: empty path");
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf) return pl_fail(PL_ERANGE, "%s: path too long (%zu chars)", path, n);
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    // Create every prefix ending before a '/', then the whole path.
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            return pl_fail(PL_EIO, "%s: cannot create folder %s: %s", path, buf, strerror(e));
        }
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
            return pl_fail(PL_EIO, "%s: %s exists and is not a folder", path, buf);
        }
        buf[i] = c;
    }
    return 0;
}

int pl_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? 1 : 0;
}

int pl_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 1 : 0;
}

int pl_dir_writable(const char *dir) {
    int rc = pl_mkdir_p(dir);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", pl_last_error());
        return pl_fail(rc, "output folder %s cannot be created: %s", dir, why);
    }
    if (access(dir, W_OK | X_OK) != 0) {
        int e = errno;
        return pl_fail(PL_EIO, "output folder %s is not writable: %s", dir, strerror(e));
    }
    // access() trusts permission bits; root or a read-only mount needs a real probe.
    char probe[4096];
    int n = snprintf(probe, sizeof probe, "%s/.mp3d_write_probe.%ld", dir, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof probe) return pl_fail(PL_ERANGE, "%s: path too long", dir);
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        return pl_fail(PL_EIO, "output folder %s is not writable: %s", dir, strerror(e));
    }
    close(fd);
    unlink(probe);
    return 0;
}

int pl_path_join(char *out, size_t cap, const char *a, const char *b) {
    int n;
    size_t la = strlen(a);
    if (la == 0) n = snprintf(out, cap, "%s", b);
    else if (a[la - 1] == '/') n = snprintf(out, cap, "%s%s", a, b);
    else n = snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap) {
        if (cap) out[0] = 0;
        return pl_fail(PL_ERANGE, "path '%s/%s' is longer than %zu chars", a, b, cap ? cap - 1 : 0);
    }
    return 0;
}
