//! The renderer's toolbox: a floating-point RGB canvas, colours, a seeded RNG and value noise.
//!
//! Everything is deterministic: no global state, no time, no thread-dependent order, so a
//! prompt and a seed always paint the same pixels (on a given platform and build).

/// A colour as linear-ish sRGB components in 0..=1 (values above 1 are clamped on output).
pub type Rgb = [f32; 3];

pub const fn hex(v: u32) -> Rgb {
    [
        ((v >> 16) & 0xff) as f32 / 255.0,
        ((v >> 8) & 0xff) as f32 / 255.0,
        (v & 0xff) as f32 / 255.0,
    ]
}

#[inline]
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

#[inline]
pub fn scale(a: Rgb, k: f32) -> Rgb {
    [a[0] * k, a[1] * k, a[2] * k]
}

#[inline]
pub fn add(a: Rgb, b: Rgb) -> Rgb {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

#[inline]
pub fn luma(a: Rgb) -> f32 {
    0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2]
}

#[inline]
pub fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

#[inline]
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = clamp01((x - e0) / (e1 - e0));
    t * t * (3.0 - 2.0 * t)
}

/// Rotates a colour's hue by `degrees` around the grey axis, keeping its luminance roughly.
pub fn hue_rotate(c: Rgb, degrees: f32) -> Rgb {
    let (s, co) = degrees.to_radians().sin_cos();
    // Rotation about (1,1,1)/√3 (Rodrigues), the usual "hue-rotate" matrix.
    let k = (1.0 - co) / 3.0;
    let r3 = s / 3f32.sqrt();
    let m = [
        [co + k, k - r3, k + r3],
        [k + r3, co + k, k - r3],
        [k - r3, k + r3, co + k],
    ];
    [
        m[0][0] * c[0] + m[0][1] * c[1] + m[0][2] * c[2],
        m[1][0] * c[0] + m[1][1] * c[1] + m[1][2] * c[2],
        m[2][0] * c[0] + m[2][1] * c[1] + m[2][2] * c[2],
    ]
}

/// Scales saturation around the colour's luminance (k > 1 more vivid, k < 1 greyer).
pub fn saturate(c: Rgb, k: f32) -> Rgb {
    let l = luma(c);
    [l + (c[0] - l) * k, l + (c[1] - l) * k, l + (c[2] - l) * k]
}

/// The image being painted, row-major.
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub px: Vec<Rgb>,
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![[0.0; 3]; w * h],
        }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.px[y * self.w + x]
    }

    /// Alpha-blends `c` over the pixel.
    #[inline]
    pub fn blend(&mut self, x: usize, y: usize, c: Rgb, a: f32) {
        let p = &mut self.px[y * self.w + x];
        *p = mix(*p, c, a);
    }

    /// Adds light (glows, stars, sparkles).
    #[inline]
    pub fn add_light(&mut self, x: usize, y: usize, c: Rgb, k: f32) {
        let p = &mut self.px[y * self.w + x];
        p[0] += c[0] * k;
        p[1] += c[1] * k;
        p[2] += c[2] * k;
    }

    /// Adds a soft round light (a star, a window glint, a snowflake) at a sub-pixel position.
    pub fn glow_dot(&mut self, cx: f32, cy: f32, radius: f32, c: Rgb, k: f32) {
        let r = (radius * 2.5).ceil() as i64;
        let (ix, iy) = (cx as i64, cy as i64);
        let inv = 1.0 / (radius * radius);
        for y in (iy - r).max(0)..=(iy + r).min(self.h as i64 - 1) {
            for x in (ix - r).max(0)..=(ix + r).min(self.w as i64 - 1) {
                let dx = x as f32 + 0.5 - cx;
                let dy = y as f32 + 0.5 - cy;
                let g = (-(dx * dx + dy * dy) * inv).exp();
                if g > 0.003 {
                    self.add_light(x as usize, y as usize, c, k * g);
                }
            }
        }
    }

    /// Paints a soft-edged disc of colour `c` with opacity `a`.
    pub fn disc(&mut self, cx: f32, cy: f32, radius: f32, c: Rgb, a: f32) {
        let r = radius.ceil() as i64 + 1;
        let (ix, iy) = (cx as i64, cy as i64);
        for y in (iy - r).max(0)..=(iy + r).min(self.h as i64 - 1) {
            for x in (ix - r).max(0)..=(ix + r).min(self.w as i64 - 1) {
                let dx = x as f32 + 0.5 - cx;
                let dy = y as f32 + 0.5 - cy;
                let cov = clamp01(radius - (dx * dx + dy * dy).sqrt() + 0.5);
                if cov > 0.0 {
                    self.blend(x as usize, y as usize, c, a * cov);
                }
            }
        }
    }
}

