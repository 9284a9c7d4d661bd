/* nibabel's qform rotation-and-zoom matrix, in the C `long double` that
 * numpy's longdouble is (x87 extended on x86-64, binary128 on aarch64):
 * nibabel computes it in that precision (quaternions.fillpositive uses
 * np.longdouble), then stores it in a float64 affine. nilearn takes voxel
 * sizes from that affine's column norms, so every bit of it decides a
 * kernel's weights. Rust has no long double; this file is the only C in
 * nismooth, and it follows nibabel's operations one by one. */

void nismooth_qform_matrix(double b, double c, double d,
                           const double vox[3], double out[9]) {
    long double x = b, y = c, z = d;
    /* fillpositive: w2 = 1 - xyz @ xyz (numpy's longdouble dot: 0 + ...) */
    long double dot = 0.0L;
    dot += x * x;
    dot += y * y;
    dot += z * z;
    long double w2 = 1.0L - dot;
    long double w;
    if (w2 < 0) {
        w = 0.0L; /* nibabel: 0 within its threshold, an error beyond */
    } else {
        w = __builtin_sqrtl(w2);
    }
    /* quat2mat */
    long double nq = w * w + x * x + y * y + z * z;
    long double r[9];
    if (nq < 2.220446049250313e-16L) {
        for (int i = 0; i < 9; i++) r[i] = (i % 4 == 0) ? 1.0L : 0.0L;
    } else {
        long double s = 2.0L / nq;
        long double X = x * s, Y = y * s, Z = z * s;
        long double wX = w * X, wY = w * Y, wZ = w * Z;
        long double xX = x * X, xY = x * Y, xZ = x * Z;
        long double yY = y * Y, yZ = y * Z, zZ = z * Z;
        r[0] = 1.0L - (yY + zZ); r[1] = xY - wZ;          r[2] = xZ + wY;
        r[3] = xY + wZ;          r[4] = 1.0L - (xX + zZ); r[5] = yZ - wX;
        r[6] = xZ - wY;          r[7] = yZ + wX;          r[8] = 1.0L - (xX + yY);
    }
    /* M = R @ diag(vox): each element one product (the others add zeros) */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            out[3 * i + j] = (double)(r[3 * i + j] * (long double)vox[j]);
}
