#!/usr/bin/python3
"""Writes data/splits/agiqa1k/ipiqa_code_order.txt: the AGIQA-1K prompt codes
in the order the official IP-IQA agiqa1k_split_fn first meets them, i.e. in
the row order of AIGC_MOS_Zscore.xlsx (CSV copy in testdata/agiqa1k/).
The split draws one random.random() per new code, so this order is all of
the table that the split needs.  Usage: cd data && /usr/bin/python3 testdata/gen/ipiqa_code_order.py
"""
import csv

codes = []
with open("testdata/agiqa1k/AIGC_MOS_Zscore.csv", newline="") as f:
    for row in csv.DictReader(f):
        parts = row["Image"][:-4].split("_")
        c1, c2 = int(parts[1]), int(parts[2])
        if row["Image"].startswith("dream"):
            c1 = c1 + 1 if c1 > 5 else c1
            c2 += 5
        code = f"{c1}_{c2}"
        if code not in codes:
            codes.append(code)
with open("splits/agiqa1k/ipiqa_code_order.txt", "w") as f:
    f.write("\n".join(codes) + "\n")
print(len(codes), "codes")