/// SplitMix64: small, fast, good enough for placing stars and trees, and fully determined by
/// its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the bytes, finalised: a stable hash of words (std's hasher is not stable
/// across releases, and a word's hash decides how the picture looks).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Seeded value noise in one and two dimensions, and fractal sums of it.
#[derive(Clone, Copy)]
pub struct Noise {
    seed: u64,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self { seed: mix64(seed) }
    }

    #[inline]
    fn lattice1(&self, i: i64) -> f32 {
        let h = mix64(self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (h >> 40) as f32 / (1u64 << 24) as f32
    }

    #[inline]
    fn lattice2(&self, i: i64, j: i64) -> f32 {
        let h = mix64(
            self.seed
                ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
        );
        (h >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Smooth noise in [0, 1].
    pub fn n1(&self, x: f32) -> f32 {
        let i = x.floor();
        let f = x - i;
        let t = f * f * (3.0 - 2.0 * f);
        let i = i as i64;
        let a = self.lattice1(i);
        let b = self.lattice1(i + 1);
        a + (b - a) * t
    }

    /// Smooth noise in [0, 1].
    pub fn n2(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (tx, ty) = (x - fx, y - fy);
        let (tx, ty) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let (i, j) = (fx as i64, fy as i64);
        let a = self.lattice2(i, j);
        let b = self.lattice2(i + 1, j);
        let c = self.lattice2(i, j + 1);
        let d = self.lattice2(i + 1, j + 1);
        let top = a + (b - a) * tx;
        let bottom = c + (d - c) * tx;
        top + (bottom - top) * ty
    }

    /// Fractal sum in [0, 1].
    pub fn fbm1(&self, x: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for o in 0..octaves {
            sum += amp * self.n1(x * freq + o as f32 * 17.31);
            norm += amp;
            amp *= 0.5;
            freq *= 2.03;
        }
        sum / norm
    }

    /// Ridged fractal sum in [0, 1]: sharp crests, like mountain ridges.
    pub fn ridged1(&self, x: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for o in 0..octaves {
            let n = 1.0 - (self.n1(x * freq + o as f32 * 31.7) * 2.0 - 1.0).abs();
            sum += amp * n * n;
            norm += amp;
            amp *= 0.48;
            freq *= 2.1;
        }
        sum / norm
    }

    /// Fractal sum in [0, 1].
    pub fn fbm2(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for o in 0..octaves {
            let off = o as f32 * 13.7;
            sum += amp * self.n2(x * freq + off, y * freq - off);
            norm += amp;
            amp *= 0.5;
            freq *= 2.0;
        }
        sum / norm
    }
}

/// A scalar field computed on a coarse grid and sampled bilinearly: soft things (clouds,
/// fog) do not need per-pixel noise, and this keeps a 1024² render fast.
pub struct CoarseField {
    gw: usize,
    gh: usize,
    inv_step: f32,
    v: Vec<f32>,
}

impl CoarseField {
    pub fn new(w: usize, h: usize, step: usize, f: impl Fn(f32, f32) -> f32) -> Self {
        let gw = w / step + 2;
        let gh = h / step + 2;
        let mut v = Vec::with_capacity(gw * gh);
        for j in 0..gh {
            for i in 0..gw {
                v.push(f((i * step) as f32, (j * step) as f32));
            }
        }
        Self {
            gw,
            gh,
            inv_step: 1.0 / step as f32,
            v,
        }
    }

    #[inline]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        let fx = x as f32 * self.inv_step;
        let fy = y as f32 * self.inv_step;
        let i = (fx as usize).min(self.gw - 2);
        let j = (fy as usize).min(self.gh - 2);
        let tx = fx - i as f32;
        let ty = fy - j as f32;
        let a = self.v[j * self.gw + i];
        let b = self.v[j * self.gw + i + 1];
        let c = self.v[(j + 1) * self.gw + i];
        let d = self.v[(j + 1) * self.gw + i + 1];
        let top = a + (b - a) * tx;
        let bottom = c + (d - c) * tx;
        top + (bottom - top) * ty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_hash_is_stable() {
        // Pinned: changing it would change every picture ever made from a prompt.
        assert_eq!(hash_str(""), mix64(0xcbf2_9ce4_8422_2325));
        assert_ne!(hash_str("dusk"), hash_str("dawn"));
    }

    #[test]
    fn noise_stays_in_range() {
        let n = Noise::new(7);
        for i in 0..2000 {
            let x = i as f32 * 0.37 - 300.0;
            for v in [
                n.n1(x),
                n.fbm1(x, 5),
                n.ridged1(x, 5),
                n.fbm2(x, x * 0.3, 4),
            ] {
                assert!((0.0..=1.0).contains(&v), "{v}");
            }
        }
    }

    #[test]
    fn hue_rotation_by_zero_is_identity_and_grey_stays_grey() {
        let c = [0.2, 0.5, 0.9];
        let r = hue_rotate(c, 0.0);
        for i in 0..3 {
            assert!((r[i] - c[i]).abs() < 1e-5);
        }
        let g = hue_rotate([0.4; 3], 77.0);
        for v in g {
            assert!((v - 0.4).abs() < 1e-5);
        }
    }
}
