//! Line charts as PNG: panels side by side, each with a title, labelled axes, tick values, one
//! line per series with ± error bars, and a legend. Text uses the public-domain 8×8 bitmap font
//! of the `font8x8` crate.

use font8x8::UnicodeFonts;

use crate::figures::{encode_png, PALETTE};
use crate::MetricsError;

/// One point: y at x, with a ± spread drawn as an error bar (0: none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChartPoint {
    /// Position on the x axis (positive under a log axis).
    pub x: f64,
    /// Value.
    pub y: f64,
    /// Half-length of the error bar.
    pub spread: f64,
}

/// A named line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points in drawing order.
    pub points: Vec<ChartPoint>,
}

/// One panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label above the y axis.
    pub y_label: String,
    /// Logarithmic x axis; ticks sit at the points' x values.
    pub log_x: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const PANEL_W: usize = 440;
const PANEL_H: usize = 320;
const LEFT: usize = 64;
const RIGHT: usize = 16;
const TOP: usize = 40;
const BOTTOM: usize = 48;
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];

/// An RGB canvas.
struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..self.w as i64).contains(&x) && (0..self.h as i64).contains(&y) {
            let i = (y as usize * self.w + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line 2 pixels wide from (x0, y0) to (x1, y1) (DDA).
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], width: i64) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = ((x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64);
            for d in 0..width {
                self.put(x + d, y, c);
                self.put(x, y + d, c);
            }
        }
    }

    fn square(&mut self, x: f64, y: f64, half: i64, c: [u8; 3]) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        for dy in -half..=half {
            for dx in -half..=half {
                self.put(x + dx, y + dy, c);
            }
        }
    }

    /// Text with its top-left corner at (x, y); characters the font lacks are drawn as '?'.
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::GREEK_FONTS.get(ch))
                .or_else(|| font8x8::LATIN_FONTS.get(ch))
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or_default();
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.put(x + (k * 8 + col) as i64, y + row as i64, c);
                    }
                }
            }
        }
    }

    fn text_centered(&mut self, cx: i64, y: i64, s: &str, c: [u8; 3]) {
        self.text(cx - 4 * s.chars().count() as i64, y, s, c);
    }
}

/// Up to three significant digits, without trailing zeros.
fn tick_text(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i64).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// About five round ticks (1, 2 or 5 × 10ᵏ apart) covering [lo, hi].
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo).max(1e-12) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn draw_panel(canvas: &mut Canvas, ox: usize, chart: &Chart) {
    let points = chart.series.iter().flat_map(|s| &s.points).filter(|p| p.y.is_finite() && p.x.is_finite());
    let xs: Vec<f64> = points.clone().map(|p| p.x).collect();
    let lo_y = points.clone().map(|p| p.y - p.spread).fold(f64::INFINITY, f64::min);
    let hi_y = points.map(|p| p.y + p.spread).fold(f64::NEG_INFINITY, f64::max);
    canvas.text_centered((ox + PANEL_W / 2) as i64, 6, &chart.title, BLACK);
    let (x0, x1, y0, y1) = (ox + LEFT, ox + PANEL_W - RIGHT, TOP, PANEL_H - BOTTOM);
    canvas.text(ox as i64 + 4, (TOP - 14) as i64, &chart.y_label, BLACK);
    canvas.text_centered(((x0 + x1) / 2) as i64, (PANEL_H - 14) as i64, &chart.x_label, BLACK);
    if xs.is_empty() {
        canvas.text_centered(((x0 + x1) / 2) as i64, ((y0 + y1) / 2) as i64, "no data", BLACK);
        return;
    }
    let fx = |x: f64| if chart.log_x { x.max(1e-300).ln() } else { x };
    let (mut lx, mut hx) =
        xs.iter().map(|&x| fx(x)).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if hx - lx < 1e-12 {
        (lx, hx) = (lx - 1.0, hx + 1.0);
    }
    let pad = 0.06 * (hx - lx);
    let (lx, hx) = (lx - pad, hx + pad);
    let ticks_y = nice_ticks(lo_y, if hi_y - lo_y < 1e-12 { lo_y + 1.0 } else { hi_y });
    let (ly, hy) = (ticks_y[0], *ticks_y.last().expect("at least one tick"));
    let px = |x: f64| x0 as f64 + (fx(x) - lx) / (hx - lx) * (x1 - x0) as f64;
    let py = |y: f64| y1 as f64 - (y - ly) / (hy - ly).max(1e-12) * (y1 - y0) as f64;
    for &t in &ticks_y {
        let y = py(t);
        canvas.line((x0 as f64, y), (x1 as f64, y), GRID, 1);
        let label = tick_text(t);
        canvas.text(x0 as i64 - 6 - 8 * label.chars().count() as i64, y as i64 - 4, &label, BLACK);
    }
    let mut tick_x: Vec<f64> = if chart.log_x {
        xs.clone()
    } else {
        let (a, b) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        nice_ticks(a, b.max(a + 1e-12)).into_iter().filter(|t| (a..=b).contains(t)).collect()
    };
    tick_x.sort_by(f64::total_cmp);
    tick_x.dedup();
    for &t in &tick_x {
        let x = px(t);
        canvas.line((x, y1 as f64), (x, y1 as f64 + 4.0), BLACK, 1);
        canvas.text_centered(x as i64, y1 as i64 + 8, &tick_text(t), BLACK);
    }
    canvas.line((x0 as f64, y0 as f64), (x0 as f64, y1 as f64), BLACK, 1);
    canvas.line((x0 as f64, y1 as f64), (x1 as f64, y1 as f64), BLACK, 1);
    // The legend's text starts 142 px left of the plot's right edge, or further left so that the
    // longest label (8 px a character) ends inside the panel.
    let longest = chart.series.iter().map(|s| s.label.chars().count()).max().unwrap_or(0);
    let legend_x = (x1 as i64 - 142).min((x1 + RIGHT) as i64 - 2 - 8 * longest as i64);
    for (k, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[k % 10];
        let pts: Vec<&ChartPoint> = series.points.iter().filter(|p| p.y.is_finite() && p.x.is_finite()).collect();
        for pair in pts.windows(2) {
            canvas.line((px(pair[0].x), py(pair[0].y)), (px(pair[1].x), py(pair[1].y)), colour, 2);
        }
        for p in &pts {
            canvas.square(px(p.x), py(p.y), 2, colour);
            if p.spread > 0.0 {
                let x = px(p.x);
                canvas.line((x, py(p.y - p.spread)), (x, py(p.y + p.spread)), colour, 1);
                for y in [py(p.y - p.spread), py(p.y + p.spread)] {
                    canvas.line((x - 3.0, y), (x + 3.0, y), colour, 1);
                }
            }
        }
        let ly = (y0 + 6 + 12 * k) as i64;
        canvas.square((legend_x - 8) as f64, (ly + 3) as f64, 3, colour);
        canvas.text(legend_x, ly, &series.label, BLACK);
    }
}

