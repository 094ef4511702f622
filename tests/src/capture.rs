//! What a sender's machine shows the network, captured for real: `tcpdump`
//! on the loopback interface, filtered to the TCP connections of one process
//! (found with `ss`), and two-sample tests that say whether two captures
//! could come from the same traffic.
//!
//! A test captures an agent's traffic in a period without a leak and in a
//! period with one, and checks that the counts, sizes and timing of the
//! segments it emits are not distinguishable; a control shows that the same
//! statistics do tell apart traffic that differs.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

/// One TCP segment seen on the interface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Capture time, Unix seconds.
    pub at: f64,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP payload bytes (0 for a bare acknowledgement).
    pub len: u32,
}

/// A running `tcpdump` on the loopback interface, recording every TCP
/// segment until dropped or [`Capture::stop`]ped.
pub struct Capture {
    child: Child,
    segments: Arc<Mutex<Vec<Segment>>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing TCP on `lo`. Needs `tcpdump` and the right to
    /// capture (root, as `scripts/test.sh` runs).
    pub fn start() -> std::io::Result<Self> {
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-tt", "-n", "-l", "-q", "-B", "8192", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("tcpdump has no stdout"))?;
        let segments = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&segments);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(segment) = parse_line(&line) {
                    sink.lock().expect("capture lock").push(segment);
                }
            }
        });
        Ok(Self {
            child,
            segments,
            reader: Some(reader),
        })
    }

    /// Everything captured so far.
    pub fn segments(&self) -> Vec<Segment> {
        self.segments.lock().expect("capture lock").clone()
    }

    /// Stops `tcpdump` and returns everything it captured.
    pub fn stop(mut self) -> Vec<Segment> {
        self.kill();
        self.segments()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses one line of `tcpdump -tt -n -q` output:
/// `1733350000.123456 IP 127.0.0.1.40000 > 127.0.0.1.5000: tcp 4160`.
pub fn parse_line(line: &str) -> Option<Segment> {
    let mut words = line.split_whitespace();
    let at: f64 = words.next()?.parse().ok()?;
    if words.next()? != "IP" {
        return None;
    }
    let src = words.next()?;
    if words.next()? != ">" {
        return None;
    }
    let dst = words.next()?.trim_end_matches(':');
    if words.next()? != "tcp" {
        return None;
    }
    let len: u32 = words.next()?.parse().ok()?;
    let port = |endpoint: &str| endpoint.rsplit('.').next()?.parse::<u16>().ok();
    Some(Segment {
        at,
        src_port: port(src)?,
        dst_port: port(dst)?,
        len,
    })
}

/// The local TCP ports of the connections process `pid` has open now
/// (`ss -tnpH`).
pub fn local_ports_of(pid: u32) -> std::io::Result<HashSet<u16>> {
    let output = Command::new("ss").args(["-tnpH"]).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let needle = format!("pid={pid},");
    Ok(text
        .lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| {
            // State Recv-Q Send-Q Local:Port Peer:Port Process
            let local = line.split_whitespace().nth(3)?;
            local.rsplit(':').next()?.parse().ok()
        })
        .collect())
}

/// The segments sent from one of `ports` in `[from, to)`.
pub fn emitted(segments: &[Segment], ports: &HashSet<u16>, from: f64, to: f64) -> Vec<Segment> {
    segments
        .iter()
        .filter(|s| ports.contains(&s.src_port) && s.at >= from && s.at < to)
        .copied()
        .collect()
}

/// The gaps between consecutive segments, seconds.
pub fn gaps(segments: &[Segment]) -> Vec<f64> {
    segments.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// The two-sample Kolmogorov–Smirnov test: the largest distance `D` between
/// the empirical distribution functions of `a` and `b`, and its asymptotic
/// p-value (Kolmogorov's distribution at `D·√(n·m/(n+m))`, with Stephens'
/// small-sample correction). `None` when a sample is empty.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let effective = (n * m / (n + m)).sqrt();
    let lambda = (effective + 0.12 + 0.11 / effective) * d;
    Some((d, kolmogorov_q(lambda)))
}

/// `Q(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²}`, the Kolmogorov survival function.
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as u32 % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// How many segments fall in each `bin`-second interval of `[from, to)`:
/// the counts to compare between periods. Segments come in bursts (one
/// packet is several segments and their acknowledgements), so the counts of
/// single segments are not Poisson; per-bin counts compared as samples
/// (with [`ks_two_sample`]) need no such assumption.
pub fn counts_per_bin(segments: &[Segment], from: f64, to: f64, bin: f64) -> Vec<f64> {
    let bins = ((to - from) / bin).floor().max(0.0) as usize;
    let mut counts = vec![0f64; bins];
    for s in segments {
        let i = ((s.at - from) / bin).floor();
        if i >= 0.0 && (i as usize) < bins {
            counts[i as usize] += 1.0;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcpdump_lines() {
        let s = parse_line("1733350000.123456 IP 127.0.0.1.40000 > 127.0.0.1.5000: tcp 4160")
            .expect("parses");
        assert_eq!(s.src_port, 40000);
        assert_eq!(s.dst_port, 5000);
        assert_eq!(s.len, 4160);
        assert!((s.at - 1_733_350_000.123_456).abs() < 1e-6);
        assert!(parse_line("tcpdump: listening on lo").is_none());
        assert!(parse_line("1.0 IP6 ::1.1 > ::1.2: tcp 0").is_none());
    }

    /// Deterministic pseudo-random uniforms for the statistics tests.
    fn uniforms(seed: u64, n: usize) -> Vec<f64> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    #[test]
    fn ks_accepts_one_distribution_and_rejects_two() {
        let a: Vec<f64> = uniforms(1, 400)
            .iter()
            .map(|u| -u.max(1e-12).ln())
            .collect();
        let b: Vec<f64> = uniforms(2, 400)
            .iter()
            .map(|u| -u.max(1e-12).ln())
            .collect();
        let (_, p_same) = ks_two_sample(&a, &b).expect("samples");
        assert!(p_same > 0.01, "{p_same}");
        // Twice the mean: clearly different.
        let c: Vec<f64> = uniforms(3, 400)
            .iter()
            .map(|u| -2.0 * u.max(1e-12).ln())
            .collect();
        let (_, p_diff) = ks_two_sample(&a, &c).expect("samples");
        assert!(p_diff < 1e-4, "{p_diff}");
        assert!(ks_two_sample(&a, &[]).is_none());
    }

    #[test]
    fn segments_are_counted_per_bin() {
        let at = |t: f64| Segment {
            at: t,
            src_port: 1,
            dst_port: 2,
            len: 0,
        };
        let segments = [at(10.1), at(10.2), at(11.5), at(12.99), at(13.0), at(9.0)];
        assert_eq!(
            counts_per_bin(&segments, 10.0, 13.0, 1.0),
            vec![2.0, 1.0, 1.0]
        );
    }
}
