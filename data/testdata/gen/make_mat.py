#!/usr/bin/python3
"""Generate MAT-file fixtures for the data package tests.

Run from the repository root with Debian's interpreter:
    /usr/bin/python3 data/testdata/gen/make_mat.py

Writes, with scipy.io.savemat (level 5 format):
  data/testdata/mat/vars_plain.mat       do_compression=False
  data/testdata/mat/vars_zlib.mat        do_compression=True (as MATLAB -v7)
  data/testdata/mat/vars_ref.json        the numeric variables as loadmat reads them
  data/testdata/aigciqa2023/mosz1.mat    2400x1 double MOSz (quality), compressed
  data/testdata/aigciqa2023/mosz2.mat    2400x1 double MOSz (authenticity), uncompressed
The AIGCIQA2023 vectors are rebuilt from the name,mos CSVs (name "<i>.png" is
element i), i.e. the inverse of CLIP-AGIQA's mat2csv.py.
"""
import csv
import json
import os

import numpy as np
import scipy
import scipy.io as sio

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def variables():
    return {
        "MOSz": np.array([[0.5], [1.25], [-3.0], [2.0 ** -20], [1e10], [4.75]]),
        "m23": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        "i16": np.array([[-3, 0, 7]], dtype=np.int16),
        "u8": np.array([[255, 1]], dtype=np.uint8),
        "f32": np.array([[0.5, -1.25]], dtype=np.float32),
        "i64": np.array([[-(2 ** 40), 5]], dtype=np.int64),
        "u32": np.array([[4000000000]], dtype=np.uint32),
        "flag": np.array([[True, False, True]]),
        "cplx": np.array([[1 + 2j, 3 - 1j]]),
        "cube": np.arange(24, dtype=np.float64).reshape(2, 3, 4),
        "empty": np.zeros((0, 0)),
        "note": "hello",  # char array: skipped by the Go reader
        "cellv": np.array([[1.0, "x"]], dtype=object),  # cell: skipped
        "st": {"a": 1.0, "b": np.array([1, 2])},  # struct: skipped
    }


def mat_class(a):
    if a.dtype == np.bool_:
        return "logical"
    return {
        "float64": "double", "float32": "single", "complex128": "double",
        "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
        "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
    }[str(a.dtype)]


def write_vars():
    out = os.path.join(ROOT, "mat")
    os.makedirs(out, exist_ok=True)
    v = variables()
    sio.savemat(os.path.join(out, "vars_plain.mat"), v, do_compression=False)
    sio.savemat(os.path.join(out, "vars_zlib.mat"), v, do_compression=True)
    # Expected values: what scipy itself reads back, flattened column-major.
    back = sio.loadmat(os.path.join(out, "vars_plain.mat"))
    ref = []
    for name in v:  # savemat keeps dict order
        a = back[name]
        if a.dtype.kind not in "biufc":
            continue
        item = {
            "name": name,
            "class": mat_class(np.asarray(v[name])),
            "dims": list(a.shape),
            "data": [float(x) for x in np.real(a).flatten(order="F")],
        }
        if a.dtype.kind == "c":
            item["imag"] = [float(x) for x in np.imag(a).flatten(order="F")]
        ref.append(item)
    with open(os.path.join(out, "vars_ref.json"), "w") as f:
        json.dump({"scipy": scipy.__version__, "vars": ref}, f, indent=1)
        f.write("\n")


def mos_vector(stem):
    mos = np.full(2400, np.nan)
    for part in ("train", "test"):
        with open(os.path.join(ROOT, "aigciqa2023", "%s_%s.csv" % (stem, part))) as f:
            for row in csv.DictReader(f):
                mos[int(row["name"].split(".")[0])] = float(row["mos"])
    assert not np.isnan(mos).any()
    return mos.reshape(-1, 1)


def write_aigciqa():
    d = os.path.join(ROOT, "aigciqa2023")
    sio.savemat(os.path.join(d, "mosz1.mat"), {"MOSz": mos_vector("quality")}, do_compression=True)
    sio.savemat(os.path.join(d, "mosz2.mat"), {"MOSz": mos_vector("authenticity")}, do_compression=False)


if __name__ == "__main__":
    write_vars()
    write_aigciqa()
