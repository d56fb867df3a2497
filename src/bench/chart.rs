//! The SVG chart of `--svg`: two stacked bar panels, throughput on top and p99 latency
//! below, one bar per target and workload. Bars of one target share a colour, and a
//! workload's targets stand next to each other in the order given, so each workload
//! reads as a group.
//!
//! Text is written as SVG `<text>` elements for the viewer to render, so no font is
//! needed here.
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::table::value_name;
use super::{BenchError, Report};

/// Chart height in pixels; the width grows with the number of bars.
const HEIGHT: u32 = 720;
/// Horizontal room per bar at least, and per character of its label (at the label's
/// font size), so labels of neighbours do not overlap.
const PX_PER_BAR: u32 = 110;
const PX_PER_CHAR: u32 = 9;
/// The narrowest chart.
const MIN_WIDTH: u32 = 640;
const FONT: &str = "sans-serif";

/// One bar of both panels.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    label: String,
    target: usize,
    tps: f64,
    p99_ms: f64,
}

/// The bars of `reports` (one report per workload), grouped by workload. Labels carry
/// the workload only when there are several.
fn bars(reports: &[Report]) -> Vec<Bar> {
    let several = reports.len() > 1;
    reports
        .iter()
        .flat_map(|r| {
            let workload = value_name(r.workload);
            r.targets.iter().enumerate().map(move |(i, t)| Bar {
                label: if several {
                    format!("{} / {workload}", t.name)
                } else {
                    t.name.clone()
                },
                target: i,
                tps: t.tps,
                p99_ms: t.p99_us as f64 / 1000.0,
            })
        })
        .collect()
}

/// The chart as an SVG document.
pub fn render(reports: &[Report]) -> Result<String, BenchError> {
    let bars = bars(reports);
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let per_bar = PX_PER_BAR.max(PX_PER_CHAR * longest + 24);
    let width = (per_bar * bars.len() as u32 + 120).max(MIN_WIDTH);
    let mut svg = String::new();
    draw(&mut svg, (width, HEIGHT), reports, &bars)
        .map_err(|e| BenchError::Chart(e.to_string()))?;
    Ok(svg)
}

fn draw(
    svg: &mut String,
    size: (u32, u32),
    reports: &[Report],
    bars: &[Bar],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, size).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match reports {
        [r] => format!(
            "pgshard bench: {}, {}, {} clients, {} s x {} rounds",
            value_name(r.workload),
            value_name(r.protocol),
            r.clients,
            r.duration_secs,
            r.rounds
        ),
        _ => "pgshard bench".to_string(),
    };
    let root = root.titled(&title, (FONT, 24))?;
    let (top, bottom) = root.split_vertically(size.1 / 2 - 20);
    panel(&top, "Throughput", "transactions / s", bars, |b| b.tps)?;
    panel(&bottom, "p99 latency", "ms", bars, |b| b.p99_ms)?;
    root.present()?;
    Ok(())
}

/// One bar panel of `value` per bar, with the figure written above each bar.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    unit: &str,
    bars: &[Bar],
    value: impl Fn(&Bar) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = bars.len().max(1);
    let top = bars.iter().map(&value).fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 21))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        // an integer range includes its end: 0..n-1 holds n segments
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max)?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.label.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .x_label_style((FONT, 16))
        .y_desc(unit)
        .y_label_style((FONT, 14))
        .y_label_formatter(&|v: &f64| figure(*v, top))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), value(b)),
            ],
            Palette99::pick(b.target).filled(),
        );
        r.set_margin(0, 0, 12, 12);
        r
    }))?;
    let figure_style = TextStyle::from((FONT, 15)).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let v = value(b);
        Text::new(
            figure(v, top),
            (SegmentValue::CenterOf(i), v),
            figure_style.clone(),
        )
    }))?;
    Ok(())
}

/// A figure for a label in a panel whose largest value is `top`: whole numbers when
/// that is 100 or more, one decimal from 10, else two.
fn figure(v: f64, top: f64) -> String {
    match top {
        t if t >= 100.0 => format!("{v:.0}"),
        t if t >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// The contents of the SVG's `<text>` elements, trimmed (the backend writes each on a
/// line of its own), with `&lt;` and friends left escaped.
pub fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::summary::TargetSummary;
    use super::super::{Protocol, Workload};
    use super::*;

    fn report(workload: Workload, targets: &[(&str, f64, u64)]) -> Report {
        Report {
            workload,
            protocol: Protocol::Extended,
            clients: 2,
            duration_secs: 1.0,
            rounds: 1,
            rows: 10,
            targets: targets
                .iter()
                .map(|&(name, tps, p99_us)| TargetSummary {
                    name: name.into(),
                    tps,
                    p50_us: 1,
                    p95_us: 1,
                    p99_us,
                    max_us: p99_us,
                    transactions: 1,
                    errors: 0,
                    ratio: 1.0,
                    first_error: None,
                    rounds: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn bars_are_grouped_by_workload_and_coloured_by_target() {
        let reports = [
            report(
                Workload::Insert,
                &[("proxy", 100.0, 2500), ("s0", 300.0, 900)],
            ),
            report(
                Workload::ScatterTopN,
                &[("proxy", 50.0, 4000), ("s0", 80.0, 1000)],
            ),
        ];
        let b = bars(&reports);
        let labels: Vec<&str> = b.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "proxy / insert",
                "s0 / insert",
                "proxy / scatter-top-n",
                "s0 / scatter-top-n"
            ]
        );
        assert_eq!(b.iter().map(|b| b.target).collect::<Vec<_>>(), [0, 1, 0, 1]);
        assert_eq!((b[0].tps, b[0].p99_ms), (100.0, 2.5));
        // one workload: the target name alone
        assert_eq!(bars(&reports[..1])[1].label, "s0");
    }

    #[test]
    fn svg_has_both_panels_every_target_and_escaped_names() {
        let svg = render(&[report(
            Workload::PointSelect,
            &[("proxy", 1234.0, 2500), ("a<b", 0.0, 0)],
        )])
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = texts(&svg);
        for text in [
            "Throughput",
            "p99 latency",
            "proxy",
            "a&lt;b",
            "1234",
            "2.50",
        ] {
            assert!(texts.iter().any(|t| t == text), "missing {text}: {texts:?}");
        }
        // background, then two bars in each panel
        assert_eq!(svg.matches("<rect").count(), 5);
        // one segment per bar: no empty third tick label
        assert!(!texts.iter().any(|t| t.is_empty()), "{texts:?}");
    }

    #[test]
    fn figures_follow_the_panel_scale() {
        assert_eq!(figure(50.0, 300.0), "50");
        assert_eq!(figure(5.25, 40.0), "5.2");
        assert_eq!(figure(0.9, 4.0), "0.90");
    }

    #[test]
    fn no_targets_still_draws_empty_panels() {
        let svg = render(&[]).unwrap();
        assert!(svg.contains("Throughput"));
    }
}
