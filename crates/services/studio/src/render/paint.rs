//! Paints a [`Scene`] back to front: sky, stars and aurora, sun or moon, clouds, mountain
//! ridges, hills, dunes, skyline, trees, water with reflections, meadow, fog, snowfall, then
//! a vignette. Abstract scenes get shapes on a gradient instead.
//!
//! Sizes are relative to the image's short side (`unit`), so a 512 and a 1024 render of the
//! same prompt show the same picture at different resolutions; noise is sampled in those
//! units too.

use super::canvas::{add, clamp01, mix, scale, smoothstep, Canvas, CoarseField, Noise, Rgb, Rng};
use super::scene::{Motif, Scene, TimeOfDay};

/// Paints the scene and returns it as RGB8: vignette, tone curve, grain and quantisation
/// happen in one final pass over the pixels.
pub fn paint_rgb8(scene: &Scene, w: usize, h: usize) -> Vec<u8> {
    let canvas = paint(scene, w, h);
    finish(
        &canvas,
        scene.time == TimeOfDay::Night,
        scene.layout_seed ^ 0x6A41,
    )
}

fn paint(scene: &Scene, w: usize, h: usize) -> Canvas {
    let mut p = Painter::new(scene, w, h);
    if scene.motifs.has(Motif::Abstract) {
        p.abstract_composition();
    } else {
        p.landscape();
    }
    p.canvas
}

/// The last pass: a vignette, a gentle film-like tone curve (deeper shadows, soft
/// highlights), and quantisation to 8 bits with a light triangular grain (±1.5 levels) that
/// reads as film grain and, more importantly, dithers the soft gradients so they do not band.
fn finish(canvas: &Canvas, night: bool, grain_seed: u64) -> Vec<u8> {
    let (w, h) = (canvas.w, canvas.h);
    let (cx, cy) = (w as f32 * 0.5, h as f32 * 0.5);
    let norm = 1.0 / (cx * cx + cy * cy);
    let strength = if night { 0.35 } else { 0.25 };
    let dx2: Vec<f32> = (0..w)
        .map(|x| {
            let d = x as f32 - cx;
            d * d * norm
        })
        .collect();
    let mut grain = Rng::new(grain_seed);
    let mut out = vec![0u8; w * h * 3];
    for (y, (row, dst)) in canvas
        .px
        .chunks_exact(w)
        .zip(out.chunks_exact_mut(w * 3))
        .enumerate()
    {
        let dy = y as f32 - cy;
        let dy2 = dy * dy * norm;
        for ((p, d), r2x) in row.iter().zip(dst.chunks_exact_mut(3)).zip(&dx2) {
            let r2 = r2x + dy2;
            let k = 1.0 - strength * r2 * (0.6 + 0.4 * r2);
            let bits = grain.next_u64();
            for i in 0..3 {
                let c = clamp01(p[i] * k);
                let c = c + 0.12 * c * (1.0 - c) * (c - 0.35);
                let a = ((bits >> (i * 16)) & 0xff) as f32;
                let b = ((bits >> (i * 16 + 8)) & 0xff) as f32;
                let n = (a + b - 255.0) * (1.5 / 255.0);
                // `as u8` saturates (and maps NaN to 0), so no clamp is needed.
                d[i] = (c * 255.0 + n + 0.5) as u8;
            }
        }
    }
    out
}

struct Painter<'a> {
    s: &'a Scene,
    canvas: Canvas,
    w: usize,
    h: usize,
    unit: f32,
    /// Horizon (and water line) in pixels from the top.
    hz: f32,
    /// Where the sun or moon is, in pixels; `None` when neither is in the picture.
    light: Option<(f32, f32)>,
    layout: Rng,
    style: Rng,
}

impl<'a> Painter<'a> {
    fn new(s: &'a Scene, w: usize, h: usize) -> Self {
        let unit = w.min(h) as f32;
        let hz = (s.horizon * h as f32).round();
        let has_light = s.motifs.has(Motif::Sun) || s.motifs.has(Motif::Moon);
        let light = has_light.then_some((s.light_x * w as f32, hz - s.light_elevation * hz));
        Self {
            s,
            canvas: Canvas::new(w, h),
            w,
            h,
            unit,
            hz,
            light,
            layout: Rng::new(s.layout_seed),
            style: Rng::new(s.style_seed ^ 0x5151),
        }
    }

    fn has(&self, m: Motif) -> bool {
        self.s.motifs.has(m)
    }

    fn night(&self) -> bool {
        self.s.time == TimeOfDay::Night
    }

    fn landscape(&mut self) {
        self.sky();
        if self.has(Motif::Stars) {
            self.stars();
        }
        if self.has(Motif::Aurora) {
            self.aurora();
        }
        if self.has(Motif::Moon) {
            self.moon();
        } else if self.has(Motif::Sun) {
            self.sun();
        }
        self.clouds();
        if self.has(Motif::Birds) {
            self.birds();
        }

        let water = self.has(Motif::Water);
        if self.has(Motif::Mountains) {
            self.mountains();
        }
        if self.has(Motif::Desert) {
            self.dunes(water);
        } else if self.has(Motif::Hills) || !water {
            self.hills(water);
        }
        if self.has(Motif::City) {
            self.city();
        }
        if self.has(Motif::Forest) {
            self.forest(water);
        }
        self.horizon_fog();
        if water {
            self.water();
            if self.has(Motif::Boat) {
                self.boat();
            }
        } else if self.has(Motif::Flowers) {
            self.flowers();
        }
        if self.has(Motif::Fog) {
            self.fog_banks();
        }
        if self.has(Motif::Snow) {
            self.snowfall();
        }
    }

    // ------------------------------------------------------------------ sky

    fn sky_at(&self, y: f32) -> Rgb {
        let pal = &self.s.palette;
        let t = clamp01(y / self.hz.max(1.0));
        if t < 0.55 {
            mix(pal.sky_top, pal.sky_mid, smoothstep(0.0, 0.55, t))
        } else {
            mix(pal.sky_mid, pal.sky_horizon, smoothstep(0.55, 1.0, t))
        }
    }

