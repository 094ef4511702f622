//! The delay densities the adversaries know: a path of k hops, each
//! holding a packet an exponential time of mean μ, takes an Erlang(k, μ)
//! time, plus the links' latency. (Clients cap one hop's delay at
//! `MAX_HOP_DELAY_MS`; at the means considered, the cap cuts a tail the
//! density gives less than 1e-4 to, and is ignored.)

/// The density of a sum of `k` exponential delays of mean `mean_ms`
/// plus `shift_ms` of links.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Erlang {
    k: u32,
    mean_ms: f64,
    shift_ms: f64,
    log_norm: f64,
}

impl Erlang {
    /// Erlang(`k`, `mean_ms`) shifted by `shift_ms`. `mean_ms` is floored
    /// at 1 ms (a zero delay is a link's latency and no more).
    pub fn new(k: u32, mean_ms: f64, shift_ms: f64) -> Self {
        let k = k.max(1);
        let mean_ms = mean_ms.max(1.0);
        // ln((k-1)!) + k ln(mean)
        let log_fact: f64 = (1..k).map(|i| f64::from(i).ln()).sum();
        Self {
            k,
            mean_ms,
            shift_ms,
            log_norm: log_fact + f64::from(k) * mean_ms.ln(),
        }
    }

    /// The density at a delay of `dt_ms` (per ms).
    pub fn pdf(&self, dt_ms: f64) -> f64 {
        let t = dt_ms - self.shift_ms;
        if t <= 0.0 {
            // A link's latency has jitter nowhere here; a delay shorter
            // than the links is impossible, except exactly zero hold time.
            return if self.k == 1 && t > -1.0 {
                (-self.log_norm).exp()
            } else {
                0.0
            };
        }
        (f64::from(self.k - 1) * t.ln() - t / self.mean_ms - self.log_norm).exp()
    }

    /// A delay beyond which the density is negligible (its tail holds
    /// far less than 1e-9 of the mass).
    pub fn horizon_ms(&self) -> f64 {
        self.shift_ms + (f64::from(self.k) * 3.0 + 30.0) * self.mean_ms
    }

    /// The mean delay.
    pub fn mean_ms(&self) -> f64 {
        self.shift_ms + f64::from(self.k) * self.mean_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_to_one_with_the_right_mean() {
        let e = Erlang::new(3, 1000.0, 15.0);
        let step = 1.0;
        let (mut mass, mut mean) = (0.0, 0.0);
        let mut t = 0.0;
        while t < e.horizon_ms() {
            let p = e.pdf(t) * step;
            mass += p;
            mean += p * t;
            t += step;
        }
        assert!((mass - 1.0).abs() < 1e-3, "{mass}");
        assert!((mean - e.mean_ms()).abs() < 5.0, "{mean}");
        assert_eq!(e.pdf(10.0), 0.0, "shorter than the links");
    }
}
