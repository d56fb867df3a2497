//! From per-round measurements to the per-target numbers of the report: medians across
//! rounds, and throughput relative to the first target.
use hdrhistogram::Histogram;
use serde::Serialize;

/// What one target did in one round.
#[derive(Debug, Clone)]
pub struct RoundResult {
    /// transactions that completed without error
    pub transactions: u64,
    /// transactions that failed
    pub errors: u64,
    /// wall time of the round, in seconds
    pub elapsed_secs: f64,
    /// latency of successful transactions, in microseconds
    pub latency_us: Histogram<u64>,
}

/// The numbers of one round: transactions per second and latency percentiles (µs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundNumbers {
    /// successful transactions per second
    pub tps: f64,
    /// median latency, µs
    pub p50_us: u64,
    /// 95th percentile latency, µs
    pub p95_us: u64,
    /// 99th percentile latency, µs
    pub p99_us: u64,
    /// slowest transaction, µs
    pub max_us: u64,
    /// successful transactions
    pub transactions: u64,
    /// failed transactions
    pub errors: u64,
}

impl RoundResult {
    /// Throughput and percentiles of this round.
    pub fn numbers(&self) -> RoundNumbers {
        let h = &self.latency_us;
        let tps = if self.elapsed_secs > 0.0 {
            self.transactions as f64 / self.elapsed_secs
        } else {
            0.0
        };
        let (p50, p95, p99, max) = if h.is_empty() {
            (0, 0, 0, 0)
        } else {
            (
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.95),
                h.value_at_quantile(0.99),
                h.max(),
            )
        };
        RoundNumbers {
            tps,
            p50_us: p50,
            p95_us: p95,
            p99_us: p99,
            max_us: max,
            transactions: self.transactions,
            errors: self.errors,
        }
    }
}

/// One target across all rounds: each figure is the median of that figure over rounds
/// (so one disturbed round does not move the result); transactions and errors are totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSummary {
    /// target name
    pub name: String,
    /// median transactions per second
    pub tps: f64,
    /// median p50 latency, µs
    pub p50_us: u64,
    /// median p95 latency, µs
    pub p95_us: u64,
    /// median p99 latency, µs
    pub p99_us: u64,
    /// median of the per-round maximum latency, µs
    pub max_us: u64,
    /// successful transactions, all rounds
    pub transactions: u64,
    /// failed transactions, all rounds
    pub errors: u64,
    /// `tps / tps of the first target` (1.0 for the first target; 0 if that had none)
    pub ratio: f64,
    /// the first error message seen, to tell why `errors` is not 0
    pub first_error: Option<String>,
    /// every round's numbers, in the order they ran
    pub rounds: Vec<RoundNumbers>,
}

/// Median of `values` (mean of the middle two for an even count; 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let v: Vec<f64> = values.map(|x| x as f64).collect();
    median(&v).round() as u64
}

/// Summaries of all targets, in the order given; `rounds[t]` holds target `t`'s rounds
/// and `first_errors[t]` its first error message.
pub fn summarize(
    names: &[String],
    rounds: &[Vec<RoundResult>],
    first_errors: &[Option<String>],
) -> Vec<TargetSummary> {
    let mut out: Vec<TargetSummary> = names
        .iter()
        .enumerate()
        .map(|(t, name)| {
            let numbers: Vec<RoundNumbers> = rounds
                .get(t)
                .map(|r| r.iter().map(RoundResult::numbers).collect())
                .unwrap_or_default();
            let tps: Vec<f64> = numbers.iter().map(|n| n.tps).collect();
            TargetSummary {
                name: name.clone(),
                tps: median(&tps),
                p50_us: median_u64(numbers.iter().map(|n| n.p50_us)),
                p95_us: median_u64(numbers.iter().map(|n| n.p95_us)),
                p99_us: median_u64(numbers.iter().map(|n| n.p99_us)),
                max_us: median_u64(numbers.iter().map(|n| n.max_us)),
                transactions: numbers.iter().map(|n| n.transactions).sum(),
                errors: numbers.iter().map(|n| n.errors).sum(),
                ratio: 0.0,
                first_error: first_errors.get(t).cloned().flatten(),
                rounds: numbers,
            }
        })
        .collect();
    let base = out.first().map(|s| s.tps).unwrap_or(0.0);
    for s in &mut out {
        s.ratio = if base > 0.0 { s.tps / base } else { 0.0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(latencies: &[u64], errors: u64, secs: f64) -> RoundResult {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &l in latencies {
            h.record(l).unwrap();
        }
        RoundResult {
            transactions: latencies.len() as u64,
            errors,
            elapsed_secs: secs,
            latency_us: h,
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn round_numbers_come_from_the_histogram() {
        let lat: Vec<u64> = (1..=100).collect();
        let n = round(&lat, 2, 2.0).numbers();
        assert_eq!(n.tps, 50.0);
        assert_eq!(n.p50_us, 50);
        assert_eq!(n.p95_us, 95);
        assert_eq!(n.p99_us, 99);
        assert_eq!(n.max_us, 100);
        assert_eq!((n.transactions, n.errors), (100, 2));
    }

    #[test]
    fn empty_round_is_all_zero() {
        let n = round(&[], 5, 1.0).numbers();
        assert_eq!((n.tps, n.p50_us, n.max_us, n.errors), (0.0, 0, 0, 5));
    }

    #[test]
    fn medians_across_rounds_and_ratio_to_first_target() {
        let names = vec!["a".to_string(), "b".to_string()];
        let rounds = vec![
            // a: 100, 300, 200 tps → median 200; one disturbed round does not count
            vec![
                round(&[10; 100], 0, 1.0),
                round(&[1000; 300], 1, 1.0),
                round(&[30; 200], 0, 1.0),
            ],
            // b: 50, 100, 70 tps → median 70
            vec![
                round(&[40; 50], 0, 1.0),
                round(&[20; 100], 0, 1.0),
                round(&[60; 70], 0, 1.0),
            ],
        ];
        let s = summarize(&names, &rounds, &[Some("boom".into()), None]);
        assert_eq!(s[0].name, "a");
        assert_eq!(s[0].tps, 200.0);
        assert_eq!(s[0].p50_us, 30);
        assert_eq!(s[0].transactions, 600);
        assert_eq!(s[0].errors, 1);
        assert_eq!(s[0].ratio, 1.0);
        assert_eq!(s[0].first_error.as_deref(), Some("boom"));
        assert_eq!(s[0].rounds.len(), 3);
        assert_eq!(s[1].tps, 70.0);
        assert_eq!(s[1].p50_us, 40);
        assert_eq!(s[1].ratio, 0.35);
        assert_eq!(s[1].first_error, None);
    }

    #[test]
    fn ratio_is_zero_when_the_first_target_did_nothing() {
        let names = vec!["a".to_string(), "b".to_string()];
        let rounds = vec![vec![round(&[], 3, 1.0)], vec![round(&[5; 10], 0, 1.0)]];
        let s = summarize(&names, &rounds, &[None, None]);
        assert_eq!(s[1].ratio, 0.0);
    }
}