    fn sky(&mut self) {
        let pal = self.s.palette.clone();
        let warm = matches!(self.s.time, TimeOfDay::Dusk | TimeOfDay::Dawn);
        let glow_k = match self.s.time {
            TimeOfDay::Night => 0.35,
            TimeOfDay::Day => 0.55,
            _ => 0.9,
        };
        let moonlit = self.has(Motif::Moon);
        let (lx, ly) = self.light.unwrap_or((self.w as f32 * 0.5, self.hz));
        let light = self.light.is_some();
        let unit = self.unit;
        let hz = self.hz.max(1.0);
        let sky_rows = ((self.hz + self.unit * 0.05) as usize).min(self.h);
        // The glow is smooth: computed on a coarse grid and interpolated.
        let glow = CoarseField::new(self.w, sky_rows.max(1), 4, |x, y| {
            let above = (hz - y).max(0.0) / hz;
            // A warm band hugging the horizon at dusk and dawn, strongest under the sun.
            let band = if warm {
                (-above * 6.0).exp() * 0.55
            } else {
                0.0
            };
            if !light {
                return band * 0.5;
            }
            let dx = (x - lx) / unit;
            let dy = (y - ly) / unit;
            let d2 = dx * dx + dy * dy;
            let halo = if moonlit {
                0.45 * (-d2 / 0.006).exp() + 0.18 * (-d2.sqrt() / 0.2).exp()
            } else {
                0.45 * (-d2 / 0.008).exp() + 0.3 * (-d2.sqrt() / 0.25).exp()
            };
            let side = (-dx * dx / 0.35).exp();
            glow_k * (halo + band * side)
        });
        for y in 0..self.h {
            let base = self.sky_at(y as f32 + 0.5);
            let row = &mut self.canvas.px[y * self.w..(y + 1) * self.w];
            if y >= sky_rows {
                // Always covered by land or water; painted plain so nothing is left black.
                row.fill(base);
                continue;
            }
            for (x, p) in row.iter_mut().enumerate() {
                *p = add(base, scale(pal.glow, glow.at(x, y)));
            }
        }
    }

    fn stars(&mut self) {
        let mut rng = Rng::new(self.s.layout_seed ^ 0x57A2);
        let sky_px = self.w as f32 * self.hz;
        let count = (sky_px / 260.0) as usize;
        let starlight = [1.0, 0.97, 0.92];
        // The Milky Way: a tilted band of faint light with more stars in it.
        let band = self.night() && self.style.chance(0.65);
        let tilt = self.style.range(-0.6, 0.6);
        let band_c = self.s.palette.glow;
        let unit = self.unit;
        let (w, hz) = (self.w as f32, self.hz);
        let cx = w * self.style.range(0.3, 0.7);
        let band_dist = |x: f32, y: f32| ((y - hz * 0.35) - (x - cx) * tilt) / unit;
        if band {
            let noise = Noise::new(self.s.style_seed ^ 0xBA4D);
            let field = CoarseField::new(self.w, self.hz as usize + 1, 6, |x, y| {
                noise.fbm2(x / unit * 5.0, y / unit * 5.0, 4)
            });
            for y in 0..(self.hz as usize).min(self.h) {
                for x in 0..self.w {
                    let d = band_dist(x as f32, y as f32);
                    if d * d > 0.07 {
                        continue;
                    }
                    let k = (-d * d / 0.012).exp() * smoothstep(0.35, 0.8, field.at(x, y));
                    let fade = smoothstep(hz, hz * 0.6, y as f32);
                    if k > 0.004 {
                        self.canvas.add_light(x, y, band_c, 0.16 * k * fade);
                    }
                }
            }
        }
        let extra = if band { count / 2 } else { 0 };
        for i in 0..count + extra {
            let (x, y) = if i >= count {
                // Band stars: along the band with a spread.
                let x = rng.f32() * w;
                let off = (rng.f32() - 0.5) * 0.22 * unit * (rng.f32() + 0.2);
                (x, hz * 0.35 + (x - cx) * tilt + off)
            } else {
                (rng.f32() * w, rng.f32().powf(1.25) * hz)
            };
            if y < 0.0 || y >= hz {
                continue;
            }
            let r: f32 = rng.f32();
            let bright = 0.12 + 0.88 * r.powi(7);
            let fade = smoothstep(hz, hz * 0.55, y);
            let tint = mix(starlight, [0.75, 0.85, 1.0], rng.f32() * 0.6);
            let radius = 0.55 + 0.7 * r.powi(4);
            self.canvas
                .glow_dot(x, y, radius * unit / 768.0 * 1.3, tint, bright * fade * 1.4);
            if r > 0.985 {
                // A few bright stars get a soft halo.
                self.canvas.glow_dot(x, y, unit * 0.006, tint, 0.12 * fade);
            }
        }
    }

    fn aurora(&mut self) {
        let noise = Noise::new(self.s.style_seed ^ 0xA0A0);
        let unit = self.unit;
        let hz = self.hz;
        let green = [0.25, 1.0, 0.55];
        let violet = [0.62, 0.3, 1.0];
        let base_y = hz * self.style.range(0.42, 0.6);
        for x in 0..self.w {
            let xf = x as f32 / unit;
            let curtain = base_y + (noise.fbm1(xf * 1.3, 4) - 0.5) * hz * 0.45;
            let rays = 0.45 + 0.55 * noise.n1(xf * 38.0).powi(2);
            let strength = smoothstep(0.25, 0.6, noise.fbm1(xf * 0.7 + 9.0, 3)) * rays;
            if strength < 0.02 {
                continue;
            }
            for y in 0..(hz as usize).min(self.h) {
                let yf = y as f32;
                let below = yf - curtain;
                let k = if below > 0.0 {
                    (-below / (unit * 0.012)).exp()
                } else {
                    (below / (hz * 0.3)).exp()
                };
                if k < 0.01 {
                    continue;
                }
                let c = mix(green, violet, clamp01(-below / (hz * 0.45)));
                self.canvas.add_light(x, y, c, 1.3 * k * strength);
            }
        }
    }

    fn sun(&mut self) {
        let Some((lx, ly)) = self.light else { return };
        let warm = matches!(self.s.time, TimeOfDay::Dusk | TimeOfDay::Dawn);
        let r = self.unit * if warm { 0.05 } else { 0.035 };
        let core = if warm {
            mix(self.s.palette.light, self.s.palette.glow, 0.25)
        } else {
            self.s.palette.light
        };
        let ri = (r * 1.3).ceil() as i64;
        for y in (ly as i64 - ri).max(0)..(ly as i64 + ri).min(self.h as i64) {
            for x in (lx as i64 - ri).max(0)..(lx as i64 + ri).min(self.w as i64) {
                let dx = x as f32 + 0.5 - lx;
                let dy = y as f32 + 0.5 - ly;
                let d = (dx * dx + dy * dy).sqrt();
                let a = clamp01((r - d) / (r * 0.12) + 0.5);
                if a > 0.0 {
                    // Limb darkening: the rim is a little warmer than the centre.
                    let c = mix(
                        add(core, [0.15; 3]),
                        self.s.palette.glow,
                        (d / r).powi(4) * 0.5,
                    );
                    self.canvas.blend(x as usize, y as usize, c, a);
                }
            }
        }
    }

