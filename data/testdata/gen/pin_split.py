#!/usr/bin/python3
"""Independent re-implementation of data.RandomSplit's shuffle (SplitMix64,
rejection-sampled bounded ints, Fisher-Yates from the end) to produce the
pinned names checked in split_test.go. Prints the first 5 test names for
1000 samples "0000.png".."0999.png", train fraction 0.8, seed 42.
"""
M = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & M

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    def intn(self, n):
        limit = M - M % n
        while True:
            v = self.next()
            if v < limit:
                return v % n


def main():
    n, frac, seed = 1000, 0.8, 42
    idx = list(range(n))
    r = SplitMix64(seed)
    for i in range(n - 1, 0, -1):
        j = r.intn(i + 1)
        idx[i], idx[j] = idx[j], idx[i]
    n_train = int(round(frac * n))
    test = sorted(idx[n_train:])
    print(["%04d.png" % i for i in test[:5]])
    r = SplitMix64(1234567)
    print([r.next() for _ in range(5)])


if __name__ == "__main__":
    main()
