//! Python's `random.Random(seed).sample` (CPython 3.x: MT19937 seeded with `init_by_array`,
//! `_randbelow_with_getrandbits`, and `sample`'s set/pool strategies), so few-shot examples drawn
//! by lm-evaluation-harness's default sampler (`random.Random(1234)`) are the same documents here.

/// CPython's Mersenne Twister.
pub struct PyRandom {
    mt: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed below 2^32.
    pub fn new(seed: u32) -> Self {
        let mut r = PyRandom { mt: [0; 624], index: 624 };
        r.init_genrand(19_650_218);
        // init_by_array with key = [seed]
        let key = [seed];
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            self.mt[i] = 1_812_433_253u32.wrapping_mul(self.mt[i - 1] ^ (self.mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    /// `genrand_uint32`.
    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for 1 <= k <= 32.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow_with_getrandbits(n)` for 1 <= n < 2^32.
    fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// Indices of `random.sample(range(n), k)`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(3k, 4))
            let mut p = 1usize;
            while p < 3 * k {
                p *= 4;
            }
            setsize += p;
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            (0..k)
                .map(|i| {
                    let j = self.randbelow(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::new();
            (0..k)
                .map(|_| {
                    let mut j = self.randbelow(n);
                    while !selected.insert(j) {
                        j = self.randbelow(n);
                    }
                    j
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython() {
        // python3.11 -c "import random; r=random.Random(1234); print([r.getrandbits(32) for _ in range(3)])"
        let mut r = PyRandom::new(1234);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [4150886329, 3342196574, 1892932127]);
        // r=random.Random(1234); r.sample(range(100),3), r.sample(range(100),3), r.sample(range(100),8),
        // r.sample(range(100),30)[:10]
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(100, 3), vec![99, 56, 14]);
        assert_eq!(r.sample(100, 3), vec![0, 11, 74]);
        assert_eq!(r.sample(100, 8), vec![4, 85, 88, 10, 12, 98, 45, 30]);
        assert_eq!(r.sample(100, 30)[..10], [2, 3, 99, 44, 82, 79, 61, 78, 59, 19]);
    }
}