    fn moon(&mut self) {
        let Some((lx, ly)) = self.light else { return };
        let r = self.unit * 0.048;
        let noise = Noise::new(self.s.style_seed ^ 0x3003);
        let pale = mix(self.s.palette.light, [1.0, 0.98, 0.9], 0.5);
        let crescent = self.style.chance(0.4);
        let (ox, oy) = (r * 0.55, -r * 0.2);
        let ri = r.ceil() as i64 + 1;
        for y in (ly as i64 - ri).max(0)..(ly as i64 + ri).min(self.h as i64) {
            for x in (lx as i64 - ri).max(0)..(lx as i64 + ri).min(self.w as i64) {
                let dx = x as f32 + 0.5 - lx;
                let dy = y as f32 + 0.5 - ly;
                let cov = clamp01(r - (dx * dx + dy * dy).sqrt() + 0.5);
                if cov <= 0.0 {
                    continue;
                }
                let mut a = cov;
                if crescent {
                    let ex = dx - ox;
                    let ey = dy - oy;
                    a *= 1.0 - clamp01(r * 0.95 - (ex * ex + ey * ey).sqrt() + 0.5);
                }
                let maria = noise.fbm2(dx / r * 1.6, dy / r * 1.6, 3);
                let c = scale(pale, 0.86 + 0.14 * smoothstep(0.3, 0.75, maria));
                self.canvas.blend(x as usize, y as usize, c, a);
            }
        }
    }

    fn clouds(&mut self) {
        let cover = self.s.cloud_cover;
        if cover < 0.02 {
            return;
        }
        let noise = Noise::new(self.s.style_seed ^ 0xC10D);
        let unit = self.unit;
        let hz = self.hz;
        let (lx, ly) = self.light.unwrap_or((self.w as f32 * 0.5, -hz));
        let drift = self.layout.range(0.0, 50.0);
        // Clouds flatten towards the horizon (perspective): vertical frequency grows there.
        let density = |x: f32, y: f32| {
            let t = clamp01(y / hz);
            let sy = 3.2 + 9.0 * t * t;
            noise.fbm2(x / unit * 1.4 + drift, y / unit * sy, 4)
        };
        // Clouds are soft: a 6-pixel grid, interpolated, is indistinguishable and ~2× faster.
        let step = 6;
        let dens = CoarseField::new(self.w, hz as usize + 2, step, density);
        // Shade: is there more cloud between this point and the light?
        let toward = |x: f32, y: f32| {
            let dx = lx - x;
            let dy = ly - y;
            let d = (dx * dx + dy * dy).sqrt().max(1.0);
            let o = unit * 0.03;
            density(x + dx / d * o, y + dy / d * o)
        };
        let shade = CoarseField::new(self.w, hz as usize + 2, step, toward);
        let pal = self.s.palette.clone();
        let lo = 1.0 - cover - 0.08;
        for y in 0..(hz as usize).min(self.h) {
            let horizon_fade = 1.0 - 0.6 * smoothstep(0.7, 1.0, y as f32 / hz);
            for x in 0..self.w {
                let d = dens.at(x, y);
                let a = smoothstep(lo, lo + 0.22, d) * horizon_fade;
                if a < 0.003 {
                    continue;
                }
                let lit = clamp01(0.55 + (d - shade.at(x, y)) * 4.0);
                let mut c = mix(pal.cloud_shade, pal.cloud_lit, lit);
                if let Some((lx, ly)) = self.light {
                    // Silver lining: thin cloud near the light glows.
                    let dx = (x as f32 - lx) / unit;
                    let dy = (y as f32 - ly) / unit;
                    let d2 = dx * dx + dy * dy;
                    if d2 < 0.2 {
                        let near = (-d2 / 0.03).exp();
                        c = add(c, scale(pal.glow, near * (1.0 - a) * 0.9));
                    }
                }
                self.canvas.blend(x, y, c, a * 0.92);
            }
        }
    }

    fn birds(&mut self) {
        let mut rng = Rng::new(self.s.layout_seed ^ 0xB1D5);
        let n = 4 + (rng.next_u64() % 6) as usize;
        let (cx, cy) = (
            self.w as f32 * rng.range(0.25, 0.75),
            self.hz * rng.range(0.25, 0.55),
        );
        let ink = scale(self.s.palette.foliage, 0.5);
        for _ in 0..n {
            let x = cx + rng.range(-0.18, 0.18) * self.unit;
            let y = cy + rng.range(-0.08, 0.08) * self.unit;
            let span = self.unit * rng.range(0.012, 0.022);
            let lift = span * rng.range(0.25, 0.5);
            self.stroke(x - span, y - lift, x, y, ink, self.unit / 700.0);
            self.stroke(x, y, x + span, y - lift * 1.1, ink, self.unit / 700.0);
        }
    }

    /// An anti-aliased line of half-width `hw`.
    fn stroke(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: Rgb, hw: f32) {
        let (minx, maxx) = (x0.min(x1) - hw - 1.0, x0.max(x1) + hw + 1.0);
        let (miny, maxy) = (y0.min(y1) - hw - 1.0, y0.max(y1) + hw + 1.0);
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        for y in (miny.max(0.0) as usize)..(maxy.max(0.0) as usize).min(self.h) {
            for x in (minx.max(0.0) as usize)..(maxx.max(0.0) as usize).min(self.w) {
                let (px, py) = (x as f32 + 0.5 - x0, y as f32 + 0.5 - y0);
                let t = clamp01((px * dx + py * dy) / len2);
                let (ex, ey) = (px - dx * t, py - dy * t);
                let d = (ex * ex + ey * ey).sqrt();
                let cov = clamp01(hw + 0.5 - d);
                if cov > 0.0 {
                    self.canvas.blend(x, y, c, cov);
                }
            }
        }
    }

    // ------------------------------------------------------------------ land

    /// How much of a layer at `depth` (1 far … 0 near) disappears into the air.
    fn aerial(&self, depth: f32) -> f32 {
        clamp01(0.06 + depth * (0.32 + 0.38 * self.s.fog))
    }

    /// Towards the light: +1 when it is well to the right of `x`, -1 well to the left,
    /// easing in between (a hard switch under the sun draws a vertical seam).
    fn light_dir(&self, x: f32) -> f32 {
        match self.light {
            Some((lx, _)) => ((lx - x) / (self.w as f32 * 0.12)).clamp(-1.0, 1.0),
            None => 1.0,
        }
    }

    /// Fills a silhouette whose top edge is `top[x]` down to `bottom` (pixels), colouring
    /// each pixel with `shade(x, y, top, slope)`; the top edge is anti-aliased vertically.
    fn fill_profile(
        &mut self,
        top: &[f32],
        bottom: f32,
        shade: impl Fn(usize, usize, f32, f32) -> Rgb,
    ) {
        let bottom = bottom.min(self.h as f32) as usize;
        for x in 0..self.w {
            let t = top[x];
            let slope = top[(x + 1).min(self.w - 1)] - top[x.saturating_sub(1)];
            let y0 = t.floor().max(0.0) as usize;
            for y in y0..bottom {
                let cov = clamp01(y as f32 + 1.0 - t);
                if cov <= 0.0 {
                    continue;
                }
                let c = shade(x, y, t, slope);
                self.canvas.blend(x, y, c, cov);
            }
        }
    }

