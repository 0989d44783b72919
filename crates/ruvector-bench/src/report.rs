//! Statistics, markdown and PNG output shared by the benchmarks.

use std::path::Path;

use plotters::prelude::*;

use crate::pg::Result;

/// The `p`-quantile (0..=1) of `values` by the nearest-rank method; `values` need not be sorted.
pub fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The lowest and highest of `values` (the spread of repeated runs).
pub fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Registers a TrueType font for plot text (plotters draws text only with a font it was given).
fn register_font() -> Result<()> {
    const CANDIDATES: [&str; 2] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    let path = CANDIDATES
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no DejaVuSans.ttf for plot labels (Debian package fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{path}: not a usable font"))?;
    Ok(())
}

/// An axis tick label: at most 3 significant digits, no float noise.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// One labelled line of `(x, y)` points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// How a plot's series are drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// Points joined by lines (a sweep).
    Lines,
    /// Points only (independent measurements).
    Points,
}

/// A plot of `series` with a legend; a logarithmic y axis when `log_y`.
pub fn plot(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    log_y: bool,
    draw: Draw,
) -> Result<()> {
    static FONT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| register_font().map_err(|e| e.to_string()))
        .clone()?;

    let all = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        return Err("nothing to plot".into());
    }
    let pad = ((x1 - x0) * 0.05).max(1e-3);
    (x0, x1) = (x0 - pad, x1 + pad);
    if log_y {
        (y0, y1) = (y0 / 1.3, y1 * 1.3);
    } else {
        (y0, y1) = (0.0, y1 * 1.1);
    }

    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    // Sweeps climb to the upper left (recall costs speed); per-tenant points gather at
    // full recall, on the right.
    let legend = match draw {
        Draw::Lines => SeriesLabelPosition::UpperRight,
        Draw::Points => SeriesLabelPosition::UpperLeft,
    };
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", 15))
                .y_label_formatter(&|y: &f64| tick(*y))
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let color = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied().filter(|_| draw == Draw::Lines),
                        color.stroke_width(2),
                    ))?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(legend)
                .label_font(("sans-serif", 16))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if log_y {
        draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    root.present()?;
    Ok(())
}

/// A markdown table.
pub fn table(header: &[&str], align_right: &[bool], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|", header.join(" | "));
    for &right in align_right {
        out.push_str(if right { "---:|" } else { "---|" });
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(median(&v), 50.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn range_is_the_lowest_and_highest_value() {
        assert_eq!(range(&[3.0, -1.5, 2.0]), (-1.5, 3.0));
        assert_eq!(range(&[7.0]), (7.0, 7.0));
    }

    #[test]
    fn tick_labels_have_no_float_noise() {
        assert_eq!(tick(0.30000000000000004), "0.300");
        assert_eq!(tick(1500.0), "1500");
        assert_eq!(tick(2.5), "2.50");
    }

    #[test]
    fn markdown_table() {
        let t = table(&["a", "b"], &[false, true], &[vec!["x".into(), "1".into()]]);
        assert_eq!(t, "| a | b |\n|---|---:|\n| x | 1 |\n");
    }
}
