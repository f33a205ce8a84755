//! From words to a scene: which motifs, which light, which palette, where the horizon is.
//!
//! Known words (in several forms: "mountain", "mountains", "peaks"…) switch motifs on or set
//! the time of day and colour; words in the negative prompt switch motifs off. Every other
//! word still counts: its hash shifts the palette's hue and moves the composition, so two
//! prompts never look alike by accident. The seed varies placement (where the peaks and
//! trees are), not what the picture is of.

use super::canvas::{hash_str, hex, hue_rotate, mix, mix64, saturate, Rgb, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOfDay {
    Dawn,
    Day,
    Dusk,
    Night,
}

/// Things a word can put into (or, in the negative prompt, take out of) the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motif {
    Sun,
    Moon,
    Stars,
    Clouds,
    Water,
    Mountains,
    Hills,
    Forest,
    City,
    Desert,
    Snow,
    Fog,
    Flowers,
    Abstract,
    Aurora,
    Birds,
    Boat,
}

#[cfg(test)]
const MOTIF_COUNT: usize = 17;

impl Motif {
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of motifs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Motifs(u32);

impl Motifs {
    pub fn has(self, m: Motif) -> bool {
        self.0 & m.bit() != 0
    }
    pub fn insert(&mut self, m: Motif) {
        self.0 |= m.bit();
    }
    pub fn remove(&mut self, m: Motif) {
        self.0 &= !m.bit();
    }
    fn remove_all(&mut self, other: Motifs) {
        self.0 &= !other.0;
    }
    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

enum Word {
    Motif(Motif),
    Time(TimeOfDay),
    /// A colour word: the picture's accent hue in degrees (0 red, 120 green, 240 blue).
    Hue(f32),
    Mood(Mood),
}

#[derive(Clone, Copy)]
enum Mood {
    Vivid,
    Muted,
    Dark,
    Bright,
}

/// The vocabulary. Lower-case, matched against whole words of the prompt.
fn lookup(word: &str) -> Option<Word> {
    use Motif::*;
    use Word::Motif as M;
    Some(match word {
        "sun" | "sunny" | "sunshine" | "sunlight" | "sunlit" => M(Sun),
        "moon" | "moonlight" | "moonlit" | "lunar" | "crescent" => M(Moon),
        "star" | "stars" | "starry" | "starlight" | "galaxy" | "milky" | "cosmos" => M(Stars),
        "cloud" | "clouds" | "cloudy" | "storm" | "stormy" | "overcast" | "sky" => M(Clouds),
        "ocean" | "sea" | "seas" | "lake" | "lakes" | "river" | "water" | "beach" | "bay"
        | "pond" | "coast" | "shore" | "harbor" | "harbour" | "waves" | "reflection"
        | "reflections" | "lagoon" => M(Water),
        "mountain" | "mountains" | "peak" | "peaks" | "alps" | "alpine" | "summit" | "volcano"
        | "ridge" | "ridges" | "cliffs" | "canyon" => M(Mountains),
        "hill" | "hills" | "valley" | "countryside" | "meadow" | "meadows" | "field" | "fields"
        | "prairie" | "landscape" => M(Hills),
        "forest" | "forests" | "tree" | "trees" | "woods" | "woodland" | "pine" | "pines"
        | "jungle" | "grove" | "taiga" => M(Forest),
        "city" | "cities" | "skyline" | "town" | "buildings" | "building" | "skyscraper"
        | "skyscrapers" | "urban" | "metropolis" | "downtown" | "cyberpunk" | "street" => M(City),
        "desert" | "deserts" | "dune" | "dunes" | "sand" | "sahara" | "arid" | "oasis" => M(Desert),
        "snow" | "snowy" | "winter" | "ice" | "icy" | "frozen" | "frost" | "snowfall"
        | "arctic" | "glacier" => M(Snow),
        "fog" | "foggy" | "mist" | "misty" | "haze" | "hazy" | "smoke" => M(Fog),
        "flower" | "flowers" | "floral" | "blossom" | "blossoms" | "garden" | "tulip"
        | "tulips" | "rose" | "roses" | "poppy" | "poppies" | "bloom" | "lavender" => M(Flowers),
        "abstract" | "geometric" | "geometry" | "shapes" | "pattern" | "cubism" | "bauhaus"
        | "minimalist" | "circles" | "triangles" => M(Abstract),
        "aurora" | "borealis" | "auroras" => M(Aurora),
        "bird" | "birds" | "gull" | "gulls" | "seagull" | "seagulls" | "flock" => M(Birds),
        "boat" | "boats" | "sail" | "sailboat" | "ship" | "yacht" => M(Boat),

        "dawn" | "sunrise" | "morning" | "daybreak" => Word::Time(TimeOfDay::Dawn),
        "day" | "noon" | "midday" | "daylight" | "afternoon" | "summer" => {
            Word::Time(TimeOfDay::Day)
        }
        "dusk" | "sunset" | "evening" | "twilight" | "golden" | "sundown" => {
            Word::Time(TimeOfDay::Dusk)
        }
        "night" | "midnight" | "nighttime" | "nocturnal" => Word::Time(TimeOfDay::Night),

        "red" | "crimson" | "scarlet" => Word::Hue(0.0),
        "orange" | "amber" | "copper" => Word::Hue(28.0),
        "gold" | "yellow" => Word::Hue(48.0),
        "green" | "emerald" | "lush" => Word::Hue(125.0),
        "teal" | "turquoise" | "cyan" => Word::Hue(178.0),
        "blue" | "azure" | "sapphire" => Word::Hue(220.0),
        "purple" | "violet" | "indigo" => Word::Hue(270.0),
        "pink" | "magenta" | "rose-colored" => Word::Hue(325.0),

        "vivid" | "vibrant" | "neon" | "colorful" | "colourful" | "saturated" => {
            Word::Mood(Mood::Vivid)
        }
        "pastel" | "muted" | "faded" | "soft" | "calm" | "serene" | "vintage" => {
            Word::Mood(Mood::Muted)
        }
        "dark" | "moody" | "gloomy" | "ominous" | "gothic" => Word::Mood(Mood::Dark),
        "bright" | "light" | "airy" | "cheerful" | "radiant" => Word::Mood(Mood::Bright),
        _ => return None,
    })
}

/// Motifs a word would bring: in a negative prompt these are taken out (time-of-day words
/// in a negative prompt rule that time out, e.g. "no night").
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches('-').to_lowercase())
        .filter(|w| !w.is_empty())
}

