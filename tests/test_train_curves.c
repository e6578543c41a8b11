// train_curves: a metrics.jsonl written by hand (train rows, val rows of the detect task, an end
// event, a malformed line) read back to the exact values, and the SVG's panels and paths.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/pl.h"
#include "test_util.h"
#include "stages/eval/train_curves.h"


static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

int main(void) {
    char path[] = "/tmp/mp3d_test_curves_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    FILE *f = fdopen(fd, "w");
    fputs("{\"time\":1000.0,\"stage\":\"train\",\"step\":1,\"epoch\":0,\"loss\":1.5,\"lr\":0.001,\"images\":4}\n"
          "{\"time\":1030.0,\"stage\":\"train\",\"step\":10,\"epoch\":0,\"loss\":0.75,\"lr\":0.01,\"images\":36}\n"
          "not json at all\n"
          "{\"time\":1060.0,\"stage\":\"val\",\"step\":10,\"epoch\":0,\"mfroc\":0.25,\"sens_0.5\":0.1,\"sens_4\":0.5}\n"
          "{\"time\":1120.0,\"stage\":\"train\",\"step\":20,\"epoch\":1,\"loss\":0.5,\"lr\":0.005,\"images\":40}\n"
          "{\"time\":1180.0,\"stage\":\"val\",\"step\":20,\"epoch\":1,\"mfroc\":0.5,\"sens_0.5\":0.3,\"sens_4\":0.875}\n"
          "{\"time\":1181.0,\"stage\":\"train\",\"event\":\"end\",\"step\":20,\"exit\":0,\"elapsed_s\":181}\n",
          f);
    fclose(f);

    train_curves c;
    int rc = train_curves_read(&c, path);
    CHECK(rc == 0, "read: %d %s", rc, pl_last_error());
    CHECK(c.loss.n == 3 && c.lr.n == 3, "train rows: loss %lld lr %lld (want 3; the end event is not a row)",
          (long long)c.loss.n, (long long)c.lr.n);
    CHECK(c.loss.n == 3 && c.loss.step[2] == 20 && c.loss.v[1] == 0.75 && c.lr.v[1] == 0.01, "values");
    CHECK(c.loss.n == 3 && c.loss.minutes[0] == 0 && c.loss.minutes[2] == 2.0, "minutes since the first row: %g %g",
          c.loss.minutes[0], c.loss.minutes[2]);
    CHECK(!strcmp(c.val_name, "sens_4") && !strcmp(c.val2_name, "mfroc"), "val names %s %s", c.val_name, c.val2_name);
    CHECK(c.val.n == 2 && c.val.v[1] == 0.875 && c.val2.v[0] == 0.25 && c.val.minutes[1] == 3.0, "val values");
    CHECK(c.bad_lines == 1, "bad lines %lld", (long long)c.bad_lines);

    char *svg = NULL;
    rc = train_curves_svg(&svg, &c, "run <x> & y");
    CHECK(rc == 0 && svg, "svg: %d", rc);
    if (svg) {
        CHECK(!strncmp(svg, "<svg ", 5) && strstr(svg, "</svg>\n"), "one svg element");
        CHECK(count(svg, "<path ") == 6, "paths: %d (loss, lr, 2 x (sens_4, mfroc))", count(svg, "<path "));
        CHECK(strstr(svg, "training loss against step") && strstr(svg, "learning rate against step") &&
                  strstr(svg, "validation sens_4 against step") && strstr(svg, "validation sens_4 against wall time"),
              "panel titles");
        CHECK(strstr(svg, "run &lt;x&gt;") == NULL && strstr(svg, "run &lt;x> &amp; y"), "title escaped");
        CHECK(strstr(svg, "sens_4 0.875") && strstr(svg, "loss 0.5"), "legends show the last values");
        CHECK(!strstr(svg, "nan") && !strstr(svg, "inf"), "no non-finite coordinates");
        free(svg);
    }
    train_curves_free(&c);

    // a file that cannot be read is an error naming it
    unlink(path);
    rc = train_curves_read(&c, path);
    CHECK(rc == PL_EIO && strstr(pl_last_error(), path), "missing file: %d [%s]", rc, pl_last_error());
    printf("test_train_curves: %s (%d failures)\n", g_fail ? "FAIL" : "ok", g_fail);
    return g_fail ? 1 : 0;
}
