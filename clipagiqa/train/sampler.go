package train

import "math/rand/v2"

// The sampler is a pure function of (seed, epoch): a resumed run recomputes
// every epoch's order, so a checkpoint needs only the seed and the number of
// completed epochs. These are the same functions CLIP-AGIQA's loop has
// always used, so its results do not change.

// Mix64 is the splitmix64 finaliser every derived seed goes through.
func Mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// EpochSeed is the libtorch seed of a 0-based epoch (dropout and any other
// libtorch randomness of that epoch).
func EpochSeed(seed uint64, epoch int) uint64 { return Mix64(seed^Mix64(uint64(epoch)+1)) >> 1 }

// EpochOrder is the shuffled order of idx in a 0-based epoch (idx is not
// modified).
func EpochOrder(seed uint64, epoch int, idx []int) []int {
	rng := rand.New(rand.NewPCG(Mix64(seed), Mix64(uint64(epoch)^0x2545f4914f6cdd1d)))
	out := append([]int(nil), idx...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// SampleSeed is a per-sample seed for augmentation in a 0-based epoch
// (e.g. a horizontal flip), independent of batching and of the world size.
func SampleSeed(seed uint64, epoch, sample int) uint64 {
	return Mix64(Mix64(seed^0x632be59bd9b4e019) ^ Mix64(uint64(epoch)) ^ uint64(sample)*0x9e3779b97f4a7c15)
}

// Batches cuts an epoch's order into global batches of bs; the last
// partial batch is dropped when there is a full one (as Dassl's and the
// official loaders' drop_last), unless keepLast. A set smaller than one
// batch is a single batch.
func Batches(order []int, bs int, keepLast bool) [][]int {
	if bs <= 0 || len(order) == 0 {
		return nil
	}
	var out [][]int
	for k := 0; k < len(order); k += bs {
		end := k + bs
		if end > len(order) {
			if !keepLast && k > 0 {
				break
			}
			end = len(order)
		}
		out = append(out, order[k:end])
	}
	return out
}