/// The colours of the picture. Sky gradient top → middle → horizon, the light source,
/// the air (haze), land, water, and accents for flowers, windows and shapes.
#[derive(Debug, Clone)]
pub struct Palette {
    pub sky_top: Rgb,
    pub sky_mid: Rgb,
    pub sky_horizon: Rgb,
    pub light: Rgb,
    pub glow: Rgb,
    pub haze: Rgb,
    pub rock: Rgb,
    pub land: Rgb,
    pub foliage: Rgb,
    pub water: Rgb,
    pub sand: Rgb,
    pub cloud_lit: Rgb,
    pub cloud_shade: Rgb,
    pub accents: [Rgb; 4],
    /// Overall light level: 1 by day, low at night (windows and stars stand out).
    pub exposure: f32,
}

fn base_palette(time: TimeOfDay) -> Palette {
    match time {
        TimeOfDay::Day => Palette {
            sky_top: hex(0x2a64ad),
            sky_mid: hex(0x5f9bd6),
            sky_horizon: hex(0xcfe2ef),
            light: hex(0xfff8e6),
            glow: hex(0xfff1c9),
            haze: hex(0xb4cde0),
            rock: hex(0x5d6d80),
            land: hex(0x5b8a3c),
            foliage: hex(0x2f5a2a),
            water: hex(0x2a6690),
            sand: hex(0xe2c48f),
            cloud_lit: hex(0xffffff),
            cloud_shade: hex(0xa9b6c8),
            accents: [hex(0xe8505b), hex(0xf9d56e), hex(0xf3ecc2), hex(0x9b5de5)],
            exposure: 1.0,
        },
        TimeOfDay::Dawn => Palette {
            sky_top: hex(0x34457e),
            sky_mid: hex(0xb58bb0),
            sky_horizon: hex(0xffd3a5),
            light: hex(0xfff0d0),
            glow: hex(0xffc48a),
            haze: hex(0xdcb4b4),
            rock: hex(0x5b5470),
            land: hex(0x56653f),
            foliage: hex(0x2c3b2c),
            water: hex(0x4a5a88),
            sand: hex(0xe7b98f),
            cloud_lit: hex(0xffd9c2),
            cloud_shade: hex(0x8a7196),
            accents: [hex(0xff7b9c), hex(0xffd166), hex(0xfff1e6), hex(0xb388eb)],
            exposure: 0.92,
        },
        TimeOfDay::Dusk => Palette {
            sky_top: hex(0x1b2553),
            sky_mid: hex(0x874a7e),
            sky_horizon: hex(0xff9548),
            light: hex(0xffe7a8),
            glow: hex(0xff7b36),
            haze: hex(0xc0746a),
            rock: hex(0x3a2d48),
            land: hex(0x3b3231),
            foliage: hex(0x1d1a24),
            water: hex(0x2b2444),
            sand: hex(0xd98a55),
            cloud_lit: hex(0xffb07a),
            cloud_shade: hex(0x5b3960),
            accents: [hex(0xff5e5b), hex(0xffbe0b), hex(0xffe8d6), hex(0x8338ec)],
            exposure: 0.8,
        },
        TimeOfDay::Night => Palette {
            sky_top: hex(0x03060f),
            sky_mid: hex(0x0a1631),
            sky_horizon: hex(0x1f3559),
            light: hex(0xf2f5ff),
            glow: hex(0x9fb8e8),
            haze: hex(0x1d2c48),
            rock: hex(0x101a2c),
            land: hex(0x0d1520),
            foliage: hex(0x060b12),
            water: hex(0x06101f),
            sand: hex(0x2c2a33),
            cloud_lit: hex(0x52627e),
            cloud_shade: hex(0x141c2e),
            accents: [hex(0xffc46b), hex(0xfff3c4), hex(0x8ec5ff), hex(0xff8fab)],
            exposure: 0.45,
        },
    }
}