/// `panels` side by side, `columns` per row: the bytes of one RGB PNG.
pub fn line_charts(panels: &[Chart], columns: usize) -> Result<Vec<u8>, MetricsError> {
    if panels.is_empty() || columns == 0 {
        return Err(MetricsError::Shape("no chart panels to draw".into()));
    }
    let rows = panels.len().div_ceil(columns);
    let (w, h) = (PANEL_W * columns.min(panels.len()), PANEL_H * rows);
    let mut canvas = Canvas { w, h, rgb: vec![255; w * h * 3] };
    for (i, chart) in panels.iter().enumerate() {
        let mut panel = Canvas { w: PANEL_W, h: PANEL_H, rgb: vec![255; PANEL_W * PANEL_H * 3] };
        draw_panel(&mut panel, 0, chart);
        let (ox, oy) = ((i % columns) * PANEL_W, (i / columns) * PANEL_H);
        for y in 0..PANEL_H {
            let src = &panel.rgb[y * PANEL_W * 3..(y + 1) * PANEL_W * 3];
            let at = ((oy + y) * w + ox) * 3;
            canvas.rgb[at..at + PANEL_W * 3].copy_from_slice(src);
        }
    }
    Ok(encode_png(w, h, png::ColorType::Rgb, &canvas.rgb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = nice_ticks(0.23, 0.61);
        let want = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
        assert!(t.len() == want.len() && t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{t:?}");
        let t = nice_ticks(81.0, 166.0);
        assert!(t[0] <= 81.0 && *t.last().unwrap() >= 166.0 && t.len() <= 7, "{t:?}");
        assert_eq!(tick_text(0.30000000000000004), "0.3");
        assert_eq!(tick_text(10000.0), "10000");
        assert_eq!(tick_text(0.01), "0.01");
    }

    #[test]
    fn charts_draw_lines_text_and_error_bars() {
        let pts = |ys: &[f64]| {
            ys.iter().enumerate().map(|(i, &y)| ChartPoint { x: [1.0, 2.0, 5.0][i], y, spread: 0.02 }).collect()
        };
        let chart = Chart {
            title: "accuracy vs ε".into(),
            x_label: "ε".into(),
            y_label: "accuracy".into(),
            log_x: true,
            series: vec![
                Series { label: "RDP".into(), points: pts(&[0.3, 0.4, 0.5]) },
                Series { label: "PLD".into(), points: pts(&[0.35, 0.45, f64::NAN]) },
            ],
        };
        let empty = Chart { series: Vec::new(), ..chart.clone() };
        let png = line_charts(&[chart, empty], 2).unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut buf = vec![0; dec.output_buffer_size()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2 * PANEL_W as u32, PANEL_H as u32));
        // Both series' colours appear in the left panel; the right panel holds only black text.
        let colours = |x_range: std::ops::Range<usize>| {
            let mut seen = std::collections::HashSet::new();
            for y in 0..PANEL_H {
                for x in x_range.clone() {
                    let i = (y * 2 * PANEL_W + x) * 3;
                    seen.insert([buf[i], buf[i + 1], buf[i + 2]]);
                }
            }
            seen
        };
        let left = colours(0..PANEL_W);
        assert!(left.contains(&PALETTE[0]) && left.contains(&PALETTE[1]) && left.contains(&BLACK));
        let right = colours(PANEL_W..2 * PANEL_W);
        assert!(right.contains(&BLACK) && !right.contains(&PALETTE[0]));
    }
}