    fn mountains(&mut self) {
        let n = self.s.ridge_layers;
        let noise = Noise::new(self.s.layout_seed ^ 0x3A7);
        let gully = Noise::new(self.s.style_seed ^ 0x7E7);
        let pal = self.s.palette.clone();
        let snowy = self.has(Motif::Snow);
        let snowline = if snowy { 0.3 } else { 0.62 };
        let snow_c = mix([0.95, 0.96, 1.0], pal.light, 0.25);
        let unit = self.unit;
        let hz = self.hz;
        let night = self.night();
        // Rock texture: a coarse 2-D field (soft light and shadow on the faces), shared by
        // the layers and computed only where mountains can be (above the horizon).
        let tex = CoarseField::new(self.w, (hz as usize + 2).min(self.h), 3, |x, y| {
            gully.fbm2(x / unit * 10.0, y / unit * 6.0, 3)
        });
        for i in 0..n {
            let depth = 1.0 - i as f32 / n as f32; // 1 far … 1/n near
            let height = self.s.ridge_height * self.h as f32 * (0.5 + 0.5 * depth);
            let freq = 1.2 + i as f32 * 0.8;
            let off = self.layout.range(0.0, 100.0);
            let base = hz + unit * 0.004;
            let top: Vec<f32> = (0..self.w)
                .map(|x| {
                    let xf = x as f32 / unit * freq + off;
                    let r = noise.ridged1(xf, 6);
                    let broad = noise.fbm1(xf * 0.4 + 3.0, 2);
                    let shape = smoothstep(0.2, 0.9, r * 0.7 + broad * 0.45);
                    base - height * (0.1 + 0.9 * shape.powf(1.3))
                })
                .collect();
            // Slope of a smoothed ridge line: faces, not single-pixel jitter, catch the light.
            let span = 12usize;
            let slope: Vec<f32> = (0..self.w)
                .map(|x| {
                    let a = top[x.saturating_sub(span)];
                    let b = top[(x + span).min(self.w - 1)];
                    (b - a) / (2 * span) as f32
                })
                .collect();
            let haze_k = self.aerial(depth);
            let rock = pal.rock;
            let haze = pal.haze;
            let light = pal.light;
            let fog = self.s.fog;
            let dirs: Vec<f32> = (0..self.w).map(|x| self.light_dir(x as f32)).collect();
            let contrast = if night { 0.35 } else { 1.0 };
            let tex = &tex;
            let snow_line: Vec<f32> = (0..self.w)
                .map(|x| snowline + 0.1 * (noise.n1(x as f32 / unit * 9.0) - 0.5))
                .collect();
            // exp(-below / (0.45 height)) by whole pixel, looked up instead of computed.
            let fall_lut: Vec<f32> = (0..=self.h)
                .map(|b| (-(b as f32) / (height * 0.18)).exp())
                .collect();
            self.fill_profile(&top, base + 1.0, |x, y, t, _| {
                let below = (y as f32 - t).max(0.0);
                let g = tex.at(x, y);
                let fall = fall_lut[(below as usize).min(fall_lut.len() - 1)];
                // Lighting follows the ridge's slope near the crest and fades down the face.
                let face = slope[x] * dirs[x] * 0.9 * fall + (g - 0.5) * 0.6;
                let lit = clamp01(0.5 + face * contrast);
                let mut c = mix(
                    scale(rock, 0.6),
                    add(scale(rock, 1.1), scale(light, 0.2)),
                    lit,
                );
                let alt = (base - y as f32) / height;
                let line = snow_line[x] + 0.14 * (g - 0.5);
                if alt > line {
                    let sn = mix(scale(snow_c, 0.66), snow_c, lit);
                    c = mix(c, sn, smoothstep(line, line + 0.05, alt));
                }
                // Mist gathers in the valleys.
                // By altitude, not by depth below each column's crest: the latter draws
                // vertical streaks under a jagged ridge.
                let valley = smoothstep(base - height * 0.7, base, y as f32);
                let c = mix(c, haze, haze_k);
                mix(c, haze, valley * (0.2 + fog * 0.6))
            });
        }
    }

    fn hills(&mut self, water: bool) {
        let noise = Noise::new(self.s.layout_seed ^ 0x4111);
        let pal = self.s.palette.clone();
        let unit = self.unit;
        let layers: &[(f32, f32, f32)] = if water {
            // Only low far hills on the far shore.
            &[(0.0, 0.035, 1.0)]
        } else {
            &[(0.0, 0.09, 1.0), (0.07, 0.1, 0.55), (0.17, 0.12, 0.2)]
        };
        let grass_tex = Noise::new(self.s.style_seed ^ 0x6A55);
        let lit_land = add(scale(pal.land, 1.15), scale(pal.light, 0.1));
        // Grass texture (lower half only), on a 2-pixel grid.
        let grass = if water {
            None
        } else {
            Some(CoarseField::new(self.w, self.h, 2, |x, y| {
                if y < self.h as f32 * 0.48 {
                    0.5
                } else {
                    grass_tex.n2(x / unit * 70.0, y / unit * 30.0)
                }
            }))
        };
        for (i, &(drop, amp, depth)) in layers.iter().enumerate() {
            let off = self.layout.range(0.0, 100.0);
            let base = self.hz + drop * self.h as f32;
            let amp = amp * self.h as f32;
            let top: Vec<f32> = (0..self.w)
                .map(|x| {
                    let n = noise.fbm1(x as f32 / unit * (1.0 + i as f32 * 0.6) + off, 3);
                    base - amp * smoothstep(0.2, 0.85, n)
                })
                .collect();
            let bottom = match layers.get(i + 1) {
                _ if water => self.hz + 1.0,
                Some(&(next_drop, _, _)) => self.hz + next_drop * self.h as f32 + 2.0,
                None => self.h as f32,
            };
            let haze_k = self.aerial(depth) * if water { 1.0 } else { 0.8 };
            let haze = pal.haze;
            let span = 6usize;
            let slope: Vec<f32> = (0..self.w)
                .map(|x| {
                    (top[(x + span).min(self.w - 1)] - top[x.saturating_sub(span)])
                        / (2 * span) as f32
                })
                .collect();
            let dirs: Vec<f32> = (0..self.w).map(|x| self.light_dir(x as f32)).collect();
            let h = self.h as f32;
            let land = pal.land;
            let fall_lut: Vec<f32> = (0..=self.h)
                .map(|b| (-(b as f32) / (amp * 0.8)).exp())
                .collect();
            self.fill_profile(&top, bottom, |x, y, t, _| {
                let below = (y as f32 - t).max(0.0);
                let fall = fall_lut[(below as usize).min(fall_lut.len() - 1)];
                let facing = clamp01(0.5 + slope[x] * dirs[x] * 2.5 * (0.4 + 0.6 * fall));
                let mut c = mix(scale(land, 0.7), lit_land, facing);
                // Grass texture, stronger close by.
                let near = clamp01(y as f32 / h - 0.5) * 2.0;
                if let (true, Some(grass)) = (near > 0.0, grass.as_ref()) {
                    let g = grass.at(x, y);
                    c = scale(c, 0.97 - 0.06 * near + 0.12 * near * g);
                }
                mix(c, haze, haze_k * (0.6 + 0.4 * fall))
            });
        }
    }

