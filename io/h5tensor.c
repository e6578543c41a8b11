#include "io/h5tensor.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"

int h5tensor_read(const char *path, const char *name, float **data, int64_t *dims, int *ndim) {
    *data = NULL;
    *ndim = 0;
    hid_t f = H5I_INVALID_HID, d = H5I_INVALID_HID, s = H5I_INVALID_HID;
    int rc = 0;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); } H5E_END_TRY;
    if (f < 0) return pl_fail(PL_EIO, "%s: cannot open as HDF5", path);
    H5E_BEGIN_TRY { d = H5Dopen2(f, name, H5P_DEFAULT); } H5E_END_TRY;
    if (d < 0) { rc = pl_fail(PL_ENOTFOUND, "%s: no dataset '%s'", path, name); goto done; }
    s = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd < 0 || nd > H5T_MAX_DIMS) { rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' has %d dims (at most %d)", path, name, nd, H5T_MAX_DIMS); goto done; }
    hsize_t hd[H5T_MAX_DIMS];
    H5Sget_simple_extent_dims(s, hd, NULL);
    size_t n = 1;
    for (int i = 0; i < nd; i++) { dims[i] = (int64_t)hd[i]; n *= hd[i]; }
    *data = pl_malloc(sizeof(float) * (n ? n : 1), "tensor");
    if (!*data) { rc = PL_ENOMEM; goto done; }
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *data) < 0) {
        rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' cannot be read as float32", path, name);
        free(*data);
        *data = NULL;
        goto done;
    }
    *ndim = nd;
done:
    if (s >= 0) H5Sclose(s);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    return rc;
}

int h5tensor_write(const char *path, const char *name, const float *data, const int64_t *dims, int ndim,
                   const char *note) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return pl_fail(PL_ERANGE, "%s: path too long", path);
    hid_t f = H5I_INVALID_HID, s = H5I_INVALID_HID, d = H5I_INVALID_HID;
    int rc = 0;
    H5E_BEGIN_TRY { f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT); } H5E_END_TRY;
    if (f < 0) return pl_fail(PL_EIO, "%s: cannot create", tmp);
    hsize_t hd[H5T_MAX_DIMS];
    for (int i = 0; i < ndim; i++) hd[i] = (hsize_t)dims[i];
    s = H5Screate_simple(ndim, hd, NULL);
    d = H5Dcreate2(f, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        rc = pl_fail(PL_EH5, "%s: cannot write dataset '%s'", tmp, name);
        goto done;
    }
    if (note) {
        hid_t ts = H5Tcopy(H5T_C_S1);
        H5Tset_size(ts, strlen(note) + 1);
        hid_t as = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(d, "note", ts, as, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, ts, note) < 0) rc = pl_fail(PL_EH5, "%s: cannot write attribute note", tmp);
        if (a >= 0) H5Aclose(a);
        H5Sclose(as);
        H5Tclose(ts);
    }
done:
    if (d >= 0) H5Dclose(d);
    if (s >= 0) H5Sclose(s);
    if (H5Fclose(f) < 0 && !rc) rc = pl_fail(PL_EIO, "%s: close failed", tmp);
    if (!rc && rename(tmp, path) != 0) rc = pl_fail(PL_EIO, "%s: cannot rename to %s", tmp, path);
    if (rc) remove(tmp);
    return rc;
}
