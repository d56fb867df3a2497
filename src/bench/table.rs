//! The report as a fixed-width text table.
use clap::ValueEnum;

use super::Report;

/// The name the option takes on the command line (`point-select`).
pub fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Header line, then one line per target: median TPS, ratio to the first target, median
/// latency percentiles in milliseconds, total transactions and errors.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "workload {}, protocol {}, {} clients, {} s × {} rounds per target, {} rows\n",
        value_name(report.workload),
        value_name(report.protocol),
        report.clients,
        report.duration_secs,
        report.rounds,
        report.rows
    );
    let width = report
        .targets
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    out.push_str(&format!(
        "{:<width$}  {:>10}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  {:>10}  {:>6}\n",
        "target", "tps", "ratio", "p50 ms", "p95 ms", "p99 ms", "max ms", "xacts", "errors"
    ));
    let ms = |us: u64| us as f64 / 1000.0;
    for t in &report.targets {
        out.push_str(&format!(
            "{:<width$}  {:>10.1}  {:>6.2}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>10}  {:>6}\n",
            t.name,
            t.tps,
            t.ratio,
            ms(t.p50_us),
            ms(t.p95_us),
            ms(t.p99_us),
            ms(t.max_us),
            t.transactions,
            t.errors
        ));
    }
    for t in report.targets.iter().filter(|t| t.errors > 0) {
        if let Some(e) = &t.first_error {
            out.push_str(&format!("{}: first error: {e}\n", t.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::summary::TargetSummary;
    use super::super::{Protocol, Workload};
    use super::*;

    #[test]
    fn one_line_per_target_with_ratio_and_first_error() {
        let t = |name: &str, tps: f64, ratio: f64, errors: u64| TargetSummary {
            name: name.into(),
            tps,
            p50_us: 1500,
            p95_us: 2000,
            p99_us: 3000,
            max_us: 9000,
            transactions: 100,
            errors,
            ratio,
            first_error: (errors > 0).then(|| "ERROR: boom".to_string()),
            rounds: vec![],
        };
        let report = Report {
            workload: Workload::PointSelect,
            protocol: Protocol::Extended,
            clients: 4,
            duration_secs: 5.0,
            rounds: 3,
            rows: 10,
            targets: vec![t("direct", 1000.0, 1.0, 0), t("proxy", 500.0, 0.5, 2)],
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("workload point-select, protocol extended, 4 clients"));
        assert!(lines[2].starts_with("direct"), "{text}");
        assert!(
            lines[2].contains("1000.0") && lines[2].contains("1.00"),
            "{text}"
        );
        assert!(
            lines[3].contains("500.0") && lines[3].contains("0.50"),
            "{text}"
        );
        assert!(
            lines[3].contains("1.500") && lines[3].contains("9.000"),
            "{text}"
        );
        assert_eq!(lines[4], "proxy: first error: ERROR: boom");

        // the JSON of --json carries the same figures under stable names
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["workload"], "point-select");
        assert_eq!(json["protocol"], "extended");
        assert_eq!(json["targets"][1]["name"], "proxy");
        assert_eq!(json["targets"][1]["ratio"], 0.5);
        assert_eq!(json["targets"][1]["p99_us"], 3000);
    }
}
