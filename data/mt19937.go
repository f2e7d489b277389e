package data

// mt19937 is the Mersenne Twister behind both numpy's legacy RandomState and
// CPython's random module; the official IP-IQA splits draw from them, so
// reproducing those splits needs their exact streams.
type mt19937 struct {
	mt  [mtN]uint32
	pos int
}

const (
	mtN       = 624
	mtM       = 397
	mtMatrixA = 0x9908b0df
	mtUpper   = 0x80000000
	mtLower   = 0x7fffffff
)

// seedInt is init_genrand: numpy's RandomState(seed) for an integer seed.
func (r *mt19937) seedInt(seed uint32) {
	r.mt[0] = seed
	for i := 1; i < mtN; i++ {
		r.mt[i] = 1812433253*(r.mt[i-1]^(r.mt[i-1]>>30)) + uint32(i)
	}
	r.pos = mtN
}

// seedArray is init_by_array: CPython's random.seed(n) passes the 32-bit
// chunks of |n|, least significant first.
func (r *mt19937) seedArray(key []uint32) {
	r.seedInt(19650218)
	i, j := 1, 0
	k := mtN
	if len(key) > k {
		k = len(key)
	}
	for ; k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= mtN {
			r.mt[0] = r.mt[mtN-1]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k = mtN - 1; k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= mtN {
			r.mt[0] = r.mt[mtN-1]
			i = 1
		}
	}
	r.mt[0] = 0x80000000
	r.pos = mtN
}

// pySeed seeds like CPython's random.seed(n) for an integer n.
func (r *mt19937) pySeed(n uint64) {
	key := []uint32{uint32(n)}
	if n>>32 != 0 {
		key = append(key, uint32(n>>32))
	}
	r.seedArray(key)
}

func (r *mt19937) twist() {
	for i := 0; i < mtN; i++ {
		y := (r.mt[i] & mtUpper) | (r.mt[(i+1)%mtN] & mtLower)
		v := r.mt[(i+mtM)%mtN] ^ (y >> 1)
		if y&1 != 0 {
			v ^= mtMatrixA
		}
		r.mt[i] = v
	}
	r.pos = 0
}

// uint32 is genrand_int32.
func (r *mt19937) uint32() uint32 {
	if r.pos >= mtN {
		r.twist()
	}
	y := r.mt[r.pos]
	r.pos++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

// uint64 is numpy's next_uint64 for MT19937: two draws, high word first.
func (r *mt19937) uint64() uint64 {
	hi := uint64(r.uint32())
	return hi<<32 | uint64(r.uint32())
}

// pyRandom is CPython's random.random(): 53 bits from two draws.
func (r *mt19937) pyRandom() float64 {
	a := r.uint32() >> 5
	b := r.uint32() >> 6
	return (float64(a)*67108864.0 + float64(b)) * (1.0 / 9007199254740992.0)
}

// randomInterval is numpy's legacy random_interval: a uniform integer in
// [0, max] by masked rejection sampling (32-bit draws while max fits).
func (r *mt19937) randomInterval(max uint64) uint64 {
	if max == 0 {
		return 0
	}
	mask := max
	mask |= mask >> 1
	mask |= mask >> 2
	mask |= mask >> 4
	mask |= mask >> 8
	mask |= mask >> 16
	mask |= mask >> 32
	if max <= 0xffffffff {
		for {
			if v := uint64(r.uint32()) & mask; v <= max {
				return v
			}
		}
	}
	for {
		if v := r.uint64() & mask; v <= max {
			return v
		}
	}
}

// npPermutation is the legacy RandomState.permutation(n): arange(n) shuffled
// by Fisher–Yates from the last element down.
func (r *mt19937) npPermutation(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(r.randomInterval(uint64(i)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}
