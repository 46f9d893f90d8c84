//! SVG charts of a run (`plotters`): the cross-handoff latency CDF per
//! subject at n = 8, and P4's grants per contender.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use crate::report::Report;
use crate::subject::Result;

const SIZE: (u32, u32) = (960, 600);

/// Writes `handoff-cdf.svg` and `grants-per-contender.svg` into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<()> {
    handoff_cdf(report, &dir.join("handoff-cdf.svg"))?;
    grants_per_contender(report, &dir.join("grants-per-contender.svg"))?;
    Ok(())
}

/// (label, sorted samples) of every P2 run at n = 8.
fn handoff_series(report: &Report) -> Vec<(String, Vec<f64>)> {
    report
        .backends
        .iter()
        .flat_map(|b| {
            b.contention
                .iter()
                .filter(|r| r.scenario == "P2" && r.run.contenders == 8)
                .filter(|r| !r.run.cross_samples.is_empty())
                .map(move |r| {
                    (
                        format!("{} · {}", b.id, r.subject),
                        r.run.cross_samples.clone(),
                    )
                })
        })
        .collect()
}

fn handoff_cdf(report: &Report, path: &Path) -> Result<()> {
    let series = handoff_series(report);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = series
        .iter()
        .filter_map(|(_, s)| s.first().copied())
        .fold(f64::INFINITY, f64::min);
    // No P2 run at n = 8 (another scenario was chosen): an empty chart on
    // a sane axis, not an infinite one.
    let lo = if lo.is_finite() { lo.max(1.0) } else { 100.0 };
    let hi = series
        .iter()
        .filter_map(|(_, s)| s.last().copied())
        .fold(lo * 10.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cross handoff latency, n = 8 contenders (CDF)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d((lo / 1000.0..hi / 1000.0).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("release → another contender's grant (ms, log scale)")
        .y_desc("share of handoffs")
        .draw()?;
    for (i, (label, samples)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let n = samples.len() as f64;
        chart
            .draw_series(LineSeries::new(
                samples
                    .iter()
                    .enumerate()
                    .map(|(k, us)| (us / 1000.0, (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn grants_per_contender(report: &Report, path: &Path) -> Result<()> {
    let series: Vec<(String, Vec<f64>)> = report
        .backends
        .iter()
        .flat_map(|b| {
            b.contention
                .iter()
                .filter(|r| r.scenario == "P4")
                .map(move |r| {
                    let counts = &r.run.per_contender;
                    let mean = counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64;
                    let mut shares: Vec<f64> = counts
                        .iter()
                        .map(|&c| if mean > 0.0 { c as f64 / mean } else { 0.0 })
                        .collect();
                    shares.sort_by(|a, b| b.total_cmp(a));
                    (
                        format!("{} · {} (Jain {:.2})", b.id, r.subject, r.run.jain),
                        shares,
                    )
                })
        })
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let contenders = series
        .iter()
        .map(|(_, s)| s.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let top = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(2.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Grants per contender, P4 (sorted; 1.0 = a fair share)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d(1usize..contenders, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("contender, by grants (most first)")
        .y_desc("grants / mean")
        .draw()?;
    for (i, (label, shares)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                shares.iter().enumerate().map(|(k, &s)| (k + 1, s)),
                color.stroke_width(2),
            ))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
