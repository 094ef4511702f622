//! Fitting the [`Model`]: deterministic, reproducible.
//!
//! One-vs-rest logistic regression per head, fitted by AdaGrad over the
//! hashed features of [`features`], samples visited
//! in an order shuffled by a fixed seed. No threads, no clock, no random
//! state from outside: the same samples, in the same order, with the same
//! [`TrainConfig`] give the same model bytes. The weights are then
//! quantised to 16 bits per head (the scale is stored with the head).
//!
//! Thresholds are not fitted here: [`cross_validate`] gives each sample the
//! scores of a model that never saw it (k folds), and [`threshold_for`]
//! picks, per head, the lowest logit that refuses at most a given share of
//! the held-back benign samples. Callers do I/O (reading the sets) and
//! decide the shares; `protocol/examples/policy_train.rs` is the trainer.

use super::{
    Category,
    model::{HEADS, Head, Model, ModelError, Scores, features},
    normalize,
};

/// One labelled training text.
#[derive(Debug, Clone)]
pub struct TrainSample {
    /// The message.
    pub text: String,
    /// Whether it is abusive.
    pub abusive: bool,
    /// Its kind of abuse, when the source says (`None` for benign texts
    /// and for abuse of an unnamed kind).
    pub category: Option<Category>,
    /// How much it counts (sources whose benign half is forum talk about
    /// the same topics count less).
    pub weight: f32,
    /// Its cross-validation fold (texts that must stay together, such as a
    /// translation and its original, share one).
    pub fold: u8,
}

/// How to fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Hash bits: `2^bits` buckets.
    pub bits: u8,
    /// Passes over the data.
    pub epochs: u32,
    /// AdaGrad's learning rate.
    pub rate: f32,
    /// Weight decay applied to a weight each time its feature is seen.
    pub decay: f32,
    /// Seed of the visiting order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            bits: 18,
            epochs: 6,
            rate: 0.2,
            decay: 1e-6,
            seed: 0x4c45_414b_2014,
        }
    }
}

/// splitmix64: a small, fixed pseudo-random sequence for the visiting order.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether head `h` calls a sample positive.
fn positive(h: usize, s: &TrainSample) -> bool {
    match HEADS[h] {
        None => s.abusive,
        Some(c) => s.abusive && s.category == Some(c),
    }
}

/// A sample's features, masked to buckets (top bit: sign), and its norm.
struct Encoded {
    feats: Vec<u32>,
    inv_norm: f32,
}

fn encode(text: &str, bits: u8) -> Encoded {
    let words = normalize::views(text).unquoted;
    let mask = (1u32 << bits) - 1;
    let mut feats = Vec::new();
    features(&words, |f| feats.push(f & (mask | 0x8000_0000)));
    let inv_norm = 1.0 / (feats.len().max(1) as f64).sqrt() as f32;
    Encoded { feats, inv_norm }
}

/// Fits a model on `samples` (thresholds left at 0: see [`threshold_for`]).
pub fn train(samples: &[TrainSample], config: &TrainConfig) -> Result<Model, ModelError> {
    let encoded: Vec<Encoded> = samples
        .iter()
        .map(|s| encode(&s.text, config.bits))
        .collect();
    let all: Vec<usize> = (0..samples.len()).collect();
    fit(samples, &encoded, &all, config)
}

