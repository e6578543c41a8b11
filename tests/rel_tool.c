// rel_tool: helpers for the reliability tests (tests/reliability.cmake), which damage files the
// way a faulty disk, a bad CSV row or a buggy writer would:
//   rel_tool set-box SHARD ROW X1 Y1 X2 Y2     overwrite row ROW of the shard's 'boxes' table
//   rel_tool set-f32 FILE DSET INDEX VALUE     overwrite element INDEX (row-major) of a float dataset
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_box(const char *path, long long row, const double v[4]) {
    int rc = 1;
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), d = H5I_INVALID_HID, fs = H5I_INVALID_HID,
          ms = H5I_INVALID_HID;
    if (f < 0 || (d = H5Dopen2(f, "boxes", H5P_DEFAULT)) < 0 || (fs = H5Dget_space(d)) < 0) goto done;
    hsize_t start[2] = {(hsize_t)row, 0}, count[2] = {1, 4}, four = 4;
    ms = H5Screate_simple(1, &four, NULL);
    if (ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0) goto done;
    if (H5Dwrite(d, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, v) < 0) goto done;
    rc = 0;
done:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    if (rc) fprintf(stderr, "rel_tool: cannot set box %lld of %s\n", row, path);
    return rc;
}

static int set_f32(const char *path, const char *dset, long long index, float v) {
    int rc = 1;
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), d = H5I_INVALID_HID, fs = H5I_INVALID_HID,
          ms = H5I_INVALID_HID;
    if (f < 0 || (d = H5Dopen2(f, dset, H5P_DEFAULT)) < 0 || (fs = H5Dget_space(d)) < 0) goto done;
    hsize_t dims[16], coord[16], one = 1;
    int nd = H5Sget_simple_extent_dims(fs, dims, NULL);
    if (nd < 1 || nd > 16) goto done;
    for (int k = nd - 1; k >= 0; k--) {
        coord[k] = (hsize_t)index % dims[k];
        index /= (long long)dims[k];
    }
    ms = H5Screate_simple(1, &one, NULL);
    if (ms < 0 || H5Sselect_elements(fs, H5S_SELECT_SET, 1, coord) < 0) goto done;
    if (H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v) < 0) goto done;
    rc = 0;
done:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    if (rc) fprintf(stderr, "rel_tool: cannot set %s[%lld] of %s\n", dset, index, path);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 8 && !strcmp(argv[1], "set-box")) {
        double v[4];
        for (int i = 0; i < 4; i++) v[i] = atof(argv[4 + i]);
        return set_box(argv[2], atoll(argv[3]), v);
    }
    if (argc == 6 && !strcmp(argv[1], "set-f32")) return set_f32(argv[2], argv[3], atoll(argv[4]), (float)atof(argv[5]));
    fprintf(stderr, "usage: rel_tool set-box SHARD ROW X1 Y1 X2 Y2 | set-f32 FILE DSET INDEX VALUE\n");
    return 2;
}
