// test_io_fileio: whole-file read, atomic write, mkdir -p, path join, writability checks,
// each error path with its message checked.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "test_util.h"

#define HAS(needle) (strstr(pl_last_error(), (needle)) != NULL)

int main(void) {
    pl_quiet_begin();
    char dir[256];
    snprintf(dir, sizeof dir, "tmp_io_fileio_%ld", (long)getpid());

    // mkdir -p of a nested path, twice (the second is a no-op), with a trailing slash.
    char nested[512];
    snprintf(nested, sizeof nested, "%s/a/b/c/", dir);
    CHECK(pl_mkdir_p(nested) == 0, "%s", pl_last_error());
    CHECK(pl_mkdir_p(nested) == 0, "%s", pl_last_error());
    snprintf(nested, sizeof nested, "%s/a/b/c", dir);
    CHECK(pl_path_is_dir(nested) == 1, "nested dir missing");

    // Atomic write then read back, binary content with NULs; overwrite keeps the new content.
    char path[512];
    CHECK(pl_path_join(path, sizeof path, nested, "data.bin") == 0, "%s", pl_last_error());
    uint8_t data[3000];
    for (int i = 0; i < 3000; i++) data[i] = (uint8_t)(i * 7 + i / 256);
    CHECK(pl_write_file_atomic(path, data, sizeof data) == 0, "%s", pl_last_error());
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(pl_read_file(path, &buf, &len) == 0, "%s", pl_last_error());
    CHECK(len == 3000 && memcmp(buf, data, 3000) == 0, "round trip differs: len %zu", len);
    free(buf);
    CHECK(pl_write_file_atomic(path, "xy", 2) == 0, "%s", pl_last_error());
    CHECK(pl_read_file(path, &buf, &len) == 0 && len == 2 && memcmp(buf, "xy", 2) == 0, "overwrite");
    free(buf);
    // Zero-length file.
    CHECK(pl_write_file_atomic(path, "", 0) == 0, "%s", pl_last_error());
    CHECK(pl_read_file(path, &buf, &len) == 0 && len == 0, "empty file len %zu", len);
    free(buf);
    CHECK(pl_path_exists(path) == 1 && pl_path_is_dir(path) == 0, "exists/is_dir");
    // No temporary file is left next to it.
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    CHECK(!pl_path_exists(tmpname), "temporary file left behind");

    // Errors: missing file (ENOTFOUND, names the path); a folder read as a file.
    char missing[512];
    snprintf(missing, sizeof missing, "%s/nope.txt", dir);
    int rc = pl_read_file(missing, &buf, &len);
    CHECK(rc == PL_ENOTFOUND && HAS(missing) && HAS("No such file"), "rc %d msg '%s'", rc, pl_last_error());
    rc = pl_read_file(dir, &buf, &len);
    CHECK(rc == PL_EIO && HAS(dir) && HAS("directory"), "rc %d msg '%s'", rc, pl_last_error());

    // Writing into a missing folder fails naming the path.
    snprintf(missing, sizeof missing, "%s/nofolder/x.txt", dir);
    rc = pl_write_file_atomic(missing, "a", 1);
    CHECK(rc == PL_EIO && HAS(missing), "rc %d msg '%s'", rc, pl_last_error());

    // mkdir -p through a regular file fails naming the blocking component.
    char through[600];
    snprintf(through, sizeof through, "%s/sub", path);
    rc = pl_mkdir_p(through);
    CHECK(rc == PL_EIO && HAS(path), "rc %d msg '%s'", rc, pl_last_error());
    rc = pl_dir_writable(through);
    CHECK(rc < 0 && HAS("output folder") && HAS(through), "rc %d msg '%s'", rc, pl_last_error());
    CHECK(pl_dir_writable(nested) == 0, "%s", pl_last_error());

    // path_join: separator handling and overflow.
    char small[8];
    CHECK(pl_path_join(small, sizeof small, "ab", "cd") == 0 && strcmp(small, "ab/cd") == 0, "'%s'", small);
    CHECK(pl_path_join(small, sizeof small, "ab/", "cd") == 0 && strcmp(small, "ab/cd") == 0, "'%s'", small);
    CHECK(pl_path_join(small, sizeof small, "", "cd") == 0 && strcmp(small, "cd") == 0, "'%s'", small);
    rc = pl_path_join(small, sizeof small, "abcd", "efgh");
    CHECK(rc == PL_ERANGE && HAS("abcd/efgh") && small[0] == 0, "rc %d msg '%s'", rc, pl_last_error());

    // Clean up.
    unlink(path);
    const char *dirs[] = {"a/b/c", "a/b", "a", ""};
    for (int i = 0; i < 4; i++) {
        char d[512];
        snprintf(d, sizeof d, "%s/%s", dir, dirs[i]);
        rmdir(d);
    }
    CHECK(!pl_path_exists(dir), "cleanup left %s", dir);
    if (g_fail) fprintf(stderr, "test_io_fileio: %d failures\n", g_fail);
    else printf("test_io_fileio: all checks passed\n");
    return g_fail ? 1 : 0;
}