    fn dunes(&mut self, water: bool) {
        let pal = self.s.palette.clone();
        let unit = self.unit;
        let noise = Noise::new(self.s.layout_seed ^ 0xD00E);
        let layers: &[(f32, f32, f32)] = if water {
            &[(0.0, 0.05, 1.0)]
        } else {
            &[(0.0, 0.06, 1.0), (0.08, 0.09, 0.6), (0.22, 0.13, 0.25)]
        };
        for (i, &(drop, amp, depth)) in layers.iter().enumerate() {
            let off = self.layout.range(0.0, 100.0);
            let freq = 2.2 - i as f32 * 0.45;
            let base = self.hz + drop * self.h as f32;
            let amp = amp * self.h as f32;
            // Dunes: skewed waves, gentle windward side and steep lee side.
            let top: Vec<f32> = (0..self.w)
                .map(|x| {
                    let u =
                        x as f32 / unit * freq + off + 0.4 * noise.n1(x as f32 / unit * 1.3 + off);
                    let f = u.fract();
                    let skew = if f < 0.7 { f / 0.7 } else { (1.0 - f) / 0.3 };
                    let crest = skew * skew * (3.0 - 2.0 * skew);
                    base - amp * (0.35 + 0.65 * crest * (0.6 + 0.4 * noise.n1(u * 0.5 + 7.0)))
                })
                .collect();
            let bottom = match layers.get(i + 1) {
                _ if water => self.hz + 1.0,
                Some(&(next_drop, _, _)) => self.hz + next_drop * self.h as f32 + 2.0,
                None => self.h as f32,
            };
            let haze_k = self.aerial(depth) * 0.8;
            let dirs: Vec<f32> = (0..self.w).map(|x| self.light_dir(x as f32)).collect();
            let h = self.h as f32;
            let light = pal.light;
            let sand = pal.sand;
            let haze = pal.haze;
            let fall_lut: Vec<f32> = (0..=self.h)
                .map(|b| (-(b as f32) / (amp * 0.5)).exp())
                .collect();
            self.fill_profile(&top, bottom, |x, y, t, slope| {
                let below = (y as f32 - t).max(0.0);
                // Crest light fades with depth below the crest; applied down the whole
                // column, a steep lee side would draw a hard vertical edge.
                let fall = fall_lut[(below as usize).min(fall_lut.len() - 1)];
                let soft = clamp01(0.5 + slope * dirs[x] * 2.0 * fall);
                let c = mix(
                    scale(sand, 0.66),
                    add(sand, scale(light, 0.1)),
                    0.25 + 0.75 * soft,
                );
                let ripple = ((y as f32 + x as f32 * 0.25) / unit * 160.0).sin();
                let near = clamp01(below / (h * 0.25));
                let c = scale(c, 1.0 + 0.035 * ripple * near);
                let deep = smoothstep(0.0, h * 0.5, below);
                mix(scale(c, 1.0 - 0.2 * deep), haze, haze_k * (1.0 - deep))
            });
        }
    }

    fn city(&mut self) {
        let pal = self.s.palette.clone();
        let mut rng = Rng::new(self.s.layout_seed ^ 0xC177);
        let unit = self.unit;
        let hz = self.hz;
        let lit_p = match self.s.time {
            TimeOfDay::Night => 0.42,
            TimeOfDay::Dusk => 0.28,
            TimeOfDay::Dawn => 0.12,
            TimeOfDay::Day => 0.0,
        };
        let centre = self.w as f32 * rng.range(0.3, 0.7);
        for (layer, depth) in [(0, 1.0f32), (1, 0.45)] {
            let body = mix(scale(pal.rock, 0.55), pal.haze, self.aerial(depth) * 0.9);
            let scale_h = if layer == 0 { 0.75 } else { 1.0 };
            let mut x = -rng.range(0.0, 0.05) * unit;
            while x < self.w as f32 {
                let bw = unit * rng.range(0.03, 0.075) * if layer == 0 { 0.8 } else { 1.0 };
                let dist = ((x - centre) / (self.w as f32 * 0.45)).abs();
                let envelope = (1.0 - dist * dist).max(0.15);
                let bh = self.h as f32
                    * scale_h
                    * (0.05 + 0.28 * envelope * rng.f32().powf(0.8) + 0.03 * rng.f32());
                let top = hz - bh;
                let shade = 0.85 + 0.3 * rng.f32();
                let c = scale(body, shade);
                self.rect(x, top, x + bw, hz + 1.0, c, 1.0);
                // Roofs: a spire or an antenna now and then.
                if rng.chance(0.12) {
                    let sw = bw * 0.3;
                    self.triangle(
                        [x + bw * 0.5 - sw, top],
                        [x + bw * 0.5 + sw, top],
                        [x + bw * 0.5, top - bw * 0.9],
                        c,
                    );
                } else if rng.chance(0.15) {
                    let ax = x + bw * rng.range(0.3, 0.7);
                    let ah = unit * rng.range(0.02, 0.06);
                    self.rect(ax, top - ah, ax + unit * 0.0025, top, c, 1.0);
                    if lit_p > 0.0 {
                        self.canvas
                            .glow_dot(ax, top - ah, unit * 0.003, [1.0, 0.2, 0.15], 0.9);
                    }
                }
                // Windows: lit at night, pale reflections of the sky by day.
                let (ww, wh) = (unit * 0.007, unit * 0.009);
                let (gx, gy) = (unit * 0.013, unit * 0.017);
                let cols = ((bw - gx * 0.5) / gx).floor().max(0.0) as usize;
                let rows = ((bh - gy) / gy).floor().max(0.0) as usize;
                let day_glass = mix(c, pal.sky_mid, 0.35);
                for r in 0..rows {
                    for q in 0..cols {
                        let wx = x + gx * 0.5 + q as f32 * gx;
                        let wy = top + gy * 0.8 + r as f32 * gy;
                        if lit_p > 0.0 {
                            if rng.chance(lit_p) {
                                let warm = mix(pal.accents[0], pal.accents[1], rng.f32());
                                let k = rng.range(0.55, 1.0) * (1.0 - depth * 0.35);
                                self.rect(wx, wy, wx + ww, wy + wh, warm, k);
                            }
                        } else if rng.chance(0.5) {
                            self.rect(wx, wy, wx + ww, wy + wh, day_glass, 0.6);
                        }
                    }
                }
                x += bw + unit * rng.range(0.0, 0.008);
            }
        }
    }