fn fit(
    samples: &[TrainSample],
    encoded: &[Encoded],
    subset: &[usize],
    config: &TrainConfig,
) -> Result<Model, ModelError> {
    const H: usize = HEADS.len();
    let buckets = 1usize << config.bits;
    let mut w = vec![0f32; buckets * H];
    let mut g2 = vec![0f32; buckets * H];
    let mut bias = [0f32; H];
    let mut bias_g2 = [0f32; H];

    // Rare heads get their positives weighted up (square root of the
    // imbalance, at most 20×) so that they are not drowned by the rest.
    let mut boost = [1f32; H];
    for (h, b) in boost.iter_mut().enumerate() {
        let pos = subset.iter().filter(|&&i| positive(h, &samples[i])).count();
        let neg = subset.len() - pos;
        if pos > 0 {
            *b = ((neg as f32 / pos as f32).sqrt()).clamp(1.0, 20.0);
        }
    }

    let mut order = subset.to_vec();
    let mut state = config.seed;
    let mut z = [0f32; H];
    let mut grad = [0f32; H];
    for _ in 0..config.epochs {
        // Fisher–Yates with the fixed sequence.
        for i in (1..order.len()).rev() {
            let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &i in &order {
            let (s, e) = (&samples[i], &encoded[i]);
            z.copy_from_slice(&bias);
            for &f in &e.feats {
                let b = (f & 0x7fff_ffff) as usize * H;
                let x = if f & 0x8000_0000 == 0 {
                    e.inv_norm
                } else {
                    -e.inv_norm
                };
                for (zh, wh) in z.iter_mut().zip(&w[b..b + H]) {
                    *zh += wh * x;
                }
            }
            for h in 0..H {
                let y = positive(h, s);
                let p = 1.0 / (1.0 + (-z[h]).exp());
                let weight = s.weight * if y { boost[h] } else { 1.0 };
                grad[h] = (p - if y { 1.0 } else { 0.0 }) * weight;
                let g = grad[h];
                bias_g2[h] += g * g;
                bias[h] -= config.rate * g / (bias_g2[h].sqrt() + 1e-6);
            }
            for &f in &e.feats {
                let b = (f & 0x7fff_ffff) as usize * H;
                let x = if f & 0x8000_0000 == 0 {
                    e.inv_norm
                } else {
                    -e.inv_norm
                };
                for h in 0..H {
                    let g = grad[h] * x + config.decay * w[b + h];
                    g2[b + h] += g * g;
                    w[b + h] -= config.rate * g / (g2[b + h].sqrt() + 1e-6);
                }
            }
        }
    }
    quantise(config.bits, &bias, &w)
}

/// 16-bit weights, one scale per head.
fn quantise(bits: u8, bias: &[f32; HEADS.len()], w: &[f32]) -> Result<Model, ModelError> {
    const H: usize = HEADS.len();
    let mut max = [0f32; H];
    for row in w.chunks_exact(H) {
        for (m, x) in max.iter_mut().zip(row) {
            *m = m.max(x.abs());
        }
    }
    let scale: [f32; H] =
        core::array::from_fn(|h| if max[h] > 0.0 { max[h] / 32767.0 } else { 1.0 });
    let weights = w
        .chunks_exact(H)
        .flat_map(|row| {
            row.iter()
                .zip(scale)
                .map(|(x, s)| (x / s).round().clamp(-32767.0, 32767.0) as i16)
        })
        .collect();
    let heads = core::array::from_fn(|h| Head {
        scale: scale[h],
        bias: bias[h],
        threshold: 0.0,
    });
    Model::new(bits, heads, weights)
}

/// Out-of-fold scores: for each fold `f < k`, a model fitted on the other
/// folds scores the samples of fold `f` (`sample.fold % k`).
pub fn cross_validate(
    samples: &[TrainSample],
    config: &TrainConfig,
    k: u8,
) -> Result<Vec<Scores>, ModelError> {
    let k = k.max(2);
    let encoded: Vec<Encoded> = samples
        .iter()
        .map(|s| encode(&s.text, config.bits))
        .collect();
    let mut out = vec![Scores([0.0; HEADS.len()]); samples.len()];
    for fold in 0..k {
        let train: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].fold % k != fold)
            .collect();
        let model = fit(samples, &encoded, &train, config)?;
        for (i, s) in samples.iter().enumerate() {
            if s.fold % k == fold {
                out[i] = model.scores(&normalize::views(&s.text).unquoted);
            }
        }
    }
    Ok(out)
}

/// The lowest threshold (a logit) at which at most `share` of `negatives`
/// (logits of texts the head must not refuse) reach it.
pub fn threshold_for(negatives: &[f64], share: f64) -> f32 {
    if negatives.is_empty() {
        return 0.0;
    }
    let mut sorted = negatives.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed = (share * sorted.len() as f64).floor() as usize;
    // Refusing the `allowed` highest negatives: the threshold sits just
    // above the next one.
    let next = sorted.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
    let t = (next as f32).max(-30.0);
    // The next representable f32 above, so that `next` itself is accepted.
    f32::from_bits(if t >= 0.0 {
        t.to_bits() + 1
    } else {
        t.to_bits() - 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, abusive: bool, category: Option<Category>, fold: u8) -> TrainSample {
        TrainSample {
            text: text.to_owned(),
            abusive,
            category,
            weight: 1.0,
            fold,
        }
    }

    fn data() -> Vec<TrainSample> {
        let mut v = Vec::new();
        let abuse = [
            "i will kill you",
            "you are stupid and worthless",
            "i will hurt you tonight",
            "shut up you idiot",
        ];
        let benign = [
            "i love you so much",
            "see you at dinner tonight",
            "thank you for the flowers",
            "i miss you, call me",
        ];
        for (i, t) in abuse.iter().enumerate() {
            let c = if t.contains("kill") || t.contains("hurt") {
                Some(Category::Threat)
            } else {
                Some(Category::Bullying)
            };
            v.push(sample(t, true, c, i as u8));
        }
        for (i, t) in benign.iter().enumerate() {
            v.push(sample(t, false, None, i as u8));
        }
        v
    }

    #[test]
    fn same_data_same_seed_same_bytes() {
        let config = TrainConfig {
            bits: 12,
            epochs: 3,
            ..TrainConfig::default()
        };
        let a = train(&data(), &config).unwrap().to_bytes();
        let b = train(&data(), &config).unwrap().to_bytes();
        assert_eq!(blake3::hash(&a), blake3::hash(&b));
        let other = TrainConfig { seed: 7, ..config };
        assert_ne!(a, train(&data(), &other).unwrap().to_bytes());
    }

    #[test]
    fn a_fitted_model_separates_its_data() {
        let config = TrainConfig {
            bits: 12,
            epochs: 20,
            ..TrainConfig::default()
        };
        let model = train(&data(), &config).unwrap();
        let abusive = |t: &str| model.scores(&normalize::views(t).unquoted).0[0];
        assert!(abusive("i will kill you") > abusive("i love you so much"));
    }

    #[test]
    fn threshold_refuses_at_most_the_share() {
        let negatives: Vec<f64> = (0..100).map(f64::from).collect();
        let t = threshold_for(&negatives, 0.05);
        let refused = negatives.iter().filter(|&&x| x >= f64::from(t)).count();
        assert_eq!(refused, 5);
        assert!(threshold_for(&[], 0.1).is_finite());
    }
}