/// Where things are. Fractions of the image height/width unless noted.
#[derive(Debug, Clone)]
pub struct Scene {
    pub time: TimeOfDay,
    pub motifs: Motifs,
    pub palette: Palette,
    /// Where sky meets land or water, as a fraction of the height.
    pub horizon: f32,
    /// The light source's horizontal position (0 left … 1 right).
    pub light_x: f32,
    /// Its height above the horizon, as a fraction of the sky's height.
    pub light_elevation: f32,
    pub cloud_cover: f32,
    pub fog: f32,
    /// Number of mountain ridge layers (when mountains are in the picture).
    pub ridge_layers: u32,
    pub ridge_height: f32,
    /// Seeds for placement: hash of the prompt mixed with the seed.
    pub layout_seed: u64,
    /// Seeds for the prompt's own look: the same for every seed.
    pub style_seed: u64,
}

impl Scene {
    pub fn from_prompt(prompt: &str, negative: Option<&str>, seed: u32) -> Scene {
        let mut wanted = Motifs::default();
        let mut times: Vec<TimeOfDay> = Vec::new();
        let mut hues: Vec<f32> = Vec::new();
        let mut vivid = 0.0f32;
        let mut dark = 0.0f32;
        let mut unknown: u64 = 0;
        let mut unknown_count = 0u32;
        for (i, w) in words(prompt).enumerate() {
            match lookup(&w) {
                Some(Word::Motif(m)) => wanted.insert(m),
                Some(Word::Time(t)) => times.push(t),
                Some(Word::Hue(h)) => hues.push(h),
                Some(Word::Mood(m)) => match m {
                    Mood::Vivid => vivid += 0.25,
                    Mood::Muted => vivid -= 0.22,
                    Mood::Dark => dark += 0.25,
                    Mood::Bright => dark -= 0.2,
                },
                None => {
                    // Order matters a little ("red house" ≠ "house red"), like in a sentence.
                    unknown ^= mix64(hash_str(&w).wrapping_add(i as u64));
                    unknown_count += 1;
                }
            }
        }

        let mut banned = Motifs::default();
        let mut banned_times: Vec<TimeOfDay> = Vec::new();
        for w in negative.map(words).into_iter().flatten() {
            match lookup(&w) {
                Some(Word::Motif(m)) => banned.insert(m),
                Some(Word::Time(t)) => banned_times.push(t),
                _ => {}
            }
        }

        let prompt_hash = hash_str(&prompt.to_lowercase());
        let style_seed = mix64(prompt_hash ^ unknown);
        let mut style = Rng::new(style_seed);
        let layout_seed = mix64(style_seed ^ u64::from(seed).wrapping_mul(0xA24B_AED4_963E_E407));
        let mut layout = Rng::new(layout_seed);

        // Time of day: the last time word wins ("from dawn till dusk" ends at dusk); else the
        // motifs suggest one (stars, moon, aurora → night); else the prompt's hash picks.
        let mut time = times
            .iter()
            .rev()
            .copied()
            .find(|t| !banned_times.contains(t));
        if time.is_none() {
            time = if (wanted.has(Motif::Stars) || wanted.has(Motif::Aurora))
                && !wanted.has(Motif::Sun)
            {
                Some(TimeOfDay::Night)
            } else if wanted.has(Motif::Moon) && !wanted.has(Motif::Sun) {
                Some(*style.pick(&[TimeOfDay::Night, TimeOfDay::Night, TimeOfDay::Dusk]))
            } else {
                None
            };
        }
        let time = time.unwrap_or_else(|| {
            let options: Vec<TimeOfDay> = [
                TimeOfDay::Day,
                TimeOfDay::Dusk,
                TimeOfDay::Day,
                TimeOfDay::Dawn,
                TimeOfDay::Night,
            ]
            .into_iter()
            .filter(|t| !banned_times.contains(t))
            // Someone who asks for the sun does not want the night.
            .filter(|t| !(wanted.has(Motif::Sun) && *t == TimeOfDay::Night))
            .collect();
            if options.is_empty() {
                TimeOfDay::Day
            } else {
                *style.pick(&options)
            }
        });

        let mut motifs = wanted;
        // A picture needs a place. No landscape word → the prompt's hash picks one.
        let landscape = [
            Motif::Water,
            Motif::Mountains,
            Motif::Hills,
            Motif::Forest,
            Motif::City,
            Motif::Desert,
            Motif::Abstract,
        ];
        if !landscape.iter().any(|m| motifs.has(*m)) {
            let choices: [&[Motif]; 6] = [
                &[Motif::Mountains, Motif::Water],
                &[Motif::Hills, Motif::Forest],
                &[Motif::Water, Motif::Clouds],
                &[Motif::Mountains, Motif::Forest],
                &[Motif::Hills, Motif::Flowers],
                &[Motif::Mountains, Motif::Hills],
            ];
            for m in *style.pick(&choices) {
                motifs.insert(*m);
            }
        }
        // Light sources and sky details that go with the time of day.
        match time {
            TimeOfDay::Night => {
                motifs.insert(Motif::Stars);
                if !motifs.has(Motif::Sun) && style.chance(0.7) {
                    motifs.insert(Motif::Moon);
                }
                motifs.remove(Motif::Sun);
            }
            TimeOfDay::Dusk | TimeOfDay::Dawn => {
                if !motifs.has(Motif::Moon) {
                    motifs.insert(Motif::Sun);
                }
            }
            TimeOfDay::Day => {
                if !motifs.has(Motif::Moon) && style.chance(0.8) {
                    motifs.insert(Motif::Sun);
                }
                if style.chance(0.6) {
                    motifs.insert(Motif::Clouds);
                }
            }
        }
        if motifs.has(Motif::Snow) && !motifs.has(Motif::Desert) && !motifs.has(Motif::City) {
            motifs.insert(Motif::Mountains);
        }
        motifs.remove_all(banned);
        if motifs.is_empty() {
            // Everything was banned: a quiet sky over hills is still a picture.
            motifs.insert(Motif::Hills);
            motifs.remove_all(banned);
        }

        // Palette: the time of day's, then the prompt's own hue shift (unknown words), then
        // colour words pull towards their hue, then mood.
        let mut palette = base_palette(time);
        let shift = if unknown_count > 0 {
            style.range(-28.0, 28.0)
        } else {
            style.range(-8.0, 8.0)
        };
        // Hues are not averaged (teal + orange is not green): the first colour word tints
        // the sky and land, and the accents take each colour word in turn.
        let target_hue = hues.first().copied();
        let sat = 1.0 + vivid.clamp(-0.6, 0.6);
        let bright = 1.0 - dark.clamp(-0.35, 0.5);
        palette = palette.map(|c, role| {
            let mut c = hue_rotate(c, shift);
            if let Some(h) = target_hue {
                let tinted = tint_towards(c, h);
                // Skies and accents take the colour word strongly, land less.
                let k = match role {
                    Role::Sky => 0.45,
                    Role::Accent => 0.75,
                    Role::Light => 0.3,
                    Role::Land => 0.25,
                };
                c = mix(c, tinted, k);
            }
            let c = saturate(c, sat);
            [
                (c[0] * bright).max(0.0),
                (c[1] * bright).max(0.0),
                (c[2] * bright).max(0.0),
            ]
        });
        if hues.len() > 1 {
            for (i, a) in palette.accents.iter_mut().enumerate() {
                *a = saturate(tint_towards(*a, hues[i % hues.len()]), 1.6);
            }
        }
        if motifs.has(Motif::Snow) {
            palette.land = mix(
                palette.land,
                scale_light(hex(0xeef3fa), palette.exposure),
                0.85,
            );
            palette.rock = mix(palette.rock, palette.haze, 0.25);
            palette.foliage = mix(palette.foliage, hex(0x1d2f2a), 0.4);
        }
        if motifs.has(Motif::Desert) {
            palette.land = palette.sand;
            palette.haze = mix(palette.haze, palette.sand, 0.35);
        }

        let horizon = if motifs.has(Motif::Abstract) {
            0.5
        } else {
            let base = if motifs.has(Motif::Mountains) {
                0.6
            } else {
                0.62
            };
            base + style.range(-0.08, 0.08) + layout.range(-0.03, 0.03)
        };
        let light_x = style.range(0.2, 0.8) + layout.range(-0.08, 0.08);
        let light_elevation = match time {
            TimeOfDay::Dusk | TimeOfDay::Dawn => style.range(0.08, 0.26),
            TimeOfDay::Day => style.range(0.45, 0.75),
            TimeOfDay::Night => style.range(0.45, 0.75),
        };
        let cloud_cover = if motifs.has(Motif::Clouds) {
            style.range(0.35, 0.6)
        } else if time == TimeOfDay::Night {
            style.range(0.0, 0.12)
        } else {
            style.range(0.05, 0.22)
        };
        let fog = if motifs.has(Motif::Fog) {
            0.75
        } else {
            style.range(0.1, 0.3)
        };
        Scene {
            time,
            motifs,
            palette,
            horizon: horizon.clamp(0.45, 0.72),
            light_x: light_x.clamp(0.12, 0.88),
            light_elevation,
            cloud_cover,
            fog,
            ridge_layers: 2 + (style.next_u64() % 3) as u32,
            ridge_height: style.range(0.2, 0.34),
            layout_seed,
            style_seed,
        }
    }
}