    /// An axis-aligned rectangle with anti-aliased edges.
    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: Rgb, a: f32) {
        let ys = y0.max(0.0).floor() as usize;
        let ye = (y1.ceil().max(0.0) as usize).min(self.h);
        let xs = x0.max(0.0).floor() as usize;
        let xe = (x1.ceil().max(0.0) as usize).min(self.w);
        for y in ys..ye {
            let cy = clamp01((y as f32 + 1.0).min(y1) - (y as f32).max(y0));
            for x in xs..xe {
                let cx = clamp01((x as f32 + 1.0).min(x1) - (x as f32).max(x0));
                let cov = cx * cy * a;
                if cov > 0.0 {
                    self.canvas.blend(x, y, c, cov);
                }
            }
        }
    }

    fn triangle(&mut self, a: [f32; 2], b: [f32; 2], c: [f32; 2], col: Rgb) {
        let minx = a[0].min(b[0]).min(c[0]).max(0.0) as usize;
        let maxx = (a[0].max(b[0]).max(c[0]).ceil().max(0.0) as usize + 1).min(self.w);
        let miny = a[1].min(b[1]).min(c[1]).max(0.0) as usize;
        let maxy = (a[1].max(b[1]).max(c[1]).ceil().max(0.0) as usize + 1).min(self.h);
        let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if area.abs() < 1e-3 {
            return;
        }
        let sign = area.signum();
        let edge = |p: [f32; 2], q: [f32; 2], x: f32, y: f32| {
            let (ex, ey) = (q[0] - p[0], q[1] - p[1]);
            let len = (ex * ex + ey * ey).sqrt().max(1e-6);
            sign * (ex * (y - p[1]) - ey * (x - p[0])) / len
        };
        for y in miny..maxy {
            for x in minx..maxx {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let d = edge(a, b, px, py)
                    .min(edge(b, c, px, py))
                    .min(edge(c, a, px, py));
                let cov = clamp01(d + 0.5);
                if cov > 0.0 {
                    self.canvas.blend(x, y, col, cov);
                }
            }
        }
    }

    fn forest(&mut self, water: bool) {
        let pal = self.s.palette.clone();
        let mut rng = Rng::new(self.s.layout_seed ^ 0xF0E5);
        let unit = self.unit;
        let pines = self.has(Motif::Snow) || self.has(Motif::Mountains) || self.style.chance(0.5);
        let hz = self.hz;
        let h = self.h as f32;
        // Rows: (baseline below the horizon as a fraction of h, tree height in units, depth).
        let rows: &[(f32, f32, f32)] = if water {
            &[(0.0, 0.05, 0.85), (0.004, 0.075, 0.6)]
        } else {
            &[(0.01, 0.06, 0.8), (0.08, 0.11, 0.5), (0.22, 0.2, 0.15)]
        };
        let snow = self.has(Motif::Snow);
        let ground_noise = Noise::new(self.s.layout_seed ^ 0x6E0);
        for (ri, &(drop, size, depth)) in rows.iter().enumerate() {
            let floor_bottom = rows
                .get(ri + 1)
                .map_or(h, |next| hz + next.0 * h + unit * 0.02);
            let col = mix(pal.foliage, pal.haze, self.aerial(depth) * 0.4);
            let lit = add(
                col,
                scale(pal.light, if self.night() { 0.02 } else { 0.07 }),
            );
            let base = hz + drop * h;
            // Forest floor under this row, so rows stack like real tree lines.
            if !water {
                let top: Vec<f32> = (0..self.w)
                    .map(|x| {
                        base - unit * 0.01 * ground_noise.n1(x as f32 / unit * 4.0 + drop * 50.0)
                    })
                    .collect();
                let floor = mix(scale(pal.land, 0.8), pal.haze, self.aerial(depth) * 0.3);
                let floor_noise = ground_noise;
                let tex = CoarseField::new(self.w, floor_bottom.min(h) as usize + 1, 3, |x, y| {
                    floor_noise.n2(x / unit * 40.0, y / unit * 20.0)
                });
                self.fill_profile(&top, floor_bottom, |x, y, _, _| {
                    scale(floor, 0.9 + 0.15 * tex.at(x, y))
                });
            }
            let mut x = -unit * 0.05;
            while x < self.w as f32 + unit * 0.05 {
                let th = unit * size * rng.range(0.7, 1.3);
                let tw = th
                    * if pines {
                        rng.range(0.32, 0.42)
                    } else {
                        rng.range(0.55, 0.8)
                    };
                let by = base + rng.range(-0.01, 0.012) * unit;
                let left_lit = self.light_dir(x) < 0.0;
                if pines {
                    self.pine(x, by, tw, th, col, lit, left_lit, snow);
                } else {
                    self.broadleaf(x, by, tw, th, col, lit, left_lit);
                }
                // Trees stand in clumps with clearings between them, sparser close by.
                x += tw
                    * if rng.chance(0.12 + 0.2 * (1.0 - depth)) {
                        rng.range(1.5, 4.0)
                    } else {
                        rng.range(0.35, 0.7)
                    };
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pine(
        &mut self,
        cx: f32,
        base: f32,
        w: f32,
        h: f32,
        c: Rgb,
        lit: Rgb,
        left_lit: bool,
        snow: bool,
    ) {
        let top = base - h;
        let tiers = 4.0 + (h / self.unit * 30.0).min(4.0);
        let ys = top.max(0.0) as usize;
        let ye = (base.ceil() as usize).min(self.h);
        let snow_c = mix(self.s.palette.land, [1.0; 3], 0.3);
        for y in ys..ye {
            let rel = (y as f32 + 0.5 - top) / h;
            let tier = (rel * tiers).fract();
            let half = w * 0.5 * (0.08 + 0.92 * rel) * (0.72 + 0.28 * tier);
            let trunk = rel > 0.93;
            let half = if trunk { w * 0.05 } else { half };
            let xs = (cx - half - 1.0).max(0.0) as usize;
            let xe = ((cx + half + 1.0).max(0.0) as usize).min(self.w);
            for x in xs..xe {
                let dx = x as f32 + 0.5 - cx;
                let cov = clamp01(half - dx.abs() + 0.5);
                if cov <= 0.0 {
                    continue;
                }
                let on_lit_side = (dx < 0.0) == left_lit;
                let mut col = if on_lit_side { lit } else { c };
                if snow && !trunk && tier < 0.14 && on_lit_side {
                    col = mix(col, snow_c, 0.6);
                }
                self.canvas.blend(x, y, col, cov);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn broadleaf(&mut self, cx: f32, base: f32, w: f32, h: f32, c: Rgb, lit: Rgb, left_lit: bool) {
        let trunk_h = h * 0.3;
        let trunk_c = scale(c, 0.7);
        self.rect(
            cx - w * 0.05,
            base - trunk_h,
            cx + w * 0.05,
            base,
            trunk_c,
            1.0,
        );
        let r = w * 0.5;
        let cy = base - trunk_h - r * 0.8;
        let side = if left_lit { -1.0 } else { 1.0 };
        self.canvas
            .disc(cx - r * 0.45, cy + r * 0.25, r * 0.7, c, 1.0);
        self.canvas
            .disc(cx + r * 0.45, cy + r * 0.2, r * 0.72, c, 1.0);
        self.canvas.disc(cx, cy - r * 0.2, r * 0.8, c, 1.0);
        self.canvas.disc(
            cx + side * r * 0.25,
            cy - r * 0.3,
            r * 0.45,
            mix(c, lit, 0.8),
            0.8,
        );
    }

    fn horizon_fog(&mut self) {
        // A thin veil of air on the horizon joins land and sky.
        let haze = self.s.palette.haze;
        let hz = self.hz;
        let spread = self.h as f32 * 0.035;
        let k = 0.35 + 0.3 * self.s.fog;
        let ys = (hz - spread * 3.0).max(0.0) as usize;
        let ye = ((hz + spread * 1.5) as usize).min(self.h);
        for y in ys..ye {
            let d = (y as f32 - hz) / spread;
            let a = k * (-d * d).exp();
            for x in 0..self.w {
                self.canvas.blend(x, y, haze, a);
            }
        }
    }

    fn water(&mut self) {
        let pal = self.s.palette.clone();
        let hz = self.hz as usize;
        if hz + 1 >= self.h {
            return;
        }
        let unit = self.unit;
        let noise = Noise::new(self.s.layout_seed ^ 0x3A7E);
        let depth_px = (self.h - hz) as f32;
        let glitter_c = mix(pal.light, pal.glow, 0.3);
        let lx = self.light.map(|(x, _)| x);
        let calm = if self.has(Motif::Fog) { 0.6 } else { 1.0 };
        // Perspective: wave rows are denser far away; z grows towards the horizon.
        let wave_at = |x: f32, y: f32| {
            let t = (y / depth_px).max(0.0);
            let z = 1.0 / (t + 0.04);
            noise.n2(x / unit * 2.5 * z.sqrt() * 2.0, z * 2.2)
        };
        // The broad swell is smooth: sampled on a 3-pixel grid (rows from the horizon).
        let swell = CoarseField::new(self.w, self.h - hz, 3, wave_at);
        // The ripples are fine only vertically (14-pixel period at 768): a 2-pixel grid.
        let ripple = CoarseField::new(self.w, self.h - hz, 2, |x, y| {
            let t = (y / depth_px).max(0.0);
            let z = 1.0 / (t + 0.04);
            noise.n2(x / unit * 5.0, (y + hz as f32) / unit * 55.0 + z * 3.0)
        });
        for y in hz..self.h {
            // 0 at the horizon, 1 at the bottom; waves grow towards the viewer.
            let t = (y - hz) as f32 / depth_px;
            let amp = unit * (0.002 + 0.03 * t) * calm;
            let fres = 0.18 + 0.5 * t * t;
            let src_y = hz as f32 - (y - hz) as f32 - 1.0;
            for x in 0..self.w {
                let wave = swell.at(x, y - hz);
                let fine = ripple.at(x, y - hz);
                let dx = (wave - 0.5) * 2.0 * amp + (fine - 0.5) * amp * 1.4;
                let sx = (x as f32 + dx).clamp(0.0, self.w as f32 - 1.0) as usize;
                let sy = (src_y + (fine - 0.5) * amp * 0.6).clamp(0.0, hz as f32 - 1.0) as usize;
                let refl = self.canvas.get(sx, sy);
                let mut c = mix(scale(refl, 0.82), pal.water, fres);
                // Crests catch the sky's light.
                let crest = smoothstep(0.62, 0.85, wave * 0.6 + fine * 0.4);
                c = add(c, scale(pal.sky_horizon, crest * 0.08 * (1.0 - t * 0.5)));
                if let Some(lx) = lx {
                    // A glittering path under the sun or moon, widening towards the viewer.
                    let width = unit * (0.03 + 0.16 * t);
                    let off = (x as f32 - lx) / width;
                    if off.abs() < 2.5 {
                        let g =
                            (-off * off).exp() * smoothstep(0.55, 0.8, fine * 0.55 + wave * 0.45);
                        c = add(c, scale(glitter_c, g * 0.8));
                    }
                }
                self.canvas.px[y * self.w + x] = c;
            }
        }
    }

    fn boat(&mut self) {
        let mut rng = Rng::new(self.s.layout_seed ^ 0xB0A7);
        let x = self.w as f32 * rng.range(0.2, 0.8);
        let y = self.hz + (self.h as f32 - self.hz) * rng.range(0.25, 0.5);
        let s = self.unit * rng.range(0.05, 0.08);
        let ink = scale(self.s.palette.foliage, 0.6);
        let sail = mix(self.s.palette.light, self.s.palette.haze, 0.4);
        self.triangle(
            [x - s * 0.6, y],
            [x + s * 0.6, y],
            [x + s * 0.45, y + s * 0.18],
            ink,
        );
        self.triangle(
            [x - s * 0.6, y],
            [x - s * 0.45, y + s * 0.18],
            [x + s * 0.45, y + s * 0.18],
            ink,
        );
        self.triangle(
            [x - s * 0.02, y - s * 0.02],
            [x - s * 0.02, y - s * 1.1],
            [x - s * 0.5, y - s * 0.05],
            sail,
        );
        self.triangle(
            [x + s * 0.04, y - s * 0.02],
            [x + s * 0.04, y - s * 0.85],
            [x + s * 0.42, y - s * 0.05],
            scale(sail, 0.85),
        );
        // Its reflection, broken by the water.
        self.rect(
            x - s * 0.45,
            y + s * 0.2,
            x + s * 0.45,
            y + s * 0.3,
            scale(ink, 0.8),
            0.35,
        );
    }

    fn flowers(&mut self) {
        let pal = self.s.palette.clone();
        let mut rng = Rng::new(self.s.layout_seed ^ 0xF10);
        let hz = self.hz;
        let h = self.h as f32;
        let area = self.w as f32 * (h - hz);
        let n = (area / (self.unit * self.unit) * 900.0) as usize;
        let stem = scale(pal.foliage, 0.9);
        // Far to near so near flowers overlap far ones.
        let mut ys: Vec<f32> = (0..n).map(|_| rng.f32().powf(0.6)).collect();
        ys.sort_by(f32::total_cmp);
        for t in ys {
            let y = hz + (h - hz) * (0.12 + 0.88 * t);
            let x = rng.f32() * self.w as f32;
            let size = self.unit * (0.002 + 0.012 * t * t) * rng.range(0.7, 1.3);
            let c = *rng.pick(&pal.accents);
            let c = mix(c, pal.haze, (1.0 - t) * 0.45);
            if size > 2.0 {
                self.stroke(
                    x,
                    y,
                    x + rng.range(-0.3, 0.3) * size,
                    y + size * 2.5,
                    stem,
                    size * 0.12,
                );
                for k in 0..5 {
                    let a = k as f32 / 5.0 * std::f32::consts::TAU + rng.f32();
                    let (s, co) = a.sin_cos();
                    self.canvas.disc(
                        x + co * size * 0.55,
                        y + s * size * 0.55,
                        size * 0.45,
                        c,
                        0.95,
                    );
                }
                self.canvas.disc(x, y, size * 0.28, pal.accents[1], 1.0);
            } else {
                self.canvas.disc(x, y, size.max(0.6), c, 0.9);
            }
        }
    }

    fn fog_banks(&mut self) {
        let noise = Noise::new(self.s.style_seed ^ 0xF06);
        let unit = self.unit;
        let fog_c = mix(self.s.palette.haze, self.s.palette.sky_horizon, 0.4);
        let hz = self.hz;
        let h = self.h as f32;
        let field = CoarseField::new(self.w, self.h, 6, |x, y| {
            noise.fbm2(x / unit * 1.5, y / unit * 7.0, 3)
        });
        let ys = (hz - h * 0.3).max(0.0) as usize;
        let ye = ((hz + h * 0.3) as usize).min(self.h);
        for y in ys..ye {
            let d = (y as f32 - hz) / (h * 0.12);
            let band = (-d * d).exp() * 0.85;
            for x in 0..self.w {
                let a = band * smoothstep(0.3, 0.75, field.at(x, y)) * self.s.fog;
                if a > 0.003 {
                    self.canvas.blend(x, y, fog_c, a.min(0.85));
                }
            }
        }
    }

    fn snowfall(&mut self) {
        let mut rng = Rng::new(self.s.layout_seed ^ 0x5A0F);
        let n = (self.w * self.h) / 900;
        let flake = mix([1.0; 3], self.s.palette.sky_horizon, 0.15);
        for _ in 0..n {
            let x = rng.f32() * self.w as f32;
            let y = rng.f32() * self.h as f32;
            let near = rng.f32().powi(5);
            let r = self.unit * (0.0012 + 0.006 * near);
            self.canvas
                .glow_dot(x, y, r, flake, 0.35 + 0.25 * (1.0 - near));
        }
    }

    // ------------------------------------------------------------------ abstract

    fn abstract_composition(&mut self) {
        let pal = self.s.palette.clone();
        let mut rng = Rng::new(self.s.layout_seed ^ 0xAB57);
        // A diagonal gradient ground.
        let (a, b) = (
            mix(pal.sky_top, pal.haze, 0.2),
            mix(pal.sky_horizon, pal.sand, 0.3),
        );
        let angle = self.style.range(0.0, std::f32::consts::TAU);
        let (dy, dx) = angle.sin_cos();
        for y in 0..self.h {
            for x in 0..self.w {
                let u =
                    (x as f32 / self.w as f32 - 0.5) * dx + (y as f32 / self.h as f32 - 0.5) * dy;
                self.canvas.px[y * self.w + x] = mix(a, b, smoothstep(-0.6, 0.6, u));
            }
        }
        let colours = [
            pal.accents[0],
            pal.accents[1],
            pal.accents[2],
            pal.accents[3],
            pal.sky_mid,
            scale(pal.rock, 0.8),
            pal.light,
        ];
        let n = 7 + (rng.next_u64() % 7) as usize;
        let unit = self.unit;
        // Anchors on a loose rule-of-thirds grid keep it composed rather than scattered.
        let thirds = [1.0 / 3.0, 0.5, 2.0 / 3.0];
        let shadow = scale(pal.rock, 0.3);
        for i in 0..n {
            let cx = self.w as f32 * (rng.pick(&thirds) + rng.range(-0.22, 0.22));
            let cy = self.h as f32 * (rng.pick(&thirds) + rng.range(-0.22, 0.22));
            let size = unit * rng.range(0.08, 0.3) * if i == 0 { 1.6 } else { 1.0 };
            let c = *rng.pick(&colours);
            let alpha = rng.range(0.7, 0.95);
            let off = unit * 0.012;
            match rng.next_u64() % 4 {
                0 => {
                    self.canvas.disc(cx + off, cy + off, size, shadow, 0.25);
                    self.canvas.disc(cx, cy, size, c, alpha);
                }
                1 => {
                    let (w2, h2) = (size * rng.range(0.5, 1.2), size * rng.range(0.5, 1.2));
                    self.rect(
                        cx - w2 + off,
                        cy - h2 + off,
                        cx + w2 + off,
                        cy + h2 + off,
                        shadow,
                        0.25,
                    );
                    self.rect(cx - w2, cy - h2, cx + w2, cy + h2, c, alpha);
                }
                2 => {
                    let r = size * 1.2;
                    let rot = rng.range(0.0, std::f32::consts::TAU);
                    let pts: Vec<[f32; 2]> = (0..3)
                        .map(|k| {
                            let a = rot + k as f32 * std::f32::consts::TAU / 3.0;
                            [cx + a.cos() * r, cy + a.sin() * r]
                        })
                        .collect();
                    self.triangle(pts[0], pts[1], pts[2], c);
                }
                _ => {
                    // A ring.
                    let inner = size * rng.range(0.55, 0.8);
                    let ring_bg = self.canvas.get(
                        (cx.max(0.0) as usize).min(self.w - 1),
                        (cy.max(0.0) as usize).min(self.h - 1),
                    );
                    self.canvas.disc(cx, cy, size, c, alpha);
                    self.canvas.disc(cx, cy, inner, ring_bg, alpha);
                }
            }
        }
        // A few fine parallel lines across the composition, at one angle.
        let rise = rng.range(-0.35, 0.35) * self.h as f32;
        let start = rng.range(0.2, 0.6) * self.h as f32;
        let gap = unit * rng.range(0.02, 0.05);
        let ink = scale(pal.rock, 0.5);
        for k in 0..3 {
            let y0 = start + k as f32 * gap;
            self.stroke(0.0, y0, self.w as f32, y0 + rise, ink, unit * 0.0015);
        }
        if self.has(Motif::Sun) || self.has(Motif::Moon) {
            if let Some((lx, ly)) = self.light {
                self.canvas.disc(lx, ly, unit * 0.1, pal.light, 0.9);
            }
        }
    }
}
