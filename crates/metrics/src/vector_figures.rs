//! Figures as SVG for papers: vector graphics with text as text, drawn with `plotters` (its SVG
//! backend needs no font files). Line charts and the latent scatter have titles, labelled axes
//! with tick values, and legends; the PNGs of `chart` and `figures` stay for quick looks.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::chart::Chart;
use crate::figures::PALETTE;
use crate::MetricsError;

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 380;
const FONT: &str = "sans-serif";

fn figure_error(e: impl std::fmt::Display) -> MetricsError {
    MetricsError::Shape(format!("drawing an SVG figure: {e}"))
}

fn colour(i: usize) -> RGBColor {
    let [r, g, b] = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// (lowest, highest) of the finite values, widened by 5 % (and to a unit span when flat).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

/// `x` with two significant digits and no trailing zeros (0.63, 1.6, 4, 40, 250).
fn tick_label(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (1 - x.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `panels` side by side, `columns` per row, as an SVG document: each panel with its title,
/// axis labels, tick values, one line per series with ± error bars, and a legend. A log x axis
/// is drawn on log₁₀ x with ticks labelled by x itself.
pub fn line_charts_svg(panels: &[Chart], columns: usize) -> Result<String, MetricsError> {
    if panels.is_empty() || columns == 0 {
        return Err(MetricsError::Shape("a chart needs at least one panel and one column".into()));
    }
    let rows = panels.len().div_ceil(columns);
    let cols = columns.min(panels.len());
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PANEL_W * cols as u32, PANEL_H * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(figure_error)?;
        for (area, chart) in root.split_evenly((rows, cols)).iter().zip(panels) {
            draw_panel(area, chart)?;
        }
        root.present().map_err(figure_error)?;
    }
    Ok(svg)
}

fn draw_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, chart: &Chart) -> Result<(), MetricsError> {
    let to_x = |x: f64| if chart.log_x { x.log10() } else { x };
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = padded_range(points().map(|p| to_x(p.x)));
    let (y0, y1) = padded_range(points().flat_map(|p| [p.y - p.spread, p.y + p.spread]));
    let mut plot = ChartBuilder::on(area)
        .caption(&chart.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(figure_error)?;
    let log_x = chart.log_x;
    let tick = move |v: &f64| tick_label(if log_x { 10f64.powf(*v) } else { *v });
    plot.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&tick)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE)
        .draw()
        .map_err(figure_error)?;
    for (i, series) in chart.series.iter().enumerate() {
        let c = colour(i);
        let line: Vec<(f64, f64)> = series.points.iter().map(|p| (to_x(p.x), p.y)).collect();
        plot.draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(figure_error)?
            .label(series.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        plot.draw_series(line.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled()))).map_err(figure_error)?;
        let bars = series
            .points
            .iter()
            .filter(|p| p.spread > 0.0)
            .map(|p| ErrorBar::new_vertical(to_x(p.x), p.y - p.spread, p.y, p.y + p.spread, c.stroke_width(1), 8));
        plot.draw_series(bars).map_err(figure_error)?;
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(figure_error)
}

/// A scatter of 2-D `points` (n × 2) coloured by class `labels` (0–10), titled `title`, with axes
/// `x_label` / `y_label` and a legend of the classes present, as an SVG document.
pub fn latent_scatter_svg(
    points: &[f32],
    labels: &[u8],
    title: &str,
    axes: (&str, &str),
) -> Result<String, MetricsError> {
    if points.len() != labels.len() * 2 || labels.is_empty() {
        return Err(MetricsError::Shape(format!("{} coordinates for {} labels", points.len(), labels.len())));
    }
    let xy = |i: usize| (f64::from(points[2 * i]), f64::from(points[2 * i + 1]));
    let (x0, x1) = padded_range((0..labels.len()).map(|i| xy(i).0));
    let (y0, y1) = padded_range((0..labels.len()).map(|i| xy(i).1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(figure_error)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(figure_error)?;
        plot.configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(WHITE)
            .draw()
            .map_err(figure_error)?;
        let mut classes: Vec<u8> = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        for class in classes {
            let c = colour(usize::from(class.min(10)));
            let members = (0..labels.len())
                .filter(|&i| labels[i] == class)
                .map(xy)
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            plot.draw_series(members.map(|p| Circle::new(p, 2, c.filled())))
                .map_err(figure_error)?
                .label(format!("class {class}"))
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        plot.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(figure_error)?;
        root.present().map_err(figure_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChartPoint, Series};

    /// The contents of the SVG's `<text>` elements, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("</text>").filter_map(|t| t.rsplit_once('>')).map(|(_, text)| text.trim().to_string()).collect()
    }

    #[test]
    fn charts_carry_their_text_as_text() {
        let series = |label: &str, k: f64| Series {
            label: label.into(),
            points: [0.5, 1.0, 10.0].iter().map(|&x| ChartPoint { x, y: k * x.ln(), spread: 0.1 }).collect(),
        };
        let panel = Chart {
            title: "Accuracy against ε".into(),
            x_label: "ε".into(),
            y_label: "accuracy".into(),
            log_x: true,
            series: vec![series("DP-SGD (RDP)", 0.1), series("DP-SGD (PLD)", 0.2)],
        };
        let svg = line_charts_svg(&[panel.clone(), panel], 2).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let chart_texts = texts(&svg);
        for text in ["Accuracy against ε", "accuracy", "ε", "DP-SGD (RDP)", "DP-SGD (PLD)", "1", "10"] {
            assert_eq!(chart_texts.iter().filter(|t| *t == text).count(), 2, "{text} in each panel: {chart_texts:?}");
        }
        let scatter =
            latent_scatter_svg(&[0.0, 1.0, 2.0, 3.0, -1.0, 0.5], &[0, 1, 1], "Latent means", ("z₁", "z₂")).unwrap();
        let texts = texts(&scatter);
        for text in ["Latent means", "z₁", "z₂", "class 0", "class 1"] {
            assert!(texts.iter().any(|t| t == text), "{text} missing from the scatter: {texts:?}");
        }
        assert!(!texts.iter().any(|t| t == "class 2"));
        assert!(latent_scatter_svg(&[0.0], &[0], "t", ("x", "y")).is_err());
        let labels: Vec<String> = [0.631, 1.585, 3.981, 39.81, 250.0, 0.05].map(tick_label).into();
        assert_eq!(labels, ["0.63", "1.6", "4", "40", "250", "0.05"]);
    }
}