fn scale_light(c: Rgb, exposure: f32) -> Rgb {
    let k = 0.35 + 0.65 * exposure;
    [c[0] * k, c[1] * k, c[2] * k]
}

#[derive(Clone, Copy)]
enum Role {
    Sky,
    Light,
    Land,
    Accent,
}

impl Palette {
    fn map(self, f: impl Fn(Rgb, Role) -> Rgb) -> Palette {
        Palette {
            sky_top: f(self.sky_top, Role::Sky),
            sky_mid: f(self.sky_mid, Role::Sky),
            sky_horizon: f(self.sky_horizon, Role::Sky),
            light: f(self.light, Role::Light),
            glow: f(self.glow, Role::Light),
            haze: f(self.haze, Role::Sky),
            rock: f(self.rock, Role::Land),
            land: f(self.land, Role::Land),
            foliage: f(self.foliage, Role::Land),
            water: f(self.water, Role::Sky),
            sand: f(self.sand, Role::Land),
            cloud_lit: f(self.cloud_lit, Role::Light),
            cloud_shade: f(self.cloud_shade, Role::Sky),
            accents: self.accents.map(|c| f(c, Role::Accent)),
            exposure: self.exposure,
        }
    }
}

/// The colour with its hue replaced by `hue` (degrees), keeping lightness and roughly its
/// saturation.
fn tint_towards(c: Rgb, hue: f32) -> Rgb {
    let max = c[0].max(c[1]).max(c[2]);
    let min = c[0].min(c[1]).min(c[2]);
    let l = (max + min) / 2.0;
    let s = (max - min).max(0.18);
    let h = hue.rem_euclid(360.0) / 60.0;
    let x = 1.0 - ((h % 2.0) - 1.0).abs();
    let (r, g, b) = match h as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    let base = [r, g, b];
    [
        l + (base[0] - 0.5) * s,
        l + (base[1] - 0.5) * s,
        l + (base[2] - 0.5) * s,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(p: &str) -> Scene {
        Scene::from_prompt(p, None, 7)
    }

    #[test]
    fn words_bring_their_motifs() {
        let s = scene("a misty mountain lake with a pine forest at dusk");
        for m in [
            Motif::Mountains,
            Motif::Water,
            Motif::Forest,
            Motif::Fog,
            Motif::Sun,
        ] {
            assert!(s.motifs.has(m), "{m:?}");
        }
        assert_eq!(s.time, TimeOfDay::Dusk);
    }

    #[test]
    fn night_brings_stars_and_takes_the_sun_away() {
        let s = scene("city skyline at night");
        assert_eq!(s.time, TimeOfDay::Night);
        assert!(s.motifs.has(Motif::Stars));
        assert!(s.motifs.has(Motif::City));
        assert!(!s.motifs.has(Motif::Sun));
    }

    #[test]
    fn negative_words_suppress_motifs_and_times() {
        let s = Scene::from_prompt("ocean at night with stars", Some("stars, moon"), 1);
        assert!(!s.motifs.has(Motif::Stars));
        assert!(!s.motifs.has(Motif::Moon));
        assert!(s.motifs.has(Motif::Water));
        let s = Scene::from_prompt("a cat", Some("night, dusk, dawn"), 1);
        assert_eq!(s.time, TimeOfDay::Day);
    }

    #[test]
    fn a_prompt_without_known_words_still_gets_a_landscape_and_its_own_palette() {
        let a = scene("portrait of my grandmother's cat");
        let b = scene("quarterly revenue report");
        assert!(!a.motifs.is_empty() && !b.motifs.is_empty());
        assert!(a.palette.sky_top != b.palette.sky_top || a.motifs != b.motifs);
    }

    #[test]
    fn the_seed_moves_things_but_not_what_the_picture_is_of() {
        let a = Scene::from_prompt("mountain lake at dawn", None, 1);
        let b = Scene::from_prompt("mountain lake at dawn", None, 2);
        assert_eq!(a.motifs, b.motifs);
        assert_eq!(a.time, b.time);
        assert_eq!(a.style_seed, b.style_seed);
        assert_ne!(a.layout_seed, b.layout_seed);
    }

    #[test]
    fn colour_words_pull_the_sky_towards_their_hue() {
        let plain = scene("desert dunes");
        let red = scene("red desert dunes");
        let blue = scene("blue desert dunes");
        let redness = |c: Rgb| c[0] - c[2];
        assert!(redness(red.palette.sky_mid) > redness(blue.palette.sky_mid));
        assert_ne!(plain.palette.sky_mid, red.palette.sky_mid);
    }

    #[test]
    fn there_are_no_more_motifs_than_bits() {
        const { assert!(MOTIF_COUNT <= 32) };
        assert_eq!(Motif::Boat as usize + 1, MOTIF_COUNT);
    }
}
